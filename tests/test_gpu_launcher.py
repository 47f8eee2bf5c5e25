"""`hydra/launcher=gpus`: one sweep job per device, composed and tested without a GPU.

No GPU is needed: with `hydra.launcher.devices=[0,1]` and a CPU trainer the launcher
hands out the ids as it would on a GPU machine, so what a job sees (CUDA_VISIBLE_DEVICES),
how many run at once, which ones share a device, failures, Ctrl-C and the Optuna sweeper
are all checked here. Fast tests drive a tiny Hydra app (no torch in its jobs) and the
pure planning functions; the `slow` ones run train.py sweeps at smoke size. The device
count check for a machine with CUDA is tested through `plan_slots` and a launcher whose
probe is replaced, since none of these machines has a GPU.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf

from hydra_plugins.audiolstm_gpu_launcher._devices import (
    LauncherError,
    parse_devices,
    physical_ids,
    plan_slots,
)
from tests.conftest import ROOT, SMOKE, compose_cfg, run_script

# A Hydra app whose jobs record what they were given and when, then sleep (or misbehave).
APP = textwrap.dedent('''
    import json, os, signal, subprocess, sys, time
    from pathlib import Path

    import hydra
    from hydra.core.config_store import ConfigStore
    from hydra.core.hydra_config import HydraConfig

    ConfigStore.instance().store(name="app", node={
        "x": 0, "sleep": 0.5, "die": False, "child": False, "ignore_sigint": False,
        "trainer": {"accelerator": "cpu"}})


    def write(path, record):  # atomic: the test reads these while jobs run
        path.with_suffix(".tmp").write_text(json.dumps(record))
        os.replace(path.with_suffix(".tmp"), path)


    @hydra.main(version_base="1.3", config_path=None, config_name="app")
    def main(cfg):
        out = Path(HydraConfig.get().runtime.output_dir)
        if cfg.ignore_sigint:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        pids = [os.getpid()]
        if cfg.child:  # a grandchild that must not outlive the sweep
            pids.append(subprocess.Popen(["sleep", "300"]).pid)
        record = {"cvd": os.environ.get("CUDA_VISIBLE_DEVICES"), "t0": time.time(),
                  "pids": pids, "torch": "torch" in sys.modules}
        write(out / "started.json", record)
        time.sleep(cfg.sleep)
        if cfg.die:  # what the kernel's OOM killer does
            os.kill(os.getpid(), signal.SIGKILL)
        write(out / "job.json", record | {"t1": time.time()})
        return cfg.x * 10


    if __name__ == "__main__":
        main()
''')


@pytest.fixture
def app(tmp_path: Path) -> Path:
    path = tmp_path / "app.py"
    path.write_text(APP)
    return path


def _app_cmd(app: Path, sweep: Path, *overrides: str) -> list[str]:
    return [sys.executable, str(app), "-m", "hydra/launcher=audiolstm_gpus",
            f"hydra.sweep.dir={sweep}",
            "hydra.sweep.subdir=${hydra.job.num}_${hydra.job.override_dirname}", *overrides]


def _run_app(app: Path, sweep: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(_app_cmd(app, sweep, *overrides), capture_output=True, text=True,
                          timeout=300, cwd=app.parent,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def _jobs(sweep: Path, name: str = "job.json") -> dict[str, dict[str, Any]]:
    return {d.name: json.loads((d / name).read_text())
            for d in sweep.iterdir() if (d / name).is_file()}


def _max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one instant (an end before a start at the same time)."""
    events = sorted([(t0, 1) for t0, _ in intervals] + [(t1, -1) for _, t1 in intervals])
    most = now = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


def _disjoint_per_device(runs: list[tuple[str, float, float]]) -> bool:
    by_device: dict[str, list[tuple[float, float]]] = {}
    for dev, t0, t1 in runs:
        by_device.setdefault(dev, []).append((t0, t1))
    return all(_max_overlap(v) == 1 for v in by_device.values())


