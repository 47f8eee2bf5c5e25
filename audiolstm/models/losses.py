"""Spectral training losses.

Why: a per-sample loss (MSE, or a likelihood of independent samples) says
nothing about whether the predicted frame *sounds* right: the conditional mean of many
plausible waveforms is a quiet, smeared one with the right squared error and the wrong
spectrum. A multi-resolution STFT loss (Parallel WaveGAN, Yamamoto et al. 2020) compares
magnitude spectra at several time/frequency trade-offs, so energy and timbre are penalised
directly and phase (which the mean destroys) is left free.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["DEFAULT_RESOLUTIONS", "multi_resolution_stft_loss", "stft_loss_terms"]

#: (n_fft, hop, win_length) triples; small enough for frames of a few hundred samples.
DEFAULT_RESOLUTIONS: tuple[tuple[int, int, int], ...] = ((64, 16, 64), (128, 32, 128), (256, 64, 256))

#: Magnitude floor: keeps log |S| finite on silence and the sqrt's gradient bounded.
_MAG_FLOOR = 1e-7


def _magnitude(x: Tensor, n_fft: int, hop: int, win_length: int) -> Tensor:
    window = torch.hann_window(win_length, device=x.device, dtype=x.dtype)
    spec = torch.stft(
        x, n_fft=n_fft, hop_length=hop, win_length=win_length, window=window,
        center=True, return_complex=True,
    )
    power = spec.real.square() + spec.imag.square()
    # Floor the power, not the magnitude, so that d sqrt / d power stays finite at 0.
    return power.clamp(min=_MAG_FLOOR**2).sqrt()


def _check_resolution(res: Sequence[int]) -> tuple[int, int, int]:
    if len(res) != 3:
        raise ValueError(f"each resolution must be (n_fft, hop, win_length), got {res!r}")
    n_fft, hop, win = (int(v) for v in res)
    if n_fft <= 0 or hop <= 0 or win <= 0 or win > n_fft:
        raise ValueError(
            f"resolution (n_fft, hop, win_length) = {tuple(res)} needs positive values "
            f"and win_length <= n_fft"
        )
    return n_fft, hop, win


def stft_loss_terms(
    pred: Tensor,
    target: Tensor,
    resolutions: Sequence[Sequence[int]] = DEFAULT_RESOLUTIONS,
) -> tuple[Tensor, Tensor]:
    """(spectral convergence, log-magnitude L1), each averaged over the usable resolutions.

    Separate so that training can log both; `multi_resolution_stft_loss` is their sum.
    See that function for shapes, skipping and errors.
    """
    if pred.shape != target.shape:
        raise ValueError(
            f"pred and target must have the same shape, got {tuple(pred.shape)} "
            f"and {tuple(target.shape)}"
        )
    if pred.dim() == 0:
        raise ValueError("the STFT loss needs signals, got 0-d tensors")
    n = pred.shape[-1]
    usable = [r for r in (_check_resolution(r) for r in resolutions) if r[0] <= n]
    if not usable:
        raise ValueError(
            f"no STFT resolution fits signals of {n} samples: every n_fft in "
            f"{[tuple(r) for r in resolutions]} is larger; use shorter resolutions or longer frames"
        )
    p = pred.reshape(-1, n)
    t = target.reshape(-1, n)
    sc_terms, mag_terms = [], []
    for n_fft, hop, win in usable:
        mp = _magnitude(p, n_fft, hop, win)
        mt = _magnitude(t, n_fft, hop, win)
        sc_terms.append(torch.linalg.vector_norm(mt - mp) / torch.linalg.vector_norm(mt))
        mag_terms.append((mt.log() - mp.log()).abs().mean())
    return torch.stack(sc_terms).mean(), torch.stack(mag_terms).mean()


def multi_resolution_stft_loss(
    pred: Tensor,
    target: Tensor,
    resolutions: Sequence[Sequence[int]] = DEFAULT_RESOLUTIONS,
) -> Tensor:
    """Multi-resolution STFT loss: spectral convergence + mean |log|S_t| − log|S_p||.

    Per resolution `(n_fft, hop, win_length)`: `torch.stft` with a Hann window of
    `win_length`, `center=True` (reflect padding); magnitudes floored at 1e-7. Spectral
    convergence is `‖|S_t| − |S_p|‖_F / ‖|S_t|‖_F` over the whole batch; the log term is a
    mean over all bins. Both are averaged over the resolutions and summed.

    `pred`, `target`: frames `[..., N]` (each frame transformed on its own, leading dims
    flattened) or a 1-D signal `[N]`. Resolutions with `n_fft > N` cannot analyse a frame
    and are **skipped** silently, so one configuration works across `x_len`; if none fits,
    `ValueError`. Differentiable with respect to both arguments; exactly 0 for identical
    inputs. Magnitude-only, hence blind to phase: `-x` and `x` score 0 against each other.
    """
    sc, log_mag = stft_loss_terms(pred, target, resolutions)
    return sc + log_mag
