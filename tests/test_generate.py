"""Generation: strategies against the O(n^2) reference, de-ticking, outputs, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audiolstm.data.normalize import fit_normalizer
from audiolstm.data.representation import Representation
from audiolstm.data.state import DataState
from audiolstm.errors import UserError
from audiolstm.evaluation.metrics import tick_score
from audiolstm.generation.pipeline import continue_audio
from audiolstm.generation.reconstruction import (
    crossfade_boundaries,
    frame_signal,
    frames_to_audio,
    overlap_add,
)
from audiolstm.generation.strategies import (
    Sampling,
    generate_frames,
    generate_refeed,
    generate_stateful,
)
from audiolstm.models.frame_rnn import AudioRNN
from audiolstm.training.run import run
from tests.conftest import SMOKE, compose_cfg, run_script


def _model(cell: str, layers: int, dim: int, forget_bias: float | None = None,
           dtype=torch.float32, linear_ar: bool = False) -> AudioRNN:
    """A small model; `linear_ar`: with a linear AR path of random weights (a contraction,
    so free-running generation stays bounded)."""
    torch.manual_seed(layers * 10 + dim)
    m = AudioRNN(input_dim=dim, cell=cell, hidden_sizes=[16] * layers, forget_bias=forget_bias,
                 linear_ar="zero" if linear_ar else None)
    if linear_ar:
        with torch.no_grad():
            m.linear_ar.weight.normal_(0.0, 0.5 / dim**0.5)
            m.linear_ar.bias.normal_(0.0, 0.1)
    return m.to(dtype).eval()


AR = pytest.mark.parametrize("ar", [False, True], ids=["plain", "linear_ar"])


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("layers", [1, 3])
@pytest.mark.parametrize("kind", ["time", "fft"])
@AR
def test_stateful_equals_refeed_under_teacher_forcing(cell: str, layers: int, kind: str,
                                                      ar: bool) -> None:
    """Same frames in, step-by-step carried state vs re-running the whole history."""
    x_len = 12
    rep = Representation(kind, x_len)
    model = _model(cell, layers, rep.dim, linear_ar=ar)
    frames = rep.encode(torch.randn(30, x_len))
    with torch.no_grad():
        _, state = model(frames[None, :5])
        stateful = []
        for t in range(5, 30):
            y, state = model(frames[None, t : t + 1], state)
            stateful.append(y[0, -1])
        refeed = [model(frames[None, : t + 1])[0][0, -1] for t in range(5, 30)]
    diff = (torch.stack(stateful) - torch.stack(refeed)).abs().max().item()
    assert diff <= 1e-5


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("layers", [1, 3])
@pytest.mark.parametrize("kind", ["time", "fft"])
@AR
def test_stateful_equals_refeed_free_running_in_float64(cell: str, layers: int, kind: str,
                                                        ar: bool) -> None:
    x_len = 10
    rep = Representation(kind, x_len)
    model = _model(cell, layers, rep.dim, forget_bias=2.0, dtype=torch.float64, linear_ar=ar)
    seed = rep.encode(torch.randn(6, x_len, dtype=torch.float64))
    a = generate_stateful(model, seed, 40)
    b = generate_refeed(model, seed, 40)
    assert a.shape == (40, rep.dim)
    assert (a - b).abs().max().item() <= 1e-12


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("layers", [1, 3])
@pytest.mark.parametrize("head,ar", [("mse", None), ("gaussian", None), ("mse", "zero"),
                                     ("gaussian", "zero"), ("logistic_mixture", "zero")])
def test_stepper_equals_nn_rnn_forward(cell: str, layers: int, head: str,
                                       ar: str | None) -> None:
    """The fast one-frame path (fused [x, h] matmul, gates by hand) against nn.LSTM/nn.GRU
    over a whole sequence, batched, from a warm state; and its state in forward's format.
    With a linear AR path (random weights), the step adds it at the head's location too."""
    torch.manual_seed(3)
    model = AudioRNN(input_dim=12, cell=cell, hidden_sizes=[16, 8, 16][:layers],
                     head=head, linear_ar=ar, mixture_components=2).eval()
    if ar:
        with torch.no_grad():
            model.linear_ar.weight.normal_()
            model.linear_ar.bias.normal_()
    frames = torch.randn(3, 20, 12)
    with torch.no_grad():
        ref, ref_state = model(frames)
        _, state = model(frames[:, :5])
        step = model.stepper(state, batch=3)
        outs = [step.step(frames[:, t : t + 1]) for t in range(5, 20)]
    got = torch.cat(outs, dim=1)
    assert got.shape == ref[:, 5:].shape
    assert (got - ref[:, 5:]).abs().max().item() <= 1e-5
    flat = [t for s in step.state() for t in (s if isinstance(s, tuple) else (s,))]
    want = [t for s in ref_state for t in (s if isinstance(s, tuple) else (s,))]
    assert all(a.shape == b.shape and (a - b).abs().max() <= 1e-5
               for a, b in zip(flat, want, strict=True))


