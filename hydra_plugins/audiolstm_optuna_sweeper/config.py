"""The sweeper's structured config: `hydra/sweeper=audiolstm_optuna` (see sweeps/optuna.yaml).

Registered in Hydra's ConfigStore when Hydra's plugin discovery imports this module, so
every key is type-checked and a typo (`hydra.sweeper.n_trail=3`) fails at composition.

No `from __future__ import annotations` here, unlike the rest of the project: Hydra's
plugin scanner executes this module before it is in `sys.modules`, and `dataclasses`
cannot resolve string annotations of such a module.
"""

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore


@dataclass
class SamplerConf:
    """Which Optuna sampler proposes the next trial."""

    name: str = "tpe"  # tpe | random
    seed: int | None = None  # fixed seed: the same study proposes the same trials
    n_startup_trials: int = 10  # tpe: random trials before the density model takes over


@dataclass
class PrunerConf:
    """Early stopping of unpromising trials, decided inside training after every epoch."""

    name: str = "median"  # median | none
    n_startup_trials: int = 5  # no pruning until this many trials have finished
    n_warmup_steps: int = 0  # no pruning during a trial's first epochs (step = epoch index)
    interval_steps: int = 1


@dataclass
class AudiolstmOptunaSweeperConf:
    """One Optuna study driven through Hydra's launcher (basic, joblib or SLURM)."""

    _target_: str = "hydra_plugins.audiolstm_optuna_sweeper.sweeper.AudiolstmOptunaSweeper"
    study_name: str = "audiolstm"
    # SQLite file (any SQLAlchemy URL works); an existing study of that name is resumed.
    # null keeps the study in memory: no resume and no pruning inside the jobs.
    storage: str | None = "sqlite:///${hydra.sweep.dir}/optuna.db"
    direction: str = "minimize"  # of the value train.py returns (cfg.optimized_metric)
    n_trials: int = 20  # trials run by this invocation (a resumed study keeps its old ones)
    n_jobs: int = 1  # trials asked and launched per batch (>1 with a parallel launcher)
    sampler: SamplerConf = field(default_factory=SamplerConf)
    pruner: PrunerConf = field(default_factory=PrunerConf)
    # search space, Hydra sweep syntax: choice(a,b) or a,b | range(lo,hi[,step]) |
    # interval(lo,hi) | tag(log, interval(lo,hi)); a plain value is a fixed override
    params: dict[str, str] | None = None


ConfigStore.instance().store(
    group="hydra/sweeper",
    name="audiolstm_optuna",
    node=AudiolstmOptunaSweeperConf,
    provider="audiolstm",
)
