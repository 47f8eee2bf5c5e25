"""A corpus, file by file: duration, level, silence and the split each file is in.

With several files (`data=folder`, a manifest) the study first describes each file:
its place in the corpus signal, duration, RMS, peak, the share of its duration that is
silent, and how many of its samples each split holds; then the usual study runs on the
whole. `file_table` takes the corpus signal, its file boundaries and the split
assignment as sample ranges, so where those come from (today the corpus'
`meta["boundaries"]` and contiguous splits of the concatenation) is the caller's choice.
One streamed pass per file.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from audiolstm.analysis.explore.formatting import dbfs
from audiolstm.analysis.explore.statistics import CHUNK, SplitRanges, chunks
from audiolstm.data.splits import SPLITS

SILENT_SHARE_DEFINITION = (
    "share of the file's duration in silence_window_ms windows (aligned to the file's "
    "start, the last one possibly shorter) whose RMS is at most the silence threshold "
    "(silence_threshold x the corpus's overall RMS, as for the lead-in)"
)


@dataclass(frozen=True)
class FileStats:
    """One file of a corpus: samples [start, stop) of the corpus signal."""

    index: int
    name: str
    start: int
    stop: int
    sample_rate: int
    rms: float
    peak: float
    silence_share: float
    split_samples: dict[str, int] = field(default_factory=dict)

    @property
    def samples(self) -> int:
        return self.stop - self.start

    @property
    def duration_seconds(self) -> float:
        return self.samples / self.sample_rate

    @property
    def split(self) -> str:
        """The split holding the file ("train"), or those sharing it ("train+val+test")."""
        held = [name for name, k in self.split_samples.items() if k > 0]
        return "+".join(held) if held else "none"

    def as_dict(self) -> dict[str, Any]:
        sr = self.sample_rate
        return {
            "index": self.index, "name": self.name, "start_sample": self.start,
            "end_sample": self.stop, "start_seconds": self.start / sr,
            "duration_seconds": self.duration_seconds, "rms": self.rms,
            "rms_dbfs": dbfs(self.rms), "peak": self.peak, "peak_dbfs": dbfs(self.peak),
            "silence_share": self.silence_share, "split": self.split,
            "split_seconds": {name: k / sr for name, k in self.split_samples.items()},
        }


def file_ranges(
    boundaries: Sequence[tuple[str, int]], num_samples: int
) -> list[tuple[str, int, int]]:
    """(name, start, stop) of each file from (name, start) pairs: a file ends where the next starts."""
    starts = [int(s) for _, s in boundaries]
    stops = starts[1:] + [int(num_samples)]
    return [(str(name), a, b) for (name, _), a, b in zip(boundaries, starts, stops, strict=True)]


def overlap(a: int, b: int, ranges: Sequence[tuple[int, int]]) -> int:
    """Samples of [a, b) inside the union of (disjoint) `ranges`."""
    return sum(max(0, min(b, hi) - max(a, lo)) for lo, hi in ranges)


def level_and_silence(
    x: np.ndarray, threshold: float, window: int, chunk: int = CHUNK
) -> tuple[float, float, float]:
    """(RMS, peak, silent share) of `x` in one streamed pass (see SILENT_SHARE_DEFINITION).

    The windows' sums of squares give both the RMS and the silent windows; nan for an
    empty `x` (and a nan share for a nan threshold).
    """
    n = int(x.shape[0])
    if n == 0:
        return math.nan, math.nan, math.nan
    sumsq, peak, silent = 0.0, 0.0, 0
    step = window * max(1, chunk // window)
    for _, c in chunks(x, step):
        c64 = np.asarray(c, dtype=np.float64)
        peak = max(peak, float(np.max(np.abs(c64))))
        full = (c64.shape[0] // window) * window
        if full:
            blocks = c64[:full].reshape(-1, window)
            ss = np.einsum("ij,ij->i", blocks, blocks)
            sumsq += float(ss.sum())
            silent += window * int(np.count_nonzero(np.sqrt(ss / window) <= threshold))
        if full < c64.shape[0]:  # the file's last, partial window
            tail = c64[full:]
            ss_tail = float(tail @ tail)
            sumsq += ss_tail
            if math.sqrt(ss_tail / tail.shape[0]) <= threshold:
                silent += tail.shape[0]
    share = math.nan if math.isnan(threshold) else silent / n
    return math.sqrt(sumsq / n), peak, share


def file_table(
    signal: np.ndarray,
    sample_rate: int,
    boundaries: Sequence[tuple[str, int]],
    ranges: SplitRanges,
    threshold: float,
    window: int,
) -> list[FileStats]:
    """Each file's duration, RMS, peak, silence share and samples per split.

    `boundaries` are (file name, first sample in `signal`) in order; `ranges` each
    split's [start, stop) sample ranges in `signal` (the split assignment, whatever
    made it); `threshold` and `window` the silence threshold (amplitude) and window
    (samples).
    """
    rows: list[FileStats] = []
    for i, (name, a, b) in enumerate(file_ranges(boundaries, int(signal.shape[0])), start=1):
        rms, peak, share = level_and_silence(signal[a:b], threshold, window)
        rows.append(FileStats(
            index=i, name=name, start=a, stop=b, sample_rate=int(sample_rate), rms=rms,
            peak=peak, silence_share=share,
            split_samples={s: overlap(a, b, ranges.get(s, ())) for s in SPLITS}))
    return rows
