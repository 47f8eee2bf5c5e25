"""Contiguous train/val/test splits (torch-free, so `explore.py` starts fast)."""

from __future__ import annotations

import numpy as np

SPLITS = ("train", "val", "test")


def split_bounds(n: int, ratios: list[float]) -> dict[str, tuple[int, int]]:
    """Contiguous [start, end) sample ranges of train/val/test for a signal of n samples."""
    ends = np.round(np.cumsum(ratios) * n).astype(int)
    ends[-1] = n
    starts = np.concatenate([[0], ends[:-1]])
    return {name: (int(a), int(b)) for name, a, b in zip(SPLITS, starts, ends, strict=True)}
