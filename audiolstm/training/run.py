"""`python train.py`: compose -> validate -> data -> model -> fit -> test -> summary.

Everything a run produces lands in its Hydra run directory: the resolved
config (.hydra/), checkpoints/ (best and last), metrics.csv,
learning_curves.png, samples/ and summary.json. The returned value is the
metric sweepers optimise (`optimized_metric`, default val/loss).
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint, WeightAveraging
from pytorch_lightning.loggers import CSVLogger, Logger, WandbLogger

from audiolstm.atomic import write_json
from audiolstm.config import to_container, validate_train
from audiolstm.data.datamodule import AudioDataModule
from audiolstm.errors import UserError
from audiolstm.evaluation.baselines import RIDGE_MAX_DIM
from audiolstm.evaluation.likelihood import GRID_NAME
from audiolstm.evaluation.plots import plot_learning_curves
from audiolstm.models.checkpoints import load_checkpoint
from audiolstm.models.frame_rnn import AudioRNN
from audiolstm.models.registry import build_model
from audiolstm.runinfo import METRIC_FIELDS, epoch_curves, now_iso
from audiolstm.training.callbacks import ReseedEachBatch, check_sample_generation
from audiolstm.training.device import check_device, configure_cuda, uses_cuda
from audiolstm.training.lr_decay import check_lr_decay
from audiolstm.training.precision import apply_precision, check_precision
from audiolstm.training.resume import (
    AdoptDataModuleState,
    check_resumable,
    find_last_checkpoint,
)

log = logging.getLogger(__name__)


def run_label() -> str:
    """The run's overrides ("model=lstm_300x2,data.x_len=4000"), or "default"."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return HydraConfig.get().job.override_dirname or "default"
    except ValueError:  # not inside a Hydra app (tests, notebooks)
        return "default"


def build_loggers(cfg: DictConfig, run_dir: Path, wandb_id: str | None) -> list[Logger]:
    loggers: list[Logger] = []
    for name, node in (cfg.get("logger") or {}).items():
        if node is None:
            continue
        extra: dict[str, Any] = {}
        if name == "wandb":
            extra["id"] = wandb_id
            if node.get("name") is None:
                extra["name"] = run_label()
        loggers.append(instantiate(node, **extra))
    if not any(isinstance(lg, CSVLogger) for lg in loggers):  # CSV is always on
        loggers.insert(0, CSVLogger(save_dir=str(run_dir), name="", version=""))
    return loggers


def check_weight_averaging(cfg: DictConfig) -> None:
    """Refuse Lightning's `WeightAveraging` (EMA/SWA) callbacks, before any data is read.
    Its checkpoints hold the averaged weights as `state_dict` (what generate.py and
    report.py load) and the raw ones as `current_model_state`, which its
    `on_load_checkpoint` puts back into the module when the test after training loads the
    best checkpoint: the test numbers would be the raw model's, the audio the averaged
    one's (found in issue 22, Lightning 2.6)."""
    for name, node in (cfg.get("callbacks") or {}).items():
        target = node.get("_target_") if node else None
        try:
            # get_object, not get_class: a factory function (callbacks.progress_bar) is a
            # valid target, and get_class logs an ERROR line for it in every train.log
            cls = get_object(target) if target else None
        except Exception:  # noqa: BLE001 - a bad target is instantiate's error to report
            continue
        if isinstance(cls, type) and issubclass(cls, WeightAveraging):
            raise UserError(
                f"callbacks.{name}: {target} is not supported: the test after training "
                "would score the checkpoint's raw weights and generate.py its averaged ones")


def build_callbacks(cfg: DictConfig) -> list[pl.Callback]:
    callbacks = [instantiate(node) for node in (cfg.get("callbacks") or {}).values() if node]
    callbacks.append(ReseedEachBatch(cfg.seed))
    if cfg.get("optuna"):  # a trial of the Optuna sweeper: report each epoch, maybe prune
        from audiolstm.training.pruning import OptunaPruning

        callbacks.append(OptunaPruning.from_config(to_container(cfg.optuna),
                                                   monitor=cfg.optimized_metric))
    return callbacks


