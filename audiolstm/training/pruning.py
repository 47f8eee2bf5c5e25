"""Optuna pruning from inside training (`optuna=` node set by the Optuna sweeper).

The sweeper (hydra_plugins/audiolstm_optuna_sweeper) runs each trial as an ordinary
training job, possibly in another process or on a SLURM node, so the job cannot be handed
a live `optuna.Trial`. It gets the study name, the storage URL, the trial number and the
pruner settings instead; this callback reopens the trial from the storage, reports the
monitored metric after every validation epoch and, when the pruner says so, marks the
trial PRUNED and raises `optuna.TrialPruned`. `audiolstm.cli.guarded` turns that into a
summary.json with status "pruned" (metrics.csv and samples so far are kept).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

from audiolstm.errors import UserError


class OptunaPruning(Callback):
    """Report `monitor` to the Optuna trial every epoch; stop the run when it is pruned."""

    def __init__(self, study_name: str, storage: str, trial_number: int,
                 pruner: Mapping[str, Any] | None = None, monitor: str = "val/loss") -> None:
        self.study_name = study_name
        self.storage = storage
        self.trial_number = int(trial_number)
        self.pruner = dict(pruner or {})
        self.monitor = monitor
        self.best: float | None = None
        self._study: Any = None
        self._trial: Any = None

    @classmethod
    def from_config(cls, node: Mapping[str, Any], monitor: str) -> OptunaPruning:
        missing = [k for k in ("study_name", "storage", "trial_number") if node.get(k) is None]
        if missing:
            raise UserError(f"optuna.{missing[0]} is required when optuna= is set "
                            "(the Optuna sweeper sets the whole node)")
        return cls(node["study_name"], node["storage"], node["trial_number"],
                   node.get("pruner"), monitor)

    def _open(self) -> Any:
        """The trial, reloaded from the storage by number (done once, on first use)."""
        if self._trial is None:
            import optuna

            from hydra_plugins.audiolstm_optuna_sweeper.study import make_pruner, open_storage

            try:
                study = optuna.load_study(study_name=self.study_name,
                                          storage=open_storage(self.storage),
                                          pruner=make_pruner(self.pruner))
            except KeyError as e:
                raise UserError(f"optuna.study_name={self.study_name!r}: no such study in "
                                f"{self.storage}") from e
            found = [t for t in study.get_trials(deepcopy=False)
                     if t.number == self.trial_number]
            if not found:
                raise UserError(f"optuna.trial_number={self.trial_number}: no such trial in "
                                f"study {self.study_name!r}")
            self._study = study
            self._trial = optuna.trial.Trial(study, found[0]._trial_id)
        return self._trial

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            self._open()  # fail before the first epoch, not after it

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        prune, value = False, math.nan
        if trainer.is_global_zero:
            metric = trainer.callback_metrics.get(self.monitor)
            if metric is not None:
                value = float(metric)
                trial = self._open()
                if math.isfinite(value):
                    minimize = self._study.direction.name == "MINIMIZE"
                    if self.best is None or (value < self.best if minimize else value > self.best):
                        self.best = value
                trial.report(value, step=trainer.current_epoch)
                prune = trial.should_prune()
        # every DDP rank must stop together
        prune = trainer.strategy.broadcast(prune, src=0)
        if not prune:
            return
        epoch = trainer.current_epoch + 1
        if trainer.is_global_zero:
            from optuna.trial import TrialState

            self._study.tell(self._trial, state=TrialState.PRUNED, skip_if_finished=True)
        import optuna

        err = optuna.TrialPruned(f"pruned by Optuna ({self.pruner.get('name', 'pruner')}) after "
                                 f"epoch {epoch}: {self.monitor} {value:.4g}")
        err.value, err.best, err.epoch = value, self.best, epoch  # read by cli.guarded
        raise err
