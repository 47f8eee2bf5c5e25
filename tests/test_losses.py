"""Multi-resolution STFT loss: exact values on scaled signals, skipping, gradients."""

from __future__ import annotations

import math

import pytest
import torch

from audiolstm.models.losses import DEFAULT_RESOLUTIONS, multi_resolution_stft_loss, stft_loss_terms


def _noise(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_zero_on_identical_positive_otherwise() -> None:
    x = _noise(4, 3, 300)
    assert multi_resolution_stft_loss(x, x.clone()).item() == 0.0
    y = _noise(4, 3, 300, seed=1)
    assert multi_resolution_stft_loss(y, x).item() > 0.1
    # A small perturbation gives a small but positive loss.
    small = multi_resolution_stft_loss(x + 1e-3 * y, x).item()
    assert 0.0 < small < 0.05


def test_scaled_signal_has_known_value() -> None:
    """|S(2x)| = 2|S(x)|: spectral convergence is exactly 1 and the log term exactly ln 2."""
    x = _noise(2, 256)
    sc, log_mag = stft_loss_terms(2.0 * x, x)
    assert sc.item() == pytest.approx(1.0, abs=1e-9)
    assert log_mag.item() == pytest.approx(math.log(2.0), abs=1e-9)
    assert multi_resolution_stft_loss(2.0 * x, x).item() == pytest.approx(1 + math.log(2.0))
    # Magnitude-only: a sign flip is invisible (documented).
    assert multi_resolution_stft_loss(-x, x).item() == pytest.approx(0.0, abs=1e-12)


def test_matches_single_resolution_reference() -> None:
    """One resolution against a hand-written torch.stft reference (Hann, center=True)."""
    n_fft, hop, win = 64, 16, 48
    p, t = _noise(3, 200, seed=2), _noise(3, 200, seed=3)

    def mag(x: torch.Tensor) -> torch.Tensor:
        s = torch.stft(x, n_fft, hop, win, torch.hann_window(win, dtype=x.dtype),
                       center=True, return_complex=True)
        return s.abs().clamp(min=1e-7)

    mp, mt = mag(p), mag(t)
    expected = (mt - mp).norm() / mt.norm() + (mt.log() - mp.log()).abs().mean()
    got = multi_resolution_stft_loss(p, t, resolutions=((n_fft, hop, win),))
    assert got.item() == pytest.approx(expected.item(), rel=1e-12)


def test_skips_resolutions_longer_than_the_frame() -> None:
    p, t = _noise(5, 100, seed=4), _noise(5, 100, seed=5)
    only_64 = multi_resolution_stft_loss(p, t, resolutions=((64, 16, 64),))
    assert multi_resolution_stft_loss(p, t).item() == pytest.approx(only_64.item(), rel=1e-12)
    with pytest.raises(ValueError, match="no STFT resolution fits signals of 32 samples"):
        multi_resolution_stft_loss(_noise(2, 32), _noise(2, 32, seed=1))


def test_shapes_frames_and_1d_signal() -> None:
    p, t = _noise(2, 3, 256, seed=6), _noise(2, 3, 256, seed=7)
    flat = multi_resolution_stft_loss(p.reshape(6, 256), t.reshape(6, 256))
    assert multi_resolution_stft_loss(p, t).item() == pytest.approx(flat.item(), rel=1e-12)
    one = multi_resolution_stft_loss(p[0, 0], t[0, 0])
    assert one.dim() == 0 and one.item() > 0
    with pytest.raises(ValueError, match="same shape"):
        multi_resolution_stft_loss(p, t[..., :128])
    with pytest.raises(ValueError, match="win_length <= n_fft"):
        multi_resolution_stft_loss(p, t, resolutions=((64, 16, 128),))


def test_gradient_flows_and_silence_is_finite() -> None:
    t = _noise(4, 256, seed=8).float()
    p = _noise(4, 256, seed=9).float().requires_grad_(True)
    loss = multi_resolution_stft_loss(p, t)
    loss.backward()
    assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    # A silent prediction (the collapsed model) and a silent target stay finite.
    z = torch.zeros(4, 256, requires_grad=True)
    loss = multi_resolution_stft_loss(z, t) + multi_resolution_stft_loss(t, torch.zeros(4, 256))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z.grad).all()
    # A gradient step towards the target lowers the loss.
    p2 = (p - 0.5 * p.grad / p.grad.norm()).detach()
    assert multi_resolution_stft_loss(p2, t) < multi_resolution_stft_loss(p.detach(), t)


def test_default_resolutions_are_the_documented_ones() -> None:
    assert DEFAULT_RESOLUTIONS == ((64, 16, 64), (128, 32, 128), (256, 64, 256))