@pytest.mark.parametrize("layers", [1, 3])
def test_folded_feedback_step_equals_feeding_the_frame_back(layers: int) -> None:
    """Greedy mse feedback with the head folded into the first layer (W_ih @ W_head) is
    the plain step on the fed-back frame, free running, to float64 rounding."""
    model = _model("lstm", layers, 10, forget_bias=1.0, dtype=torch.float64)
    seed = torch.randn(1, 6, 10, dtype=torch.float64)
    with torch.no_grad():
        out, state = model(seed)
        plain, folded = model.stepper(state), model.stepper(state)
        assert folded.can_fold()
        frame = out[:, -1:]
        for _ in range(30):
            a = plain.step(frame)
            b = folded.feedback_step()
            assert (a - b).abs().max().item() <= 1e-12
            frame = a
    gru = _model("gru", 1, 10)
    assert not gru.stepper(None).can_fold()  # GRU first layer: the plain step
    ar = _model("lstm", layers, 10, linear_ar=True)
    assert not ar.stepper(None).can_fold()  # the linear path reads the fed-back frame


def test_stepper_refuses_training_mode() -> None:
    with pytest.raises(ValueError, match="eval"):
        _model("lstm", 1, 4).train().stepper(None)


@AR
def test_sliding_matches_refeed_until_history_exceeds_window(ar: bool) -> None:
    window = 8
    model = _model("lstm", 2, 6, forget_bias=3.0, dtype=torch.float64,  # long memory
                   linear_ar=ar)
    seed = torch.randn(3, 6, dtype=torch.float64)
    full = generate_frames(model, seed, 20, "refeed")
    slid = generate_frames(model, seed, 20, "sliding", window=window)
    # frame i is predicted from 3 + i frames of history
    same = window - 3 + 1
    assert (full[:same] - slid[:same]).abs().max() <= 1e-12
    assert (full[same:] - slid[same:]).abs().max() > 1e-6
    assert (full[same] - slid[same]).abs().max() > 1e-6  # the first frame that forgets differs


def test_sliding_with_huge_window_is_refeed() -> None:
    model = _model("gru", 1, 5, dtype=torch.float64)
    seed = torch.randn(4, 5, dtype=torch.float64)
    assert torch.equal(generate_frames(model, seed, 10, "sliding", window=100),
                       generate_frames(model, seed, 10, "refeed"))


def test_unknown_strategy_and_bad_window() -> None:
    model = _model("lstm", 1, 4)
    with pytest.raises(Exception, match="strategy='beam'"):
        generate_frames(model, torch.randn(2, 4), 3, "beam")
    with pytest.raises(Exception, match="window"):
        generate_frames(model, torch.randn(2, 4), 3, "sliding", window=0)


@pytest.mark.parametrize("x_len,hop", [(16, 8), (16, 4), (15, 5), (16, 16), (10, 3)])
def test_overlap_add_reconstructs_known_signal_exactly(x_len: int, hop: int) -> None:
    x = np.random.default_rng(0).standard_normal(x_len + 20 * hop).astype(np.float32)
    frames = frame_signal(x, x_len, hop)
    rebuilt = overlap_add(frames, hop)
    assert len(rebuilt) == len(x)
    np.testing.assert_allclose(rebuilt, x, atol=1e-6)
    # the naive slicing definition of the frames
    for k in (0, 3, len(frames) - 1):
        assert np.array_equal(frames[k], x[k * hop : k * hop + x_len])


