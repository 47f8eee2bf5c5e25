"""SampleRNN: chunked = full forward, causality, generation paths, training, metrics, checkpoints."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from audiolstm.data.state import DataState
from audiolstm.data.windows import identity_collate
from audiolstm.errors import UserError
from audiolstm.models.base import NonFiniteLossError
from audiolstm.models.samplernn import SampleRNN
from tests.conftest import FramesDataset, quiet_trainer

LIVELY = 4.0
TIERS = {"2-tier": [4], "3-tier": [8, 2], "4-tier": [8, 4, 2]}


def _model(frame_sizes: list[int], seed: int = 0, gain: float = 1.0, **kw) -> SampleRNN:
    """A tiny model; `gain` scales the initial weights so that its output (and its argmax
    path) depends visibly on the input: at PyTorch's init the untrained argmax is constant.
    LIVELY is for the generation tests; equivalence tests use 1 (logits of order 1)."""
    torch.manual_seed(seed)
    kw = {"hidden": 12, "mlp_hidden": 16, "q_levels": 32, "embed_dim": 6} | kw
    model = SampleRNN(frame_sizes=frame_sizes, **kw)  # no dropout: train/eval alike
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(gain)
    return model


def _samples(b: int, n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n, dtype=torch.float32)
    phase = torch.rand(b, 1, generator=g) * 6.0
    return 0.8 * torch.sin(0.3 * t + phase) + 0.1 * torch.randn(b, n, generator=g)





def _loader(frames: torch.Tensor, batch_size: int) -> DataLoader:
    return DataLoader(FramesDataset(frames), batch_size=batch_size, collate_fn=identity_collate)


# ----------------------------------------------------------------------------- forward


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("tiers", ["2-tier", "3-tier", "4-tier"])
def test_chunked_stateful_forward_equals_full_forward(tiers: str, cell: str) -> None:
    fs = TIERS[tiers]
    model = _model(fs, cell=cell, rnn_layers=2)
    top = fs[0]
    codes = model.quantize(_samples(3, top * 10))  # 9 top frames of targets
    with torch.no_grad():
        full, full_state = model(codes)
        state, parts = None, []
        for start in range(0, 9 * top, 4 * top):  # chunks of 4, 4, 1 top frames
            stop = min(start + 4 * top, 9 * top)
            logits, state = model(codes[:, start : stop + top], state)
            parts.append(logits)
    chunked = torch.cat(parts, dim=1)
    assert full.shape == chunked.shape == (3, 9 * top, 32)
    assert (full - chunked).abs().max().item() <= 1e-5
    flat = [t for s in state for t in (s if isinstance(s, tuple) else (s,))]
    ref = [t for s in full_state for t in (s if isinstance(s, tuple) else (s,))]
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(flat, ref, strict=True))
    # and carrying the state matters: a fresh state on the last chunk gives other logits
    with torch.no_grad():
        fresh, _ = model(codes[:, 8 * top :])
    assert (fresh - full[:, 8 * top :]).abs().max() > 1e-4


def _first_affected(model: SampleRNN, codes: torch.Tensor) -> list[int | None]:
    """For every position p: the first target whose logits change when code p changes."""
    firsts: list[int | None] = []
    with torch.no_grad():
        ref, _ = model(codes)
        for p in range(codes.shape[1]):
            changed = codes.clone()
            changed[0, p] = (codes[0, p] + 7) % model.q_levels
            diff = (model(changed)[0] - ref).abs().amax(dim=-1)[0]
            hit = (diff > 0).nonzero()
            firsts.append(int(hit[0]) if len(hit) else None)
    return firsts


class _LateTiers(SampleRNN):
    """A broken model whose frame tiers read one sample late (they see the target itself)."""

    def conditioning(self, codes: torch.Tensor, state=None):
        late = torch.cat([codes[:, 1:], codes[:, -1:]], dim=1)
        return super().conditioning(late, state)


@pytest.mark.parametrize("tiers", ["2-tier", "3-tier", "4-tier"])
def test_logits_are_causal(tiers: str) -> None:
    """Perturb every position p: the first logits that move are exactly those of the next
    sample (target p − F_0 + 1; every target for context samples), none before; a model
    whose tiers read one sample late fails the same check."""
    fs = TIERS[tiers]
    top = fs[0]
    model = _model(fs)
    codes = model.quantize(_samples(1, top * 5))
    n = codes.shape[1] - top
    expected = [max(0, p - top + 1) if p - top + 1 < n else None for p in range(codes.shape[1])]
    assert _first_affected(model, codes) == expected
    late = _LateTiers(frame_sizes=fs, hidden=12, mlp_hidden=16, q_levels=32, embed_dim=6)
    late.load_state_dict(model.state_dict())
    assert _first_affected(late, codes) != expected


# ----------------------------------------------------------------------------- generation


#: the sample loops generation runs: the C kernel, and, where no compiler builds it, the
#: TorchScript loop (both draw by the inverse CDF)
LOOPS = ["kernel", "script"]


@pytest.fixture(params=LOOPS)
def sample_loop(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every sample loop, whatever the batch size or the machine would pick by default."""
    from audiolstm.models import samplernn_kernel

    if request.param == "kernel":
        if samplernn_kernel.load() is None:
            pytest.skip("no C compiler here (test_the_kernel_builds_where_cc_is_found)")
    else:
        monkeypatch.setattr(samplernn_kernel, "ENABLED", False)
    return request.param