def _alive(pid: int) -> bool:
    """True for a live process; a zombie (dead, not yet reaped) counts as gone."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


# ------------------------------------------------------------------- planning (pure)


@pytest.mark.parametrize(("value", "ids"), [
    (None, None), ([0, 1, 2, 3], [0, 1, 2, 3]), ("0,1", [0, 1]), (" 2, 0 ", [2, 0]), (3, [3]),
    (OmegaConf.create([1, 0]), [1, 0])])
def test_parse_devices(value: Any, ids: list[int] | None) -> None:
    assert parse_devices(value) == ids


@pytest.mark.parametrize(("value", "message"), [
    ([0, -1], "-1 is not a device id"), ("0,a", "'a' is not a device id"),
    ([0, 0], "lists device 0 twice"), ("", "is not a device id"), ([], "names no device"),
    (True, "must be device ids"), ([0.5], "0.5 is not a device id")])
def test_parse_devices_rejects(value: Any, message: str) -> None:
    with pytest.raises(LauncherError, match=message):
        parse_devices(value)


def _plan(devices: Any = None, jpd: int = 1, dpj: int = 1, count: int = 0,
          inherited: str | None = None, accelerator: Any = "cpu", trainer_devices: Any = 1):
    return plan_slots(devices, jpd, dpj, cuda_count=count, inherited=inherited,
                      accelerator=accelerator, trainer_devices=trainer_devices)


def test_plan_with_cuda_defaults_to_every_visible_device() -> None:
    slots = _plan(count=4, accelerator="gpu")
    assert [s.cuda_visible_devices for s in slots] == ["0", "1", "2", "3"]
    assert [s.cuda_visible_devices for s in _plan([2, 0], count=4, accelerator="gpu")] == [
        "2", "0"]


def test_plan_rejects_a_device_that_does_not_exist() -> None:
    with pytest.raises(LauncherError, match=r"device 2 does not exist \(CUDA sees 2 devices"):
        _plan([0, 2], count=2, accelerator="gpu")


def test_plan_maps_ids_through_an_inherited_cuda_visible_devices() -> None:
    """Under SLURM's CUDA_VISIBLE_DEVICES=4,5 torch's cuda:1 is physical GPU 5."""
    assert physical_ids(2, "4,5") == ["4", "5"] and physical_ids(2, None) == ["0", "1"]
    assert physical_ids(1, "GPU-aa,GPU-bb") == ["GPU-aa"]  # what torch counted, in order
    slots = _plan([1], count=2, inherited="4,5", accelerator="gpu")
    assert [s.cuda_visible_devices for s in slots] == ["5"]


def test_plan_packs_jobs_and_groups_devices() -> None:
    slots = _plan([0, 1], jpd=2)  # two seats per device, spread before sharing
    assert [(s.cuda_visible_devices, s.seat) for s in slots] == [("0", 0), ("1", 0),
                                                                 ("0", 1), ("1", 1)]
    groups = _plan(count=8, dpj=2, accelerator="gpu", trainer_devices=2)  # 4 jobs x 2 GPUs
    assert [s.cuda_visible_devices for s in groups] == ["0,1", "2,3", "4,5", "6,7"]
    assert [s.group for s in groups] == [0, 1, 2, 3]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"devices": [0, 1], "jpd": 0}, "jobs_per_device=0 must be >= 1"),
    ({"devices": [0, 1], "dpj": 0}, "devices_per_job=0 must be >= 1"),
    ({"devices": [0, 1, 2], "dpj": 2}, "devices_per_job=2 does not divide the 3 devices"),
    ({"devices": None}, "no CUDA device is visible here"),
    ({"devices": [0, 1], "accelerator": "gpu"}, r"only be simulated with trainer=cpu"),
    ({"count": 2, "accelerator": "gpu", "trainer_devices": 2},
     r"trainer.devices=2 but each job is handed hydra.launcher.devices_per_job=1"),
])
def test_plan_rejects(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(LauncherError, match=message):
        _plan(**kwargs)


def test_setup_error_is_one_line_exit_2(monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """The launcher checks the ids against CUDA's count (here: 2 pretend GPUs) at setup."""
    from hydra_plugins.audiolstm_gpu_launcher import launcher as mod

    monkeypatch.setattr(mod, "probe_cuda_count", lambda: 2)
    cfg = OmegaConf.create({"trainer": {"accelerator": "gpu", "devices": 1}})
    launcher = mod.GpuLauncher(devices=[0, 3])
    with pytest.raises(SystemExit) as exit_info:
        launcher.setup(hydra_context=None, task_function=None, config=cfg)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        "error: hydra.launcher.devices=[0,3]: device 3 does not exist "
        "(CUDA sees 2 devices: 0..1)"]
    launcher = mod.GpuLauncher(devices="1")
    launcher.setup(hydra_context=None, task_function=None, config=cfg)
    assert [s.cuda_visible_devices for s in launcher.slots] == ["1"]