def test_crossfade_removes_boundary_jumps() -> None:
    t = np.arange(64 * 10)
    smooth = np.sin(2 * np.pi * t / 200).astype(np.float32)
    frames = smooth.reshape(10, 64) + np.arange(10)[:, None] * 0.3  # planted jumps
    raw = frames.reshape(-1)
    d = float(raw[1] - raw[0])
    faded = crossfade_boundaries(frames, (float(raw[0]) - 2 * d, float(raw[0]) - d), 16)
    assert tick_score(raw, 64) > 10
    assert 0.5 < tick_score(faded, 64) < 2  # a natural step, neither a jump nor flat
    assert np.allclose(faded.reshape(10, 64)[:, 16:], frames[:, 16:])  # only the start changes


def test_frames_to_audio_without_deticking_keeps_new_samples() -> None:
    x = np.arange(40, dtype=np.float32)
    seed = frame_signal(x[:16], 8, 4)  # 3 frames covering 0..15
    gen = frame_signal(x[12:40], 8, 4)  # the frames that follow (at 12, 16, ...)
    audio, start = frames_to_audio(seed, gen, 4, "none")
    assert start == 16
    np.testing.assert_array_equal(audio, x[: len(audio)])
    audio2, _ = frames_to_audio(seed, gen, 4, "ola")
    np.testing.assert_allclose(audio2, x[: len(audio2)], atol=1e-5)


def _data_state(x_len: int, hop: int | None, kind: str, norm) -> DataState:
    rep = Representation(kind, x_len)
    return DataState(data={"sample_rate": 8000, "x_len": x_len, "hop": hop},
                     repr={"kind": kind, "standardize": False},
                     normalizer_state=norm.state_dict(), representation_state=rep.state_dict())


@pytest.mark.parametrize("kind", ["time", "rfft"])
def test_continuation_is_at_original_scale(kind: str) -> None:
    rng = np.random.default_rng(1)
    train = (rng.standard_normal(10000) * 3000 + 500).astype(np.float32)  # int16-like scale
    norm = fit_normalizer("std", train)
    state = _data_state(40, None, kind, norm)
    model = _model("lstm", 1, 40)
    seed = train[:400]
    cont = continue_audio(model, state, seed, "train", seconds=0.1)
    assert cont.seed_len == 400 and len(cont.generated) == 800
    assert np.array_equal(cont.audio[:400], seed)  # the seed itself, untouched
    # the same generation by hand: normalise, encode, generate, decode, denormalise
    rep = Representation(kind, 40)
    feats = rep.encode(torch.as_tensor((seed.reshape(10, 40) - norm.shift) / norm.scale))
    gen = rep.decode(generate_frames(model, feats.float(), 20)).double().numpy()
    expected = (gen * norm.scale + norm.shift).reshape(-1)
    np.testing.assert_allclose(cont.generated, expected, rtol=1e-5, atol=1e-4 * norm.scale)
    assert np.abs(cont.generated - 500).mean() > 0.01 * norm.scale  # not the mean alone
    assert cont.metrics["real_time_factor"] > 0


def _constant_model(frame: torch.Tensor) -> AudioRNN:
    """A model whose next frame is `frame` (normalised) whatever it has seen."""
    model = AudioRNN(input_dim=frame.numel(), hidden_sizes=[5])
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(frame)
    return model.eval()


@pytest.mark.parametrize("hop,deticking", [(8, "none"), (8, "crossfade"), (4, "none"),
                                           (4, "ola")])