@pytest.mark.parametrize(("tiers", "cell", "layers"),
                         [("2-tier", "lstm", 1), ("3-tier", "lstm", 1), ("3-tier", "gru", 1),
                          ("3-tier", "lstm", 2), ("2-tier", "gru", 2)])
def test_generation_logits_equal_teacher_forcing_on_its_output(tiers: str, cell: str,
                                                               layers: int, sample_loop: str) -> None:
    """The sample loop (folded tables, fused frame tiers with the input map folded into
    the first layer) against the plain forward pass, for both cells and stacked layers."""
    fs = TIERS[tiers]
    model = _model(fs, gain=LIVELY, cell=cell, rnn_layers=layers)
    seed = _samples(2, 3 * fs[0] + 3)  # rounded down to 3 top frames: the last ones kept
    g = torch.Generator().manual_seed(1)
    out, logits = model.generate(seed, 29, temperature=1.0, generator=g, return_logits=True)
    assert out.shape == (2, 29) and logits.shape == (2, 29, 32)
    sequence = torch.cat([seed[:, 3:], out], dim=1)
    with torch.no_grad():
        tf = model.teacher_forced_logits(sequence)
    assert (tf[:, -29:] - logits).abs().max().item() <= 1e-4
    assert torch.isin(out, model.levels).all()  # outputs are dequantised levels


def test_temperature_zero_is_the_argmax_path_and_deterministic(sample_loop: str) -> None:
    model = _model([8, 2], gain=LIVELY)
    seed = _samples(2, 16)
    a, logits = model.generate(seed, 40, temperature=0.0, return_logits=True)
    b = model.generate(seed, 40, temperature=0.0)
    assert torch.equal(a, b)
    assert torch.equal(model.quantize(a), logits.argmax(dim=-1))
    assert model.quantize(a).unique().numel() > 3  # a path that is not a constant
    tiny = model.generate(seed, 40, temperature=1e-6, generator=torch.Generator().manual_seed(3))
    assert torch.equal(tiny, a)
    hot = model.generate(seed, 40, temperature=3.0, generator=torch.Generator().manual_seed(3))
    assert not torch.equal(hot, a)  # so the equality above is not vacuous


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_draws_follow_softmax_of_logits_over_temperature(temperature: float,
                                                         sample_loop: str) -> None:
    """The whole generation path (every loop) draws from
    softmax(logits / T): with the last layer's weights zeroed the logits are its bias,
    the same at every step, so the codes' histogram must match that softmax."""
    model = _model([4], gain=LIVELY)
    with torch.no_grad():
        model.mlp[-1].weight.zero_()
        model.mlp[-1].bias.copy_(torch.linspace(-2.0, 2.0, 32).roll(7))
    out = model.generate(_samples(4, 8), 6000, temperature=temperature,
                         generator=torch.Generator().manual_seed(11))
    codes = model.quantize(out).reshape(-1)
    freq = torch.bincount(codes, minlength=32).double() / codes.numel()
    expected = torch.softmax(model.mlp[-1].bias.double() / temperature, dim=0)
    # 24000 draws: one standard error is <= 0.0032 for any level
    assert (freq - expected).abs().max().item() < 0.012
    assert freq.argmax() == expected.argmax()


