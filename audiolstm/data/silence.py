"""Silence-aware data (issue 22): training examples that are mostly silent are never drawn.

Definitions (the one home for them; README "Silence-aware data"):

- A **block** is `BLOCK_SECONDS` (50 ms) of audio, ``round(0.05 * sample_rate)`` samples
  (800 at 16 kHz), on a grid that starts at the first sample of each split piece (so a
  block never reads another file or split); a piece's last block may be shorter. 50 ms
  is one period of the lowest audible pitch (20 Hz), so a sustained low note's block RMS
  is its level, not that of a zero crossing, and it is short next to an example (a few
  seconds for the frame models, 0.5 s and up for SampleRNN).
- A block is **silent** when its RMS is below ``data.silence_db`` dBFS, i.e.
  ``RMS < 10 ** (silence_db / 20)`` with 0 dBFS an RMS of 1.0 (full scale), measured on
  the decoded audio at its original scale (before any normalisation).
- An example's **silent share** is the fraction of the samples it spans
  (``seq_len * hop + x_len``) that lie in silent blocks (the share of its blocks that
  are silent when it starts on the grid). It is **left out** when the share exceeds
  ``data.max_silent_fraction``: more than ``max_silent_fraction * span`` silent samples.

Why full scale and not a level relative to the file (or corpus): silence is a property
of a stretch of audio, and its levels are fixed ones (digital silence is -inf dBFS,
16-bit dither about -96, a quiet room or tape hiss -60 to -70), while music's own
level is not: a quiet classical passage sits 30-50 dB below the same piece's tutti. A
threshold relative to a file's RMS (or peak) would move with its loudest bars (a
fortissimo coda would turn an earlier pianissimo "silent") and with the silence itself
(a file that is half digital silence has a lower RMS, so a lower bar), so one block's
verdict would depend on the rest of its file, and differ between files and corpora.
With full scale it depends on the block alone. The price: a recording mastered very
quietly has its quiet passages nearer the threshold; `explore.py` shows each file's
level (dBFS) beside what the setting leaves out, so it is seen before training.

Train only by default: validation and test keep every window (so their losses stay
comparable between runs with and without the setting) unless ``data.silence_eval=true``.

Cost: one streamed pass over the corpus (block sums of squares) when the datamodule is
set up, and, per piece, arrays the size of its block count: the allowed starts are
found exactly as sorted intervals (`allowed_starts`: a prefix count of silent samples
is piecewise linear in the start, so each stretch between block edges is solved in
closed form), and the windows dataset indexes them by runs (`windows.Intervals`),
never listing starts or examples.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

import numpy as np

from audiolstm.data.splits import SPLITS, FileRow, Piece, SplitPlan
from audiolstm.data.windows import Intervals, WindowSpec, start_runs
from audiolstm.errors import UserError

log = logging.getLogger(__name__)

#: The block length in seconds (module docstring).
BLOCK_SECONDS = 0.05
#: Samples read per step of the streamed pass (a multiple of the block is used).
CHUNK = 1 << 18

DEFINITION = (
    "a block is 50 ms of audio on a grid from the start of each split piece; it is silent "
    "when its RMS on the original scale is below data.silence_db dBFS (0 dBFS = RMS 1.0); "
    "an example is left out when more than data.max_silent_fraction of the samples it "
    "spans lie in silent blocks; excluded seconds are the audio that no example reads any "
    "more because of it"
)


def block_length(sample_rate: int) -> int:
    """Samples per silence block at `sample_rate` (at least one)."""
    return max(1, round(BLOCK_SECONDS * sample_rate))


@dataclass(frozen=True)
class SilenceSettings:
    """`data.silence_db`, `data.max_silent_fraction`, `data.silence_eval` (validated by
    `settings.validate_data`)."""

    silence_db: float
    max_silent_fraction: float
    eval: bool = False

    @classmethod
    def from_config(cls, d: Mapping[str, Any]) -> SilenceSettings | None:
        """The settings, or None when silence-aware data is off (the default)."""
        if d.get("max_silent_fraction") is None:
            return None
        return cls(float(d["silence_db"]), float(d["max_silent_fraction"]),
                   bool(d.get("silence_eval")))

    @property
    def splits(self) -> tuple[str, ...]:
        """The splits whose silent examples are left out."""
        return SPLITS if self.eval else ("train",)

    def max_silent(self, span: int) -> int:
        """The most silent samples an example of `span` samples may hold."""
        return math.floor(self.max_silent_fraction * span)


# --------------------------------------------------------------------------- the math


def silent_blocks(x: np.ndarray, block: int, silence_db: float) -> np.ndarray:
    """Per block of `x` (grid from x[0], the last block possibly shorter): silent or not.

    One streamed pass in float64 (`x` may be a memory-mapped corpus): memory is a chunk
    plus one bool per block.
    """
    n = int(x.shape[0])
    out = np.empty(-(-n // block), dtype=bool)
    mean_square = 10.0 ** (silence_db / 10.0)  # RMS < 10^(dB/20)  <=>  mean square < 10^(dB/10)
    step = block * max(1, CHUNK // block)
    for i in range(0, n, step):
        c = np.asarray(x[i : i + step], dtype=np.float64)
        j, full = i // block, c.shape[0] // block
        if full:
            b = c[: full * block].reshape(full, block)
            out[j : j + full] = np.einsum("ij,ij->i", b, b) < mean_square * block
        if full * block < c.shape[0]:  # the last, shorter block
            t = c[full * block :]
            out[j + full] = float(t @ t) < mean_square * t.shape[0]
    return out


def silent_samples(silent: np.ndarray, n: int, block: int) -> int:
    """Samples of an `n`-sample piece that lie in its silent blocks."""
    if not silent.shape[0]:
        return 0
    last = n - (silent.shape[0] - 1) * block
    return int(np.count_nonzero(silent[:-1])) * block + (last if silent[-1] else 0)


def allowed_starts(silent: np.ndarray, n: int, block: int, span: int,
                   max_silent: int) -> Intervals:
    """The starts ``0 <= a <= n - span`` whose example holds at most `max_silent` silent samples.

    With ``S(x)`` the silent samples in ``[0, x)``, an example at ``a`` holds
    ``g(a) = S(a + span) - S(a)``. Between consecutive breakpoints (``a`` or
    ``a + span`` on a block edge) both terms are linear, so ``g`` moves by
    ``silent[block of a + span] - silent[block of a]`` (0 or +-1) per sample and the
    allowed part of each stretch is one interval, solved in closed form. Memory and
    time: O(number of blocks), vectorised.
    """
    last = n - span  # the last start
    if last < 0:
        return Intervals.merged(np.zeros(0), np.zeros(0))
    m = silent.shape[0]
    s = np.append(silent.astype(np.int64), 0)  # s[m] = 0: the "block" at the very end
    # silent samples before block j (block m-1 may be shorter: only before[m] would see it,
    # and it is read only when n is a whole number of blocks)
    before = np.concatenate([[0], np.cumsum(s[:m] * block)])

    def prefix(x: np.ndarray) -> np.ndarray:  # S(x), 0 <= x <= n
        j = np.minimum(x // block, m)
        return before[j] + s[j] * (x - j * block)

    first_edge = -(-span // block) * block - span  # smallest a >= 0 with a + span on an edge
    p = np.union1d(np.arange(0, last + 1, block, dtype=np.int64),
                   np.arange(first_edge, last + 1, block, dtype=np.int64))
    q = np.append(p[1:], last + 1)  # stretch [p, q)
    g = prefix(p + span) - prefix(p)
    slope = s[np.minimum((p + span) // block, m)] - s[p // block]
    room = max_silent - g  # how far g may still rise
    # rising: a - p <= room; falling: a - p >= -room; flat: all or nothing
    lo = np.where(slope < 0, np.clip(p - room, p, q), p)
    hi = np.where(slope > 0, np.clip(p + room + 1, p, q),
                  np.where((slope < 0) | (room >= 0), q, p))
    return Intervals.merged(lo, hi)


def _union_length(lo: np.ndarray, hi: np.ndarray) -> int:
    """Length of the union of the intervals [lo, hi) (any order, may overlap)."""
    if not lo.shape[0]:
        return 0
    order = np.argsort(lo, kind="stable")
    lo, hi = lo[order], hi[order]
    reach = np.maximum.accumulate(hi)
    new = np.concatenate([[True], lo[1:] > reach[:-1]])
    firsts = np.flatnonzero(new)
    ends = np.append(firsts[1:], lo.shape[0]) - 1
    return int((reach[ends] - lo[firsts]).sum())


def read_samples(spec: WindowSpec, n: int, runs: Sequence[tuple[int, np.ndarray, np.ndarray]]
                 ) -> int:
    """Samples of an `n`-sample piece read by some example of the given runs.

    `runs`: per offset, ``(offset, k0, k1)`` arrays of example-number runs. A run's
    examples cover one stretch when they overlap or touch (window_shift <= span), else
    each is its own stretch (then there are at most n / span of them per offset).
    """
    w, span = spec.window_shift, spec.span
    los, his = [], []
    for o, k0, k1 in runs:
        if w <= span:
            los.append(o + k0 * w)
            his.append(o + (k1 - 1) * w + span)
        else:
            k = np.concatenate([np.arange(a, b, dtype=np.int64) for a, b in
                                zip(k0.tolist(), k1.tolist(), strict=True)] or [np.zeros(0,
                                                                              np.int64)])
            los.append(o + k * w)
            his.append(o + k * w + span)
    if not los:
        return 0
    return min(n, _union_length(np.concatenate(los), np.concatenate(his)))


# --------------------------------------------------------------------------- per piece


@dataclass(frozen=True)
class PieceSilence:
    """One split piece: its silent samples and, where the split is filtered, what is left out."""

    piece: Piece
    silent_samples: int
    allowed: Intervals | None  # starts kept (relative to the piece); None: every window
    examples: int  # windows before exclusion
    kept: int  # windows after
    read: int  # samples read by some window before exclusion
    read_kept: int  # ... and after

    @property
    def excluded(self) -> int:
        return self.examples - self.kept

    @property
    def excluded_samples(self) -> int:
        """Samples no example reads any more because of the exclusion."""
        return self.read - self.read_kept


def piece_silence(signal: np.ndarray, piece: Piece, spec: WindowSpec,
                  settings: SilenceSettings, block: int, filtered: bool) -> PieceSilence:
    """Silent blocks of one piece and, if `filtered`, the starts its examples keep."""
    n = piece.length
    flags = silent_blocks(signal[piece.start : piece.end], block, settings.silence_db)
    silent = silent_samples(flags, n, block)
    counts = [(o, spec.count_at(n, o)) for o in spec.offsets]
    every = [(o, np.zeros(1, np.int64), np.full(1, c, np.int64)) for o, c in counts if c]
    examples = sum(c for _, c in counts)
    read = read_samples(spec, n, every)
    if not filtered:
        return PieceSilence(piece, silent, None, examples, examples, read, read)
    allowed = allowed_starts(flags, n, block, spec.span, settings.max_silent(spec.span))
    runs = [(o, *start_runs(allowed, o, spec.window_shift, c)) for o, c in counts if c]
    kept = sum(int((k1 - k0).sum()) for _, k0, k1 in runs)
    return PieceSilence(piece, silent, allowed, examples, kept, read,
                        read_samples(spec, n, runs))


# --------------------------------------------------------------------------- the index


@dataclass(frozen=True)
class SilenceIndex:
    """Every split piece's silence, and the starts kept in the filtered splits.

    `pieces[split]` is aligned with the plan's `pieces[split]` (and so with the
    windows dataset's segments).
    """

    settings: SilenceSettings
    block: int
    sample_rate: int
    pieces: Mapping[str, tuple[PieceSilence, ...]]

    def allowed(self, split: str) -> list[Intervals] | None:
        """Per piece of `split`, the starts its examples keep; None if it keeps every window."""
        if split not in self.settings.splits:
            return None
        return [p.allowed for p in self.pieces[split]]  # type: ignore[misc]

    def _numbers(self, ps: Sequence[PieceSilence], split: str) -> dict[str, Any]:
        sr = self.sample_rate
        seconds = sum(p.piece.length for p in ps) / sr
        out: dict[str, Any] = {"silent_seconds": sum(p.silent_samples for p in ps) / sr}
        if split in self.settings.splits:
            gone = sum(p.excluded_samples for p in ps) / sr
            out |= {"examples_before": sum(p.examples for p in ps),
                    "excluded_examples": sum(p.excluded for p in ps),
                    "excluded_seconds": gone,
                    "excluded_share": gone / seconds if seconds else 0.0}
        return out

    @cached_property
    def _by_file(self) -> dict[int, dict[str, list[PieceSilence]]]:
        """file -> split -> its pieces (one pass, so per-file records stay linear in files)."""
        out: dict[int, dict[str, list[PieceSilence]]] = {}
        for split in SPLITS:
            for p in self.pieces[split]:
                out.setdefault(p.piece.file, {}).setdefault(split, []).append(p)
        return out

    def split_record(self, split: str) -> dict[str, Any]:
        """Totals of one split (seconds, silent seconds; if filtered, what was left out)."""
        ps = self.pieces[split]
        return {"seconds": sum(p.piece.length for p in ps) / self.sample_rate,
                **self._numbers(ps, split)}

    def file_record(self, file: int) -> dict[str, dict[str, Any]]:
        """Per split holding part of file number `file`: its numbers there."""
        return {s: self._numbers(ps, s) for s, ps in self._by_file.get(file, {}).items()}

    def kept(self, split: str, file: int) -> int:
        return sum(p.kept for p in self._by_file.get(file, {}).get(split, []))

    def record(self) -> dict[str, Any]:
        """The settings and per-split totals (splits.json's "silence")."""
        s = self.settings
        return {"silence_db": s.silence_db, "max_silent_fraction": s.max_silent_fraction,
                "silence_eval": s.eval, "block_samples": self.block,
                "block_seconds": self.block / self.sample_rate,
                "filtered_splits": list(s.splits), "definition": DEFINITION,
                "splits": {split: self.split_record(split) for split in SPLITS}}

    def apply(self, files: Sequence[FileRow], corpus: Mapping[str, Any]
              ) -> tuple[list[FileRow], dict[str, Any]]:
        """The per-file table and the split record with kept examples and the silence record."""
        rows = []
        for r in files:
            examples = {s: (self.kept(s, r.index) if s in self.settings.splits else k)
                        for s, k in r.examples.items()}
            rows.append(replace(r, examples=examples, silence=self.file_record(r.index)))
        out = dict(corpus)
        out["files"] = [r.to_dict() for r in rows]
        out["splits"] = {s: {**v, "examples": sum(r.examples.get(s, 0) for r in rows)}
                         for s, v in dict(corpus["splits"]).items()}
        out["silence"] = self.record()
        return rows, out

    def report(self, names: Sequence[str], most: int = 5) -> list[str]:
        """Log lines: per filtered split what was left out; for a corpus, the files most hit."""
        s, lines = self.settings, []
        rule = (f"more than {100 * s.max_silent_fraction:g} % of their samples in silent "
                f"50 ms blocks (RMS below {s.silence_db:g} dBFS)")
        for split in s.splits:
            r = self.split_record(split)
            before = r["examples_before"]
            lines.append(
                f"silence-aware data: the {split} split leaves out {r['excluded_examples']:,} "
                f"of {before:,} examples ({100 * r['excluded_examples'] / max(before, 1):.1f} %) "
                f"with {rule}; {r['excluded_seconds']:.1f} s of its {r['seconds']:.1f} s "
                f"({100 * r['excluded_share']:.1f} %) is read by no example any more "
                f"({r['silent_seconds']:.1f} s of it is silent)")
            if len(names) > 1:
                hit = sorted(((f, self._numbers(by[split], split))
                              for f, by in self._by_file.items() if split in by),
                             key=lambda fr: -fr[1]["excluded_seconds"])
                hit = [(f, r) for f, r in hit if r["excluded_seconds"] > 0][:most]
                if hit:
                    lines.append(f"silence-aware data: {split} files most left out: " + ", ".join(
                        f"{names[f]} {r['excluded_seconds']:.1f} s "
                        f"({100 * r['excluded_share']:.0f} %)" for f, r in hit))
        return lines


def silence_index(signal: np.ndarray, plan: SplitPlan, data: Mapping[str, Any],
                  spec_for: Callable[[str], WindowSpec]) -> SilenceIndex | None:
    """The silence of every split piece and the starts kept; None when the setting is off.

    Raises a one-line `UserError` when a filtered split keeps no example at all.
    """
    settings = SilenceSettings.from_config(data)
    if settings is None:
        return None
    sr = int(data["sample_rate"])
    block = block_length(sr)
    pieces = {s: tuple(piece_silence(signal, p, spec_for(s), settings, block,
                                     s in settings.splits) for p in plan.pieces[s])
              for s in SPLITS}
    index = SilenceIndex(settings, block, sr, pieces)
    for split in settings.splits:
        r = index.split_record(split)
        if r["examples_before"] and not sum(p.kept for p in pieces[split]):
            raise UserError(
                f"data.max_silent_fraction={settings.max_silent_fraction:g} with "
                f"data.silence_db={settings.silence_db:g}: every one of the "
                f"{r['examples_before']:,} {split} examples is more silent than that "
                f"({r['silent_seconds']:.1f} s of the split's {r['seconds']:.1f} s are "
                "silent blocks); raise data.max_silent_fraction or lower data.silence_db")
    return index
