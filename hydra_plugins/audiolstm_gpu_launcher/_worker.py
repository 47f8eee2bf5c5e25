"""One sweep job in its own process: `python _worker.py SPEC.json` (started by the launcher).

The launcher starts this file with the job's CUDA_VISIBLE_DEVICES already in the
environment, as the leader of a new process group, so torch (imported when the task
function is unpickled) sees only the job's devices and the launcher can stop the job
and everything it started with one signal. The job runs as Hydra's joblib launcher runs
one: the sweep config is composed for its overrides, then `run_job` gives it its own
output dir, `.hydra/`, logging and callbacks.

Lightning's DDP re-runs `sys.argv` for ranks > 0 with Hydra overrides appended
(`hydra.run.dir=... hydra.job.name=... hydra.output_subdir=null`). Those ranks come
back here: they compose the same job (same sweep subdir), take the job name and write no
`.hydra/` and no result, so DDP inside a sweep job works.

Only the standard library is imported before `sys.path` is set from the spec.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any


def _watch_parent(grace_s: float) -> None:
    """If our parent dies (SIGKILLed launcher), stop this job's whole process group.

    A launcher killed with SIGKILL cannot clean up; without this its jobs would train on
    as orphans. The parent is whoever started us (the launcher, or rank 0 for a DDP rank).
    """
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        for sig, wait in ((signal.SIGINT, grace_s), (signal.SIGKILL, 0.0)):
            try:
                os.killpg(os.getpgrp(), sig)
            except OSError:
                return
            time.sleep(wait)

    threading.Thread(target=watch, name="audiolstm-gpus-parent-watch", daemon=True).start()


def _dump(obj: Any, path: Path) -> None:
    """cloudpickle `obj` atomically; a return value that cannot be pickled becomes text."""
    import cloudpickle

    try:
        data = cloudpickle.dumps(obj)
    except Exception as e:  # noqa: BLE001 - the job's result must reach the launcher
        value = getattr(obj, "_return_value", None)
        obj._return_value = (RuntimeError(f"{type(value).__name__} could not be sent back: {e}")
                             if isinstance(value, BaseException) else repr(value))
        data = cloudpickle.dumps(obj)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _rank_overrides(argv: list[str]) -> dict[str, str]:
    """`key=value` arguments Lightning appended for a DDP rank > 0 (empty for rank 0)."""
    out = {}
    for arg in argv:
        key, _, value = arg.partition("=")
        out[key] = value.strip('"')
    return out


def main(argv: list[str]) -> int:
    # Ctrl-C reaches the job as SIGINT from the launcher, even when the launcher itself was
    # started with SIGINT ignored (a background job of a non-interactive shell)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    spec = json.loads(Path(argv[0]).read_text())
    sys.path[:] = spec["sys_path"]
    rank_args = _rank_overrides(argv[1:])
    is_rank_child = bool(rank_args)
    _watch_parent(float(spec["stop_grace_s"]))

    import cloudpickle
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.singleton import Singleton
    from hydra.core.utils import run_job, setup_globals
    from omegaconf import open_dict

    with open(spec["common"], "rb") as f:
        hydra_context, config, task_function, singleton_state = cloudpickle.load(f)
    setup_globals()
    Singleton.set_state(singleton_state)
    idx = int(spec["idx"])
    sweep_config = hydra_context.config_loader.load_sweep_config(config, list(spec["overrides"]))
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = f"{sweep_config.hydra.job.name}_{idx}"
        sweep_config.hydra.job.num = idx
        if is_rank_child:  # a DDP rank: same run dir, its own job name, no .hydra/ copy
            sweep_config.hydra.job.name = rank_args.get("hydra.job.name",
                                                        sweep_config.hydra.job.name)
            sweep_config.hydra.output_subdir = None
    HydraConfig.instance().set_config(sweep_config)
    if not is_rank_child:
        run_dir = Path(str(sweep_config.hydra.sweep.dir)) / str(sweep_config.hydra.sweep.subdir)
        info = {"run_dir": str(run_dir), "overrides": sweep_config.hydra.job.override_dirname,
                "sweep_name": sweep_config.get("sweep_name"), "pid": os.getpid()}
        Path(spec["info"]).write_text(json.dumps(info))
    ret = run_job(hydra_context=hydra_context, task_function=task_function, config=sweep_config,
                  job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
    if not is_rank_child:
        _dump(ret, Path(spec["result"]))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:  # stopped by the launcher (Ctrl-C): it reports, not every job
        sys.exit(130)
    except SystemExit:
        raise
    except BaseException:  # noqa: BLE001 - outside run_job: the launcher records the failure
        traceback.print_exc()
        sys.exit(1)
