"""Overlapping next-frame examples as zero-copy strided views of one signal.

A split is one 1-D signal ``s``. An example is ``seq_len + 1`` frames of ``x_len``
samples, ``step`` samples apart (``step = hop``, default ``x_len``: frames touch but do
not overlap, as in the seeds). With ``window_shift`` samples between the starts of
consecutive examples and a list of start ``offsets`` (seed 001's trick, example sets
concatenated in the order given):

    example k of offset o starts at      a = o + k * window_shift
    frame j (0 <= j <= seq_len) is       s[a + j*step : a + j*step + x_len]
    inputs  = frames 0 .. seq_len-1      targets = frames 1 .. seq_len
    span (samples one example touches) = seq_len * step + x_len
    count of offset o                  = max(0, floor((len(s) - o - span) / window_shift) + 1)

One dataset item is the ``(seq_len + 1, D)`` tensor of all frames; the model reads
``frames[:-1]`` as input and ``frames[1:]`` as target, so the two share memory.

A corpus of several files is one signal with `segments`, ranges ``[a, b)`` that each lie
inside one file (a split's pieces): the formulas apply per segment and the data set is
their union (segment-major, then offset), so no example ever spans two files.

Nothing is materialised: each offset's examples are a read-only ``as_strided`` view
of the signal (which may be a memory-mapped cache), so the dataset costs the signal
and nothing more whatever ``window_shift`` is. Normalisation ``(x - shift) / scale``
and the representation's ``encode`` run per batch, on the fly.

Some examples can be left out (silence-aware data, `audiolstm.data.silence`): per
segment, `Intervals` of the start positions allowed. The examples of one offset whose
starts fall in one interval are consecutive, so the data set is indexed by *runs*
``(view, first k, end k)`` with a cumulative count, and index i is found by one
binary search: memory grows with the number of intervals, never with the number of
examples (28 M starts for 30 min at window_shift 1), and a sampler over
``range(len(ds))`` (shuffled windows or uniform random crops) draws only allowed
examples, uniformly, with no rejection.
"""

from __future__ import annotations

import mmap
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from audiolstm.errors import UserError, positive_int