def _warm_start(model: pl.LightningModule, ckpt: dict[str, Any], path: str) -> None:
    """init_from: copy weights whose names and shapes match; refuse if the net differs."""
    own = model.state_dict()
    theirs = ckpt["state_dict"]
    mismatched = [k for k in own if k not in theirs or theirs[k].shape != own[k].shape]
    if mismatched:
        raise UserError(
            f"init_from={path}: weights do not fit this model ({mismatched[0]} differs; "
            "the architecture and data.x_len/repr must match the checkpoint's)"
        )
    model.load_state_dict({k: theirs[k] for k in own})


def run(cfg: DictConfig) -> float:
    """Train (and test) one configuration; returns cfg.optimized_metric."""
    started_at = now_iso()
    validate_train(cfg)
    check_sample_generation(cfg)  # the sample callback's settings, before any data is read
    check_lr_decay(cfg)  # its fractions, its budget, no second scheduler
    check_weight_averaging(cfg)  # EMA/SWA would test one model and generate another
    check_device(cfg)  # trainer=gpu without CUDA: one line, not a Lightning traceback
    check_precision(cfg.trainer)  # a value Lightning does not know, float16 on CPU: one line
    precision = apply_precision(cfg.trainer)  # `auto` -> bf16-mixed or 32-true, logged
    run_dir = Path(cfg.paths.output_dir)
    ckpt_path = cfg.ckpt_path
    if ckpt_path == "last":
        ckpt_path = str(find_last_checkpoint(cfg, run_dir))
    resume = load_checkpoint(ckpt_path, "ckpt_path") if ckpt_path else None
    # a resume keeps the checkpoint's data and model settings: refused before anything is written
    recorded = check_resumable(cfg, resume, ckpt_path) if resume else None
    init = load_checkpoint(cfg.init_from, "init_from") if cfg.init_from else None
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))

    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    configure_cuda(cfg.float32_matmul_precision, uses_cuda(cfg.trainer))
    dm = AudioDataModule(to_container(cfg.data), to_container(cfg.norm),
                         to_container(cfg.repr), seed=cfg.seed)
    if recorded is not None:  # before setup: its split plan and fitted normaliser hold
        dm.load_state_dict(recorded)
    dm.prepare_data()
    dm.setup("fit")
    dm.write_splits(run_dir)  # which files and seconds are in each split

    model = build_model(dm.input_dim, to_container(cfg.model))
    model.data_state = dm.data_state()
    ridge = None
    if cfg.ridge_baseline and isinstance(model, AudioRNN) and dm.input_dim <= RIDGE_MAX_DIM:
        # fitted on train, its penalty chosen on val unless ridge_alpha fixes it
        ridge = model.fit_ridge(dm.train_frame_pairs, cfg.ridge_alpha, dm.val_frame_pairs)
        if ridge is not None:
            log.info("ridge baseline: alpha %.4g (%s)", ridge.alpha, ridge.chosen_by)
    if isinstance(model, AudioRNN):
        model.init_linear_ar()  # model.linear_ar=ridge: from the fit above
    if init is not None:  # after: the checkpoint's weights win (its linear path too)
        _warm_start(model, init, cfg.init_from)

    wandb_id = (resume["audiolstm"].get("wandb_id") if resume else None)
    loggers = build_loggers(cfg, run_dir, wandb_id)
    callbacks = build_callbacks(cfg)
    if resume is not None:
        callbacks.append(AdoptDataModuleState())
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)

    hparams = to_container(cfg) | {"params": model.num_params, "run_dir": str(run_dir)}
    for lg in loggers:
        if isinstance(lg, WandbLogger) and trainer.is_global_zero:
            model.wandb_id = lg.experiment.id
            lg.experiment.summary["params"] = model.num_params
        if not isinstance(lg, CSVLogger):
            lg.log_hyperparams(hparams)

    if trainer.is_global_zero:
        log.info("model: %s parameters, input dim %d; run dir %s",
                 f"{model.num_params:,}", dm.input_dim, run_dir)
    t0 = time.perf_counter()
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
    train_seconds = time.perf_counter() - t0

    ckpt_cb = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
    best = ckpt_cb.best_model_path if ckpt_cb and ckpt_cb.best_model_path else None
    best_val = float(ckpt_cb.best_model_score) if ckpt_cb and ckpt_cb.best_model_score is not None \
        else _metric(trainer, "val/loss")
    val_metrics = {k: _metric(trainer, k) for k in list(trainer.callback_metrics)
                   if k.startswith("val/")}

    test_metrics: dict[str, float] = {}
    if cfg.test:
        trainer.test(model, datamodule=dm, ckpt_path=best, weights_only=False)
        test_metrics = {k: _metric(trainer, k) for k in list(trainer.callback_metrics)
                        if k.startswith("test/")}

    if not trainer.is_global_zero:
        return float(best_val)
    for lg in loggers:
        lg.save()
    summary = {
        "status": "completed",
        "run_dir": str(run_dir),
        "overrides": run_label(),
        "resumed_from": ckpt_path,
        "sweep_name": cfg.get("sweep_name"),
        "best_val_loss": best_val,
        "val": val_metrics,
        **{key: test_metrics.get(metric) for metric, key in METRIC_FIELDS.items()},
        "params": model.num_params,
        # the ridge baseline's penalty (and the linear path's, when it starts there)
        "ridge_alpha": None if ridge is None else ridge.alpha,
        "ridge_alpha_chosen_by": None if ridge is None else ridge.chosen_by,
        # what test_bits_per_sample is a likelihood of (evaluation/likelihood.py), and how
        "bits_grid": GRID_NAME,
        "bits_kind": getattr(model, "bits_kind", None),
        **dm.split_summary(),
        "precision": precision.value,
        "epochs": trainer.current_epoch,
        "steps": trainer.global_step,
        "train_seconds": train_seconds,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "started_at": started_at,
        "finished_at": now_iso(),
        "ckpt_best": best,
        "ckpt_last": (str(Path(ckpt_cb.dirpath) / "last.ckpt")
                      if ckpt_cb and ckpt_cb.save_last else None),
        "wandb_id": model.wandb_id,
    }
    summary |= getattr(model, "sample_metrics", None) or {}
    write_json(run_dir / "summary.json", summary)
    curves = epoch_curves(run_dir / "metrics.csv")
    if curves:
        plot_learning_curves(run_dir / "learning_curves.png", {run_label(): curves},
                             title=f"{run_label()} ({model.num_params:,} params)")
    _verdict(summary)
    print(f"outputs: {run_dir}", flush=True)
    metric = cfg.optimized_metric
    value = best_val if metric == "val/loss" else _metric(trainer, metric)
    return float(value) if value is not None else math.nan


