"""Distribution heads against closed forms, torch.distributions and direct float64 sums."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import DataLoader

from audiolstm.data.normalize import Normalizer
from audiolstm.data.state import DataState
from audiolstm.data.windows import identity_collate
from audiolstm.evaluation.likelihood import bin_index
from audiolstm.models.frame_rnn import AudioRNN
from audiolstm.models.heads import GaussianHead, LogisticMixtureHead
from tests.conftest import FramesDataset, quiet_trainer

LN2 = math.log(2.0)
HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def _gauss_params(mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    return torch.cat([mean, log_scale], dim=-1)


def _mix_params(logits, means, log_scales, dtype=torch.float64) -> torch.Tensor:
    """[B, T, D, 3K] from three [B, T, D, K] tensors (or nested lists)."""
    parts = [torch.as_tensor(p, dtype=dtype) for p in (logits, means, log_scales)]
    return torch.cat(parts, dim=-1)


def _sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _naive_log_p64(c: float, mu: float, log_s: float, bins: int) -> float:
    """log(σ(a) − σ(b)) in float64; above the mean it mirrors (P(c; μ) = P(−c; −μ)) so that
    the subtraction is of two small numbers, never the catastrophic 1 − 1 of the upper tail."""
    if c > mu:
        c, mu = -c, -mu
    s = math.exp(log_s)
    return math.log(_sig((c + 1 / bins - mu) / s) - _sig((c - 1 / bins - mu) / s))


# ----------------------------------------------------------------------------- Gaussian


def test_gaussian_nll_hand_made() -> None:
    head = GaussianHead(hidden=4, dim=1)
    params = _gauss_params(torch.zeros(1, 1, 1), torch.zeros(1, 1, 1))
    nll = head.nll(params, torch.ones(1, 1, 1))
    assert nll.item() == pytest.approx(HALF_LOG_2PI + 0.5, abs=1e-7)
    # σ = 2, y − μ = 2: log 2 + ½ ln 2π + ½.
    params = _gauss_params(torch.ones(1, 1, 1), torch.full((1, 1, 1), LN2))
    nll = head.nll(params, torch.full((1, 1, 1), 3.0))
    assert nll.item() == pytest.approx(LN2 + HALF_LOG_2PI + 0.5, abs=1e-6)


def test_gaussian_nll_matches_torch_normal() -> None:
    g = torch.Generator().manual_seed(0)
    head = GaussianHead(hidden=4, dim=6)
    mean = torch.randn(3, 5, 6, generator=g)
    log_scale = torch.randn(3, 5, 6, generator=g) * 0.5
    y = torch.randn(3, 5, 6, generator=g)
    params = _gauss_params(mean, log_scale)
    ref = -torch.distributions.Normal(mean, log_scale.exp()).log_prob(y)
    torch.testing.assert_close(head.nll(params, y, reduction="none"), ref)
    torch.testing.assert_close(head.nll(params, y), ref.mean())


def test_gaussian_forward_shape_clamp_and_gradient() -> None:
    head = GaussianHead(hidden=8, dim=5, min_log_scale=-3.0)
    with torch.no_grad():
        head.proj.bias[5:] = -100.0  # log_scale half
    h = torch.randn(2, 4, 8)
    params = head(h)
    assert params.shape == (2, 4, 10)
    assert torch.all(params[..., 5:] == -3.0)
    loss = head.nll(params, torch.randn(2, 4, 5))
    loss.backward()
    assert head.proj.weight.grad is not None and torch.isfinite(head.proj.weight.grad).all()
    assert head.proj.weight.grad[:5].abs().sum() > 0  # the mean rows learn


def test_gaussian_temperature_zero_is_mean_and_sampling_statistics() -> None:
    head = GaussianHead(hidden=2, dim=1)
    n = 200_000
    params = _gauss_params(torch.full((1, n, 1), 0.3), torch.full((1, n, 1), math.log(0.5)))
    assert torch.equal(head.sample(params, 0.0), head.mean(params))
    g = torch.Generator().manual_seed(1)
    x = head.sample(params, 1.0, generator=g)
    # Standard errors: 0.5/sqrt(n) ≈ 1.1e-3 for the mean, ≈ 8e-4 for the std.
    assert x.mean().item() == pytest.approx(0.3, abs=6e-3)
    assert x.std().item() == pytest.approx(0.5, abs=5e-3)
    x = head.sample(params, 0.5, generator=g)
    assert x.std().item() == pytest.approx(0.25, abs=3e-3)
    with pytest.raises(ValueError, match="temperature"):
        head.sample(params, -1.0)


def test_gaussian_shape_errors() -> None:
    head = GaussianHead(hidden=2, dim=3)
    with pytest.raises(ValueError, match="2\\*dim"):
        head.nll(torch.zeros(1, 1, 4), torch.zeros(1, 1, 2))
    with pytest.raises(ValueError, match="targets shape"):
        head.nll(torch.zeros(1, 1, 6), torch.zeros(1, 2, 3))


# ------------------------------------------------------------------- logistic mixture


def test_mixture_single_component_matches_direct_bin_probability() -> None:
    bins = 256
    head = LogisticMixtureHead(hidden=2, dim=1, components=1, bins=bins)
    mu, log_s = 0.1, math.log(0.05)
    s = math.exp(log_s)
    params = _mix_params([[[[0.0]]]], [[[[mu]]]], [[[[log_s]]]])
    for k in (60, 128, 140):  # interior cells near the mode: the textbook formula is exact
        c = -1.0 + (2 * k + 1) / bins
        p = _sig((c + 1 / bins - mu) / s) - _sig((c - 1 / bins - mu) / s)
        nll = head.nll(params, torch.tensor([[[c]]], dtype=torch.float64))
        assert nll.item() == pytest.approx(-math.log(p), rel=1e-12)
        # Anywhere inside the cell scores the cell's probability.
        inside = torch.tensor([[[c + 0.9 / bins]]], dtype=torch.float64)
        assert head.nll(params, inside).item() == pytest.approx(-math.log(p), rel=1e-12)
    for k in (1, 37, 200, 254):  # tails: against the cancellation-free float64 reference
        c = -1.0 + (2 * k + 1) / bins
        nll = head.nll(params, torch.tensor([[[c]]], dtype=torch.float64))
        assert nll.item() == pytest.approx(-_naive_log_p64(c, mu, log_s, bins), rel=1e-12)


def test_mixture_edge_cells_use_cdf_tails() -> None:
    bins = 256
    head = LogisticMixtureHead(hidden=2, dim=1, components=1, bins=bins)
    mu, log_s = 0.2, math.log(0.3)
    s = math.exp(log_s)
    params = _mix_params([[[[0.0]]]], [[[[mu]]]], [[[[log_s]]]])
    lower = head.nll(params, torch.tensor([[[-1.0]]], dtype=torch.float64)).item()
    assert lower == pytest.approx(-math.log(_sig((-1 + 2 / bins - mu) / s)), rel=1e-10)
    upper = head.nll(params, torch.tensor([[[1.0]]], dtype=torch.float64)).item()
    assert upper == pytest.approx(-math.log(1 - _sig((1 - 2 / bins - mu) / s)), rel=1e-10)
    # Out-of-range targets are clamped into the edge cells.
    assert head.nll(params, torch.tensor([[[7.0]]], dtype=torch.float64)).item() == upper
    assert head.bin_index(torch.tensor([-1.0, 1.0, -3.0, 3.0])).tolist() == [0, 255, 0, 255]


def test_mixture_probabilities_sum_to_one_over_all_bins() -> None:
    bins, k = 16, 3
    head = LogisticMixtureHead(hidden=2, dim=2, components=k, bins=bins)
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 1, 2, k, generator=g, dtype=torch.float64)
    means = torch.randn(1, 1, 2, k, generator=g, dtype=torch.float64) * 0.7
    log_scales = torch.randn(1, 1, 2, k, generator=g, dtype=torch.float64) - 1.5
    params = _mix_params(logits, means, log_scales).expand(bins, 1, 2, 3 * k)
    centres = _centres(bins)
    y = centres[:, None, None].expand(bins, 1, 2)
    probs = head.log_prob(params, y).exp()
    torch.testing.assert_close(probs.sum(0), torch.ones(1, 2, dtype=torch.float64),
                               rtol=0, atol=1e-12)
    assert torch.all(head.nll(params, y, reduction="none") >= 0)


def test_mixture_weights_components() -> None:
    """Two components, probability of one cell = π₁ P₁ + π₂ P₂."""
    bins = 64
    head = LogisticMixtureHead(hidden=2, dim=1, components=2, bins=bins)
    logits, means, log_s = [0.0, math.log(3.0)], [-0.4, 0.5], [math.log(0.1), math.log(0.2)]
    params = _mix_params([[[logits]]], [[[means]]], [[[log_s]]])
    c = -1.0 + (2 * 40 + 1) / bins
    p = sum(
        w * (_sig((c + 1 / bins - m) / math.exp(ls)) - _sig((c - 1 / bins - m) / math.exp(ls)))
        for w, m, ls in zip((0.25, 0.75), means, log_s, strict=True)
    )
    nll = head.nll(params, torch.tensor([[[c]]], dtype=torch.float64))
    assert nll.item() == pytest.approx(-math.log(p), rel=1e-10)


@pytest.mark.parametrize(
    ("y", "mu", "log_s"),
    [
        (-0.5, 0.0, -7.0),  # far lower tail: float32 σ differences underflow to 0
        (0.5, 0.0, -7.0),  # far upper tail: float32 σ differences cancel to 0
        (0.3, 0.1, 0.0),  # a cell ~1e-5 of the scale: the naive difference loses digits
        (0.01, 0.0, -7.0),  # near the mode of a sharp component
    ],
)
def test_mixture_16bit_float32_is_accurate_in_hard_regimes(y, mu, log_s) -> None:
    bins = 65536
    head = LogisticMixtureHead(hidden=2, dim=1, components=1, bins=bins)
    k = int(head.bin_index(torch.tensor(y)))
    c = -1.0 + (2 * k + 1) / bins
    ref = _naive_log_p64(c, mu, log_s, bins)
    params = _mix_params([[[[0.0]]]], [[[[mu]]]], [[[[log_s]]]], dtype=torch.float32)
    params.requires_grad_(True)
    log_p = head.log_prob(params, torch.tensor([[[y]]]))
    assert log_p.item() == pytest.approx(ref, rel=2e-6)
    (-log_p.sum()).backward()
    assert torch.isfinite(params.grad).all()


def test_mixture_forward_shape_clamp_and_gradient() -> None:
    head = LogisticMixtureHead(hidden=8, dim=5, components=4, bins=256)
    with torch.no_grad():
        head.proj.bias.view(5, 12)[:, 8:] = -100.0  # log_scales
    h = torch.randn(2, 3, 8)
    params = head(h)
    assert params.shape == (2, 3, 5, 12)
    assert torch.all(params[..., 8:] == -7.0)
    loss = head.nll(params, torch.rand(2, 3, 5) * 2 - 1)
    loss.backward()
    assert torch.isfinite(head.proj.weight.grad).all()
    assert head.proj.weight.grad.abs().sum() > 0


def test_mixture_mean_and_argmax_path() -> None:
    head = LogisticMixtureHead(hidden=2, dim=1, components=2, bins=256)
    params = _mix_params([[[[0.0, math.log(3.0)]]]], [[[[-0.4, 0.8]]]], [[[[-2.0, -2.0]]]])
    assert head.mean(params).item() == pytest.approx(0.25 * -0.4 + 0.75 * 0.8)
    assert head.sample(params, 0.0).item() == pytest.approx(0.8)  # most likely component
    clamped = _mix_params([[[[0.0, 0.0]]]], [[[[2.0, 3.0]]]], [[[[0.0, 0.0]]]])
    assert head.mean(clamped).item() == 1.0
    # Temperatures → 0 converge to the argmax path.
    g = torch.Generator().manual_seed(0)
    many = params.expand(1, 1000, 1, 6)
    tiny = head.sample(many, 1e-6, generator=g)
    torch.testing.assert_close(tiny, head.sample(many, 0.0), rtol=0, atol=1e-5)


def test_mixture_sampling_statistics() -> None:
    head = LogisticMixtureHead(hidden=2, dim=1, components=2, bins=65536)
    n = 200_000
    # Component 0 dominates (π ≈ 0.88); its logistic has std s·π/√3.
    params = _mix_params([[[[2.0, 0.0]]]], [[[[0.1, -0.6]]]], [[[[math.log(0.05)] * 2]]])
    params = params.expand(1, n, 1, 6)
    x = head.sample(params, 1.0, generator=torch.Generator().manual_seed(3))
    pi0 = 1 / (1 + math.exp(-2.0))
    assert x.mean().item() == pytest.approx(pi0 * 0.1 + (1 - pi0) * -0.6, abs=5e-3)
    near0 = (x - 0.1).abs() < 0.35
    assert near0.double().mean().item() == pytest.approx(pi0, abs=5e-3)
    assert x[near0].std().item() == pytest.approx(0.05 * math.pi / math.sqrt(3), rel=0.03)


def _naive_nucleus_probs(probs: list[float], top_p: float) -> list[float]:
    """Most likely first, keep while the kept mass is below top_p (the crossing one kept),
    zero the rest, renormalise: a plain loop in float64."""
    kept, run = set(), 0.0
    for k in sorted(range(len(probs)), key=lambda k: -probs[k]):
        if run >= top_p:
            break
        kept.add(k)
        run += probs[k]
    return [p / run if k in kept else 0.0 for k, p in enumerate(probs)]


@pytest.mark.parametrize("temperature", [1.0, 0.8])
def test_mixture_nucleus_follows_the_truncated_renormalised_cell_distribution(
        temperature: float) -> None:
    """top_p = 0.7 on a mixture of 8 cells: the cells drawn follow the nucleus of the
    tempered mixture's cell probabilities (computed here by `_log_cells`, the log-interval
    formula, not the sampler's CDF differences), renormalised; and inside the kept cells
    the values follow the tempered mixture restricted to them (a histogram of 64 finer
    cells against the same truncation of a 64-cell head). 40,000 draws: one standard
    error <= 0.0025 for any cell. Mutants caught (tried): excluding the cell that crosses
    top_p (its renormalised mass is ~0.3), not renormalising (the draw's target u × the
    untruncated total: the excess lands past the nucleus), and drawing the component by
    its weight alone instead of its weight × its mass in the cell (the fine histogram)."""
    coarse, fine, n, top_p = 8, 64, 40_000, 0.7
    t = temperature
    raw = ([[[[0.5, 0.0]]]], [[[[-0.1, 0.3]]]], [[[[math.log(0.12), math.log(0.06)]]]])
    tempered = _mix_params([[[[0.5 / t, 0.0]]]], raw[1],
                           [[[[math.log(0.12 * t), math.log(0.06 * t)]]]])[0, 0, 0]

    def exact(bins: int) -> list[float]:
        head = LogisticMixtureHead(hidden=2, dim=1, components=2, bins=bins)
        k = torch.arange(bins)
        return head._log_cells(tempered, k, k + 1, None).exp().tolist()

    expected = _naive_nucleus_probs(exact(coarse), top_p)
    head = LogisticMixtureHead(hidden=2, dim=1, components=2, bins=coarse)
    params = _mix_params(*raw, dtype=torch.float32).expand(1, n, 1, 6)
    x = head.sample(params, t, generator=torch.Generator().manual_seed(5), top_p=top_p)
    assert x.shape == (1, n, 1) and x.dtype == torch.float32
    cells = head.bin_index(x).reshape(-1)
    freq = torch.bincount(cells, minlength=coarse).double() / n
    assert (freq - torch.tensor(expected)).abs().max().item() < 0.012
    assert all(f == 0 for f, e in zip(freq.tolist(), expected, strict=True) if e == 0)
    # inside the kept cells: the finer cells, truncated to the kept coarse cells
    per = fine // coarse
    fine_p = [p if expected[k // per] > 0 else 0.0 for k, p in enumerate(exact(fine))]
    fine_p = torch.tensor(fine_p) / sum(fine_p)
    fine_head = LogisticMixtureHead(hidden=2, dim=1, components=2, bins=fine)
    fine_freq = torch.bincount(fine_head.bin_index(x).reshape(-1), minlength=fine).double() / n
    assert (fine_freq - fine_p).abs().max().item() < 0.008
    assert x.unique().numel() > n // 2  # continuous values, not cell centres


def test_mixture_top_p_one_is_plain_sampling() -> None:
    """top_p = 1 draws exactly what plain sampling draws from the same generator."""
    head = LogisticMixtureHead(hidden=3, dim=4, components=3, bins=256)
    params = head(torch.randn(2, 5, 3, generator=torch.Generator().manual_seed(0)))
    a = head.sample(params, 0.9, torch.Generator().manual_seed(1))
    b = head.sample(params, 0.9, torch.Generator().manual_seed(1), top_p=1.0)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="top_p"):
        head.sample(params, 0.9, top_p=1.5)


def _centres(bins: int, lo: float = -1.0, hi: float = 1.0) -> torch.Tensor:
    """The centre of each of `bins` equal cells tiling [lo, hi] (float64), by hand."""
    return lo + (hi - lo) * (torch.arange(bins, dtype=torch.float64) + 0.5) / bins


# ------------------------------------------------------------- grids and canonical bits


def test_mixture_grid_follows_the_normaliser() -> None:
    """Under norm=std (shift 0.1, scale 0.05) the original [-1, 1] is [-22, 18]: the cells
    tile it, the edge cells are "clipped at ±1", sampling and the mean stay inside."""
    head = LogisticMixtureHead(hidden=2, dim=1, components=1, bins=256)
    lo, hi = (-1 - 0.1) / 0.05, (1 - 0.1) / 0.05
    head.set_grid(lo, hi)
    x = torch.tensor([-1.0, -1 + 2 / 256, 0.0, 0.5, 1 - 1e-9, 3.0], dtype=torch.float64)
    y = (x - 0.1) / 0.05
    assert torch.equal(head.bin_index(y), bin_index(x))
    params = _mix_params([[[[0.0]]]], [[[[hi + 5.0]]]], [[[[0.0]]]]).expand(1, 5000, 1, 3)
    draws = head.sample(params, 1.0, generator=torch.Generator().manual_seed(0))
    assert draws.max().item() == hi and draws.min().item() >= lo
    assert head.mean(params).max().item() == hi
    centres = _centres(256, lo, hi)
    assert centres[0].item() == pytest.approx(lo + (hi - lo) / 512)
    one = _mix_params([[[[0.0]]]], [[[[2.0]]]], [[[[0.5]]]]).expand(256, 1, 1, 3)
    total = head.log_prob(one, centres[:, None, None]).exp().sum().item()
    assert total == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError, match="grid"):
        head.set_grid(1.0, 1.0)


@pytest.mark.parametrize("bins", [128, 256, 512, 100])
def test_mixture_canonical_bits_spread_own_cells_uniformly(bins: int) -> None:
    head = LogisticMixtureHead(hidden=2, dim=1, components=2, bins=bins)
    params = _mix_params([[[[0.3, -0.2]]]], [[[[0.1, -0.5]]]], [[[[-2.0, -1.0]]]])
    own = head.log_prob(params.expand(bins, 1, 1, 6),
                        _centres(bins)[:, None, None])
    p_own = own.exp().reshape(-1).numpy()
    canon = head.canonical_log_prob(params.expand(256, 1, 1, 6),
                                    torch.arange(256)[:, None, None]).exp().reshape(-1).numpy()
    # by hand: canonical bin k is [k M/256, (k+1) M/256) in own-cell units
    expected = []
    for k in range(256):
        u, v = k * bins / 256, (k + 1) * bins / 256
        expected.append(sum(p_own[j] * max(0.0, min(v, j + 1) - max(u, j))
                            for j in range(int(u), min(bins, int(math.ceil(v))))))
    torch.testing.assert_close(torch.tensor(canon), torch.tensor(expected), rtol=1e-9, atol=1e-15)
    assert canon.sum() == pytest.approx(1.0, abs=1e-12)


def _phi(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


def test_gaussian_head_bits_against_the_closed_form() -> None:
    """An AudioRNN whose Gaussian head outputs a fixed (mean, σ) in normalised units, on
    norm=std data: its val/bits_per_sample is −log2(Φ(b) − Φ(a)) per sample, with the
    canonical edges of each sample's bin taken to normalised units by hand."""
    shift, scale = 0.02, 0.2
    mu_n, sigma_n = 0.5, 0.3  # original scale: N(0.12, 0.06²)
    model = AudioRNN(input_dim=4, hidden_sizes=[3], head="gaussian")
    with torch.no_grad():
        model.head.proj.weight.zero_()
        model.head.proj.bias.copy_(torch.tensor([mu_n] * 4 + [math.log(sigma_n)] * 4))
    model.data_state = DataState(
        data={"x_len": 4}, repr={"kind": "time", "standardize": False},
        normalizer_state=Normalizer("std", shift, scale, mean=shift).state_dict())
    g = torch.Generator().manual_seed(0)
    x = 0.12 + 0.06 * torch.randn(3, 6, 4, generator=g, dtype=torch.float64)
    x[0, 1, 0], x[0, 1, 1] = 1.4, -1.2  # beyond ±1: the open edge bins
    frames = ((x - shift) / scale).float()
    loader = DataLoader(FramesDataset(frames), batch_size=2, collate_fn=identity_collate)
    res = quiet_trainer().validate(model, loader, verbose=False)[0]
    total = 0.0
    for v in frames[:, 1:].double().reshape(-1).tolist():
        orig = v * scale + shift
        k = min(255, max(0, math.floor((orig + 1) * 128)))
        lo = -math.inf if k == 0 else -1 + k / 128
        hi = math.inf if k == 255 else -1 + (k + 1) / 128
        a, b = ((lo - shift) / scale - mu_n) / sigma_n, ((hi - shift) / scale - mu_n) / sigma_n
        if a + b > 0:  # upper half: reflect, so the difference is of two small numbers
            a, b = -b, -a
        total -= math.log2(_phi(b) - _phi(a))
    assert res["val/bits_per_sample"] == pytest.approx(total / frames[:, 1:].numel(), rel=1e-6)
