"""Distribution heads against closed forms, torch.distributions and direct float64 sums."""

from __future__ import annotations

import math

import pytest
import torch

from audiolstm.models.heads import GaussianHead, LogisticMixtureHead, bits_per_sample

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
    centres = head.bin_centre(torch.arange(bins), torch.float64)
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


# ----------------------------------------------------------------------------- units


def test_bits_per_sample_exact_numbers() -> None:
    assert bits_per_sample(LN2) == pytest.approx(1.0)
    assert bits_per_sample(math.log(256.0)) == pytest.approx(8.0)
    # Continuous: cell width 2/256 → a density of 1 (nll 0) is log2(128) = 7 bits.
    assert bits_per_sample(0.0, bins=256) == pytest.approx(7.0)
    # Data normalised by 0.5: one cell is 2/(256·0.5) = 1/64 model units → 6 bits.
    assert bits_per_sample(0.0, bins=256, scale=0.5) == pytest.approx(6.0)
    assert bits_per_sample(math.log(2 / 256), bins=256) == pytest.approx(0.0, abs=1e-12)
    t = bits_per_sample(torch.tensor([LN2, 2 * LN2]))
    assert isinstance(t, torch.Tensor)
    torch.testing.assert_close(t, torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="bins"):
        bits_per_sample(1.0, scale=2.0)
    with pytest.raises(ValueError, match="scale"):
        bits_per_sample(1.0, bins=256, scale=0.0)


def test_bits_per_sample_continuous_matches_discretised_gaussian() -> None:
    """For σ ≫ cell width, density × width is the cell probability: both give the same bits.

    Within 2σ the midpoint rule is good to ≈3e-4 bits, far below the 5.6e-3 bits that an
    off-by-one-level width convention (2/255 instead of 2/256) would add.
    """
    bins, mu, sigma = 256, 0.05, 0.2
    head = GaussianHead(hidden=2, dim=1)
    normal = torch.distributions.Normal(torch.tensor(mu, dtype=torch.float64),
                                        torch.tensor(sigma, dtype=torch.float64))
    centres = -1.0 + (2.0 * torch.arange(bins, dtype=torch.float64) + 1.0) / bins
    centres = centres[(centres - mu).abs() < 2 * sigma]
    y = centres.view(1, -1, 1)
    params = _gauss_params(torch.full_like(y, mu), torch.full_like(y, math.log(sigma)))
    cont = bits_per_sample(head.nll(params, y, reduction="none"), bins=bins)
    p_cell = normal.cdf(centres + 1 / bins) - normal.cdf(centres - 1 / bins)
    torch.testing.assert_close(cont.view(-1), -torch.log2(p_cell), rtol=0, atol=5e-4)