def _metric(trainer: pl.Trainer, key: str) -> float | None:
    v = trainer.callback_metrics.get(key)
    return None if v is None else float(torch.as_tensor(v).item())


def _verdict(summary: dict[str, Any]) -> None:
    """Say plainly whether the model beats the trivial predictors on the test split."""
    loss, zero, pers = (summary.get(k) for k in ("test_mse", "test_mse_zero",
                                                 "test_mse_persistence"))
    if loss is None or zero is None or pers is None:
        return
    best_name, best = min((("zero", zero), ("persistence", pers)), key=lambda t: t[1])
    if loss >= best:
        print(f"WARNING: test MSE {loss:.4g} does not beat the {best_name} baseline "
              f"({best:.4g}): the model has learned nothing useful yet", file=sys.stderr)
    else:
        print(f"test MSE {loss:.4g} = {loss / zero:.3f} x zero baseline, "
              f"{loss / pers:.3f} x persistence baseline", flush=True)
    ridge = summary.get("test_mse_ridge")
    if ridge is not None:
        word = "beats" if loss < ridge else "does NOT beat"
        how = summary.get("ridge_alpha_chosen_by")
        penalty = "" if how is None else f", penalty {summary['ridge_alpha']:.3g} ({how})"
        print(f"test MSE {word} the ridge baseline (frame -> next frame, fitted on train"
              f"{penalty}): {loss:.4g} vs {ridge:.4g}", flush=True)
