"""`AudioDataModule`: load/cache -> split -> fit normaliser -> windows -> loaders.

The signal is memory-mapped from the cache, so every DDP rank and loader
worker shares one copy. Splits are contiguous views; datasets are built
lazily in the `*_dataloader` methods so a state restored from a checkpoint
(`load_state_dict`, called by Lightning after `setup`) is what they use.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Sampler

from audiolstm.data.normalize import Normalizer, fit_normalizer
from audiolstm.data.representation import Representation
from audiolstm.data.settings import data_config
from audiolstm.data.sources import source_signal
from audiolstm.data.splits import split_bounds
from audiolstm.data.state import DataState
from audiolstm.data.windows import ShuffleSampler, WindowDataset, WindowSpec, identity_collate
from audiolstm.errors import UserError


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
    """Train/val/test loaders of overlapping windows over one audio signal.

    Args mirror the `data`, `norm` and `repr` config nodes (plain mappings).
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

    # ------------------------------------------------------------------ properties
    @property
    def input_dim(self) -> int:
        """Feature dimension D of one frame (x_len for time/rfft, 2 x_len for fft)."""
        return self.representation.dim

    @property
    def sample_rate(self) -> int:
        return int(self.data_cfg["sample_rate"])

    # ------------------------------------------------------------------ lifecycle
    def _load(self) -> tuple[np.ndarray, dict[str, Any]]:
        d = self.data_cfg
        return source_signal(
            source=d["source"], path=d.get("path"), sample_rate=d["sample_rate"],
            cache_dir=d["cache_dir"], synth_seconds=d["synth_seconds"],
            synth_seed=d["synth_seed"],
        )

    def prepare_data(self) -> None:
        """Decode/resample once into the cache (rank 0 only under DDP)."""
        self._load()

    def setup(self, stage: str | None = None) -> None:
        if self.signal is not None:
            return
        signal, meta = self._load()
        bounds = split_bounds(len(signal), list(self.data_cfg["splits"]))
        self.signal, self.meta = signal, meta
        self.splits = {name: signal[a:b] for name, (a, b) in bounds.items()}
        self._check_lengths()
        if self.normalizer is None:  # not restored from a checkpoint
            self.normalizer = fit_normalizer(
                self.norm_cfg.get("scheme", "std"),
                self.splits["train"],
                {k: v for k, v in self.splits.items() if k != "train"},
            )
        if self.representation.standardize and not self.representation.fitted:
            # all non-overlapping training frames, streamed (a view, no copy)
            train, x_len = self.splits["train"], self.data_cfg["x_len"]
            frames = train[: len(train) // x_len * x_len].reshape(-1, x_len)
            self.representation.fit(frames, *self.normalizer.affine("train"))

    def _check_lengths(self) -> None:
        """Every split must hold at least one example: say what duration would."""
        d, sr = self.data_cfg, self.sample_rate
        for name, spec in (("train", self.spec), ("val", self.eval_spec), ("test", self.eval_spec)):
            if spec.count(len(self.splits[name])) > 0:
                continue
            ratios = list(d["splits"])
            need_total = max(
                math.ceil(s.min_samples / r)
                for s, r in zip((self.spec, self.eval_spec, self.eval_spec), ratios, strict=True)
            )
            total = len(self.signal)
            raise UserError(
                f"{self._source_name()}: {total / sr:.2f} s of audio gives no example in the "
                f"{name} split ({len(self.splits[name]) / sr:.2f} s); one example spans "
                f"{spec.min_samples / sr:.3f} s at data.x_len={d['x_len']}, "
                f"data.seq_len={d['seq_len']}, hop={spec.step}, so data.splits={ratios} "
                f"needs at least {need_total / sr:.2f} s of audio"
            )

    def _source_name(self) -> str:
        d = self.data_cfg
        return str(d.get("path")) if d["source"] != "synthetic" else "data=synthetic"

    # ------------------------------------------------------------------ datasets
    def dataset(self, split: str) -> WindowDataset:
        """A windows dataset over one split, normalised with that split's affine map."""
        if self.normalizer is None:
            self.setup()
        shift, scale = self.normalizer.affine(split)
        return WindowDataset(
            self.splits[split],
            self.spec if split == "train" else self.eval_spec,
            shift=shift,
            scale=scale,
            transform=self._transform(),
            reuse_buffers=split == "train" and self.data_cfg["num_workers"] == 0,
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
        sampler = (ShuffleSampler(len(ds), self.seed, world, rank) if split == "train"
                   else ShardSampler(len(ds), world, rank))
        return DataLoader(
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
        if self.normalizer is None:
            self.setup()
        spec = WindowSpec(x_len=self.spec.x_len, seq_len=1, window_shift=self.spec.step,
                          hop=self.spec.step)
        shift, scale = self.normalizer.affine("train")
        ds = WindowDataset(self.splits["train"], spec, shift=shift, scale=scale,
                           transform=self._transform())
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
        ds = state if isinstance(state, DataState) else DataState.from_dict(state)
        if ds.normalizer_state is not None:
            self.normalizer = ds.normalizer()
        if ds.representation_state is not None:
            self.representation.load_state_dict(dict(ds.representation_state))

    @classmethod
    def from_data_state(cls, state: DataState, **data_overrides: Any) -> AudioDataModule:
        """Rebuild from a checkpoint's state, without re-fitting on the training data."""
        dm = cls({**state.data, **data_overrides}, state.norm, state.repr)
        dm.load_state_dict(state)
        return dm