def test_known_answer_pins_the_seed_generation_boundary(hop: int, deticking: str) -> None:
    """Next frame = a fixed ramp `b` (normalised): the audio is the seed to its last sample,
    then exactly b (at the original scale) frame after frame, or its new samples with
    overlap; nothing of the seed is rewritten (overlap-add included)."""
    x_len, sr = 8, 8000
    norm = fit_normalizer("std", np.random.default_rng(2).normal(0.1, 0.2, 5000))
    state = _data_state(x_len, hop, "time", norm)
    b = torch.linspace(-1.0, 1.5, x_len)
    seed = np.random.default_rng(3).normal(0.1, 0.2, 44).astype(np.float32)
    cont = continue_audio(_constant_model(b), state, seed, "test", seconds=40 / sr,
                          deticking=deticking,
                          crossfade=4 if deticking == "crossfade" else None)
    seed_len = 40 if hop == x_len else 44  # whole frames of the seed
    assert cont.seed_len == seed_len and len(cont.generated) == 40
    assert np.array_equal(cont.audio[:seed_len], seed[:seed_len])
    frame = (b.double().numpy() * norm.scale + norm.shift).astype(np.float32)
    if hop == x_len:
        expected = np.tile(frame, 5)
        if deticking == "crossfade":  # each frame's start ramps from the slope before it
            ramp = 1 - np.arange(4) / 4
            expected[:4] -= (frame[0] - (2 * seed[39] - seed[38])) * ramp  # from the seed
            for k in range(1, 5):  # from the previous (generated) frame's last two
                expected[8 * k : 8 * k + 4] -= (frame[0] - (2 * frame[-1] - frame[-2])) * ramp
    elif deticking == "none":
        expected = np.tile(frame[x_len - hop :], 10)
    else:  # overlap-add of identical frames: a hop-periodic blend of b
        w = np.hanning(x_len + 2)[1:-1] + 1e-3
        blend = (w[:hop] * frame[:hop] + w[hop:] * frame[hop:]) / (w[:hop] + w[hop:])
        expected = np.tile(blend, 10)
        expected[-hop:] = frame[x_len - hop :]  # the last frame's tail has no partner
    np.testing.assert_allclose(cont.generated, expected, rtol=0, atol=1e-6)
    assert cont.metrics["rms_seed"] == pytest.approx(
        float(np.sqrt(np.mean(seed[:seed_len].astype(np.float64) ** 2))), rel=1e-9)


def test_known_answer_sample_model_at_original_scale() -> None:
    """A SampleRNN that always picks one mu-law level: the generated audio is that level's
    original-scale value exactly, right after the untouched seed, whatever the norm."""
    from audiolstm.models.quantize import mu_law_decode
    from audiolstm.models.samplernn import SampleRNN

    torch.manual_seed(0)
    model = SampleRNN(frame_sizes=[4], hidden=6, mlp_hidden=8, embed_dim=3).eval()
    with torch.no_grad():
        model.mlp[-1].weight.zero_()
        model.mlp[-1].bias.fill_(-50.0)
        model.mlp[-1].bias[200] = 50.0
    norm = fit_normalizer("minmax01", np.random.default_rng(4).normal(0.0, 0.05, 3000))
    state = _data_state(8, None, "time", norm)
    model.data_state = state  # as a checkpoint carries it: codes of the original scale
    seed = np.random.default_rng(5).normal(0.0, 0.05, 30).astype(np.float32)
    cont = continue_audio(model, state, seed, "val", seconds=25 / 8000)
    level = float(mu_law_decode(torch.tensor(200)))
    assert cont.seed_len == 30 and np.array_equal(cont.audio[:30], seed)
    np.testing.assert_allclose(cont.generated, np.full(25, level), rtol=0, atol=1e-6)


def _trained_checkpoint(tmp_path: Path, *extra: str) -> Path:
    out = tmp_path / "train"
    run(compose_cfg([*SMOKE, "model=lstm_300x1", "model.hidden_sizes=[16]", "data.x_len=400",
                     "~callbacks.sample_generation", *extra], out))
    return out / "checkpoints/last.ckpt"


