"""`GpuLauncher`: run a sweep's jobs in parallel processes, each pinned to its own device(s).

Each job is a fresh `python _worker.py SPEC` started with CUDA_VISIBLE_DEVICES set to its
slot's device group and as the leader of its own session (process group): torch in the
job sees only its devices, and one `killpg` stops the job with its data-loader workers
and DDP ranks. The launcher keeps every slot busy: the next job starts as soon as any
job ends. A job that dies without a result (killed for host memory, a segfault) is
recorded in its summary.json as failed and returns nan, as train.py records a job that
raises (audiolstm.cli.guarded), so the sweep goes on and the device goes back to the pool.
Ctrl-C (or SIGTERM) sends SIGINT to every running job, SIGKILL after `stop_grace_s`, and
once no job process is left exits with one line and the shell's code (130, or 143).
"""


import contextlib
import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from audiolstm.runinfo import now_iso
from hydra_plugins.audiolstm_gpu_launcher._devices import (
    LauncherError,
    Slot,
    plan_slots,
    probe_cuda_count,
)

log = logging.getLogger(__name__)

WORKER = Path(__file__).with_name("_worker.py")
#: exit code for a bad launcher setting (the project's user-error code)
USAGE_EXIT = 2
#: how often the launcher looks for finished jobs
POLL_S = 0.05
#: thread-pool sizes a job inherits unless the user's environment sets them
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass
class _Job:
    idx: int
    overrides: Sequence[str]
    slot: Slot
    proc: subprocess.Popen
    spec: dict[str, Any]


