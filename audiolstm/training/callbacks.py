"""Training callbacks: progress display, per-epoch reseeding, sample generation."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from pytorch_lightning.callbacks import Callback, RichProgressBar
from pytorch_lightning.callbacks.progress import ProgressBar

from audiolstm.errors import UserError, check_temperature
from audiolstm.generation.pipeline import continue_audio, write_outputs
from audiolstm.generation.settings import applied_settings
from audiolstm.generation.strategies import Sampling
from audiolstm.models.base import float32_eval
from audiolstm.runinfo import SAMPLE_FIELDS


class PlainProgressBar(ProgressBar):
    """One line per epoch: readable in CI logs, SLURM files and `tee`d output."""

    def __init__(self) -> None:
        super().__init__()
        self._enabled = True
        self._t0 = 0.0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning 2 runs validation before this hook: train and val metrics are both in.
        if not self._enabled:
            return
        metrics = self.get_metrics(trainer, pl_module)
        shown = "  ".join(
            f"{k} {float(v):.4g}" for k, v in sorted(metrics.items())
            if k.startswith(("train/loss_epoch", "val/loss", "val/rel_"))
        )
        print(
            f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}  step {trainer.global_step}"
            f"  {shown}  ({time.perf_counter() - self._t0:.1f} s)",
            flush=True,
        )


def progress_bar(force: str | None = None) -> ProgressBar:
    """Rich on a terminal, plain lines otherwise (`force`: "rich" or "plain")."""
    kind = force or ("rich" if sys.stdout.isatty() else "plain")
    return RichProgressBar() if kind == "rich" else PlainProgressBar()


class ReseedEachBatch(Callback):
    """Seed torch's RNG from (seed, rank, global step) before every training batch.

    Input noise and dropout then draw the same numbers for step n whether the
    run went straight through or resumed from a checkpoint, whatever else
    consumed random numbers in between (loader iterators draw a seed when
    they are created, and Lightning creates them at different moments on a
    resume). With the per-epoch shuffle of the sampler, `ckpt_path=` resumes
    exactly. Costs a few microseconds per batch.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                             batch: Any, batch_idx: int) -> None:
        torch.manual_seed((self.seed * 1_000_003 + trainer.global_rank * 7919
                           + trainer.global_step) % 2**63)


def check_sample_generation(cfg: Any) -> None:
    """The sample callback's settings, checked before any data is read (not after the first
    epoch): a frame setting its model does not read, a bad temperature; one line each."""
    sample = OmegaConf.select(cfg, "callbacks.sample_generation")
    if not sample:
        return
    given = {k: sample[k] for k in ("strategy", "deticking", "feedback_noise") if k in sample}
    applied_settings(cfg.model.arch == "frame_rnn", cfg.data.hop or cfg.data.x_len,
                     cfg.data.x_len, key="callbacks.sample_generation.", **given)
    check_temperature(sample.get("temperature", 0.0), "callbacks.sample_generation.temperature",
                      UserError)


class SampleGeneration(Callback):
    """Every N epochs (and when training ends) continue a fixed validation seed.

    Writes samples/epoch_XXX.{wav,png,json} into the run dir, logs the audio
    and the figure to W&B when it is on, and keeps the last metrics on the
    module (`sample_metrics`) for summary.json.
    """

    def __init__(self, every_n_epochs: int = 5, seconds: float = 4.0, seed_seconds: float = 2.0,
                 strategy: str = "stateful", deticking: str = "auto",
                 temperature: float = 1.0, feedback_noise: float = 0.0,
                 dirname: str = "samples") -> None:
        self.temperature = temperature
        self.feedback_noise = feedback_noise
        self.every_n_epochs = every_n_epochs
        self.seconds = seconds
        self.seed_seconds = seed_seconds
        self.strategy = strategy
        self.deticking = deticking
        self.dirname = dirname
        self._last_epoch = -1

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        if trainer.sanity_checking or not self.every_n_epochs or epoch % self.every_n_epochs:
            return
        self._sample(trainer, pl_module, epoch)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch > self._last_epoch:
            self._sample(trainer, pl_module, trainer.current_epoch)

    def _sample(self, trainer: pl.Trainer, pl_module: pl.LightningModule, epoch: int) -> None:
        self._last_epoch = epoch
        dm = trainer.datamodule
        if not trainer.is_global_zero or dm is None or pl_module.data_state is None:
            return
        sr = dm.sample_rate
        val = dm.splits["val"]
        n = min(len(val), int(self.seed_seconds * sr))
        start = max(0, (len(val) - n) // 2)  # a fixed seed: the middle of the val split
        seed = np.asarray(val[start : start + n], dtype=np.float32)
        was_training = pl_module.training
        pl_module.eval()
        try:
            state = dm.data_state()  # the statistics in use now (a resumed run restores them)
            sampling = Sampling(self.temperature, self.feedback_noise,
                                torch.Generator(device=pl_module.device).manual_seed(epoch))
            with float32_eval(pl_module.device):  # float32 whatever trainer.precision
                cont = continue_audio(pl_module, state, seed, "val", self.seconds,
                                      self.strategy, None, self.deticking, sampling=sampling)
        finally:
            pl_module.train(was_training)
        out_dir = Path(trainer.default_root_dir) / self.dirname
        stem = f"epoch_{epoch:03d}"
        write_outputs(cont, out_dir, stem, {"epoch": epoch, **cont.settings,
                                            "seconds": self.seconds, "seed_split": "val",
                                            "seed_start_seconds": start / sr})
        m = cont.metrics
        keep = SAMPLE_FIELDS
        pl_module.sample_metrics = {k: m.get(k) for k in keep} | {
            "sample_epoch": epoch, "sample_wav": str(out_dir / f"{stem}.wav")}
        scalars = {f"samples/{k}": float(v) for k, v in m.items()
                   if k in keep and v is not None and np.isfinite(v)}
        for lg in trainer.loggers:
            lg.log_metrics(scalars, step=trainer.global_step)
            if type(lg).__name__ == "WandbLogger":
                lg.log_audio("samples/audio", [cont.audio], step=trainer.global_step,
                             sample_rate=[sr], caption=[stem])
                lg.log_image("samples/plot", [str(out_dir / f"{stem}.png")],
                             step=trainer.global_step, caption=[stem])
