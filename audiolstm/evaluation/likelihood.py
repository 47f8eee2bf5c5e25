"""The canonical likelihood: one grid, one number, for every model and baseline.

`bits_per_sample` (`val/…`, `test/…`, summary.json's `test_bits_per_sample`, the report's
column) always means −log2 P per sample of the **original-scale audio quantised to 256
linear levels over [−1, 1]** (`GRID_NAME`, "linear256[-1,1]": 8-bit linear audio, the
convention SampleRNN published its 1.08–2.0 bits/sample on). This module is the grid's one
home and holds every conversion onto it.

**The grid.** Bin k (0 ≤ k < 256) is `[−1 + 2k/256, −1 + 2(k+1)/256)`; a sample x falls in
bin `floor((x + 1)·128)`. The two edge bins are open: bin 0 is `(−∞, −1 + 1/128)` and bin
255 is `[1 − 1/128, +∞)`, so audio beyond ±1 counts as clipped into them (what an 8-bit
quantiser does) and the 256 probabilities of any model sum to exactly 1. A model's score
for a sample is its probability mass over the bin the sample's original-scale value falls
in; nothing is approximated by "density × width".

**How each kind of model gets onto it** (the normalisers are affine, `x = y·scale + shift`
with scale > 0, so a CDF difference in normalised units at the mapped edges *is* the
original-scale one; the Jacobian is accounted for exactly):

- a continuous density (the Gaussian head; MSE predictors as "Gaussian-equivalent"
  models): CDF differences at the bin edges, `gaussian_log_prob`;
- a distribution over another grid (SampleRNN's mu-law or linear levels, the logistic
  mixture's `mixture_bins` cells): each own-grid cell's mass is spread uniformly over the
  original-scale interval the cell covers, then integrated over the canonical bins
  (`spread_matrix` + `discrete_log_prob`, or `linear_pieces` for a linear grid over the
  same [−1, 1]). Spreading uniformly is the piecewise-linear interpolation of the own-grid
  CDF; it can only lose information, so these numbers approach the truth from above.
  An own-grid *edge* cell is open (a quantiser clips), so it has no finite width: its
  mass is spread over the part of the clipped range [−1, 1] it covers (all of it goes to
  the canonical edge bin when that part is empty);
- MSE frame models and the zero, persistence and ridge baselines: a Gaussian centred on
  their prediction whose variance is their mean squared error *fitted on data the score
  is not computed on* (see `audiolstm.models.frame_rnn` for which), "Gaussian-equivalent".
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from audiolstm.errors import positive_int

__all__ = [
    "GRID_NAME",
    "LEVELS",
    "bin_index",
    "bits",
    "discrete_log_prob",
    "edges",
    "gaussian_log_prob",
    "linear_pieces",
    "log_normal_interval",
    "spread_matrix",
]

#: Levels of the canonical grid and its name (summary.json's `bits_grid`, the report).
LEVELS = 256
GRID_NAME = "linear256[-1,1]"
LN2 = math.log(2.0)
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_SQRT1_2 = math.sqrt(0.5)


def bits(nats: float | Tensor) -> float | Tensor:
    """Nats to bits."""
    return nats / LN2


def edges() -> np.ndarray:
    """The 257 bin edges in float64: −∞, −1 + 2/256, …, 1 − 2/256, +∞ (edge bins open)."""
    e = -1.0 + 2.0 * np.arange(LEVELS + 1, dtype=np.float64) / LEVELS
    e[0], e[-1] = -np.inf, np.inf
    return e


def bin_index(x: Tensor) -> Tensor:
    """Canonical bin (int64 in [0, 255]) of original-scale samples; beyond ±1 is clipped."""
    x = torch.as_tensor(x)
    if torch.is_floating_point(x) and not bool(torch.isfinite(x).all()):
        raise ValueError("bin_index: samples must be finite")
    k = torch.floor((x.to(torch.float64) + 1.0) * (LEVELS / 2.0))
    return k.clamp(0, LEVELS - 1).long()


# ----------------------------------------------------------------------------- Gaussian


def _log1mexp(d: Tensor) -> Tensor:
    """log(1 − eᵈ) for d ≤ 0, accurate everywhere (Mächler 2012)."""
    return torch.where(d > -LN2, torch.log(-torch.expm1(d)), torch.log1p(-torch.exp(d)))


def log_normal_interval(a: Tensor, b: Tensor) -> Tensor:
    """log(Φ(b) − Φ(a)) for standard-normal bounds a < b (±∞ allowed), stable everywhere.

    The interval is first reflected into the lower half (Φ(b) − Φ(a) = Φ(−a) − Φ(−b)), so
    the difference is of two numbers below ½, never 1 − 1 in the upper tail. Most intervals
    then take the difference of CDFs directly (float64: relative error ≈ 1e-16 / P). The
    rest are recomputed from `log_ndtr`, exact far into the tails: probabilities below
    1e-280 (a sample tens of standard deviations out) and intervals narrower than 1e-7
    standard deviations, which use the midpoint density × width (exact to O(width²)).
    """
    a, b = torch.broadcast_tensors(a.to(torch.float64), b.to(torch.float64))
    flip = (a + b) > 0  # nan (both infinite) counts as no flip
    lo = torch.where(flip, -b, a)
    hi = torch.where(flip, -a, b)
    # Φ(z) = erfc(−z/√2)/2: exact relative precision in the lower tail (torch's `ndtr`
    # goes through erf there and loses digits: 2 % at z = −8)
    p = 0.5 * (torch.erfc(hi * -_SQRT1_2) - torch.erfc(lo * -_SQRT1_2))
    out = torch.log(p)
    width = hi - lo
    slow = ~(p > 1e-280) | (width < 1e-7)
    if bool(slow.any()):
        lo_s, hi_s, width_s = lo[slow], hi[slow], width[slow]
        log_hi = torch.special.log_ndtr(hi_s)
        exact = log_hi + _log1mexp(torch.clamp(torch.special.log_ndtr(lo_s) - log_hi, max=0.0))
        narrow = torch.isfinite(width_s) & (width_s < 1e-7)
        mid = torch.where(narrow, 0.5 * (hi_s + lo_s), torch.zeros_like(hi_s))
        midpoint = -_HALF_LOG_2PI - 0.5 * mid.square() + torch.log(
            torch.where(narrow, width_s, torch.ones_like(width_s)))
        out[slow] = torch.where(narrow, midpoint, exact)
    return out


def gaussian_log_prob(x: Tensor, mean: Tensor, std: Tensor | float) -> Tensor:
    """log P(canonical bin of x) under N(mean, std²); all three in original-scale units.

    The CDF difference at the bin's edges (open at ±1), in float64. A Gaussian predicted in
    normalised units `y = (x − shift)/scale` maps to N(mean·scale + shift, (std·scale)²):
    convert the parameters, not the edges, and pass them here.
    """
    x = torch.as_tensor(x, dtype=torch.float64)
    mean = torch.as_tensor(mean, dtype=torch.float64)
    if isinstance(std, Tensor) and std.numel() > 1:
        std = std.to(torch.float64)
        if not bool(((std > 0) & torch.isfinite(std)).all()):
            raise ValueError("gaussian_log_prob: std must be finite and > 0")
    else:
        std = float(std)
        if not (math.isfinite(std) and std > 0):
            raise ValueError(f"gaussian_log_prob: std must be finite and > 0, got {std}")
    k = torch.floor((x + 1.0) * (LEVELS / 2.0)).clamp_(0, LEVELS - 1)  # bin_index, as float
    inv = 1.0 / std
    a = (k * (2.0 / LEVELS) - 1.0 - mean) * inv
    b = a + (2.0 / LEVELS) * inv
    a = torch.where(k == 0, -math.inf, a)
    b = torch.where(k == LEVELS - 1, math.inf, b)
    return log_normal_interval(a, b)


# ------------------------------------------------------------------------ other grids


def spread_matrix(own_edges: np.ndarray) -> np.ndarray:
    """`W[j, k]`: the share of own-grid cell j's mass that canonical bin k receives.

    `own_edges` are the Q + 1 increasing original-scale edges of a Q-cell grid (cell j is
    `[e_j, e_{j+1})`), the first −∞ and/or the last +∞ where the quantiser clips. Each
    cell's mass is spread uniformly over the interval it covers: a finite cell over itself,
    an open edge cell over the part of [−1, 1] it covers (`[−1, e_1)` or `[e_{Q−1}, 1]`),
    or, when that part is empty (its finite edge at or beyond ±1), entirely onto the open
    canonical edge bin it lies in. Rows sum to 1 (float64); a model's canonical bin
    probabilities are `P_own @ W`.
    """
    e = np.asarray(own_edges, dtype=np.float64)
    if e.ndim != 1 or e.size < 3 or not np.all(np.diff(e) > 0):
        raise ValueError("own_edges must be at least 3 strictly increasing values")
    if np.isnan(e).any() or np.isinf(e[1:-1]).any():
        raise ValueError("only the first and last own edge may be infinite")
    canon = edges()
    lo, hi = e[:-1].copy(), e[1:].copy()
    w = np.zeros((e.size - 1, LEVELS), dtype=np.float64)
    for j in range(e.size - 1):
        a, b = lo[j], hi[j]
        if np.isneginf(a):
            if b <= -1.0:
                w[j, 0] = 1.0
                continue
            a = -1.0
        if np.isposinf(b):
            if a >= 1.0:
                w[j, -1] = 1.0
                continue
            b = 1.0
        overlap = np.minimum(b, canon[1:]) - np.maximum(a, canon[:-1])
        w[j] = np.clip(overlap, 0.0, None) / (b - a)
    return w / w.sum(axis=1, keepdims=True)  # exact already; removes the last ulp


def discrete_log_prob(log_p_own: Tensor, x: Tensor, log_spread: Tensor) -> Tensor:
    """log P(canonical bin of x) from own-grid log-probabilities `[..., Q]`.

    `log_spread` is `log(spread_matrix(own_edges))` as a `[Q, 256]` tensor (−∞ where a cell
    gives a bin nothing); `x` the original-scale samples `[...]`. The sum
    `Σ_j P_own(j) W[j, k]` is taken as a log-sum-exp of positive terms: no cancellation.
    """
    k = bin_index(x).to(log_p_own.device)
    weights = log_spread.to(device=log_p_own.device, dtype=log_p_own.dtype).T[k]  # [..., Q]
    return torch.logsumexp(log_p_own + weights, dim=-1)


def linear_pieces(cells: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each canonical bin as pieces of a linear grid of `cells` cells over the same [−1, 1].

    For a grid whose cell j covers `[−1 + 2j/M, −1 + 2(j+1)/M)` (its edge cells open, like
    the canonical ones), canonical bin k covers own-grid coordinates `[kM/256, (k+1)M/256)`:
    a part of one cell, whole cells, a part of one more. Returns `(start, stop, fraction)`,
    each `[256, 3]`: piece p of bin k is own cells `start … stop − 1` (own *edges* `start`
    and `stop`, edge 0 at −∞ and edge M at +∞) with weight `fraction` (1 for whole cells;
    0 for an unused piece). Then `P(bin k) = Σ_p fraction · P_own(start_p ≤ cell < stop_p)`,
    the uniform spreading of `spread_matrix` without listing every cell (M may be 65536).
    """
    m = positive_int(cells, "cells", minimum=2, error=ValueError)
    start = np.zeros((LEVELS, 3), dtype=np.int64)
    stop = np.ones((LEVELS, 3), dtype=np.int64)
    frac = np.zeros((LEVELS, 3), dtype=np.float64)
    for k in range(LEVELS):
        # bin k spans own-cell coordinates u = kM/256 to v = (k+1)M/256 (numerators kept
        # as integers: exact); a fraction of a cell is a length in cells
        u_num, v_num = k * m, (k + 1) * m
        ju, jv = u_num // LEVELS, v_num // LEVELS  # cells holding u and v
        pieces: list[tuple[int, int, float]] = []
        if ju == jv or (ju + 1 == jv and v_num % LEVELS == 0):  # inside one cell
            pieces.append((ju, ju + 1, (v_num - u_num) / LEVELS))
        else:
            if u_num % LEVELS:  # partial first cell
                pieces.append((ju, ju + 1, ((ju + 1) * LEVELS - u_num) / LEVELS))
                first_full = ju + 1
            else:
                first_full = ju
            if jv > first_full:
                pieces.append((first_full, jv, 1.0))
            if v_num % LEVELS:  # partial last cell
                pieces.append((jv, jv + 1, (v_num - jv * LEVELS) / LEVELS))
        for p, (s, t, f) in enumerate(pieces):
            start[k, p], stop[k, p], frac[k, p] = s, t, f
    return start, stop, frac
