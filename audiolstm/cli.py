"""Entry points: `python train.py`, `generate.py`, `explore.py`, `report.py`.

User errors (`UserError`) are printed as one line on stderr and the process
exits with code 2, no traceback. So are Hydra's own errors about the command line, before
the task starts (a value of the wrong type, a config group option that does not exist, an
override it cannot parse): Hydra prints those over several lines and exits 1. Inside a
multirun a failing job is recorded (summary.json with status "failed" and the reason) and
the sweep goes on.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from audiolstm import PROJECT_ROOT
from audiolstm.config import register_configs
from audiolstm.errors import UserError
from audiolstm.runinfo import now_iso

CONF_DIR = str(PROJECT_ROOT / "conf")
log = logging.getLogger("audiolstm")

register_configs()

# Noise that says nothing to our users: the run dir always holds .hydra/ next to
# metrics.csv; we choose num_workers on purpose; a Lightning-internal deprecation.
for _pattern in (r"Experiment logs directory .* exists and is not empty",
                 r".*does not have many workers.*",
                 r".*isinstance\(treespec, LeafSpec\).*",
                 r"The anonymous setting has no effect.*"):
    warnings.filterwarnings("ignore", message=_pattern)


#: True once an error escaped a task run by `guarded`: a Hydra or OmegaConf error then is a
#: bug of ours, not a bad command line, and keeps its traceback (a later sweep job's bad
#: value, composed after earlier jobs ran, is still one line)
_task_raised = False
#: marks HYDRA_FULL_ERROR as set by `hydra_entry` (inherited by the processes a run
#: starts: DDP ranks, sweep jobs), not by a user who wants Hydra's full traceback
_OWN_FULL_ERROR = "AUDIOLSTM_HYDRA_FULL_ERROR"


def config_error_line(exc: BaseException) -> str:
    """One line from Hydra's multi-line composition error: the override, OmegaConf's reason
    and the field (`full_key`), a config group's options comma-separated; without the
    config search path, the object types and the HYDRA_FULL_ERROR hint."""
    texts = [str(exc)]
    if exc.__cause__ is not None and str(exc.__cause__) not in texts[0]:
        texts.append(str(exc.__cause__))
    parts: list[str] = []
    for text in texts:
        lines = [ln.strip() for ln in text.split("Config search path:")[0].splitlines()]
        options: list[str] | None = None
        for ln in lines:
            if not ln or ln.startswith(("object_type=", "reference_type=", "Set the environ")):
                continue
            if ln.startswith("Available options in"):
                options = []
                parts.append(ln.rstrip(":"))
            elif options is not None and " " not in ln:
                options.append(ln)
                parts[-1] = f"{parts[-1].split(':')[0]}: {', '.join(options)}"
            else:
                options = None
                parts.append(ln)
    return "; ".join(parts)


def hydra_entry(main: Callable[[], Any]) -> Callable[[], Any]:
    """Wrap a `@hydra.main` entry point so that an error of the command line (raised by
    Hydra before the task starts) is one line on stderr and exit code 2, as `UserError`s
    are. Hydra re-raises instead of printing only under HYDRA_FULL_ERROR=1; a user who set
    it gets Hydra's traceback untouched."""

    @functools.wraps(main)
    def entry() -> Any:
        if os.environ.get("HYDRA_FULL_ERROR") == "1" and not os.environ.get(_OWN_FULL_ERROR):
            return main()
        os.environ["HYDRA_FULL_ERROR"] = os.environ[_OWN_FULL_ERROR] = "1"
        try:
            return main()
        except (HydraException, OmegaConfBaseException) as e:
            if _task_raised:
                raise
            print(f"error: {config_error_line(e)}", file=sys.stderr, flush=True)
            sys.exit(UserError.exit_code)

    return entry


def _in_multirun() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:
        return False


def _record_failure(cfg: DictConfig, reason: str, status: str = "failed",
                    **extra: Any) -> None:
    from audiolstm.atomic import write_json
    from audiolstm.training.run import run_label

    try:
        out = Path(cfg.paths.output_dir)
    except Exception:  # noqa: BLE001 - best effort, the message is what matters
        return
    write_json(out / "summary.json", {"status": status, "error": reason,
                                      "overrides": run_label(), "run_dir": str(out),
                                      "sweep_name": cfg.get("sweep_name"),
                                      "cuda_visible_devices":
                                          os.environ.get("CUDA_VISIBLE_DEVICES"),
                                      "finished_at": now_iso()} | extra)


def guarded(task: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """Run a task; turn user errors (and, in sweeps, any failure) into one clear line."""
    global _task_raised
    started = now_iso()
    try:
        return task(cfg)
    except UserError as e:
        if _in_multirun():
            log.error("job failed: %s", e)
            _record_failure(cfg, str(e), started_at=started)
            return math.nan
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(UserError.exit_code)
    except Exception as e:
        optuna = sys.modules.get("optuna")
        if optuna is not None and isinstance(e, optuna.TrialPruned):  # stopped early, no error
            log.info("%s", e)
            _record_failure(cfg, str(e), "pruned", best_val_loss=getattr(e, "best", None),
                            epochs=getattr(e, "epoch", None), started_at=started)
            return getattr(e, "value", math.nan)
        if _in_multirun():  # OOM, a bug in one configuration: record it, keep sweeping
            log.exception("job failed")
            _record_failure(cfg, f"{type(e).__name__}: {e}".splitlines()[0],
                            started_at=started)
            return math.nan
        _task_raised = True
        raise
    finally:
        _finish_wandb()


def _finish_wandb() -> None:
    """Always close the W&B run, so the next job of a multirun starts a fresh one."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        failed = sys.exc_info()[0] is not None
        wandb.finish(exit_code=1 if failed else 0)


@hydra_entry
@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def train(cfg: DictConfig) -> float:
    from audiolstm.training.run import run

    return guarded(run, cfg)


@hydra_entry
@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="generate")
def generate(cfg: DictConfig) -> Any:
    from audiolstm.generation.pipeline import run

    return guarded(run, cfg)


@hydra_entry
@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="explore")
def explore(cfg: DictConfig) -> Any:
    from audiolstm.analysis.explore import run

    return guarded(run, cfg)


def report(argv: list[str] | None = None) -> int:
    """`python report.py DIR [DIR ...] [--out OUT]` (argparse: a report is no Hydra job)."""
    from audiolstm.analysis.report import main

    try:
        return main(argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return UserError.exit_code
