"""`hydra/launcher=slurm` against a real single-node SLURM (slow).

tests/local_slurm.sh starts slurmctld + slurmd (+ munged) on this host (root only; CI
installs and starts it in .ci/run); the test runs `train.py -m sweep=depth` at smoke size
through hydra-submitit-launcher exactly as on a cluster (sbatch array, srun, submitit's
pickles) and checks what SLURM says about each job, each run's summary.json and the
report. Where no scheduler answers and none can start (not root, slurm-wlm not
installed, daemons that fail), it is skipped with the script's one-line reason.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, SMOKE, run_script

SCRIPT = ROOT / "tests" / "local_slurm.sh"
SWEEP_TIMEOUT_S = 420  # > the jobs' own limit below, so a job SLURM kills ends the sweep


def _script(command: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), command], capture_output=True, text=True,
                          timeout=180)


def _assignments(stdout: str) -> dict[str, str]:
    return dict(ln.split("=", 1) for ln in stdout.splitlines() if re.match(r"^[A-Z_]+=", ln))


@pytest.fixture(scope="module")
def slurm() -> Iterator[dict[str, str]]:
    """SLURM_CONF and SBATCH_PARTITION of a running local scheduler (started if needed)."""
    status = _script("status")
    started = status.returncode != 0
    if started:
        proc = _script("start")
        if proc.returncode != 0:
            reason = [ln for ln in proc.stderr.splitlines() if "cannot start" in ln]
            pytest.skip((reason or [proc.stderr.strip() or "no reason given"])[-1])
    env = _assignments((proc if started else status).stdout)
    yield env
    if started:
        _script("stop")


def _jobs(env: dict[str, str], array_id: str) -> list[dict[str, str]]:
    """scontrol's record of every task of a job array (kept MinJobAge=300 s after the end)."""
    out = subprocess.run(["scontrol", "-o", "show", "job", array_id], capture_output=True,
                         text=True, timeout=30, env={**os.environ, **env}, check=True).stdout
    return [dict(re.findall(r"(\w+)=(\S*)", line)) for line in out.splitlines() if line]


ACTIVE_STATES = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING"}
SETTLE_TIMEOUT_S = 120


def _ended_jobs(env: dict[str, str], array_id: str) -> list[dict[str, str]]:
    """`_jobs` once no task is still active, waiting up to SETTLE_TIMEOUT_S.

    submitit returns as soon as a task has written its result pickle, while SLURM still
    shows the task RUNNING until its Python exits and the step is torn down: a moment on
    an idle host, seconds on a loaded one (CI failed on exactly that race). The wait ends
    on SLURM's own final state, so a task that never ends still fails the test.
    """
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while True:
        jobs = _jobs(env, array_id)
        if not any(j.get("JobState") in ACTIVE_STATES for j in jobs):
            return jobs
        if time.monotonic() > deadline:
            return jobs  # the state assertions below report the task still active
        time.sleep(1.0)


@pytest.mark.slow
def test_depth_sweep_on_slurm(slurm: dict[str, str], tmp_path: Path) -> None:
    """Three runs as one SLURM array, CPU-sized; every run completes and is reported.

    Catches: a launcher config SLURM refuses or that names the job after Hydra's module
    ("cli", the mutant tried); jobs that run in another directory or another Python than
    the launching one; runs that are not one array task each; a sweep that hangs (a job
    lost without accounting: the timeout fails the test and cancels what is left).
    """
    partition = slurm["SBATCH_PARTITION"]
    args = ["-m", "sweep=depth", *SMOKE, "hydra/launcher=slurm",
            f"hydra.launcher.partition={partition}", "hydra.launcher.gpus_per_node=0",
            "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1",
            "hydra.launcher.timeout_min=5", f"hydra.sweep.dir={tmp_path}"]
    try:
        # SLURM_CONF only: SBATCH_PARTITION would override the launcher's --partition
        proc = run_script("train.py", *args, env={"SLURM_CONF": slurm["SLURM_CONF"]},
                          timeout=SWEEP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        subprocess.run(["scancel", f"--partition={partition}"], env={**os.environ, **slurm},
                       timeout=30)
        logs = "\n".join(p.read_text()[-1500:] for p in tmp_path.glob(".submitit/*/*_log.err"))
        pytest.fail(f"sweep still waiting after {SWEEP_TIMEOUT_S}s; job stderr:\n{logs}")
    assert proc.returncode == 0, proc.stderr[-3000:]

    # SLURM's view: one array of three tasks, all completed, as the launcher asked.
    task_dirs = [re.fullmatch(r"(\d+)_\d+", d.name) for d in (tmp_path / ".submitit").iterdir()]
    (array_id,) = {m.group(1) for m in task_dirs if m}
    tasks = sorted(_ended_jobs(slurm, array_id), key=lambda j: int(j["ArrayTaskId"]))
    assert [j["ArrayTaskId"] for j in tasks] == ["0", "1", "2"]
    for job in tasks:
        assert job["JobState"] == "COMPLETED" and job["ExitCode"] == "0:0", job
        assert job["JobName"] == "train" and job["Partition"] == partition
        assert job["NumCPUs"] == "1" and job["MinMemoryNode"] == "1G"
        assert job["WorkDir"] == str(ROOT)  # the job imports this checkout's audiolstm
    sbatch = (tmp_path / ".submitit" / array_id / f"{array_id}_submission.sh").read_text()
    assert f" {sys.executable} -u -m submitit.core._submit " in sbatch  # the same Python

    # Each task ran its own run (its log names that run's directory) and completed it.
    runs = sorted(d for d in tmp_path.iterdir() if (d / "summary.json").is_file())
    assert [d.name[:2] for d in runs] == ["0_", "1_", "2_"]
    models = [re.search(r"model=(\w+)", d.name).group(1) for d in runs]
    assert models == ["lstm_300x1", "lstm_300x2", "lstm_300x3"]
    for i, run in enumerate(runs):
        log = (tmp_path / ".submitit" / f"{array_id}_{i}" / f"{array_id}_{i}_0_log.out")
        assert f"run dir {run}" in log.read_text()
        s = json.loads((run / "summary.json").read_text())
        assert s["status"] == "completed" and s["sweep_name"] == "depth", s.get("error")
        assert s["epochs"] == 2 and s["params"] > 0
        for key in ("best_val_loss", "test_loss", "train_seconds"):
            assert math.isfinite(s[key]) and s[key] > 0, key

    report = run_script("report.py", str(tmp_path))
    assert report.returncode == 0, report.stderr
    rows = list(csv.DictReader((tmp_path / "report.csv").open()))
    assert sorted(r["run"] for r in rows) == [d.name for d in runs]
    assert {r["status"] for r in rows} == {"completed"}
