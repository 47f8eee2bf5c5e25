"""How the study writes positions and numbers, in figure titles and in its tables."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def clock(seconds: float) -> str:
    """h:mm:ss(.mmm) / m:ss(.mmm): how the seed post and a media player name positions."""
    ms = int(round(seconds * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, frac = divmod(rest, 1000)
    text = f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
    return f"{text}.{frac:03d}" if frac else text


def num(v: Any, digits: int = 4) -> str:
    """A table cell: integers as they are, floats to `digits` significant digits, – for none."""
    if v is None:
        return "–"
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        if not math.isfinite(v):
            return "–"
        return f"{v:.{digits}g}"
    return str(v)


def dbfs(amplitude: float) -> float:
    """20·log10(amplitude) re full scale (1.0); -inf for silence, nan for nan."""
    if not amplitude >= 0:
        return math.nan
    return 20.0 * math.log10(amplitude) if amplitude > 0 else -math.inf
