"""`AudiolstmOptunaSweeper`: ask Optuna for trials, launch them through Hydra, tell results.

Each batch of `n_jobs` trials is turned into override lists and handed to the configured
launcher (basic, joblib, submitit), so an Optuna search runs wherever a grid sweep runs.
Every job also gets an `optuna={study_name, storage, trial_number, pruner}` override; the
training job uses it to report its validation loss after every epoch and to prune itself
(audiolstm/training/pruning.py). A job that fails or returns a non-finite value is told to
the study as FAIL and the search goes on.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.audiolstm_optuna_sweeper.study import (
    SearchSpace,
    absolute_storage,
    format_value,
    make_pruner,
    make_sampler,
    open_storage,
)

log = logging.getLogger(__name__)


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


class AudiolstmOptunaSweeper(Sweeper):
    """Optuna (>= 4) search with a resumable storage, over any Hydra launcher."""

    def __init__(self, study_name: str, storage: str | None, direction: str, n_trials: int,
                 n_jobs: int, sampler: Any, pruner: Any,
                 params: dict[str, str] | None = None) -> None:
        self.study_name = study_name
        self.storage = absolute_storage(storage)
        self.direction = direction
        self.n_trials = n_trials
        self.n_jobs = max(1, n_jobs)
        self.sampler = _plain(sampler) or {}
        self.pruner = _plain(pruner) or {"name": "none"}
        self.params = _plain(params) or {}
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.launcher: Any = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        import optuna

        assert self.config is not None and self.hydra_context is not None
        # Config params first, command line after: a command-line key replaces that axis.
        lines = {o.get_key_element(): o for o in OverridesParser.create(
            config_loader=self.hydra_context.config_loader).parse_overrides(
                [f"{k}={v}" for k, v in self.params.items()] + list(arguments))}
        space = SearchSpace(lines.values())
        if not space.distributions:
            raise ValueError("hydra.sweeper.params defines no search space "
                             "(use choice(...), range(...) or interval(...))")
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")

        study = optuna.create_study(
            study_name=self.study_name, storage=open_storage(self.storage),
            sampler=make_sampler(self.sampler), pruner=make_pruner(self.pruner),
            direction=self.direction, load_if_exists=True)
        if study.trials:
            log.info("Optuna study %r resumed with %d earlier trials", self.study_name,
                     len(study.trials))
            study.sampler = make_sampler(self.sampler, n_existing=len(study.trials))
        # The `optuna` node is bookkeeping, not a hyper-parameter: keep it out of run names.
        exclude = list(self.config.hydra.job.config.override_dirname.exclude_keys) + ["optuna"]
        per_job = [f"hydra.job.config.override_dirname.exclude_keys={format_value(exclude)}"]

        returns: list[Sequence[JobReturn]] = []
        remaining = self.n_trials
        while remaining > 0:
            trials = [study.ask(space.distributions) for _ in range(min(self.n_jobs, remaining))]
            batch = []
            for t in trials:
                own = space.fixed + space.to_overrides(t.params)
                t.set_user_attr("overrides", own)  # what the run was given, for the report
                batch.append(own + per_job + self._job_overrides(t.number))
            try:
                self.validate_batch_is_legal(batch)
            except Exception:  # a composition error repeats for every trial: stop here
                for trial in trials:
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                raise
            try:
                results = self.launcher.launch(batch, initial_job_idx=trials[0].number)
            except BaseException:  # Ctrl-C, a dead launcher: no trial may stay RUNNING, or a
                for trial in trials:  # resumed study would count it as running forever
                    study.tell(trial, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
                raise
            for trial, ret in zip(trials, results, strict=True):
                self._tell(study, trial, ret)
            returns.append(results)
            remaining -= len(trials)
        self._write_results(study, sweep_dir)
        return returns

    def _job_overrides(self, number: int) -> list[str]:
        """`optuna={...}`: lets the job find its trial (pruning needs a shared storage)."""
        if self.storage is None:
            return []
        node = {"study_name": self.study_name, "storage": self.storage,
                "trial_number": number, "pruner": self.pruner}
        return [f"optuna={format_value(node)}"]

    def _tell(self, study: Any, trial: Any, ret: JobReturn) -> None:
        """COMPLETE with the job's value; FAIL for errors and nan; a job's own PRUNED stays."""
        from optuna import TrialPruned
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState

        run_dir = (OmegaConf.select(ret.hydra_cfg, "hydra.runtime.output_dir")
                   if ret.hydra_cfg is not None else None)
        if run_dir:
            with contextlib.suppress(UpdateFinishedTrialError):  # pruned by the job itself
                trial.set_user_attr("run_dir", str(run_dir))
        if ret.status == JobStatus.FAILED:
            err = ret._return_value
            state = TrialState.PRUNED if isinstance(err, TrialPruned) else TrialState.FAIL
            log.warning("trial %d %s: %s", trial.number, state.name.lower(), err)
            study.tell(trial, state=state, skip_if_finished=True)
            return
        try:
            value = float(ret.return_value)
        except (TypeError, ValueError):
            value = math.nan
        if math.isfinite(value):
            frozen = study.tell(trial, value, skip_if_finished=True)
        else:
            frozen = study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
        log.info("trial %d %s: value %s", trial.number, frozen.state.name.lower(), frozen.value)

    def _write_results(self, study: Any, sweep_dir: Path) -> None:
        """optimization_results.yaml in the sweep dir: the best trial and trial counts."""
        states: dict[str, int] = {}
        for t in study.trials:
            states[t.state.name.lower()] = states.get(t.state.name.lower(), 0) + 1
        result: dict[str, Any] = {"study_name": self.study_name, "storage": self.storage,
                                  "direction": self.direction, "trials": states}
        try:
            best = study.best_trial
            result |= {"best_value": best.value, "best_trial": best.number,
                       "best_params": best.params,
                       "best_overrides": best.user_attrs.get("overrides"),
                       "best_run_dir": best.user_attrs.get("run_dir")}
            log.info("best trial %d: value %.6g, %s", best.number, best.value, best.params)
        except ValueError:
            log.warning("no trial of study %r has completed yet", self.study_name)
        OmegaConf.save(OmegaConf.create(result), sweep_dir / "optimization_results.yaml")