def test_generate_cli_writes_wav_png_json(tmp_path: Path) -> None:
    ckpt = _trained_checkpoint(tmp_path)
    out = tmp_path / "gen"
    res = run_script("generate.py", f"ckpt_path={ckpt}", "seconds=1.0", "seed.seconds=0.5",
                     "seed.split=val", "deticking=crossfade", f"hydra.run.dir={out}")
    assert res.returncode == 0, res.stderr[-2000:]
    audio, sr = sf.read(out / "generated.wav", dtype="float32")
    assert sr == 16000 and len(audio) == 8000 + 16000
    record = json.loads((out / "generated.json").read_text())
    assert record["settings"]["strategy"] == "stateful"
    for key in ("tick_score", "rms_ratio", "log_spectral_distance_db", "real_time_factor"):
        assert key in record["metrics"]
    assert (out / "generated.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the seed part is the val split audio at the original scale
    from audiolstm.data.datamodule import AudioDataModule
    from audiolstm.models.checkpoints import model_from_checkpoint

    dm = AudioDataModule.from_data_state(model_from_checkpoint(ckpt).data_state)
    dm.setup()
    start = int(round(record["settings"]["seed_start_seconds"] * sr))
    np.testing.assert_allclose(audio[:8000], dm.splits["val"][start : start + 8000], atol=1e-6)


def test_generate_from_a_seed_file_with_overlap(tmp_path: Path) -> None:
    ckpt = _trained_checkpoint(tmp_path, "data.hop=200")
    seed_file = tmp_path / "seed.wav"
    t = np.arange(22050) / 22050
    sf.write(seed_file, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 22050)
    out = tmp_path / "gen"
    res = run_script("generate.py", f"ckpt_path={ckpt}", f"seed.path={seed_file}",
                     "seed.seconds=0.5", "seconds=0.5", "strategy=sliding", "window=4",
                     f"hydra.run.dir={out}")
    assert res.returncode == 0, res.stderr[-2000:]
    record = json.loads((out / "generated.json").read_text())
    assert record["settings"]["deticking"] == "ola"
    assert record["settings"]["seed_source"] == str(seed_file)


@pytest.mark.parametrize("make,msg", [
    (lambda p: None, "no such file"),
    (lambda p: p.write_bytes(b""), "empty file (0 bytes), expected a .ckpt checkpoint"),
    (lambda p: p.write_bytes(b"not a checkpoint at all" * 10), "not a readable PyTorch"),
    (lambda p: torch.save({"weights": torch.zeros(2)}, p), "not an audiolstm checkpoint"),
])
def test_bad_ckpt_path_messages(tmp_path: Path, make, msg: str) -> None:
    p = tmp_path / "model.ckpt"
    make(p)
    res = run_script("generate.py", f"ckpt_path={p}", f"hydra.run.dir={tmp_path / 'g'}")
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and msg in lines[0] and "ckpt_path=" in lines[0], res.stderr
    assert not (tmp_path / "g/generated.wav").exists()


def test_pickled_code_in_checkpoint_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "audiolstm": {"data_state": {}}, "x": Path("/")}, p)
    res = run_script("generate.py", f"ckpt_path={p}", f"hydra.run.dir={tmp_path / 'g'}")
    assert res.returncode == 2 and "not a readable PyTorch checkpoint" in res.stderr


def test_feedback_noise_and_temperature() -> None:
    from audiolstm.generation.strategies import Sampling

    torch.manual_seed(0)
    model = AudioRNN(input_dim=4, hidden_sizes=[8], head="gaussian").eval()
    seed = torch.randn(3, 4)
    greedy = generate_frames(model, seed, 10)
    zero = generate_frames(model, seed, 10, sampling=Sampling(0.0, 0.0))
    assert torch.equal(greedy, zero)

    def noisy(seed_: int) -> torch.Tensor:
        return generate_frames(model, seed, 10, sampling=Sampling(
            0.0, 0.5, torch.Generator().manual_seed(seed_)))

    a, a_again, b = noisy(1), noisy(1), noisy(2)
    assert torch.equal(a, a_again)  # the noise comes from the generator ...
    assert not torch.allclose(a[1:], b[1:])  # ... two generators, two continuations
    assert torch.equal(a[0], greedy[0]) and torch.equal(b[0], greedy[0])  # the first
    assert not torch.allclose(a[1:], greedy[1:])  # frame is not fed back yet

    def hot(seed_: int, temperature: float = 1.0) -> torch.Tensor:
        torch.manual_seed(seed_)  # the heads draw from the global generator
        return generate_frames(model, seed, 10, sampling=Sampling(temperature))

    h3, h3_again, h4 = hot(3), hot(3), hot(4)
    assert torch.equal(h3, h3_again)
    assert not torch.allclose(h3, h4)  # two samplings differ from each other ...
    assert not torch.allclose(h3, greedy)  # ... and from the mean path
    cool = hot(3, 0.1)  # a low temperature stays near the mean path at first
    assert (cool[0] - greedy[0]).abs().max() < (h3[0] - greedy[0]).abs().max()