def _naive_nucleus(probs: list[float], top_p: float) -> list[float]:
    """Most likely first, keep while the kept mass is below top_p (the crossing level
    kept), zero the rest, renormalise: a plain loop in float64."""
    kept, run, before = set(), 0.0, 0.0
    for k in sorted(range(len(probs)), key=lambda k: -probs[k]):
        if run >= top_p:
            break
        kept.add(k)
        before, run = run, run + probs[k]
    assert min(abs(before - top_p), abs(run - top_p)) > 1e-4  # no rounding-close call
    return [p / run if k in kept else 0.0 for k, p in enumerate(probs)]


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_nucleus_draws_follow_the_truncated_renormalised_softmax(temperature: float,
                                                                 sample_loop: str) -> None:
    """top_p = 0.6 on a fixed logits vector (the last layer's bias, its weights zeroed):
    the codes' histogram against the nucleus of softmax(logits / T) renormalised, by a
    naive loop; levels outside it never drawn. 24,000 draws: one standard error <= 0.0032.
    Mutants caught (tried): excluding the level that crosses top_p (renormalised mass
    0.09 at T = 1, 0.13 at T = 0.7) and not renormalising after the truncation (the
    draw's target u × the untruncated total: the excess lands on another level), in the
    fallback's rule and in the kernel's (`ev > tau`; no recount of the kept total)."""
    model = _model([4], gain=LIVELY)
    with torch.no_grad():
        model.mlp[-1].weight.zero_()
        model.mlp[-1].bias.copy_(torch.linspace(-2.0, 2.0, 32).roll(7))
    out = model.generate(_samples(4, 8), 6000, temperature=temperature,
                         generator=torch.Generator().manual_seed(11), top_p=0.6)
    codes = model.quantize(out).reshape(-1)
    freq = torch.bincount(codes, minlength=32).double() / codes.numel()
    softmax = torch.softmax(model.mlp[-1].bias.double() / temperature, dim=0)
    expected = torch.tensor(_naive_nucleus(softmax.tolist(), 0.6), dtype=torch.float64)
    assert (freq - expected).abs().max().item() < 0.012
    assert (freq[expected == 0] == 0).all() and (expected > 0).sum() >= 5


@pytest.mark.parametrize("sample_loop", LOOPS, indirect=True)
def test_top_p_one_draws_the_same_codes_as_plain_sampling(sample_loop: str) -> None:
    """top_p = 1 is plain sampling: the same codes from the same seed, in either loop."""
    model = _model(TIERS["3-tier"], gain=LIVELY)
    seed = _samples(2, 16)
    plain = model.generate(seed, 50, generator=torch.Generator().manual_seed(3))
    same = model.generate(seed, 50, generator=torch.Generator().manual_seed(3), top_p=1.0)
    assert torch.equal(plain, same) and model.quantize(plain).unique().numel() > 5


def test_the_log_likelihood_is_the_mean_log_softmax_of_the_drawn_codes(sample_loop) -> None:
    """`return_log_likelihood`: each stream's mean log-probability of its codes under the
    model's own softmax (T = 1, untruncated), recomputed here from the teacher-forced
    logits of the generated sequence; at T = 0.7 with top_p too (it is not the sampling
    distribution's). The codes do not change when it is asked for. Mutant caught
    (tried): the log-probability under the tempered softmax (the sampling distribution)."""
    model = _model(TIERS["3-tier"], gain=LIVELY)
    seed = _samples(3, 16)
    for temperature, top_p in ((1.0, 1.0), (0.7, 0.8)):
        plain = model.generate(seed, 45, temperature, torch.Generator().manual_seed(4),
                               top_p=top_p)
        out, ll = model.generate(seed, 45, temperature, torch.Generator().manual_seed(4),
                                 top_p=top_p, return_log_likelihood=True)
        assert torch.equal(out, plain) and ll.shape == (3,) and ll.dtype == torch.float64
        with torch.no_grad():
            logits = model.teacher_forced_logits(torch.cat([seed, out], dim=1))[:, -45:]
        own = torch.log_softmax(logits.double(), -1).gather(
            -1, model.quantize(out)[..., None])[..., 0].mean(1)
        torch.testing.assert_close(ll, own, rtol=0, atol=1e-4)
        _, logits_too, ll_too = model.generate(
            seed, 45, temperature, torch.Generator().manual_seed(4), return_logits=True,
            top_p=top_p, return_log_likelihood=True)
        torch.testing.assert_close(ll_too, ll, rtol=0, atol=1e-9)