def test_launcher_config_composes() -> None:
    from hydra import compose, initialize_config_dir

    from tests.conftest import CONF

    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="train", overrides=[
            "sweep=depth", "hydra/launcher=gpus", "hydra.launcher.devices=[0,1]",
            "hydra.launcher.jobs_per_device=2"], return_hydra_config=True)
        assert cfg.hydra.launcher._target_.endswith("GpuLauncher")
        assert list(cfg.hydra.launcher.devices) == [0, 1]
        assert cfg.hydra.launcher.jobs_per_device == 2 and cfg.hydra.launcher.devices_per_job == 1
        with pytest.raises(Exception, match="jobs_per_devise"):  # typos fail at composition
            compose(config_name="train", overrides=["hydra/launcher=gpus",
                                                    "hydra.launcher.jobs_per_devise=2"],
                    return_hydra_config=True)


# ------------------------------------------------------------------ the tiny app's sweeps


def test_four_jobs_on_two_devices_run_two_at_a_time(app: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "s"
    proc = _run_app(app, sweep, "x=1,2,3,4", "sleep=1.0", "hydra.launcher.devices=[0,1]")
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = _jobs(sweep)
    assert len(jobs) == 4
    assert all(j["cvd"] in ("0", "1") for j in jobs.values())  # exactly one id each
    assert {j["cvd"] for j in jobs.values()} == {"0", "1"}
    assert not any(j["torch"] for j in jobs.values())  # the worker itself imports no torch
    assert _max_overlap([(j["t0"], j["t1"]) for j in jobs.values()]) == 2
    assert _disjoint_per_device([(j["cvd"], j["t0"], j["t1"]) for j in jobs.values()])
    assert sorted((sweep / d / ".hydra" / "overrides.yaml").read_text() for d in jobs) == [
        f"- x={x}\n- sleep=1.0\n" for x in (1, 2, 3, 4)]  # own dir, .hydra/, overrides
    assert sorted(jobs) == [f"{i}_sleep=1.0,x={i + 1}" for i in range(4)]


def test_jobs_per_device_and_device_groups(app: Path, tmp_path: Path) -> None:
    proc = _run_app(app, tmp_path / "packed", "x=1,2,3", "sleep=1.0",
                    "hydra.launcher.devices=[0]", "hydra.launcher.jobs_per_device=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = _jobs(tmp_path / "packed")
    assert {j["cvd"] for j in jobs.values()} == {"0"}
    assert _max_overlap([(j["t0"], j["t1"]) for j in jobs.values()]) == 2

    proc = _run_app(app, tmp_path / "groups", "x=1,2", "hydra.launcher.devices='0,1,2,3'",
                    "hydra.launcher.devices_per_job=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(j["cvd"] for j in _jobs(tmp_path / "groups").values()) == ["0,1", "2,3"]


def test_a_killed_job_is_recorded_and_the_sweep_goes_on(app: Path, tmp_path: Path) -> None:
    """A job SIGKILLed (as by the OOM killer) is recorded as failed; its device is reused."""
    sweep = tmp_path / "s"
    proc = _run_app(app, sweep, "x=1,2,3", "die=false,true", "sleep=0.2",
                    "hydra.launcher.devices=[0,1]")
    assert proc.returncode == 0, proc.stderr[-3000:]
    done = _jobs(sweep)
    assert len(done) == 3 and all("die=False" in name for name in done)
    dead = {d.name: json.loads((d / "summary.json").read_text())
            for d in sweep.iterdir() if (d / "summary.json").is_file()}
    assert len(dead) == 3 and all("die=True" in name for name in dead)
    for s in dead.values():
        assert s["status"] == "failed" and s["cuda_visible_devices"] in ("0", "1")
        assert s["error"] == "job process killed by SIGKILL (out of host memory?)"
        assert datetime.fromisoformat(s["started_at"]) < datetime.fromisoformat(s["finished_at"])
    assert "died: job process killed by SIGKILL" in proc.stdout + proc.stderr


def test_bad_launcher_setting_is_one_line_before_any_job(app: Path, tmp_path: Path) -> None:
    for overrides, message in (
            (["hydra.launcher.devices=[0,1]", "hydra.launcher.jobs_per_device=0"],
             "error: hydra.launcher.jobs_per_device=0 must be >= 1"),
            (["hydra.launcher.devices=[0,1]", "trainer.accelerator=gpu"],
             "error: hydra.launcher.devices=[0,1]: no CUDA device is visible here")):
        if torch.cuda.is_available() and "accelerator=gpu" in overrides[-1]:
            continue  # that one is about machines without CUDA
        proc = _run_app(app, tmp_path / "s", "x=1,2", *overrides)
        assert proc.returncode == 2, proc.stderr[-3000:]
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(message), lines
        assert not (tmp_path / "s").exists() or not any(
            p.is_dir() for p in (tmp_path / "s").iterdir())  # no job started


@pytest.mark.parametrize(("sig", "ignore_sigint"), [(signal.SIGINT, False),
                                                     (signal.SIGINT, True),
                                                     (signal.SIGTERM, False)])
def test_ctrl_c_stops_every_job_and_leaves_no_orphan(app: Path, tmp_path: Path, sig: int,
                                                     ignore_sigint: bool) -> None:
    """Ctrl-C (or SIGTERM) to the launcher: jobs and their children end, waiting jobs never
    start (a job that ignores SIGINT is SIGKILLed after the grace period)."""
    sweep = tmp_path / "s"
    launcher = subprocess.Popen(
        _app_cmd(app, sweep, "x=1,2,3,4", "sleep=300", "child=true",
                 f"ignore_sigint={str(ignore_sigint).lower()}", "hydra.launcher.devices=[0,1]",
                 "hydra.launcher.stop_grace_s=2"),
        cwd=app.parent, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # as from a terminal, even if pytest runs in the background (SIGINT ignored)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (
                not sweep.is_dir() or len(_jobs(sweep, "started.json")) < 2):
            assert launcher.poll() is None, launcher.stderr.read()[-3000:]
            time.sleep(0.2)
        started = _jobs(sweep, "started.json")
        assert len(started) == 2  # two devices: the other two jobs wait
        pids = [p for j in started.values() for p in j["pids"]]
        assert len(pids) == 4 and all(_alive(p) for p in pids)
        launcher.send_signal(sig)
        out, err = launcher.communicate(timeout=60)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode == 128 + sig  # as the shell reports Ctrl-C (130), kill (143)
    assert err.strip().splitlines()[-1] == (
        f"interrupted ({signal.Signals(sig).name}): stopped 2 running job(s), 2 not started")
    assert "Traceback" not in err
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    assert not [p for p in pids if _alive(p)], err[-3000:]
    assert len(_jobs(sweep, "started.json")) == 2  # the waiting jobs never started
    assert "stopping 2 running job(s) (2 not started)" in out


# ------------------------------------------------------------------ train.py on "devices"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_trainer_gpu_without_cuda_is_one_line(tmp_path: Path) -> None:
    from audiolstm.errors import UserError
    from audiolstm.training.device import check_device

    with pytest.raises(UserError, match=r"^trainer.accelerator=gpu: no CUDA device is "
                                        r"available here .*; use trainer=cpu$"):
        check_device(compose_cfg(["trainer=gpu"], tmp_path))


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_train_py_trainer_gpu_without_cuda_is_one_line(tmp_path: Path) -> None:
    proc = run_script("train.py", "trainer=ddp", *SMOKE, f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 2, proc.stderr[-3000:]
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: trainer.accelerator=gpu: no CUDA device is available here")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_device_settings_that_clash(tmp_path: Path) -> None:
    from audiolstm.errors import UserError
    from audiolstm.training.device import check_device

    check_device(compose_cfg([], tmp_path))  # the defaults pass on CPU
    for overrides, message in (
            (["float32_matmul_precision=medium"], "applies to CUDA runs only"),
            (["float32_matmul_precision=fast"], "is not one of highest, high, medium"),
            (["trainer.deterministic=true", "trainer.benchmark=true"],
             "add trainer.benchmark=false")):
        with pytest.raises(UserError, match=message):
            check_device(compose_cfg(overrides, tmp_path))


def test_configure_cuda_sets_tf32_for_matmuls_and_cudnn() -> None:
    from audiolstm.training.device import configure_cuda

    before = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    try:
        configure_cuda("highest", on_cuda=False)  # CPU runs: untouched
        assert (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32) == before
        configure_cuda("high", on_cuda=True)
        assert torch.get_float32_matmul_precision() == "high" and torch.backends.cudnn.allow_tf32
        configure_cuda("highest", on_cuda=True)
        assert torch.get_float32_matmul_precision() == "highest"
        assert not torch.backends.cudnn.allow_tf32
    finally:
        torch.set_float32_matmul_precision(before[0])
        torch.backends.cudnn.allow_tf32 = before[1]


def test_gpu_trainer_configs_compose(tmp_path: Path) -> None:
    gpu = compose_cfg(["trainer=gpu"], tmp_path).trainer
    assert (gpu.accelerator, gpu.devices, gpu.benchmark, gpu.deterministic) == (
        "gpu", 1, True, False)
    ddp = compose_cfg(["trainer=ddp", "trainer.devices=2"], tmp_path).trainer
    assert (ddp.accelerator, ddp.strategy, ddp.benchmark) == ("gpu", "ddp", True)
    assert compose_cfg([], tmp_path).float32_matmul_precision == "high"


def _summaries(sweep: Path) -> dict[str, dict[str, Any]]:
    return {d.name: json.loads((d / "summary.json").read_text())
            for d in sweep.iterdir() if (d / "summary.json").is_file()}


def _interval(s: dict[str, Any]) -> tuple[float, float]:
    return (datetime.fromisoformat(s["started_at"]).timestamp(),
            datetime.fromisoformat(s["finished_at"]).timestamp())


@pytest.mark.slow
def test_train_sweep_on_two_devices_with_a_failing_job(tmp_path: Path) -> None:
    """4 train.py jobs on devices [0,1]: 2 at a time, one id each, a failure recorded."""
    proc = run_script("train.py", "-m", "model.hidden_sizes=[16],[24]", "data.x_len=400,-1",
                      *SMOKE, "hydra/launcher=gpus", "hydra.launcher.devices=[0,1]",
                      f"hydra.sweep.dir={tmp_path}", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = _summaries(tmp_path)
    assert len(runs) == 4
    status = {n: s["status"] for n, s in runs.items()}
    assert sorted(status.values()) == ["completed", "completed", "failed", "failed"]
    assert all(("x_len=-1" in n) == (s == "failed") for n, s in status.items())
    assert all(s["cuda_visible_devices"] in ("0", "1") for s in runs.values())
    intervals = [_interval(s) for s in runs.values()]
    assert _max_overlap(intervals) <= 2
    assert _disjoint_per_device([(s["cuda_visible_devices"], *_interval(s))
                                 for s in runs.values()])
    assert run_script("report.py", str(tmp_path)).returncode == 0
    rows = list(csv.DictReader((tmp_path / "report.csv").open()))
    assert sorted(r["cuda_visible_devices"] for r in rows) == sorted(
        s["cuda_visible_devices"] for s in runs.values())
    assert "| GPU |" in (tmp_path / "report.md").read_text()


@pytest.mark.slow
def test_optuna_trials_run_in_parallel_one_per_device(tmp_path: Path) -> None:
    import optuna

    storage = f"sqlite:///{tmp_path}/study.db"
    proc = run_script("train.py", "sweep=optuna", *SMOKE, f"hydra.sweeper.storage={storage}",
                      "model.hidden_sizes=choice([16],[24])", "hydra.sweeper.n_trials=2",
                      "hydra.sweeper.n_jobs=2", "hydra/launcher=gpus",
                      "hydra.launcher.devices=[0,1]", f"hydra.sweep.dir={tmp_path}/s",
                      timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = optuna.load_study(study_name="train_optuna", storage=storage)
    finished = {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
    assert len(study.trials) == 2 and all(t.state in finished for t in study.trials)
    runs = list(_summaries(tmp_path / "s").values())
    assert sorted(s["cuda_visible_devices"] for s in runs) == ["0", "1"]
    assert _max_overlap([_interval(s) for s in runs]) == 2  # the two trials ran together


@pytest.mark.slow
def test_ddp_inside_each_job_gets_a_device_group(tmp_path: Path) -> None:
    """8 GPUs as 4 jobs x 2, here 4 simulated ids as 2 jobs x 2 gloo ranks (ddp_cpu)."""
    proc = run_script("train.py", "-m", "model.hidden_sizes=[16]", "data.x_len=400,800",
                      *SMOKE, "trainer=ddp_cpu", "hydra/launcher=gpus",
                      "hydra.launcher.devices=[0,1,2,3]", "hydra.launcher.devices_per_job=2",
                      f"hydra.sweep.dir={tmp_path}", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = _summaries(tmp_path)
    assert len(runs) == 2 and all(s["status"] == "completed" for s in runs.values())
    assert sorted(s["cuda_visible_devices"] for s in runs.values()) == ["0,1", "2,3"]
    assert proc.stderr.count("Starting with 2 processes") + proc.stdout.count(
        "Starting with 2 processes") >= 2  # each job really ran two ranks
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == sorted(runs)
