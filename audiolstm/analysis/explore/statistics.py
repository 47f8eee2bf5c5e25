"""Streamed statistics of a (memory-mapped) signal: per split, merged, and normalised.

Every split is read once: `split_statistics` gathers its count, mean, sum of squared
deviations, min and max (`Moments`, mergeable, exact in float64) in one streamed pass;
the whole file's statistics are the merge of the splits', and `normalization_table`
fits every scheme from them through `data.normalize.from_statistics` (the rules training
uses) without reading the data again. `rms_envelope` is the streamed windowed RMS the
periods, fades and figures are built on.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from audiolstm.data.normalize import from_statistics
from audiolstm.data.splits import SPLITS, split_bounds
from audiolstm.errors import UserError

#: Samples processed at once by every streamed pass (~2 MB as float64 temporaries).
CHUNK = 1 << 18

#: Each split's [start, stop) sample ranges in the signal, in order.
SplitRanges = Mapping[str, Sequence[tuple[int, int]]]


def chunks(x: np.ndarray, step: int) -> Iterator[tuple[int, np.ndarray]]:
    """(offset, view) of consecutive `step`-sample pieces of `x`: nothing is copied."""
    for a in range(0, x.shape[0], step):
        yield a, x[a:a + step]


def contiguous_ranges(num_samples: int, ratios: Sequence[float]) -> dict[str, list[tuple[int, int]]]:
    """One contiguous range per split (`data.splits` over the whole signal)."""
    return {name: [ab] for name, ab in split_bounds(num_samples, list(ratios)).items()}


def rms_envelope(x: np.ndarray, window: int, chunk: int = CHUNK) -> np.ndarray:
    """RMS of consecutive `window`-sample windows (float64; a partial last window dropped).

    Value i describes samples [i*window, (i+1)*window). Streams in chunks of whole
    windows, so memory is the output plus one chunk whatever the signal's length.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    n_win = int(x.shape[0]) // window
    out = np.empty(n_win, dtype=np.float64)
    step = window * max(1, chunk // window)
    for a, c in chunks(x[: n_win * window], step):
        blocks = np.asarray(c, dtype=np.float64).reshape(-1, window)
        i = a // window
        out[i:i + blocks.shape[0]] = np.sqrt(np.einsum("ij,ij->i", blocks, blocks) / window)
    return out


@dataclass(frozen=True)
class Moments:
    """Streamable summary of a signal: mergeable (Chan et al.), exact in float64."""

    n: int = 0
    mean: float = math.nan
    m2: float = 0.0  # sum of squared deviations from the mean
    min: float = math.nan
    max: float = math.nan

    def merge(self, other: Moments) -> Moments:
        if other.n == 0:
            return self
        if self.n == 0:
            return other
        n = self.n + other.n
        delta = other.mean - self.mean
        return Moments(
            n=n,
            mean=self.mean + delta * other.n / n,
            m2=self.m2 + other.m2 + delta * delta * self.n * other.n / n,
            min=min(self.min, other.min),
            max=max(self.max, other.max),
        )

    @property
    def std(self) -> float:
        """Population standard deviation (what the `std` normaliser divides by)."""
        return math.sqrt(self.m2 / self.n) if self.n else math.nan

    @property
    def rms(self) -> float:
        return math.sqrt(self.mean**2 + self.m2 / self.n) if self.n else math.nan

    @property
    def peak(self) -> float:
        """Largest |sample|."""
        return max(abs(self.min), abs(self.max)) if self.n else math.nan

    def as_dict(self, sample_rate: int) -> dict[str, float]:
        return {"samples": self.n, "duration_seconds": self.n / sample_rate, "mean": self.mean,
                "std": self.std, "min": self.min, "max": self.max, "rms": self.rms}


def chunk_moments(c: np.ndarray) -> Moments:
    """Exact moments of one in-memory chunk (two-pass inside it, float64)."""
    c64 = np.asarray(c, dtype=np.float64)
    if c64.shape[0] == 0:
        return Moments()
    mean = float(c64.mean())
    d = c64 - mean
    return Moments(int(c64.shape[0]), mean, float(d @ d), float(c64.min()), float(c64.max()))


def moments(x: np.ndarray, chunk: int = CHUNK) -> Moments:
    """Mean, std, min, max of `x` in one streamed pass (per-chunk two-pass, then merged)."""
    acc = Moments()
    for _, c in chunks(x, chunk):
        acc = acc.merge(chunk_moments(c))
    return acc


def split_statistics(signal: np.ndarray, ranges: SplitRanges) -> dict[str, Moments]:
    """`Moments` of each split, in SPLITS order: one streamed pass over its ranges."""
    stats: dict[str, Moments] = {}
    for name in SPLITS:
        acc = Moments()
        for a, b in ranges.get(name, ()):
            acc = acc.merge(moments(signal[a:b]))
        stats[name] = acc
    return stats


def merged(stats: Mapping[str, Moments]) -> Moments:
    """The statistics of the union (the whole file when the splits cover it)."""
    whole = Moments()
    for st in stats.values():
        whole = whole.merge(st)
    return whole


def normalization_table(
    scheme_names: Sequence[str], stats: Mapping[str, Moments]
) -> dict[str, object]:
    """For each scheme fitted on train: where each split's min/max/mean/std land.

    The schemes' rules are `data.normalize.from_statistics` (what training's
    `fit_normalizer` applies), fed the statistics already gathered: no pass over the
    data. Each split's statistics then go through the affine (x - shift) / scale of that
    split. A scheme that cannot be fitted (a silent training split) gets its error.
    """
    train = stats["train"]
    extremes = {name: (st.min, st.max) if st.n else None
                for name, st in stats.items() if name != "train"}
    table: dict[str, object] = {}
    for scheme in scheme_names:
        try:
            nz = from_statistics(scheme, train.n, train.mean, train.min, train.max, train.std,
                                 extremes)
        except UserError as e:
            table[scheme] = {"error": str(e)}
            continue
        per_split = {}
        for name, st in stats.items():
            shift, scale = nz.affine(name)
            per_split[name] = {"shift": shift, "scale": scale,
                               "min": (st.min - shift) / scale, "max": (st.max - shift) / scale,
                               "mean": (st.mean - shift) / scale, "std": st.std / scale}
        table[scheme] = {"shift": nz.shift, "scale": nz.scale, "splits": per_split}
    return table
