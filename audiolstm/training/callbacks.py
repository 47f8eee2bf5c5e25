"""Training callbacks: progress display, per-epoch reseeding, sample generation."""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from pytorch_lightning.callbacks import Callback, RichProgressBar
from pytorch_lightning.callbacks.progress import ProgressBar

from audiolstm.atomic import temp_sibling
from audiolstm.config import SAMPLE_KEY, check_sample_settings
from audiolstm.errors import UserError, check_temperature
from audiolstm.evaluation.audio_score import AudioReference, AudioScore
from audiolstm.generation.candidates import check_top_p_use
from audiolstm.generation.pipeline import continue_audio, write_outputs
from audiolstm.generation.scoring import ScoreRequest, score_metrics, summary_line
from audiolstm.generation.settings import applied_settings
from audiolstm.generation.strategies import Sampling
from audiolstm.models.base import float32_eval
from audiolstm.models.draw import check_top_p
from audiolstm.runinfo import SAMPLE_FIELDS

log = logging.getLogger(__name__)


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
    temperature = check_temperature(sample.get("temperature", 0.0),
                                    "callbacks.sample_generation.temperature", UserError)
    head = "softmax" if cfg.model.arch == "samplernn" else str(cfg.model.get("head", "mse"))
    check_top_p_use(sample.get("top_p", 1.0), head, temperature,
                    "callbacks.sample_generation.top_p", "callbacks.sample_generation.temperature")


#: what keep_best_audio writes beside the best-loss checkpoint
BEST_AUDIO_CKPT = "best-audio.ckpt"
#: where keep_sampled keeps the weights of every sample (epoch_XXX.ckpt, as the sample)
SAMPLED_CKPT_DIR = "sampled"


def _checkpoint_dir(trainer: pl.Trainer) -> Path:
    """The checkpoint callback's folder (run_dir/checkpoints when it names none)."""
    folder = getattr(trainer.checkpoint_callback, "dirpath", None)
    return Path(folder or Path(trainer.default_root_dir) / "checkpoints")