@pytest.mark.parametrize("head", ["gaussian", "logistic_mixture"])
@pytest.mark.parametrize("strategy", ["stateful", "refeed"])
def test_a_seeded_generator_makes_head_sampling_reproducible(head: str, strategy: str) -> None:
    """Every draw of the heads comes from `Sampling.generator` (issue 20): the same seeded
    generator gives the same frames whatever the global generator's state, another seed
    other frames. Mutant caught (tried): `AudioRNN.next_frame` not passing the generator
    on (the heads then drew from the global generator, reseeded between the runs here)."""
    from audiolstm.generation.strategies import Sampling

    torch.manual_seed(0)
    model = AudioRNN(input_dim=4, hidden_sizes=[8], head=head).eval()
    seed = torch.randn(3, 4)

    def draw(seed_: int, global_seed: int) -> torch.Tensor:
        torch.manual_seed(global_seed)
        return generate_frames(model, seed, 6, strategy, sampling=Sampling(
            1.0, 0.0, torch.Generator().manual_seed(seed_)))

    a = draw(5, global_seed=1)
    assert torch.equal(a, draw(5, global_seed=2))
    assert not torch.allclose(a, draw(6, global_seed=1))


@pytest.mark.parametrize("strategy", ["stateful", "refeed", "sliding"])
def test_streams_side_by_side_equal_one_at_a_time(strategy: str) -> None:
    """(B, S, D) seeds: each stream's frames equal that seed generated alone (the mean
    path, so nothing random), to float32 rounding of a different batch size; the streams
    differ. Mutant caught: a batched loop feeding stream 0's frame back to every stream."""
    torch.manual_seed(0)
    model = AudioRNN(input_dim=5, hidden_sizes=[12, 12], head="gaussian").eval()
    seeds = torch.randn(3, 4, 5)
    batched = generate_frames(model, seeds, 6, strategy, window=3)
    assert batched.shape == (3, 6, 5)
    for b in range(3):
        alone = generate_frames(model, seeds[b], 6, strategy, window=3)
        torch.testing.assert_close(batched[b], alone, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(batched[0], batched[1])


# --------------------------------------------------------------------------- settings that apply


def _checkpoint(model, state: DataState, path: Path) -> Path:
    """A checkpoint as training writes it (weights, hyper-parameters, data state), cheaply."""
    ckpt: dict = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}
    model.data_state = state
    model.on_save_checkpoint(ckpt)
    torch.save(ckpt, path)
    return path


def _sample_model():
    from audiolstm.models.samplernn import SampleRNN

    torch.manual_seed(0)
    return SampleRNN(frame_sizes=[4], hidden=6, mlp_hidden=8, embed_dim=3).eval()


def _generate(tmp_path: Path, ckpt: Path, *overrides: str) -> dict:
    """generate.py's job in-process on a 0.05 s seed file; returns generated.json."""
    from audiolstm.generation.pipeline import run as generate

    seed = tmp_path / "seed.wav"
    if not seed.exists():
        tmp_path.mkdir(parents=True, exist_ok=True)
        sf.write(seed, (0.1 * np.sin(np.arange(800) / 5)).astype(np.float32), 8000)
    out = tmp_path / "gen"
    generate(compose_cfg([f"ckpt_path={ckpt}", f"seed.path={seed}", "seed.seconds=0.05",
                          "seconds=0.01", "device=cpu", "progress=false", *overrides], out,
                         config_name="generate"))
    return json.loads((out / "generated.json").read_text())["settings"]


def _sample_checkpoint(tmp_path: Path) -> Path:
    norm = fit_normalizer("std", np.random.default_rng(4).normal(0.0, 0.05, 3000))
    return _checkpoint(_sample_model(), _data_state(8, None, "time", norm), tmp_path / "s.ckpt")


