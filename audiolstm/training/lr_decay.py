"""Learning-rate decay over the run's own budget (`callbacks.lr_decay`).

Why: a run with a fixed budget (`trainer.max_time`, `max_steps` or `max_epochs`) ends
wherever the budget runs out, and at a constant learning rate the weights it ends on are
still jumping around the minimum: Adam's step noise costs loss. Holding the rate and
then annealing it over the budget's last part ("warmup-stable-decay" without the
warmup) lets the last steps settle. An epoch-based `model.scheduler` cannot do this
under a wall-clock budget, where nobody knows the number of epochs in advance.

Progress is the largest of the budget fractions used so far (time from Lightning's
`Timer`, optimiser steps, epochs), so the decay ends when the first limit is reached.
It is a function of the trainer's state, which a checkpoint restores (the Timer keeps
its elapsed time, the optimiser its `initial_lr`): a resumed run continues the same
curve. Early stopping can end a run before its budget; the decay does not foresee it.
"""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl
from omegaconf import OmegaConf
from pytorch_lightning.callbacks import Callback, Timer

from audiolstm.errors import UserError

KEY = "callbacks.lr_decay"
#: the defaults: hold the rate for the budget's first half, end at 5 % of it
DECAY_FROM, FINAL_RATIO = 0.5, 0.05


def decay_factor(progress: float, decay_from: float, final_ratio: float) -> float:
    """The learning rate's multiplier at `progress` (0..1 of the budget): 1 until
    `decay_from`, then half a cosine down to `final_ratio` at the end."""
    if progress <= decay_from:
        return 1.0
    t = min(1.0, (progress - decay_from) / (1.0 - decay_from))
    return final_ratio + (1.0 - final_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))


def budget_progress(trainer: pl.Trainer, batch_idx: int) -> float | None:
    """How far the run is through its budget (0..1), or None when it has no budget."""
    fractions = []
    timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
    remaining = timer.time_remaining() if timer is not None else None
    if timer is not None and remaining is not None:
        elapsed = timer.time_elapsed()
        fractions.append(elapsed / max(elapsed + remaining, 1e-9))
    if trainer.max_steps is not None and trainer.max_steps > 0:
        fractions.append(trainer.global_step / trainer.max_steps)
    if trainer.max_epochs is not None and trainer.max_epochs > 0:
        batches = trainer.num_training_batches
        within = batch_idx / batches if isinstance(batches, int) and batches > 0 else 0.0
        fractions.append((trainer.current_epoch + within) / trainer.max_epochs)
    return min(1.0, max(fractions)) if fractions else None


def _fraction(value: Any, field: str, *, upper_open: bool) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = math.nan
    ok = math.isfinite(v) and v >= 0.0 and (v < 1.0 if upper_open else v <= 1.0)
    if isinstance(value, bool) or not ok:
        bound = "in [0, 1)" if upper_open else "in [0, 1]"
        raise UserError(f"{KEY}.{field}={value!r} must be a number {bound}")
    return v


def check_lr_decay(cfg: Any) -> None:
    """The decay's settings, before any data is read: the fractions in range, a budget
    to decay over, and no epoch scheduler fighting it for the learning rate."""
    node = OmegaConf.select(cfg, KEY)
    if not node:
        return
    _fraction(node.get("decay_from", DECAY_FROM), "decay_from", upper_open=True)
    _fraction(node.get("final_ratio", FINAL_RATIO), "final_ratio", upper_open=False)
    if cfg.model.get("scheduler"):
        raise UserError(f"{KEY} and model.scheduler both set the learning rate: "
                        f"drop one (~{KEY} or model.scheduler=null)")
    trainer = cfg.trainer
    steps, epochs = trainer.get("max_steps", -1), trainer.get("max_epochs")
    if (trainer.get("max_time") is None and not (steps is not None and steps > 0)
            and not (epochs is not None and epochs > 0)):
        raise UserError(f"{KEY} needs a budget to decay over: set trainer.max_time, "
                        "trainer.max_steps or trainer.max_epochs")


class BudgetLRDecay(Callback):
    """Sets every optimiser's learning rate to `initial_lr x decay_factor(progress)`
    before each training batch (the batch's truncated-BPTT steps share it)."""

    def __init__(self, decay_from: float = DECAY_FROM, final_ratio: float = FINAL_RATIO) -> None:
        self.decay_from = _fraction(decay_from, "decay_from", upper_open=True)
        self.final_ratio = _fraction(final_ratio, "final_ratio", upper_open=False)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                             batch: Any, batch_idx: int) -> None:
        progress = budget_progress(trainer, batch_idx)
        if trainer.world_size > 1:  # each rank's clock differs: rank 0's rate for all
            progress = trainer.strategy.broadcast(progress)
        if progress is None:  # check_lr_decay refuses this for train.py's configs
            raise ValueError("BudgetLRDecay needs max_time, max_steps or max_epochs")
        factor = decay_factor(progress, self.decay_from, self.final_ratio)
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
                group["lr"] = group["initial_lr"] * factor