def test_levels_of_zero_probability_are_never_drawn(sample_loop: str) -> None:
    """Levels whose softmax mass underflows to 0 (here the first and the last among them)
    are never drawn, and every level of mass > 0 is (the inverse CDF's edge cases)."""
    model = _model([4], gain=LIVELY)
    allowed = [5, 6, 30]
    with torch.no_grad():
        model.mlp[-1].weight.zero_()
        bias = torch.full((32,), -1e4)
        bias[allowed] = torch.tensor([0.0, -3.0, 1.0])
        model.mlp[-1].bias.copy_(bias)
    out = model.generate(_samples(4, 8), 3000, generator=torch.Generator().manual_seed(4))
    assert model.quantize(out).unique().tolist() == allowed


@pytest.mark.parametrize("sample_loop", LOOPS[1:], indirect=True)
def test_scripted_and_eager_sample_loops_agree(monkeypatch, sample_loop: str) -> None:
    """The per-sample function runs under TorchScript when it compiles: same codes, same
    logits as the same function run eagerly."""
    from audiolstm.models import samplernn_step

    runs = _runs_with(monkeypatch, samplernn_step, "SCRIPTED", (True, False),
                      _model([8, 2], gain=LIVELY), _samples(2, 16), 37)
    # TorchScript may split addmm into mm + add: the bias is added after rounding
    _assert_same_draws(runs, rtol=1e-6)