def test_samplernn_generation_records_no_frame_setting(tmp_path: Path) -> None:
    """Mutant caught: generated.json listing strategy, window, deticking, crossfade,
    feedback_noise (and a `head`) for SampleRNN, as if used (the code the issue reported)."""
    settings = _generate(tmp_path, _sample_checkpoint(tmp_path))
    assert not {"strategy", "window", "deticking", "crossfade", "feedback_noise",
                "head"} & set(settings)
    assert settings["temperature"] == 1.0 and settings["seconds"] == 0.01


@pytest.mark.parametrize("override", ["strategy=sliding", "window=8", "deticking=none",
                                      "crossfade=16", "feedback_noise=0.1"])
def test_samplernn_refuses_frame_settings(tmp_path: Path, override: str) -> None:
    """SampleRNN reads no strategy, window, deticking, crossfade or feedback noise.

    Mutants caught: the SampleRNN path ignoring them (the code the issue reported), and
    `applied_settings` comparing against the wrong "unused" value (e.g. crossfade 64,
    so crossfade=16 would pass); the API (`continue_audio`) refusing them too.
    """
    ckpt = _sample_checkpoint(tmp_path)
    with pytest.raises(UserError, match=rf"^{override} has no effect on SampleRNN .*leave it at"):
        _generate(tmp_path / "refused", ckpt, override)
    assert not (tmp_path / "refused/gen").exists()
    model = _sample_model()
    model.data_state = _data_state(8, None, "time", fit_normalizer("none", np.zeros(4)))
    name = override.split("=")[0]
    value = {"strategy": "refeed", "window": 8, "deticking": "ola", "crossfade": 16,
             "feedback_noise": 0.1}[name]
    kw = {"sampling": Sampling(feedback_noise=value)} if name == "feedback_noise" else {
        name: value}
    with pytest.raises(UserError, match=f"^{name}="):
        continue_audio(model, model.data_state, np.zeros(40, np.float32), "val", 0.001, **kw)


@pytest.mark.parametrize("overrides,expected", [
    ([], {"strategy": "stateful", "deticking": "none", "feedback_noise": 0.0}),
    (["strategy=sliding", "deticking=crossfade", "feedback_noise=0.2"],
     {"strategy": "sliding", "window": 40, "deticking": "crossfade", "crossfade": 64,
      "feedback_noise": 0.2}),
])
def test_frame_generation_records_what_applied(tmp_path: Path, overrides: list[str],
                                               expected: dict) -> None:
    """`window` only with sliding, `crossfade` only with crossfade, defaults resolved.

    Mutant caught: recording the config's `window`/`crossfade` whatever the strategy
    and de-ticking (the code the issue reported: `window: 40` beside `stateful`).
    """
    norm = fit_normalizer("std", np.random.default_rng(2).normal(0.1, 0.2, 5000))
    ckpt = _checkpoint(_constant_model(torch.linspace(-1, 1, 8)),
                       _data_state(8, None, "time", norm), tmp_path / "f.ckpt")
    settings = _generate(tmp_path, ckpt, *overrides)
    got = {k: settings[k] for k in ("strategy", "window", "deticking", "crossfade",
                                    "feedback_noise") if k in settings}
    assert got == expected and settings["head"] == "mse"


@pytest.mark.parametrize("given,result", [
    ({"strategy": "sliding", "window": 3}, {"strategy": "sliding", "window": 3,
                                             "deticking": "none", "feedback_noise": 0.0}),
    ({"deticking": "crossfade", "crossfade": 5},
     {"strategy": "stateful", "deticking": "crossfade", "crossfade": 5, "feedback_noise": 0.0}),
    ({"window": 3}, "window=3 is read by strategy=sliding only (strategy=stateful)"),
    ({"crossfade": 5}, "crossfade=5 is read by deticking=crossfade only (deticking=auto "
                       "means none here)"),
    ({"strategy": "backwards"}, "strategy='backwards' is not one of stateful, refeed, sliding"),
])
def test_frame_settings_apply_or_are_refused(given: dict, result) -> None:
    """Mutant caught: `applied_settings` that drops an unread window or crossfade instead
    of refusing it (the run would look as if it had used them)."""
    from audiolstm.generation.settings import applied_settings

    if isinstance(result, dict):
        assert applied_settings(True, 8, 8, **given) == result
    else:
        with pytest.raises(UserError) as e:
            applied_settings(True, 8, 8, **given)
        assert str(e.value) == result
