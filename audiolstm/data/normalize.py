"""Normalisation schemes, fitted on the training split only, with exact inverses.

Every scheme is an affine map ``y = (x - shift) / scale`` whose inverse
``x = y * scale + shift`` writes generated audio back at the original scale:

- ``minmax`` (seed 000): shift = train mean, scale = max |train - mean| -> train in [-1, 1].
- ``minmax_union`` (seed 000's val/test rule): as ``minmax`` for train; val and test
  each use max(train scale, max |split - train mean|), the wider of the two, so their
  extremes are not clipped. The only scheme that reads val/test (their extremes only):
  it uses split statistics, so val/test losses are not on exactly the train scale.
- ``minmax01`` (seed 001): shift = train min, scale = train max - train min -> [0, 1].
- ``std`` (seed 001, Alex's): shift = train mean, scale = train std (population).
- ``none``: identity.

Statistics are computed in float64 by streaming chunks, so a memory-mapped 3-hour
signal is never copied whole. A split may be one array or a list of pieces (a corpus
split: one piece per file), whose statistics are those of their concatenation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from audiolstm.errors import UserError

SCHEMES = ("minmax", "minmax_union", "minmax01", "std", "none")
CHUNK = 1 << 20

ArrayT = TypeVar("ArrayT")


@dataclass
class Normalizer:
    """A fitted affine normalisation; `split_scales` only used by ``minmax_union``."""

    scheme: str
    shift: float
    scale: float
    split_scales: dict[str, float] = field(default_factory=dict)
    #: the training split's mean at the original scale: what the zero baseline predicts
    #: (0 after normalisation only for the mean-centred schemes). None: not recorded.
    mean: float | None = None

    def train_mean(self, split: str = "train") -> float:
        """The training mean in `split`'s normalised units (the zero baseline's prediction)."""
        shift, scale = self.affine(split)
        mean = self.mean
        if mean is None:  # an older checkpoint: the mean-centred schemes shift by it
            mean = shift if self.scheme in ("minmax", "minmax_union", "std") else 0.0
        return (mean - shift) / scale

    def affine(self, split: str = "train") -> tuple[float, float]:
        """(shift, scale) for `split`: minmax_union gives val/test their own scale."""
        if self.scheme == "minmax_union" and split != "train":
            return self.shift, self.split_scales.get(split, self.scale)
        return self.shift, self.scale

    def transform(self, x: ArrayT, split: str = "train") -> ArrayT:
        """(x - shift) / scale; keeps float32 arrays and tensors float32."""
        shift, scale = self.affine(split)
        return (x - shift) / scale  # type: ignore[operator]

    def inverse(self, y: ArrayT, split: str = "train") -> ArrayT:
        """y * scale + shift: back to the original sample scale."""
        shift, scale = self.affine(split)
        return y * scale + shift  # type: ignore[operator]

    def state_dict(self) -> dict[str, Any]:
        """JSON-safe: plain str and floats, stored in checkpoints."""
        return {
            "scheme": self.scheme,
            "shift": float(self.shift),
            "scale": float(self.scale),
            "split_scales": {str(k): float(v) for k, v in self.split_scales.items()},
            "mean": None if self.mean is None else float(self.mean),
        }

    @classmethod
    def from_state_dict(cls, d: Mapping[str, Any]) -> Normalizer:
        return cls(
            scheme=str(d["scheme"]),
            shift=float(d["shift"]),
            scale=float(d["scale"]),
            split_scales={str(k): float(v) for k, v in dict(d.get("split_scales", {})).items()},
            mean=None if d.get("mean") is None else float(d["mean"]),
        )


def _pieces(x: Any) -> list[np.ndarray]:
    """A split as a list of 1-D pieces (views: nothing is copied)."""
    if isinstance(x, (list, tuple)):
        return [np.asarray(p).reshape(-1) for p in x]
    return [np.asarray(x).reshape(-1)]


def _length(x: list[np.ndarray]) -> int:
    return sum(p.shape[0] for p in x)


def _chunks(x: list[np.ndarray], chunk: int):
    for piece in x:
        for i in range(0, piece.shape[0], chunk):
            yield piece[i : i + chunk]


def _moments(x: list[np.ndarray], chunk: int) -> tuple[float, float, float]:
    """(mean, min, max) in one streamed pass, mean accumulated in float64."""
    total, lo, hi = 0.0, np.inf, -np.inf
    for c in _chunks(x, chunk):
        if c.shape[0] == 0:
            continue
        total += float(np.sum(c, dtype=np.float64))
        lo = min(lo, float(c.min()))
        hi = max(hi, float(c.max()))
    return total / _length(x), lo, hi


def _std(x: list[np.ndarray], mean: float, chunk: int) -> float:
    """Population std, two-pass (no E[x^2] - E[x]^2 cancellation)."""
    ss = 0.0
    for c in _chunks(x, chunk):
        d = c.astype(np.float64) - mean
        ss += float(np.dot(d, d))
    return float(np.sqrt(ss / _length(x)))


def from_statistics(
    scheme: str,
    n: int,
    mean: float,
    lo: float,
    hi: float,
    std: float = float("nan"),
    others: Mapping[str, tuple[float, float] | None] | None = None,
) -> Normalizer:
    """The schemes' rules, applied to statistics already gathered (no pass over the data).

    `n`, `mean`, `lo`, `hi` (and `std`, read by ``std`` only) describe the training
    split; `others` maps val/test to their (min, max), None for an empty split, read by
    ``minmax_union`` only. `fit_normalizer` streams the statistics and calls this;
    `explore` passes the ones its single pass per split gathered.
    """
    if scheme not in SCHEMES:
        raise UserError(f"norm.scheme={scheme!r} is unknown; choose one of {', '.join(SCHEMES)}")
    if n == 0:
        raise UserError(f"norm.scheme={scheme}: the training split is empty")
    if scheme == "none":
        return Normalizer(scheme, 0.0, 1.0, {}, float(mean) if np.isfinite(mean) else None)
    if not np.isfinite(mean):
        raise UserError(f"norm.scheme={scheme}: the training split has NaN or infinite samples")
    split_scales: dict[str, float] = {}
    if scheme == "minmax01":
        shift, scale = lo, hi - lo
    elif scheme == "std":
        shift, scale = mean, std
    else:  # minmax, minmax_union: |x - mean| is largest at the min or the max
        shift, scale = mean, max(hi - mean, mean - lo)
        if scheme == "minmax_union":
            for name, extremes in (others or {}).items():
                own = 0.0 if extremes is None else max(extremes[1] - mean, mean - extremes[0])
                split_scales[name] = max(scale, own)
    if not scale > 0:
        raise UserError(
            f"norm.scheme={scheme}: training split is silent (zero variance): nothing to learn; "
            "check the audio file and the split ratios"
        )
    return Normalizer(scheme, float(shift), float(scale), split_scales, float(mean))


def fit_normalizer(
    scheme: str,
    train: np.ndarray | list[np.ndarray],
    others: Mapping[str, np.ndarray | list[np.ndarray]] | None = None,
    chunk: int = CHUNK,
) -> Normalizer:
    """Fit `scheme` on `train`; `others` (val/test) are read only by ``minmax_union``.

    Each split is an array or a list of pieces (statistics of their concatenation).
    """
    train = _pieces(train)
    n = _length(train)
    if scheme not in SCHEMES or n == 0:  # its one-line error
        return from_statistics(scheme, n, 0.0, 0.0, 0.0)
    mean, lo, hi = _moments(train, chunk)
    std = _std(train, mean, chunk) if scheme == "std" and np.isfinite(mean) else float("nan")
    extremes: dict[str, tuple[float, float] | None] = {}
    if scheme == "minmax_union":
        for name, x in (others or {}).items():
            pieces = _pieces(x)
            extremes[name] = _moments(pieces, chunk)[1:] if _length(pieces) else None
    return from_statistics(scheme, n, mean, lo, hi, std, extremes)