def _runs_with(monkeypatch, module, name: str, values: tuple, model: SampleRNN,
               seed: torch.Tensor, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(samples, logits) of the same seeded generation once per value of module.name."""
    runs = []
    for value in values:
        monkeypatch.setattr(module, name, value)
        runs.append(model.generate(seed, n, generator=torch.Generator().manual_seed(2),
                                   return_logits=True))
    return runs


def _assert_same_draws(runs: list[tuple[torch.Tensor, torch.Tensor]], rtol: float) -> None:
    """The same codes, and logits equal to float32 rounding of the largest."""
    (a, a_logits), (b, b_logits) = runs
    assert torch.equal(a, b)
    tol = 1e-6 * float(b_logits.abs().max())
    assert torch.allclose(a_logits, b_logits, rtol=rtol, atol=tol)


def test_kernel_and_torchscript_loops_draw_the_same_codes(monkeypatch) -> None:
    """The C kernel and the TorchScript loop's inverse CDF read the same uniforms: the
    same codes, and logits equal to float32 rounding (sums in another order)."""
    from audiolstm.models import samplernn_kernel

    if samplernn_kernel.load() is None:
        pytest.skip("no C compiler here (test_the_kernel_builds_where_cc_is_found)")
    runs = _runs_with(monkeypatch, samplernn_kernel, "ENABLED", (True, False),
                      _model(TIERS["3-tier"], gain=LIVELY), _samples(3, 32), 61)
    _assert_same_draws(runs, rtol=1e-5)


@pytest.mark.parametrize(("temperature", "top_p"), [(1.0, 1.0), (0.7, 1.0), (1.0, 0.8)])
def test_one_stream_of_256_levels_draws_the_same_codes_with_and_without_the_kernel(
        monkeypatch, temperature: float, top_p: float) -> None:
    """A seed means the same audio on every machine (issue 20): `generate.py`'s own case,
    one stream of 256 levels, from the same seeded generator, with the C kernel and with
    the fallback loop: every code equal, with a nucleus too (the kernel's bisection finds
    the fallback's sorted threshold). Mutants caught (tried): the fallback drawing by
    Gumbel-max for few streams (B·Q ≤ 1024, as before issue 20), which differed in 198 of
    200 codes; the kernel's nucleus without the crossing level (`ev > tau`)."""
    from audiolstm.models import samplernn_kernel

    if samplernn_kernel.load() is None:
        pytest.skip("no C compiler here (test_the_kernel_builds_where_cc_is_found)")
    model = _model([4], gain=2.0, q_levels=256)
    seed = _samples(1, 16)
    runs = []
    for enabled in (True, False):
        monkeypatch.setattr(samplernn_kernel, "ENABLED", enabled)
        runs.append(model.quantize(model.generate(
            seed, 300, temperature=temperature, generator=torch.Generator().manual_seed(8),
            top_p=top_p)))
    assert torch.equal(runs[0], runs[1])
    assert runs[0].unique().numel() > 40  # a spread distribution: many levels drawn


def test_many_streams_of_odd_widths_equal_teacher_forcing() -> None:
    """19 streams (the kernel's tiles of 8, 2 and 1 streams, split into one group per
    thread) with widths that are no multiple of the kernel's alignment (zero-padded):
    the logits equal teacher forcing, and one thread or two give the same bits."""
    from audiolstm.models import samplernn_kernel
    from audiolstm.models.samplernn_step import torch_threads

    if samplernn_kernel.load() is None:
        pytest.skip("no C compiler here (test_the_kernel_builds_where_cc_is_found)")
    model = _model(TIERS["3-tier"], gain=LIVELY, hidden=40, mlp_hidden=136, q_levels=200)
    seed = _samples(19, 16)
    runs = []
    for threads in (1, 2):
        with torch_threads(threads):
            runs.append(model.generate(seed, 27, generator=torch.Generator().manual_seed(9),
                                       return_logits=True))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    out, logits = runs[0]
    with torch.no_grad():
        tf = model.teacher_forced_logits(torch.cat([seed, out], dim=1))
    assert (tf[:, -27:] - logits).abs().max().item() <= 1e-4
    assert model.quantize(out).max() < 200 and model.quantize(out).unique().numel() > 5


def test_the_kernel_builds_where_cc_is_found() -> None:
    """Where the C compiler is found the kernel builds, so its tests above do not skip."""
    import os
    import shutil

    from audiolstm.models import samplernn_kernel

    compiler = os.environ.get("CC", "cc").split()[0]
    if shutil.which(compiler) is None:
        pytest.skip(f"no C compiler ({compiler}) on this machine")
    assert samplernn_kernel.load() is not None


def test_without_a_compiler_generation_runs_the_torchscript_loop(monkeypatch, caplog) -> None:
    """No compiler: one log line naming the source and the compiler, and generation still
    runs (the TorchScript loop)."""
    from audiolstm.models import samplernn_kernel

    monkeypatch.setenv("CC", "/nonexistent/cc")
    samplernn_kernel._build.cache_clear()
    try:
        with caplog.at_level("WARNING", logger=samplernn_kernel.__name__):
            assert samplernn_kernel.load() is None
            model = _model([4], gain=LIVELY)
            out = model.generate(_samples(2, 8), 20, generator=torch.Generator().manual_seed(1))
    finally:
        samplernn_kernel._build.cache_clear()  # the next test builds it again
    assert out.shape == (2, 20)
    [record] = caplog.records
    assert "samplernn_kernel.c" in record.message and "/nonexistent/cc" in record.message
    assert "\n" not in record.message


def test_sampling_is_reproducible_with_a_generator(sample_loop: str) -> None:
    model = _model([4], gain=LIVELY)
    seed = _samples(2, 8)
    a = model.generate(seed, 30, generator=torch.Generator().manual_seed(5))
    b = model.generate(seed, 30, generator=torch.Generator().manual_seed(5))
    c = model.generate(seed, 30, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("tiers", ["2-tier", "3-tier"])
def test_batched_generation_equals_one_at_a_time(tiers: str) -> None:
    fs = TIERS[tiers]
    model = _model(fs, gain=LIVELY)
    seeds = _samples(3, 2 * fs[0], seed=4)
    batched, logits = model.generate(seeds, 25, temperature=0.0, return_logits=True)
    for i in range(3):
        alone, alone_logits = model.generate(seeds[i : i + 1], 25, temperature=0.0,
                                             return_logits=True)
        assert torch.equal(alone[0], batched[i])
        # batch size changes the float32 summation order: error ~ ulp of the largest logit
        tol = 1e-6 * float(logits[i].abs().max())
        assert torch.allclose(alone_logits[0], logits[i], rtol=1e-5, atol=tol)
    assert not torch.equal(batched[0], batched[1])  # different seeds, different outputs


def test_seed_uses_its_last_whole_top_frames_and_one_frame_suffices() -> None:
    model = _model([8, 2], gain=LIVELY)
    seed = _samples(1, 8 * 3 + 5)
    assert torch.equal(model.generate(seed, 20, temperature=0.0),
                       model.generate(seed[:, 5:], 20, temperature=0.0))
    one = model.generate(seed[:, -8:], 20, temperature=0.0)  # no warm-up pass at all
    _, logits = model.generate(seed[:, -8:], 20, temperature=0.0, return_logits=True)
    with torch.no_grad():
        tf = model.teacher_forced_logits(torch.cat([seed[:, -8:], one], dim=1))
    assert (tf - logits).abs().max() <= 1e-4


def test_seed_shorter_than_a_top_frame_is_a_user_error() -> None:
    model = _model([8, 2])
    with pytest.raises(UserError, match=r"seed\.seconds"):
        model.generate(torch.zeros(1, 7), 10)


def test_generation_reports_progress() -> None:
    model = _model([4])
    calls: list[tuple[int, int]] = []
    model.generate(torch.zeros(1, 4), 10, progress=lambda i, n: calls.append((i, n)))
    assert calls[-1] == (10, 10) and calls == sorted(calls)


# ----------------------------------------------------------------------------- training


@pytest.mark.parametrize("tbptt,expected", [(None, 1), (2, 4), (3, 3), (7, 1)])
def test_optimizer_steps_per_batch_are_the_chunks(tbptt: int | None, expected: int) -> None:
    # x_len 8, top frame 4: (3 + 1) * 8 = 32 samples, 4 context + 28 targets = 7 top frames
    frames = _samples(8, 32).reshape(8, 4, 8)
    model = _model([4, 2], tbptt_steps=tbptt)
    trainer = quiet_trainer(max_epochs=1, limit_val_batches=0)
    trainer.fit(model, _loader(frames, 4))
    assert trainer.global_step == 2 * expected  # two batches


def test_overfitting_one_batch_lowers_the_loss() -> None:
    frames = _samples(2, 64, seed=7).reshape(2, 4, 16)
    model = _model([8, 2], hidden=24, mlp_hidden=32, tbptt_steps=2,
                   optimizer={"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-2})
    flat = frames.reshape(2, -1)

    def loss() -> float:
        with torch.no_grad():
            logits = model.teacher_forced_logits(flat)
        return F.cross_entropy(logits.reshape(-1, 32), model.quantize(flat[:, 8:]).reshape(-1)).item()

    before = loss()
    trainer = quiet_trainer(max_epochs=13, limit_val_batches=0)  # 4 chunks a batch: 52 steps
    trainer.fit(model, _loader(frames, 2))
    assert trainer.global_step == 52
    after = loss()
    assert before > 0.9 * math.log(32)  # starts near uniform
    assert after < 0.5 * before  # ≈ 0.87 nats from ln 32 ≈ 3.47
    assert trainer.callback_metrics["train/loss_epoch"] < 0.6 * before  # what was logged


def test_non_finite_loss_is_a_clear_error() -> None:
    model = _model([4])
    with torch.no_grad():
        model.mlp[-1].bias[3] = float("nan")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(NonFiniteLossError, match="non-finite training loss"):
        quiet_trainer(max_epochs=1, limit_val_batches=0).fit(model, _loader(torch.zeros(2, 3, 8), 2))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k != "mlp.5.bias")  # no step


def test_examples_are_cut_to_whole_top_frames() -> None:
    """Any x_len works: an example is its context plus whole top frames (3 * 12 = 36
    samples = 8 of context + 3 top frames of 8; the last 4 samples are dropped)."""
    model = _model([8, 2])
    frames = _samples(2, 36).reshape(2, 3, 12)
    codes, samples = model._codes(frames)
    assert codes.shape == samples.shape == (2, 32)
    assert torch.equal(samples, frames.reshape(2, -1)[:, :32])
    trainer = quiet_trainer(max_epochs=1, limit_val_batches=0)
    trainer.fit(model, _loader(frames, 2))
    assert trainer.global_step == 1
    with pytest.raises(UserError, match=r"frame_sizes\[0\]=8"):
        model._codes(torch.zeros(1, 1, 8))


def test_it_quantises_the_original_scale_audio() -> None:
    """With a normaliser attached the codes are those of the original-scale samples, and
    generated levels come back in the normalised units the data module uses."""
    from audiolstm.data.normalize import fit_normalizer

    model = _model([4], quantization="linear")
    audio = 0.05 * _samples(1, 64)[0] + 0.01  # quiet audio: |x| << 1
    norm = fit_normalizer("std", audio.numpy())
    model.data_state = DataState(data={"x_len": 8}, repr={"kind": "time"},
                                 normalizer_state=norm.state_dict())
    y = torch.as_tensor(norm.transform(audio.numpy()))
    codes = model.quantize(y)
    assert torch.equal(codes, torch.floor((audio.double() + 1) * 16).long())  # 32 levels
    back = norm.inverse(model.dequantize(codes).double())
    assert torch.allclose(back, -1 + (2 * codes.double() + 1) / 32, atol=1e-6)


def test_non_time_representation_is_a_user_error() -> None:
    model = _model([4])
    model.data_state = DataState(data={}, repr={"kind": "fft", "standardize": False})
    with pytest.raises(UserError, match="repr=time"):
        model._codes(torch.zeros(1, 2, 8))


@pytest.mark.parametrize("sizes", [[8, 3], [], [4, 0]])
def test_bad_frame_sizes_are_user_errors(sizes: list[int]) -> None:
    with pytest.raises(UserError, match=r"model\.frame_sizes"):
        SampleRNN(frame_sizes=sizes)


# ----------------------------------------------------------------------------- evaluation


@pytest.mark.parametrize("quantization", ["linear", "mu_law"])
@pytest.mark.parametrize("tbptt", [None, 2])
def test_validation_metrics_are_exact_split_wide_means(tbptt: int | None,
                                                        quantization: str) -> None:
    from audiolstm.evaluation.likelihood import bin_index, spread_matrix
    from audiolstm.models.quantize import cell_edges

    frames = (1.3 * _samples(5, 24, seed=9)).reshape(5, 3, 8)  # some samples outside [-1, 1]
    model = _model([4, 2], quantization=quantization, tbptt_steps=tbptt)
    flat = frames.reshape(5, -1)
    with torch.no_grad():
        logits = model.teacher_forced_logits(flat)
    targets = model.quantize(flat)[:, 4:]
    ce = F.cross_entropy(logits.reshape(-1, 32), targets.reshape(-1)).item()
    expected = torch.softmax(logits, -1) @ model.levels
    mse = (expected - flat[:, 4:]).square().mean().item()
    # canonical: each code's mass spread over its cell, summed over the canonical bins
    probs = torch.softmax(logits.double(), -1) @ torch.from_numpy(
        spread_matrix(cell_edges(32, quantization)))
    k = bin_index(flat[:, 4:].double())
    canonical = -probs.gather(-1, k.unsqueeze(-1)).log().mean().item() / math.log(2)
    (res,) = quiet_trainer().validate(model, _loader(frames, 2), verbose=False)  # batches 2, 2, 1
    own = "bits_per_sample_linear32" if quantization == "linear" else "bits_per_sample_mulaw32"
    assert res["val/loss"] == pytest.approx(ce, rel=1e-5)
    assert res[f"val/{own}"] == pytest.approx(res["val/loss"] / math.log(2), rel=1e-6)
    assert res["val/bits_per_sample"] == pytest.approx(canonical, rel=1e-6)
    assert res["val/mse"] == pytest.approx(mse, rel=1e-5)
    (test,) = quiet_trainer().test(model, _loader(frames, 5), verbose=False)
    assert test["test/loss"] == pytest.approx(ce, rel=1e-5)


# ----------------------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip_with_weights_only(tmp_path) -> None:
    frames = _samples(2, 32).reshape(2, 4, 8)
    opt = {"_target_": "torch.optim.RMSprop", "_partial_": True, "lr": 1e-3}
    model = _model([4, 2], gain=LIVELY, cell="gru", quantization="linear", tbptt_steps=3,
                   optimizer=opt, input_dim=8)
    model.data_state = DataState(data={"x_len": 8}, repr={"kind": "time"})
    model.wandb_id = "abc123"
    trainer = quiet_trainer(max_epochs=1, limit_val_batches=0)
    trainer.fit(model, _loader(frames, 2))
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    assert ckpt["audiolstm"]["data_state"] == model.data_state.to_dict()
    hp = ckpt["hyper_parameters"]
    assert hp["frame_sizes"] == [4, 2] and hp["optimizer"] == opt and hp["cell"] == "gru"
    loaded = SampleRNN(**hp)
    loaded.load_state_dict(ckpt["state_dict"])
    loaded.on_load_checkpoint(ckpt)
    assert loaded.data_state == model.data_state and loaded.wandb_id == "abc123"
    assert loaded.num_params == model.num_params > 0
    model.eval()
    loaded.eval()
    seed = _samples(1, 8)
    assert torch.equal(model.generate(seed, 12, temperature=0.0),
                       loaded.generate(seed, 12, temperature=0.0))
