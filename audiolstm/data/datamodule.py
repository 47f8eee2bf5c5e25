"""`AudioDataModule`: load/cache -> split -> fit normaliser -> windows -> loaders.

The corpus (one file or many) is memory-mapped from the cache, so every DDP rank and
loader worker shares one copy. A split is a list of pieces, each inside one file
(`splits.SplitPlan`); the windows datasets are views over the one signal restricted to
those pieces, so no example spans two files.

A checkpoint's state (`load_state_dict`) fixes the split plan (`plan_splits(recorded=)`),
the fitted normaliser and the representation. `training.run` loads it before `setup`;
Lightning's own restore calls it after `setup`, so then the plan is drawn again from the
record (the corpus stays memory-mapped): either way the checkpoint's files keep their
splits.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Sampler

from audiolstm.atomic import write_json
from audiolstm.data.normalize import Normalizer, fit_normalizer
from audiolstm.data.planning import plan_splits
from audiolstm.data.representation import Representation
from audiolstm.data.settings import data_config
from audiolstm.data.silence import SilenceIndex, silence_index
from audiolstm.data.sources import Corpus, corpus_from_config
from audiolstm.data.splits import (
    SPLITS,
    FileRow,
    Piece,
    SplitPlan,
)
from audiolstm.data.state import DataState
from audiolstm.data.windows import (
    DeferredLoader,
    RandomStartSampler,
    ShuffleSampler,
    WindowDataset,
    WindowSpec,
    identity_collate,
)
from audiolstm.errors import UserError

log = logging.getLogger(__name__)


class _Frames:
    """Non-overlapping `x_len` frames of several pieces as one read-only [N, x_len] array-like.

    Slicing rows gathers only those rows (what `Representation.fit` streams), so the
    training split is never copied whole.
    """

    def __init__(self, pieces: list[np.ndarray], x_len: int) -> None:
        self.views = [p[: p.shape[0] // x_len * x_len].reshape(-1, x_len)
                      for p in pieces if p.shape[0] >= x_len]
        self._starts = np.cumsum([0] + [v.shape[0] for v in self.views])
        self.ndim, self.shape = 2, (int(self._starts[-1]), x_len)

    def __getitem__(self, rows: slice) -> np.ndarray:
        a, b, _ = rows.indices(self.shape[0])
        out = []
        for v, s in zip(self.views, self._starts[:-1].tolist(), strict=True):
            lo, hi = max(a - s, 0), min(b - s, v.shape[0])
            if lo < hi:
                out.append(v[lo:hi])
        return np.concatenate(out) if out else np.empty((0, self.shape[1]), np.float32)


class ShardSampler(Sampler[int]):
    """Rank r of w evaluates examples r, r + w, r + 2w, ...: every example once, no padding.

    Evaluation sums are reduced over ranks (AudioRNN._eval_epoch_end), so the
    split-wide means stay exact under DDP, which padding would bias.
    """

    def __init__(self, n: int, num_replicas: int = 1, rank: int = 0) -> None:
        self.n, self.num_replicas, self.rank = n, num_replicas, rank

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.num_replicas))

    def __iter__(self):
        return iter(range(self.rank, self.n, self.num_replicas))


class AudioDataModule(pl.LightningDataModule):
    """Train/val/test loaders of overlapping windows over one audio corpus.

    Args mirror the `data`, `norm` and `repr` config nodes (plain mappings).

    After `setup()`: `corpus` (the files and the memory-mapped signal), `plan` (the
    `SplitPlan`: which piece of which file is in which split), `pieces[split]` (views
    of those pieces), `files` (the per-file table, `FileRow`s, also in
    `data_state().meta["corpus"]` and the run's splits.json) and `splits[split]`: ONE
    contiguous piece per split (the whole split for one file; for a corpus its longest
    piece, never across a file boundary): what seeds are drawn from.
    """

    def __init__(
        self,
        data: Mapping[str, Any],
        norm: Mapping[str, Any],
        repr: Mapping[str, Any],  # noqa: A002 - the config group is called repr
        seed: int = 0,
    ) -> None:
        super().__init__()
        # Typed and validated: a misspelt key is an error, never a silent default.
        self.data_cfg = dict(vars(data_config(data)))
        self.norm_cfg = dict(norm)
        self.repr_cfg = dict(repr)
        self.seed = seed
        d = self.data_cfg
        self.spec = WindowSpec(
            x_len=d["x_len"], seq_len=d["seq_len"], window_shift=d["window_shift"],
            hop=d.get("hop"), offsets=tuple(d.get("offsets") or (0,)),
        )
        # random-crop epochs: every start position of the training pieces
        self.crop_spec = WindowSpec(x_len=d["x_len"], seq_len=d["seq_len"], window_shift=1,
                                    hop=d.get("hop"))
        self.eval_spec = WindowSpec(
            x_len=d["x_len"], seq_len=d["seq_len"],
            window_shift=d.get("eval_window_shift") or d["window_shift"],
            hop=d.get("hop"), offsets=tuple(d.get("offsets") or (0,)),
        )
        self.representation = Representation(
            self.repr_cfg.get("kind", "time"), d["x_len"], bool(self.repr_cfg.get("standardize"))
        )
        self.normalizer: Normalizer | None = None
        self.signal: np.ndarray | None = None
        self.meta: dict[str, Any] = {}
        self.splits: dict[str, np.ndarray] = {}
        self.corpus: Corpus | None = None
        self.plan: SplitPlan | None = None
        self.pieces: dict[str, list[np.ndarray]] = {}
        self.files: list[FileRow] = []
        self._recorded: dict[str, Any] = {}  # a checkpoint's split record (from_data_state)
        self.silence: SilenceIndex | None = None  # data.max_silent_fraction: what is left out

    # ------------------------------------------------------------------ properties
    @property
    def input_dim(self) -> int:
        """Feature dimension D of one frame (x_len for time/rfft, 2 x_len for fft)."""
        return self.representation.dim

    @property
    def sample_rate(self) -> int:
        return int(self.data_cfg["sample_rate"])

    @property
    def random_crops(self) -> bool:
        """Training epochs are `data.train_examples_per_epoch` random crops."""
        return bool(self.data_cfg.get("train_examples_per_epoch"))

    def spec_for(self, split: str) -> WindowSpec:
        if split == "train":
            return self.crop_spec if self.random_crops else self.spec
        return self.eval_spec

    # ------------------------------------------------------------------ lifecycle
    def _load(self) -> Corpus:
        return corpus_from_config(self.data_cfg)

    def prepare_data(self) -> None:
        """Decode/resample once into the cache (rank 0 only under DDP)."""
        self._load()

    def setup(self, stage: str | None = None) -> None:
        if self.signal is not None:
            return
        corpus = self._load()
        plan = plan_splits(corpus, self.data_cfg, self._recorded)
        signal = corpus.signal
        self.corpus, self.plan, self.signal = corpus, plan, signal
        self.pieces = {s: [signal[p.start : p.end] for p in plan.pieces[s]] for s in SPLITS}
        self.splits = {s: self._longest(s)[0] for s in SPLITS}
        self._check_lengths()
        count = self._count
        self.files = plan.file_table(self.sample_rate, count)
        self.meta = {k: v for k, v in corpus.meta.items() if k != "files"}
        self.meta["corpus"] = plan.to_dict(self.sample_rate, count)
        self._report_short_files()
        self.silence = silence_index(signal, plan, self.data_cfg, self.spec_for)
        if self.silence is not None:  # silent examples left out: kept counts, and a record
            self.files, self.meta["corpus"] = self.silence.apply(self.files, self.meta["corpus"])
            for line in self.silence.report([r.name for r in self.files]):
                log.info(line)
        if self.normalizer is None:  # not restored from a checkpoint
            self.normalizer = fit_normalizer(
                self.norm_cfg.get("scheme", "std"),
                self.pieces["train"],
                {k: v for k, v in self.pieces.items() if k != "train"},
            )
        if self.representation.standardize and not self.representation.fitted:
            # all non-overlapping training frames of every piece, streamed (views, no copy)
            frames = _Frames(self.pieces["train"], self.data_cfg["x_len"])
            self.representation.fit(frames, *self.normalizer.affine("train"))

    def _count(self, split: str, n_samples: int) -> int:
        return self.spec_for(split).count(n_samples)

    def _longest(self, split: str) -> tuple[np.ndarray, Piece]:
        assert self.plan is not None and self.signal is not None
        pieces = self.plan.pieces[split]
        best = max(pieces, key=lambda p: p.length) if pieces else Piece(0, 0, 0)
        return self.signal[best.start : best.end], best

    def seed_signal(self, split: str) -> tuple[np.ndarray, str]:
        """A contiguous piece of `split` to draw a generation seed from, and its file name.

        The split's longest piece: inside one file, so a seed never spans a boundary.
        """
        if self.plan is None:
            self.setup()
        view, piece = self._longest(split)
        assert self.corpus is not None
        return view, self.corpus.files[piece.file].name if self.corpus.files else ""

    def _check_lengths(self) -> None:
        """Every split must hold at least one example: say what duration would."""
        assert self.plan is not None and self.corpus is not None
        d, sr, plan = self.data_cfg, self.sample_rate, self.plan
        for name in SPLITS:
            spec = self.spec_for(name)
            pieces = plan.pieces[name]
            if any(spec.count(p.length) > 0 for p in pieces):
                continue
            ratios = list(d["splits"])
            one = (f"one example spans {spec.min_samples / sr:.3f} s at data.x_len={d['x_len']}, "
                   f"data.seq_len={d['seq_len']}, hop={spec.step}")
            longest = max((p.length for p in pieces), default=0) / sr
            if plan.split_by == "file":
                raise UserError(
                    f"{self._source_name()}: no example in the {name} split ({len(pieces)} "
                    f"files, the longest {longest:.2f} s); {one}, so the {name} split needs "
                    f"a file of at least {spec.min_samples / sr:.3f} s"
                )
            specs = [self.spec_for(s) for s in SPLITS]
            need_total = max(math.ceil(s.min_samples / r)
                             for s, r in zip(specs, ratios, strict=True))
            if len(self.corpus.files) == 1:
                total = len(self.signal)
                raise UserError(
                    f"{self._source_name()}: {total / sr:.2f} s of audio gives no example in "
                    f"the {name} split ({len(self.splits[name]) / sr:.2f} s); {one}, so "
                    f"data.splits={ratios} needs at least {need_total / sr:.2f} s of audio"
                )
            raise UserError(
                f"{self._source_name()}: no example in the {name} split: its {len(pieces)} "
                f"file pieces are at most {longest:.2f} s; {one}, so with data.split_by=time "
                f"and data.splits={ratios} at least one file must last {need_total / sr:.2f} s "
                "(or use data.split_by=file)"
            )

    def _report_short_files(self) -> None:
        """Log the files that give no example in a split (they are in splits.json too)."""
        sr = self.sample_rate
        for split in SPLITS:
            short = [r.name for r in self.files if split in r.ranges and r.examples[split] == 0]
            if short and len(self.files) > 1:
                shown = ", ".join(short[:10]) + (f", ... ({len(short) - 10} more)"
                                                 if len(short) > 10 else "")
                log.warning("%d of %d files give no %s example (their piece is shorter than "
                            "one example, %.3f s): %s", len(short), len(self.files), split,
                            self.spec_for(split).min_samples / sr, shown)

    def _source_name(self) -> str:
        d = self.data_cfg
        return str(d.get("path")) if d["source"] != "synthetic" else "data=synthetic"

    # ------------------------------------------------------------------ records
    def split_summary(self) -> dict[str, Any]:
        """What summary.json records about the data: examples, files and seconds per split.

        `examples[train]` counts the training windows (under random-crop epochs: every
        valid start, of which each epoch draws `train_examples_per_epoch`); with
        silence-aware data, those kept.
        """
        if self.plan is None:
            self.setup()
        assert self.plan is not None
        sr, plan = self.sample_rate, self.plan
        return {
            "examples": {s: self.meta["corpus"]["splits"][s]["examples"] for s in SPLITS},
            "files": {s: plan.file_count(s) for s in SPLITS},
            "seconds": {s: plan.samples(s) / sr for s in SPLITS},
            "split_by": plan.split_by,
            "train_examples_per_epoch": self.data_cfg.get("train_examples_per_epoch"),
            "skipped_files": [dict(s) for s in plan.skipped],
        }

    def write_splits(self, run_dir: str | Path) -> Path:
        """splits.json in the run dir: which files and which seconds are in each split."""
        if self.plan is None:
            self.setup()
        return write_json(Path(run_dir) / "splits.json", self.meta["corpus"])

    # ------------------------------------------------------------------ datasets
    def dataset(self, split: str) -> WindowDataset:
        """A windows dataset over one split's pieces, normalised with that split's affine map.

        Under random-crop epochs the training dataset has every start position
        (window_shift 1); its sampler draws the epoch's examples from it.
        """
        if self.plan is None or self.normalizer is None:
            self.setup()
        assert self.plan is not None and self.normalizer is not None
        shift, scale = self.normalizer.affine(split)
        return WindowDataset(
            self.signal,
            self.spec_for(split),
            shift=shift,
            scale=scale,
            transform=self._transform(),
            reuse_buffers=split == "train" and self.data_cfg["num_workers"] == 0,
            segments=[(p.start, p.end) for p in self.plan.pieces[split]],
            allowed=self.silence.allowed(split) if self.silence is not None else None,
        )

    def _loader(self, split: str) -> DataLoader:
        ds = self.dataset(split)
        d = self.data_cfg
        pin = d.get("pin_memory")
        if pin is None:
            pin = torch.cuda.is_available()
        workers = int(d["num_workers"])
        # Our samplers shard over DDP ranks themselves (the trainer configs set
        # use_distributed_sampler=false): Lightning's wrapper would list every index.
        trainer = getattr(self, "trainer", None)
        world = trainer.world_size if trainer is not None else 1
        rank = trainer.global_rank if trainer is not None else 0
        sampler: Sampler[int]
        if split != "train":
            sampler = ShardSampler(len(ds), world, rank)
        elif self.random_crops:
            sampler = RandomStartSampler(len(ds), int(d["train_examples_per_epoch"]), self.seed,
                                         world, rank)
        else:
            sampler = ShuffleSampler(len(ds), self.seed, world, rank)
        # Deferred: the sampler draws at the first batch, after Lightning's set_epoch, so
        # a resumed run gets its epoch's order with any number of workers.
        return DeferredLoader(
            ds,
            batch_size=d["batch_size"],
            sampler=sampler,
            collate_fn=identity_collate,
            num_workers=workers,
            pin_memory=bool(pin),
            persistent_workers=workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def train_frame_pairs(self, max_pairs: int = 20000,
                          batch: int = 1024) -> Iterator[torch.Tensor]:
        """Consecutive (frame, next frame) pairs of the training split, (n, 2, D) batches.

        Normalised and encoded as the model sees them; frames are `step` apart and the
        pairs are evenly thinned to `max_pairs`. What the ridge baseline is fitted on.
        """
        return self.frame_pairs("train", max_pairs, batch)

    def val_frame_pairs(self, max_pairs: int = 20000,
                        batch: int = 1024) -> Iterator[torch.Tensor]:
        """The same pairs of the validation split: what the ridge's penalty is chosen on."""
        return self.frame_pairs("val", max_pairs, batch)

    def frame_pairs(self, split: str, max_pairs: int = 20000,
                    batch: int = 1024) -> Iterator[torch.Tensor]:
        """Consecutive (frame, next frame) pairs of `split`, as `train_frame_pairs`."""
        if self.plan is None or self.normalizer is None:
            self.setup()
        assert self.plan is not None and self.normalizer is not None
        spec = WindowSpec(x_len=self.spec.x_len, seq_len=1, window_shift=self.spec.step,
                          hop=self.spec.step)
        shift, scale = self.normalizer.affine(split)
        ds = WindowDataset(self.signal, spec, shift=shift, scale=scale,
                           transform=self._transform(),
                           segments=[(p.start, p.end) for p in self.plan.pieces[split]])
        n = len(ds)
        if n == 0:
            return
        idx = np.unique(np.linspace(0, n - 1, min(n, max_pairs)).astype(int))
        for start in range(0, len(idx), batch):
            yield ds.__getitems__(idx[start : start + batch].tolist())

    def _transform(self):
        rep = self.representation
        return None if rep.kind == "time" and not rep.standardize else rep.encode

    # ------------------------------------------------------------------ state
    def data_state(self) -> DataState:
        """The typed record a model and its checkpoint carry (settings + fitted statistics)."""
        return DataState(
            data=dict(self.data_cfg), norm=dict(self.norm_cfg), repr=dict(self.repr_cfg),
            normalizer_state=None if self.normalizer is None else self.normalizer.state_dict(),
            representation_state=self.representation.state_dict(),
            meta={k: v for k, v in self.meta.items() if k != "boundaries"}
            | {"boundaries": [list(b) for b in self.meta.get("boundaries", [])]},
        )

    def state_dict(self) -> dict[str, Any]:
        """Lightning's datamodule hook: the same record as plain containers."""
        return self.data_state().to_dict()

    def load_state_dict(self, state: dict[str, Any] | DataState) -> None:
        """Adopt a checkpoint's plan, normaliser and representation (before or after setup)."""
        ds = state if isinstance(state, DataState) else DataState.from_dict(state)
        recorded = dict(ds.meta.get("corpus") or {})
        replan = self.signal is not None and recorded != self._recorded
        self._recorded = recorded
        if ds.normalizer_state is not None:
            self.normalizer = ds.normalizer()
        if ds.representation_state is not None:
            self.representation.load_state_dict(dict(ds.representation_state))
        if replan:  # set up already (Lightning restores after setup): plan from the record
            self.signal = None
            self.setup()

    @classmethod
    def from_data_state(cls, state: DataState, **data_overrides: Any) -> AudioDataModule:
        """Rebuild from a checkpoint's state, without re-fitting on the training data."""
        dm = cls({**state.data, **data_overrides}, state.norm, state.repr)
        dm.load_state_dict(state)
        return dm