class GpuLauncher(Launcher):
    """Parallel local launcher with one CUDA device (or group) per running job."""

    def __init__(self, devices: Any = None, jobs_per_device: int = 1, devices_per_job: int = 1,
                 stop_grace_s: float = 10.0) -> None:
        self.devices = (OmegaConf.to_container(devices) if OmegaConf.is_config(devices)
                        else devices)
        self.jobs_per_device = jobs_per_device
        self.devices_per_job = devices_per_job
        self.stop_grace_s = float(stop_grace_s)
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None
        self.slots: list[Slot] = []

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function
        try:
            self.slots = plan_slots(
                self.devices, self.jobs_per_device, self.devices_per_job,
                cuda_count=probe_cuda_count(),
                inherited=os.environ.get("CUDA_VISIBLE_DEVICES"),
                accelerator=OmegaConf.select(config, "trainer.accelerator", default=None),
                trainer_devices=OmegaConf.select(config, "trainer.devices", default=None))
        except LauncherError as e:  # before any job: one line, exit 2 (no Hydra traceback)
            print(f"error: {e}", file=sys.stderr, flush=True)
            sys.exit(USAGE_EXIT)

    def launch(self, job_overrides: Sequence[Sequence[str]],
               initial_job_idx: int) -> Sequence[JobReturn]:
        setup_globals()
        assert self.config is not None and self.hydra_context is not None
        assert self.task_function is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        groups = list(dict.fromkeys(s.cuda_visible_devices for s in self.slots))
        log.info("GPU launcher: %d jobs on %d slots (CUDA_VISIBLE_DEVICES %s, %d job(s) each)",
                 len(job_overrides), len(self.slots), " | ".join(groups), self.jobs_per_device)
        tmp = Path(tempfile.mkdtemp(prefix="audiolstm-gpus-"))
        try:
            common = tmp / "common.pkl"
            self._write_common(common)
            with _stop_on_sigterm():
                return self._run_all(job_overrides, initial_job_idx, common, tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    # ------------------------------------------------------------------ scheduling

    def _write_common(self, path: Path) -> None:
        import cloudpickle

        payload = (self.hydra_context, self.config, self.task_function, Singleton.get_state())
        path.write_bytes(cloudpickle.dumps(payload))

    def _run_all(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int,
                 common: Path, tmp: Path) -> list[JobReturn]:
        pending = deque(enumerate(job_overrides))
        results: list[JobReturn | None] = [None] * len(job_overrides)
        running: dict[Slot, _Job] = {}
        try:
            while pending or running:
                while pending and len(running) < len(self.slots):
                    pos, overrides = pending.popleft()
                    slot = self._free_slot(running)
                    running[slot] = self._start(initial_job_idx + pos, overrides, slot,
                                                common, tmp)
                time.sleep(POLL_S)
                for slot, job in list(running.items()):
                    if job.proc.poll() is not None:
                        del running[slot]
                        results[job.idx - initial_job_idx] = self._finish(job)
        except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM: one line, the shell's exit code
            self._stop(list(running.values()), len(pending))
            signum = getattr(e, "signum", signal.SIGINT)
            print(f"interrupted ({signal.Signals(signum).name}): stopped {len(running)} running "
                  f"job(s), {len(pending)} not started", file=sys.stderr, flush=True)
            raise SystemExit(128 + signum) from None
        except BaseException:
            self._stop(list(running.values()), len(pending))
            raise
        return [r for r in results if r is not None]

    def _free_slot(self, running: dict[Slot, _Job]) -> Slot:
        """The free slot on the least busy device group (ties: the lowest group)."""
        load: dict[int, int] = {}
        for s in running:
            load[s.group] = load.get(s.group, 0) + 1
        free = [s for s in self.slots if s not in running]
        return min(free, key=lambda s: (load.get(s.group, 0), s.group, s.seat))

    def _start(self, idx: int, overrides: Sequence[str], slot: Slot, common: Path,
               tmp: Path) -> _Job:
        spec = {"idx": idx, "overrides": list(overrides), "common": str(common),
                "sys_path": [p or os.getcwd() for p in sys.path],
                "result": str(tmp / f"{idx}.result.pkl"), "info": str(tmp / f"{idx}.info.json"),
                "stop_grace_s": self.stop_grace_s, "started_at": now_iso(),
                "cuda_visible_devices": slot.cuda_visible_devices}
        spec_path = tmp / f"{idx}.spec.json"
        spec_path.write_text(json.dumps(spec))
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": slot.cuda_visible_devices}
        for var in THREAD_VARS:  # jobs share the CPU cores (as joblib's workers do)
            env.setdefault(var, str(self._threads_per_job()))
        proc = subprocess.Popen([sys.executable, str(WORKER), str(spec_path)], env=env,
                                start_new_session=True)
        log.info("\t#%d on CUDA_VISIBLE_DEVICES=%s : %s", idx, slot.cuda_visible_devices,
                 " ".join(filter_overrides(overrides)))
        return _Job(idx, overrides, slot, proc, spec)

    def _threads_per_job(self) -> int:
        """CPU threads each job's torch may use: this process's cores over the slots."""
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            cores = os.cpu_count() or 1
        return max(1, cores // max(1, len(self.slots)))

    def _finish(self, job: _Job) -> JobReturn:
        """The job's JobReturn; a job that died without one is recorded as failed."""
        _kill_group(job.proc.pid, signal.SIGKILL)  # nothing the job started outlives it
        result = Path(job.spec["result"])
        if result.is_file():
            import cloudpickle

            ret = cloudpickle.loads(result.read_bytes())
            if ret.status == JobStatus.FAILED:
                log.warning("\t#%d failed on device %s: %s", job.idx,
                            job.slot.cuda_visible_devices, ret._return_value)
            else:
                log.info("\t#%d done on device %s: %s", job.idx, job.slot.cuda_visible_devices,
                         ret._return_value)
            return ret
        reason = _death_reason(job.proc.returncode)
        log.error("\t#%d died: %s (device %s)", job.idx, reason, job.slot.cuda_visible_devices)
        info_path = Path(job.spec["info"])
        info = json.loads(info_path.read_text()) if info_path.is_file() else {}
        if info.get("run_dir"):
            _record_death(Path(info["run_dir"]), reason, info, job.spec)
        return JobReturn(overrides=list(job.overrides), working_dir=info.get("run_dir"),
                         task_name=None, status=JobStatus.COMPLETED, _return_value=math.nan)

    def _stop(self, jobs: list[_Job], not_started: int) -> None:
        """SIGINT to every running job's group, SIGKILL after the grace period."""
        if not jobs:
            return
        log.warning("stopping %d running job(s) (%d not started)", len(jobs), not_started)
        for job in jobs:
            _kill_group(job.proc.pid, signal.SIGINT)
        deadline = time.monotonic() + self.stop_grace_s
        while time.monotonic() < deadline and any(j.proc.poll() is None for j in jobs):
            with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl-C: keep stopping
                time.sleep(POLL_S)
        for job in jobs:
            _kill_group(job.proc.pid, signal.SIGKILL)  # the job's leftovers too
            with contextlib.suppress(KeyboardInterrupt):
                job.proc.wait()


def _kill_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _death_reason(code: int | None) -> str:
    if code is not None and code < 0:
        name = signal.Signals(-code).name
        hint = " (out of host memory?)" if -code == signal.SIGKILL else ""
        return f"job process killed by {name}{hint}"
    return f"job process exited with code {code} and no result (see the log above)"


def _record_death(run_dir: Path, reason: str, info: dict[str, Any],
                  spec: dict[str, Any]) -> None:
    """summary.json "failed", as audiolstm.cli records a job that raised; kept if written."""
    from audiolstm.atomic import write_json

    summary = run_dir / "summary.json"
    if summary.exists():
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(summary, {"status": "failed", "error": reason, "run_dir": str(run_dir),
                         "overrides": info.get("overrides") or "default",
                         "sweep_name": info.get("sweep_name"),
                         "cuda_visible_devices": spec["cuda_visible_devices"],
                         "started_at": spec["started_at"], "finished_at": now_iso()})


class _Terminated(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C is."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"signal {signum}")
        self.signum = signum


@contextlib.contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    """SIGTERM (kill, a cluster's cancel) stops the jobs like Ctrl-C does."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise _Terminated(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