@dataclass(frozen=True)
class WindowSpec:
    """How one split is cut into examples (see the module docstring for the formulas)."""

    x_len: int
    seq_len: int
    window_shift: int
    hop: int | None = None
    offsets: tuple[int, ...] = (0,)

    def __post_init__(self) -> None:
        positive_int(self.x_len, "data.x_len")
        positive_int(self.seq_len, "data.seq_len")
        positive_int(self.window_shift, "data.window_shift")
        if self.hop is not None:
            positive_int(self.hop, "data.hop")
        offsets = self.offsets
        if isinstance(offsets, (int, np.integer)) and not isinstance(offsets, bool):
            offsets = (offsets,)
        try:
            offsets = tuple(offsets)
        except TypeError:
            raise UserError(
                f"data.offsets must be a list of integers, got {self.offsets!r}"
            ) from None
        if not offsets:
            raise UserError("data.offsets must list at least one offset, got []")
        offsets = tuple(positive_int(o, "data.offsets", minimum=0) for o in offsets)
        # Seed 001: "offset 2 gives [c,d], [e,f], [g,h] again". Offsets equal modulo the
        # shift repeat (a subset of) each other's examples: almost surely a mistake.
        seen: dict[int, int] = {}
        for o in offsets:
            r = o % self.window_shift
            if r in seen:
                raise UserError(
                    f"data.offsets={list(offsets)} repeat examples: {seen[r]} and {o} are "
                    f"equal modulo data.window_shift={self.window_shift}"
                )
            seen[r] = o
        object.__setattr__(self, "offsets", offsets)

    @property
    def step(self) -> int:
        """Samples between consecutive frames of one example."""
        return self.x_len if self.hop is None else self.hop

    @property
    def span(self) -> int:
        """Samples one example touches: seq_len input frames plus the last target frame."""
        return self.seq_len * self.step + self.x_len

    @property
    def min_samples(self) -> int:
        """The shortest signal that yields at least one example."""
        return min(self.offsets) + self.span

    def count_at(self, n_samples: int, offset: int) -> int:
        """Examples of one offset in a signal of `n_samples`."""
        return max(0, (n_samples - offset - self.span) // self.window_shift + 1)

    def count(self, n_samples: int) -> int:
        """Examples of all offsets in a signal of `n_samples`."""
        return sum(self.count_at(n_samples, o) for o in self.offsets)


@dataclass(frozen=True, eq=False)
class Intervals:
    """Sorted, disjoint, non-adjacent ``[lo, hi)`` integer intervals (e.g. allowed starts).

    Two int64 arrays; memory grows with the number of intervals, not with their lengths.
    """

    lo: np.ndarray
    hi: np.ndarray

    def __post_init__(self) -> None:
        lo = np.asarray(self.lo, dtype=np.int64).reshape(-1)
        hi = np.asarray(self.hi, dtype=np.int64).reshape(-1)
        if lo.shape != hi.shape or (hi <= lo).any() or (lo[1:] <= hi[:-1]).any():
            raise ValueError("intervals must be sorted, disjoint, non-adjacent and non-empty")
        object.__setattr__(self, "lo", lo)
        object.__setattr__(self, "hi", hi)

    @classmethod
    def merged(cls, lo: np.ndarray, hi: np.ndarray) -> Intervals:
        """From sorted, disjoint intervals that may touch or be empty: drop empty, join touching."""
        lo, hi = np.asarray(lo, dtype=np.int64), np.asarray(hi, dtype=np.int64)
        keep = hi > lo
        lo, hi = lo[keep], hi[keep]
        if lo.shape[0] > 1:
            new = np.concatenate([[True], lo[1:] != hi[:-1]])
            last = np.concatenate([new[1:], [True]])
            lo, hi = lo[new], hi[last]
        return cls(lo, hi)

    @property
    def total(self) -> int:
        """How many integers the intervals hold."""
        return int((self.hi - self.lo).sum())

    def __len__(self) -> int:
        return int(self.lo.shape[0])


def start_runs(allowed: Intervals, offset: int, shift: int, count: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """Runs ``[k0, k1)`` of the example numbers whose start ``offset + k*shift`` is allowed.

    ``0 <= k < count``; one run per interval at most (adjacent runs joined), in order.
    """
    # k with lo <= offset + k*shift < hi  <=>  ceil((lo-offset)/shift) <= k < ceil((hi-offset)/shift)
    k0 = np.clip(-((offset - allowed.lo) // shift), 0, count)
    k1 = np.clip(-((offset - allowed.hi) // shift), 0, count)
    runs = Intervals.merged(k0, k1)
    return runs.lo, runs.hi


def example_frames(signal: np.ndarray, spec: WindowSpec) -> list[np.ndarray]:
    """Per offset, a read-only view of shape (count_o, seq_len + 1, x_len) into `signal`.

    No sample is copied (`signal` may be an np.memmap): element [k, j, i] is
    signal[o + k*window_shift + j*step + i].
    """
    if signal.ndim != 1:
        raise ValueError(f"signal must be 1-D, got shape {signal.shape}")
    n = signal.shape[0]
    (st,) = signal.strides
    views = []
    for o in spec.offsets:
        c = spec.count_at(n, o)
        base = signal[o:] if c else signal[:0]
        views.append(
            np.lib.stride_tricks.as_strided(
                base,
                shape=(c, spec.seq_len + 1, spec.x_len),
                strides=(spec.window_shift * st, spec.step * st, st),
                writeable=False,
            )
        )
    return views


def identity_collate(batch: Any) -> Any:
    """DataLoader collate for `WindowDataset`: `__getitems__` already returns the batch."""
    return batch


def _memmap_origin(signal: np.ndarray) -> tuple[str, int] | None:
    """(file, byte position) of a contiguous view of a file-backed np.memmap, else None."""
    obj: Any = signal
    while isinstance(obj, np.ndarray):
        if isinstance(obj, np.memmap) and isinstance(obj.base, mmap.mmap):
            if obj.filename is None or not signal.flags.c_contiguous:
                return None
            return str(obj.filename), int(obj.offset) + signal.ctypes.data - obj.ctypes.data
        obj = obj.base
    return None


class WindowDataset(Dataset):
    """Examples of one split as (seq_len + 1, D) float32 tensors, normalised on the fly.

    Use with ``DataLoader(ds, batch_size=B, collate_fn=identity_collate)``: the loader
    then calls `__getitems__` once per batch, which gathers the whole batch into one
    array (a Python loop over examples that subtracts `shift` while copying, then one
    in-place divide), far faster than B `__getitem__` calls plus `default_collate`.

    Buffer reuse (``reuse_buffers=True``): outside DataLoader workers, batches are
    written into a ring of `ring` preallocated arrays per batch size, because a fresh
    large allocation page-faults every batch. Contract: a returned batch is
    overwritten by the `ring`-th following batch of the same size, so consumers must
    be done with it (or copy it) by then. Lightning prefetches one batch, so ring >= 2
    is required; the default 4 leaves slack. Inside workers buffers are never reused
    (the batch is moved to shared memory and handed to another process).

    A non-float32 signal is converted once (a copy); pass float32 to stay zero-copy.

    `segments`: ``[(start, end), ...]`` ranges of `signal` (e.g. one split's pieces of
    a corpus, each inside one file); examples are cut inside each range only. Default:
    the whole signal.

    `allowed`: per segment, the `Intervals` of start positions (relative to the
    segment's start) whose examples are kept, e.g. those not mostly silent; the
    others are left out of the index (`len`, `start_of`, every index). Default: all.
    """

    def __init__(
        self,
        signal: np.ndarray,
        spec: WindowSpec,
        shift: float = 0.0,
        scale: float = 1.0,
        transform: Callable[[Tensor], Tensor] | None = None,
        reuse_buffers: bool = False,
        ring: int = 4,
        segments: Sequence[tuple[int, int]] | None = None,
        allowed: Sequence[Intervals] | None = None,
    ) -> None:
        signal = np.asarray(signal) if not isinstance(signal, np.ndarray) else signal
        if signal.dtype != np.float32:
            signal = signal.astype(np.float32)
        if not np.isfinite(scale) or scale == 0:
            raise ValueError(f"scale must be finite and non-zero, got {scale}")
        if reuse_buffers and ring < 2:
            raise ValueError(f"ring must be >= 2 (Lightning prefetches a batch), got {ring}")
        n = signal.shape[0] if signal.ndim == 1 else -1
        segs = [(0, n)] if segments is None else [(int(a), int(b)) for a, b in segments]
        if any(not 0 <= a <= b <= n for a, b in segs):
            raise ValueError(f"segments must be ranges inside the signal of {n} samples")
        if allowed is not None and len(allowed) != len(segs):
            raise ValueError(f"allowed: one Intervals per segment ({len(segs)}), "
                             f"got {len(allowed)}")
        self.segments = segs
        self.allowed = None if allowed is None else list(allowed)
        self.signal = signal
        self.spec = spec
        self.shift = float(shift)
        self.scale = float(scale)
        self.transform = transform
        self.reuse_buffers = reuse_buffers
        self.ring = ring
        self._setup()

    def _setup(self) -> None:
        views, origins = [], []
        run_view, run_k0, run_len = [], [], []
        for k, (a, b) in enumerate(self.segments):
            for o, v in zip(self.spec.offsets, example_frames(self.signal[a:b], self.spec),
                            strict=True):
                c = v.shape[0]
                if not c:
                    continue
                if self.allowed is None:
                    k0, k1 = np.zeros(1, np.int64), np.full(1, c, np.int64)
                else:
                    k0, k1 = start_runs(self.allowed[k], o, self.spec.window_shift, c)
                run_view.append(np.full(k0.shape[0], len(views), np.int64))
                run_k0.append(k0)
                run_len.append(k1 - k0)
                views.append(v)
                origins.append((k, a + o))
        self._views = views
        self._origins = origins  # per view: (segment, signal position of its example 0)
        # runs of consecutive kept examples of one view: global index i of run r is
        # example _run_k0[r] + (i - _starts[r]) of view _run_view[r]
        cat = (lambda xs: np.concatenate(xs) if xs else np.zeros(0, np.int64))  # noqa: E731
        self._run_view, self._run_k0, lens = cat(run_view), cat(run_k0), cat(run_len)
        self._starts = (np.cumsum(lens) - lens).astype(np.int64)
        self._len = int(lens.sum())
        # the common case, one run per view from k = 0: the index is the view's
        self._plain = bool((self._run_k0 == 0).all() and len(self._run_view) == len(views))
        self._rings: dict[int, list[np.ndarray]] = {}
        self._next: dict[int, int] = {}

    # Pickling (spawned workers, DDP): reopen a memmapped signal instead of copying it.
    def __getstate__(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k not in _DERIVED}
        origin = _memmap_origin(self.signal)
        if origin is not None:
            state["signal"] = None
            state["_memmap"] = (*origin, self.signal.shape[0])
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        origin = state.pop("_memmap", None)
        self.__dict__.update(state)
        if origin is not None:
            path, pos, n = origin
            self.signal = np.memmap(path, dtype=np.float32, mode="r", offset=pos, shape=(n,))
        self._setup()

    def __len__(self) -> int:
        return self._len

    def _locate(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Global indices (negative allowed) -> (offset group, index within the group)."""
        n = self._len
        bad = (indices < -n) | (indices >= n)
        if bad.any():
            raise IndexError(f"index {int(indices[bad][0])} out of range for {n} examples")
        indices = np.where(indices < 0, indices + n, indices)
        if len(self._views) <= 1 and self._plain:
            return np.zeros_like(indices), indices
        run = np.searchsorted(self._starts, indices, side="right") - 1
        local = indices - self._starts[run]
        if self._plain:
            return run, local
        return self._run_view[run], self._run_k0[run] + local

    def start_of(self, i: int) -> tuple[int, int]:
        """(segment, position in the signal of the example's first sample) of example i."""
        group, local = self._locate(np.array([i], dtype=np.int64))
        seg, origin = self._origins[int(group[0])]
        return seg, origin + int(local[0]) * self.spec.window_shift

    def counts_per_segment(self) -> list[int]:
        """Examples each segment yields (0 for one shorter than an example)."""
        out = [0] * len(self.segments)
        ends = np.append(self._starts[1:], self._len)
        for view, n in zip(self._run_view.tolist(), (ends - self._starts).tolist(), strict=True):
            out[self._origins[view][0]] += n
        return out

    def _buffer(self, b: int) -> np.ndarray:
        shape = (b, self.spec.seq_len + 1, self.spec.x_len)
        if not self.reuse_buffers or get_worker_info() is not None:
            return np.empty(shape, dtype=np.float32)
        ring = self._rings.setdefault(b, [])
        i = self._next.get(b, 0)
        if i == len(ring):
            ring.append(np.empty(shape, dtype=np.float32))
        self._next[b] = (i + 1) % self.ring
        return ring[i]

    def _finish(self, out: np.ndarray) -> Tensor:
        # Divide (not multiply by 1/scale): bit-identical to the naive (x - shift) / scale.
        if self.scale != 1.0:
            np.divide(out, self.scale, out=out)
        t = torch.from_numpy(out)
        return self.transform(t) if self.transform is not None else t

    def __getitem__(self, i: int) -> Tensor:
        """One example: (seq_len + 1, D); inputs are [:-1], targets [1:]."""
        if isinstance(i, Tensor):
            i = int(i)
        group, local = self._locate(np.array([i], dtype=np.int64))
        out = np.empty((self.spec.seq_len + 1, self.spec.x_len), dtype=np.float32)
        np.subtract(self._views[int(group[0])][int(local[0])], self.shift, out=out)
        return self._finish(out)

    def __getitems__(self, indices: Sequence[int]) -> Tensor:
        """A whole batch (B, seq_len + 1, D) in one call (what DataLoader uses)."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        group, local = self._locate(idx)
        out = self._buffer(idx.shape[0])
        views, shift = self._views, self.shift
        # np.take(view, idx, axis=0) would first make the strided view C-contiguous,
        # i.e. materialise every example; a loop of per-example copies never does.
        for j, (g, k) in enumerate(zip(group.tolist(), local.tolist(), strict=True)):
            np.subtract(views[g][k], shift, out=out[j])
        return self._finish(out)


class ShuffleSampler(Sampler[int]):
    """A fresh uniform-looking permutation of range(n) each epoch in O(1) memory.

    torch's RandomSampler (and DistributedSampler) build ``randperm(n).tolist()``:
    ~36 bytes per example, 1 GB for window_shift 1 on 30 min of audio, 5 GB on the
    seeds' 140 M-sample train split, i.e. memory that grows with the example count.
    Here index p of the epoch's order is a keyed 4-round Feistel bijection of p on
    [0, 2^k) (2^k < 4n), skipping values >= n ("cycle walking"), computed in
    vectorised chunks.

    DDP: with `num_replicas`/`rank` each rank takes every num_replicas-th index of the
    same permutation, padded by wrapping (or truncated with `drop_last`) so all ranks
    get equal counts, like DistributedSampler. Lightning calls `set_epoch`; without
    it each new iteration advances the epoch. Pass it with
    ``Trainer(use_distributed_sampler=False)``: Lightning would otherwise wrap it in a
    sampler that lists it whole.
    """

    CHUNK = 1 << 16

    def __init__(
        self, n: int, seed: int = 0, num_replicas: int = 1, rank: int = 0, drop_last: bool = False
    ) -> None:
        if n < 0 or num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"bad sampler: n={n}, num_replicas={num_replicas}, rank={rank}")
        self.n, self.seed, self.num_replicas, self.rank = n, seed, num_replicas, rank
        self.total = (n // num_replicas if drop_last else -(-n // num_replicas)) * num_replicas
        self.epoch = 0
        half = max(1, (max(n - 1, 1).bit_length() + 1) // 2)
        self._half, self._mask = half, np.uint64((1 << half) - 1)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.total // self.num_replicas

    def _permute(self, x: np.ndarray, keys: np.ndarray) -> np.ndarray:
        half, mask = np.uint64(self._half), self._mask
        left, right = x >> half, x & mask
        with np.errstate(over="ignore"):
            for key in keys:  # splitmix64 finaliser as the round function
                h = (right ^ key) * np.uint64(0xBF58476D1CE4E5B9)
                h ^= h >> np.uint64(31)
                h *= np.uint64(0x94D049BB133111EB)
                h ^= h >> np.uint64(29)
                left, right = right, left ^ (h & mask)
        return (left << half) | right

    def _order(self, keys: np.ndarray) -> Iterator[np.ndarray]:
        m = 1 << (2 * self._half)
        for start in range(0, m, self.CHUNK):
            x = np.arange(start, min(m, start + self.CHUNK), dtype=np.uint64)
            y = self._permute(x, keys)
            yield y[y < self.n].astype(np.int64)

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        keys = rng.integers(0, 2**63, size=4, dtype=np.uint64)
        pos, r, step = 0, self.rank, self.num_replicas
        while pos < self.total:  # a second pass over the order only to pad
            for chunk in self._order(keys):
                take = chunk[: self.total - pos]
                first = (r - pos) % step
                yield from take[first::step].tolist()
                pos += take.shape[0]
                if pos >= self.total:
                    return
            if self.n == 0:
                return


class RandomStartSampler(Sampler[int]):
    """Random-crop epochs: `num_samples` indices per epoch, uniform with replacement on range(n).

    Over a dataset with ``window_shift=1`` every index is one valid start (inside one
    file, whatever the corpus), so an epoch is `num_samples` independent random crops,
    uniform over every valid start of every file. The draws are seeded per
    ``(seed, epoch)``: the same epoch always gets the same crops, so a resumed run is
    exact. Memory is constant (drawn in chunks); DDP ranks take every num_replicas-th
    draw of the epoch's one stream, ``ceil(num_samples / num_replicas)`` each.
    """

    CHUNK = 1 << 16

    def __init__(self, n: int, num_samples: int, seed: int = 0, num_replicas: int = 1,
                 rank: int = 0) -> None:
        if n < 1 or num_samples < 1 or num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"bad sampler: n={n}, num_samples={num_samples}, "
                             f"num_replicas={num_replicas}, rank={rank}")
        self.n, self.num_samples, self.seed = n, num_samples, seed
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-self.num_samples // self.num_replicas)

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.epoch, 0xC809])
        self.epoch += 1
        left, step = len(self), self.num_replicas
        while left > 0:
            draws = rng.integers(0, self.n, size=min(self.CHUNK, left) * step, dtype=np.int64)
            mine = draws[self.rank :: step][:left]
            left -= mine.shape[0]
            yield from mine.tolist()


class _Deferred:
    """An iterator that builds the real one on the first `next()`."""

    __slots__ = ("_start", "_it")

    def __init__(self, start: Callable[[], Iterator[Any]]) -> None:
        self._start, self._it = start, None

    def __iter__(self) -> _Deferred:
        return self

    def __next__(self) -> Any:
        if self._it is None:
            self._it = self._start()
        return next(self._it)


class DeferredLoader(DataLoader):
    """A DataLoader whose iterator starts at its first batch, not when `iter()` is called.

    Lightning calls `iter()` on the train loader before it calls the sampler's
    `set_epoch` (when fitting starts, and so when a run resumes), and a multi-process
    loader draws its first indices (prefetch) inside `iter()`: with
    `data.num_workers > 0` a resumed run replayed epoch 0's order. Deferring the start
    to the first batch means the sampler always draws for the epoch Lightning set,
    with any number of workers.
    """

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        return _Deferred(super().__iter__)


_DERIVED = ("_views", "_origins", "_run_view", "_run_k0", "_starts", "_len", "_plain",
            "_rings", "_next")
