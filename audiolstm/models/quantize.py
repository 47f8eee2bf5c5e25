"""Sample quantisation: mu-law (WaveNet, SampleRNN) and linear, with exact inverses.

Why: a softmax or a discretised likelihood over sample *levels* needs integer
classes, and a likelihood in bits is only comparable with the literature at a stated
number of levels (SampleRNN: 256). Mu-law spends the levels where audio lives (near 0).

Grids (`q_levels = Q`):

- **mu-law** (μ = Q − 1): companded `f = sign(x)·ln(1 + μ|x|)/ln(1 + μ)` is rounded to
  the Q points `-1 + 2q/μ`, so both endpoints ±1 are levels (the WaveNet convention).
- **linear**: `[-1, 1]` is cut into Q cells of width `2/Q`; level q decodes to the cell
  centre `-1 + (2q+1)/Q` (a mid-rise quantiser; the same grid as `LogisticMixtureHead`).

Both round trips are exact on the grid: `encode(decode(q)) == q` for every q, so
`decode(encode(decode(q))) == decode(q)`. Inputs outside `[-1, 1]` are clamped (a
quantiser saturates); non-finite inputs raise. Arithmetic is float64 internally.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from audiolstm.errors import positive_int

__all__ = [
    "cell_edges",
    "dequantize",
    "linear_decode",
    "linear_encode",
    "mu_law_decode",
    "mu_law_encode",
    "quantize",
]

Kind = Literal["mu_law", "linear"]
KINDS: tuple[str, ...] = ("mu_law", "linear")


def _check_levels(q_levels: int) -> int:
    return positive_int(q_levels, "q_levels", minimum=2, error=ValueError)


def _prepare(x: Tensor) -> Tensor:
    x = torch.as_tensor(x)
    if not torch.is_floating_point(x):
        x = x.to(torch.float64)
    if not bool(torch.isfinite(x).all()):
        raise ValueError("cannot quantise non-finite samples (NaN or inf)")
    return x.to(torch.float64).clamp(-1.0, 1.0)


def _check_codes(q: Tensor, q_levels: int) -> Tensor:
    q = torch.as_tensor(q)
    if torch.is_floating_point(q) or q.is_complex():
        raise TypeError(f"quantised codes must be integers, got dtype {q.dtype}")
    if q.numel() and (int(q.min()) < 0 or int(q.max()) >= q_levels):
        raise ValueError(f"codes must lie in [0, {q_levels - 1}], got [{int(q.min())}, {int(q.max())}]")
    return q.to(torch.float64)


def _out_dtype(dtype: torch.dtype | None) -> torch.dtype:
    return dtype or torch.get_default_dtype()


def mu_law_encode(x: Tensor, q_levels: int = 256) -> Tensor:
    """Samples in `[-1, 1]` → mu-law codes `[0, q_levels-1]` (int64); monotone non-decreasing."""
    mu = _check_levels(q_levels) - 1
    x = _prepare(x)
    f = torch.sign(x) * torch.log1p(mu * x.abs()) / math.log1p(mu)
    return torch.floor((f + 1.0) * (mu / 2.0) + 0.5).clamp(0, mu).long()


def mu_law_decode(q: Tensor, q_levels: int = 256, dtype: torch.dtype | None = None) -> Tensor:
    """Mu-law codes → samples: level q expands `f = -1 + 2q/μ`; endpoints decode to ±1."""
    mu = _check_levels(q_levels) - 1
    f = _check_codes(q, q_levels) * (2.0 / mu) - 1.0
    x = torch.sign(f) * torch.expm1(f.abs() * math.log1p(mu)) / mu
    # expm1(ln 256)/255 is 1 − 3e-16 in float64: pin the endpoints to exactly ±1.
    x = torch.where(f.abs() == 1.0, torch.sign(f), x)
    return x.to(_out_dtype(dtype))


def linear_encode(x: Tensor, q_levels: int = 256) -> Tensor:
    """Samples in `[-1, 1]` → the index of the `2/Q`-wide cell holding them (x = 1 → Q−1)."""
    q_levels = _check_levels(q_levels)
    x = _prepare(x)
    return torch.floor((x + 1.0) * (q_levels / 2.0)).clamp(0, q_levels - 1).long()


def linear_decode(q: Tensor, q_levels: int = 256, dtype: torch.dtype | None = None) -> Tensor:
    """Linear codes → cell centres `-1 + (2q+1)/Q`."""
    q_levels = _check_levels(q_levels)
    x = -1.0 + (2.0 * _check_codes(q, q_levels) + 1.0) / q_levels
    return x.to(_out_dtype(dtype))


def cell_edges(q_levels: int = 256, kind: Kind = "mu_law") -> np.ndarray:
    """The Q + 1 sample-domain edges of the Q cells the encoder maps to each code (float64).

    Code q is given to `[e_q, e_{q+1})`: mu-law rounds the companded value, so code q covers
    companded `[-1 + (2q-1)/μ, -1 + (2q+1)/μ)`, expanded; linear code q covers
    `[-1 + 2q/Q, -1 + 2(q+1)/Q)`. The encoders clamp their input to [-1, 1], so the first
    and last cells are open: `e_0 = -inf`, `e_Q = +inf`. What the canonical likelihood
    (`audiolstm.evaluation.likelihood.spread_matrix`) spreads each code's mass over.
    """
    q_levels = _check_levels(q_levels)
    if kind == "mu_law":
        mu = q_levels - 1
        f = -1.0 + (2.0 * np.arange(mu, dtype=np.float64) + 1.0) / mu
        inner = np.sign(f) * np.expm1(np.abs(f) * math.log1p(mu)) / mu
    elif kind == "linear":
        inner = -1.0 + 2.0 * np.arange(1, q_levels, dtype=np.float64) / q_levels
    else:
        raise ValueError(f"kind must be 'mu_law' or 'linear', got {kind!r}")
    return np.concatenate([[-np.inf], inner, [np.inf]])


def quantize(x: Tensor, q_levels: int = 256, kind: Kind = "mu_law") -> Tensor:
    """Dispatch to `mu_law_encode` or `linear_encode` by name (for configs)."""
    if kind == "mu_law":
        return mu_law_encode(x, q_levels)
    if kind == "linear":
        return linear_encode(x, q_levels)
    raise ValueError(f"kind must be 'mu_law' or 'linear', got {kind!r}")


def dequantize(
    q: Tensor, q_levels: int = 256, kind: Kind = "mu_law", dtype: torch.dtype | None = None
) -> Tensor:
    """Inverse of `quantize` on the grid (decoded values in `dtype`, default float)."""
    if kind == "mu_law":
        return mu_law_decode(q, q_levels, dtype)
    if kind == "linear":
        return linear_decode(q, q_levels, dtype)
    raise ValueError(f"kind must be 'mu_law' or 'linear', got {kind!r}")