class SampleGeneration(Callback):
    """Every N epochs (and when training ends) continue a fixed validation seed.

    Writes samples/epoch_XXX.{wav,png,json} into the run dir, logs the audio, the
    figure and the numbers to W&B when it is on, and keeps the last metrics on the
    module (`sample_metrics`) for summary.json. Each sample's generated part is scored
    against the validation split (`score`: auto/true/false, generation/scoring.py; the
    test split stays unseen); `keep_best_audio` also saves the weights of the
    best-scoring sample as checkpoints/best-audio.ckpt, beside the best-loss checkpoint
    (for generation and testing; resume from last.ckpt). The best score, its epoch and
    that path survive a resume (callback state in the checkpoint).
    """

    def __init__(self, every_n_epochs: int = 5, seconds: float = 4.0, seed_seconds: float = 2.0,
                 strategy: str = "stateful", deticking: str = "auto",
                 temperature: float = 1.0, feedback_noise: float = 0.0, top_p: float = 1.0,
                 dirname: str = "samples", score: str | bool = "auto",
                 score_settings: Mapping[str, Any] | None = None,
                 keep_best_audio: bool = False, keep_sampled: bool = False) -> None:
        self.temperature = temperature
        self.top_p = check_top_p(top_p)
        self.feedback_noise = feedback_noise
        self.every_n_epochs = every_n_epochs
        self.seconds = seconds
        self.seed_seconds = seed_seconds
        self.strategy = strategy
        self.deticking = deticking
        self.dirname = dirname
        self.score = ScoreRequest(*check_sample_settings(
            {"score": score, "score_settings": dict(score_settings or {}),
             "keep_best_audio": keep_best_audio, "keep_sampled": keep_sampled,
             "every_n_epochs": every_n_epochs}),
            f"{SAMPLE_KEY}.score")
        self.keep_best_audio = keep_best_audio
        self.keep_sampled = keep_sampled
        self._last_epoch = -1
        self._reference: AudioReference | None = None
        self._skipped: str | None = None
        self.best_audio_score = -math.inf
        self.best_audio_flags = len(AudioScore.FLAG_NAMES)  # beaten by any scored sample
        self.best_audio_noise_excess_db = math.inf
        self.best_audio_epoch: int | None = None
        self.best_audio_path: str | None = None

    # ------------------------------------------------------------------ the reference
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Measure the val split once (rank 0, which samples): floor, ceiling, flags."""
        dm = trainer.datamodule
        if not trainer.is_global_zero or dm is None or not self.score.enabled:
            if not self.score.enabled:
                self._skipped = f"{SAMPLE_KEY}.score=false"
            return
        self._reference, self._skipped = self.score.reference(
            dm.pieces["val"], dm.sample_rate, self.seconds,
            f"{SAMPLE_KEY}.score (the val split)", f"{SAMPLE_KEY}.seconds",
            required=self.keep_best_audio)
        if self._skipped:
            log.warning("samples are not scored: %s", self._skipped)

    def state_dict(self) -> dict[str, Any]:
        return {"best_audio_score": self.best_audio_score,
                "best_audio_flags": self.best_audio_flags,
                "best_audio_noise_excess_db": self.best_audio_noise_excess_db,
                "best_audio_epoch": self.best_audio_epoch,
                "best_audio_path": self.best_audio_path}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best_audio_score = state_dict.get("best_audio_score", -math.inf)
        self.best_audio_flags = state_dict.get("best_audio_flags", 0)
        # a checkpoint from before the noise tie-break: its best counts as not noise-like
        self.best_audio_noise_excess_db = state_dict.get("best_audio_noise_excess_db", 0.0)
        self.best_audio_epoch = state_dict.get("best_audio_epoch")
        self.best_audio_path = state_dict.get("best_audio_path")

    # ------------------------------------------------------------------ sampling
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
        if dm is None or pl_module.data_state is None:
            return
        improved = False
        if trainer.is_global_zero:
            improved = self._generate(trainer, pl_module, epoch)
        if self.keep_best_audio and trainer.strategy.broadcast(improved, src=0):
            self._save_best(trainer)  # every rank: saving a checkpoint is collective
        if self.keep_sampled:
            # weights only (a third of the size with Adam's state): for generation and
            # judging, not for resuming
            self._save_atomic(trainer, self._sampled_path(trainer, epoch), weights_only=True)

    def _generate(self, trainer: pl.Trainer, pl_module: pl.LightningModule, epoch: int) -> bool:
        """Generate, write, score and log one sample; True when it is the best-scoring yet."""
        dm = trainer.datamodule
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
                                torch.Generator(device=pl_module.device).manual_seed(epoch),
                                self.top_p)
            with float32_eval(pl_module.device):  # float32 whatever trainer.precision
                cont = continue_audio(pl_module, state, seed, "val", self.seconds,
                                      self.strategy, None, self.deticking, sampling=sampling)
        finally:
            pl_module.train(was_training)
        score, numbers = score_metrics(cont.generated, self._reference, self._skipped)
        cont.metrics |= numbers
        best_key = (-self.best_audio_flags, -self.best_audio_noise_excess_db,
                    self.best_audio_score)
        improved = score is not None and score.rank_key > best_key  # AudioScore.rank_key
        if improved:
            self.best_audio_score, self.best_audio_epoch = score.score, epoch
            self.best_audio_flags = score.flag_count
            self.best_audio_noise_excess_db = score.noise_excess_db
        out_dir = Path(trainer.default_root_dir) / self.dirname
        stem = f"epoch_{epoch:03d}"
        write_outputs(cont, out_dir, stem, {"epoch": epoch, **cont.settings,
                                            "seconds": self.seconds, "seed_split": "val",
                                            "seed_start_seconds": start / sr,
                                            "reference": "val split", "score": self.score.mode})
        m = cont.metrics
        best = {}
        if self.best_audio_epoch is not None:
            best = {"best_audio_score": self.best_audio_score,
                    "best_audio_epoch": self.best_audio_epoch}
            if self.keep_best_audio:
                best["ckpt_best_audio"] = str(self._best_path(trainer))
        pl_module.sample_metrics = {k: m.get(k) for k in SAMPLE_FIELDS} | {
            "sample_epoch": epoch, "sample_wav": str(out_dir / f"{stem}.wav")} | best
        if score is not None:
            log.info("epoch %d sample: %s", epoch, summary_line(score))
        scalars = {f"samples/{k}": float(v) for k, v in (m | best).items()
                   if (k in SAMPLE_FIELDS or k.startswith("audio_") or k in best)
                   and isinstance(v, (int, float)) and np.isfinite(v)}
        for lg in trainer.loggers:
            lg.log_metrics(scalars, step=trainer.global_step)
            if type(lg).__name__ == "WandbLogger":
                lg.log_audio("samples/audio", [cont.audio], step=trainer.global_step,
                             sample_rate=[sr], caption=[stem])
                lg.log_image("samples/plot", [str(out_dir / f"{stem}.png")],
                             step=trainer.global_step, caption=[stem])
        return improved

    @staticmethod
    def _best_path(trainer: pl.Trainer) -> Path:
        return _checkpoint_dir(trainer) / BEST_AUDIO_CKPT

    @staticmethod
    def _sampled_path(trainer: pl.Trainer, epoch: int) -> Path:
        """checkpoints/sampled/epoch_XXX.ckpt: the weights behind samples/epoch_XXX.*"""
        return _checkpoint_dir(trainer) / SAMPLED_CKPT_DIR / f"epoch_{epoch:03d}.ckpt"

    def _save_best(self, trainer: pl.Trainer) -> None:
        """checkpoints/best-audio.ckpt."""
        if self._save_atomic(trainer, self._best_path(trainer)):
            self.best_audio_path = str(self._best_path(trainer))

    @staticmethod
    def _save_atomic(trainer: pl.Trainer, final: Path, weights_only: bool = False) -> bool:
        """A checkpoint written whole or not at all (temp file + rename); collective, so
        every rank calls it. True on the rank that wrote it."""
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_sibling(final)
        trainer.save_checkpoint(tmp, weights_only=weights_only)
        if trainer.is_global_zero:
            os.replace(tmp, final)
        return trainer.is_global_zero
