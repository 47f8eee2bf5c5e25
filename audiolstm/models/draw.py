"""Drawing one level of a discrete distribution: the inverse CDF, and nucleus truncation.

Why one module: SampleRNN's two sample loops (the C kernel and its TorchScript fallback)
and the logistic mixture head all draw levels from discrete distributions, and a seed
should mean the same draws whichever loop runs. So there is one rule, written once for
torch (the kernel, samplernn_kernel.c `draw`, is its C twin):

- **inverse CDF**: one uniform u in (0, 1] per draw; the level drawn is the first whose
  cumulative mass reaches u × the total. The masses need not sum to 1 (the total is read
  off the cumulative sums, so rounding in a normalisation cannot push the target past
  the last level), a level of mass 0 is never drawn (the cumulative sum does not grow
  there, so an earlier level reaches the target first), and u = 1 draws the last level
  of mass > 0.
- **nucleus** (top-p, Holtzman et al. 2020): before the draw, keep the smallest set of
  the most likely levels whose mass reaches `top_p` of the total (the level that crosses
  `top_p` is kept), set the others to 0 and draw from what remains, renormalised (the
  inverse CDF's target is u × the *kept* total). Levels tied with the least likely kept
  level are all kept, so the set never depends on how a sort orders equal masses.
  `top_p` = 1 keeps every level: it is not truncation at all, and the callers skip it,
  so that top_p = 1 is plain sampling draw for draw.

Written for TorchScript (typed, no closures): SampleRNN's fallback loop calls these per
sample.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["check_top_p", "inverse_cdf", "nucleus"]


def check_top_p(top_p: float) -> float:
    """`top_p` as a float in (0, 1]; ValueError otherwise (the config layer names the field)."""
    value = float(top_p)
    if not math.isfinite(value) or not 0.0 < value <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")
    return value


def inverse_cdf(probs: Tensor, u: Tensor) -> Tensor:
    """probs (N, Q) ≥ 0, u (N, 1) in (0, 1] -> (N, 1) int64: the first level whose
    cumulative mass reaches u × total. `probs` is overwritten by its cumulative sums."""
    cdf = probs.cumsum_(1)
    return torch.searchsorted(cdf, u * cdf[:, -1:])


def nucleus(probs: Tensor, top_p: float) -> Tensor:
    """probs (N, Q) ≥ 0 -> a new (N, Q) tensor, every level outside the nucleus set to 0.

    The nucleus: sort the masses in decreasing order; keep the levels before the first
    whose cumulative mass reaches `top_p` × total, and that one; then every level at
    least as likely as the last kept one (ties). `top_p` ≥ 1 returns `probs` unchanged
    (a copy): every level is kept.
    """
    if top_p >= 1.0:
        return probs.clone()
    ordered = torch.sort(probs, dim=1, descending=True)[0]
    cum = ordered.cumsum(1)
    # levels strictly before the crossing one; the crossing one is at that index
    crossing = (cum < top_p * cum[:, -1:]).sum(1, keepdim=True).clamp_(max=probs.shape[1] - 1)
    threshold = ordered.gather(1, crossing)
    return torch.where(probs >= threshold, probs, torch.zeros_like(probs))
