"""Train/val/test splits of a corpus (torch-free, so `explore.py` starts fast).

A corpus is files laid end to end in one signal. A split is a list of `Piece`s, each a
contiguous range of ONE file, so no example can span two files:

- `split_by=time` (default): every file is cut contiguously by the ratios (its first
  80 % to train, the next 10 % to val, the last 10 % to test); each file contributes to
  every split.
- `split_by=file`: whole files go to one split, either listed (a manifest's `split`
  column, `data.file_splits`) or assigned deterministically from `data.split_seed`
  so the splits' durations follow the ratios (held-out tracks).

`SplitPlan.file_table()` is the per-file record (name, path, corpus range, duration,
split, the pieces and examples per split) that the run directory, the checkpoint's
`DataState.meta["corpus"]` and `explore.py` share.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SPLITS = ("train", "val", "test")
SPLIT_BY = ("time", "file")


def split_bounds(n: int, ratios: list[float]) -> dict[str, tuple[int, int]]:
    """Contiguous [start, end) sample ranges of train/val/test for a signal of n samples."""
    ends = np.round(np.cumsum(ratios) * n).astype(int)
    ends[-1] = n
    starts = np.concatenate([[0], ends[:-1]])
    return {name: (int(a), int(b)) for name, a, b in zip(SPLITS, starts, ends, strict=True)}


@dataclass(frozen=True)
class Piece:
    """A contiguous range [start, end) of the corpus signal inside file number `file`."""

    file: int
    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class FileRow:
    """One file of the corpus table (issue 12 item 7): what and where it is, and its split.

    `start`/`end` are sample positions in the corpus signal (the memory-mapped cache);
    `split` is the one split a file belongs to under `split_by=file`, or "all" under
    `split_by=time`; `ranges` gives, per split, the corpus range of this file's piece
    and `examples` how many examples it yields there (0: too short, reported).
    `silence` (only with silence-aware data, `audiolstm.data.silence`): per split, its
    silent seconds and, where the split leaves silent examples out, how many and how
    many seconds; `examples` then counts the examples kept.
    """

    index: int
    name: str
    path: str
    start: int
    end: int
    duration_seconds: float
    split: str
    ranges: dict[str, tuple[int, int]]
    examples: dict[str, int]
    rate: int = 0
    channels: int = 0
    silence: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {"index": self.index, "name": self.name, "path": self.path, "start": self.start,
               "end": self.end, "duration_seconds": self.duration_seconds, "split": self.split,
               "ranges": {k: list(v) for k, v in self.ranges.items()},
               "examples": dict(self.examples), "rate": self.rate, "channels": self.channels}
        if self.silence:
            out["silence"] = {k: dict(v) for k, v in self.silence.items()}
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FileRow:
        return cls(int(d["index"]), str(d["name"]), str(d["path"]), int(d["start"]),
                   int(d["end"]), float(d["duration_seconds"]), str(d["split"]),
                   {k: (int(v[0]), int(v[1])) for k, v in dict(d["ranges"]).items()},
                   {k: int(v) for k, v in dict(d["examples"]).items()},
                   int(d.get("rate", 0)), int(d.get("channels", 0)),
                   {k: dict(v) for k, v in dict(d.get("silence") or {}).items()})


@dataclass(frozen=True)
class SplitPlan:
    """Which pieces of which files make each split.

    `files` are `(name, path, start, end, rate, channels)` of the corpus files;
    `pieces[split]` the split's pieces in corpus order.
    """

    split_by: str
    ratios: tuple[float, ...]
    files: tuple[tuple[str, str, int, int, int, int], ...]
    pieces: Mapping[str, tuple[Piece, ...]]
    seed: int | None = None
    listed: bool = False
    skipped: tuple[Mapping[str, str], ...] = field(default_factory=tuple)

    def samples(self, split: str) -> int:
        return sum(p.length for p in self.pieces[split])

    def file_count(self, split: str) -> int:
        return len({p.file for p in self.pieces[split] if p.length > 0})

    def file_table(self, sample_rate: int,
                   count: Callable[[str, int], int] | None = None) -> list[FileRow]:
        """One row per file; `count(split, n_samples)` gives examples per piece."""
        rows = []
        for i, (name, path, start, end, rate, channels) in enumerate(self.files):
            ranges = {s: (p.start, p.end) for s in SPLITS for p in self.pieces[s]
                      if p.file == i and p.length > 0}
            examples = {s: (count(s, b - a) if count else 0) for s, (a, b) in ranges.items()}
            split = next(iter(ranges)) if len(ranges) == 1 else "all"
            rows.append(FileRow(i, name, path, start, end, (end - start) / sample_rate, split,
                                ranges, examples, rate, channels))
        return rows

    def to_dict(self, sample_rate: int,
                count: Callable[[str, int], int] | None = None) -> dict[str, Any]:
        """The record written to the run dir (splits.json) and the checkpoint."""
        table = self.file_table(sample_rate, count)
        return {
            "split_by": self.split_by, "ratios": list(self.ratios), "seed": self.seed,
            "listed": self.listed, "sample_rate": sample_rate,
            "files": [r.to_dict() for r in table],
            "splits": {s: {"files": self.file_count(s), "samples": self.samples(s),
                           "seconds": self.samples(s) / sample_rate,
                           "examples": sum(r.examples.get(s, 0) for r in table),
                           "pieces": [[p.file, p.start, p.end] for p in self.pieces[s]]}
                       for s in SPLITS},
            "skipped": [dict(s) for s in self.skipped],
        }


def file_table(meta: Mapping[str, Any]) -> list[FileRow]:
    """The per-file table from a `DataState.meta` (or a splits.json); [] if none recorded."""
    corpus = meta.get("corpus") or meta
    return [FileRow.from_dict(r) for r in corpus.get("files", []) if "ranges" in r]


# --------------------------------------------------------------------------- planning


def split_by_time(files: Sequence[tuple[int, int]], ratios: Sequence[float]
                  ) -> dict[str, tuple[Piece, ...]]:
    """Every file [start, end) cut contiguously by `ratios` (empty pieces dropped)."""
    out: dict[str, list[Piece]] = {s: [] for s in SPLITS}
    for i, (start, end) in enumerate(files):
        for s, (a, b) in split_bounds(end - start, list(ratios)).items():
            if b > a:
                out[s].append(Piece(i, start + a, start + b))
    return {s: tuple(v) for s, v in out.items()}


def assign_files(durations: Sequence[float], ratios: Sequence[float], seed: int) -> list[str]:
    """Whole files to splits so each split's duration approaches its ratio; seeded.

    The files are visited in a seeded random order; each goes to the split whose target
    duration is least filled (relative to its target; ties in train, val, test order).
    The first three files thus land in three different splits, so every split gets a
    file whenever there are at least three; the same seed gives the same assignment.
    """
    total = float(sum(durations))
    targets = [r * total for r in ratios]
    filled = [0.0] * len(ratios)
    order = np.random.default_rng([int(seed), 12]).permutation(len(durations))
    out = [""] * len(durations)
    for i in order.tolist():
        rel = [filled[k] / targets[k] if targets[k] > 0 else np.inf for k in range(len(ratios))]
        k = int(np.argmin(rel))
        out[i] = SPLITS[k]
        filled[k] += durations[i]
    return out


def split_by_file(files: Sequence[tuple[int, int]], assignment: Sequence[str]
                  ) -> dict[str, tuple[Piece, ...]]:
    """Each file [start, end) whole to its assigned split."""
    out: dict[str, list[Piece]] = {s: [] for s in SPLITS}
    for i, ((start, end), s) in enumerate(zip(files, assignment, strict=True)):
        out[s].append(Piece(i, start, end))
    return {s: tuple(v) for s, v in out.items()}
