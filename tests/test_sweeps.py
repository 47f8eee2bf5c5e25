"""Sweeps (sweeps/*.yaml), launchers, the Optuna sweeper with pruning, and report.py.

Fast tests compose every sweep and launcher and exercise the Optuna and report pieces on
fabricated runs; the `slow` ones run real multiruns at smoke size (basic and joblib
launchers, Optuna with a resumed study) and open a report in headless Chromium.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from audiolstm.config import validate_train
from tests.conftest import CONF, ROOT, SMOKE, run_script

SWEEPS = sorted(p.stem for p in (ROOT / "sweeps").glob("*.yaml") if p.stem != "wandb")
GRID_SWEEPS = ("depth", "units", "x_len", "seq_len", "norm", "repr", "cell", "regularisation",
               "window_shift")


def _compose(overrides: list[str], hydra: bool = False) -> Any:
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(config_name="train", overrides=overrides, return_hydra_config=hydra)


@pytest.fixture
def hydra_config() -> Any:
    """Set HydraConfig for code that resolves ${hydra:...}; reset so no test sees it later."""
    def set_cfg(cfg: Any) -> None:
        HydraConfig.instance().set_config(cfg)

    yield set_cfg
    HydraConfig.instance().cfg = None


def _axis_values(params: dict[str, str]) -> list[str]:
    """Every single `key=value` of a grid sweep's params (each must compose on its own)."""
    parser = OverridesParser.create()
    out = []
    for key, value in params.items():
        override = parser.parse_override(f"{key}={value}")
        out += [f"{key}={v}" for v in override.sweep_string_iterator()]
    return out


# --------------------------------------------------------------------------- composition


def test_sweep_dir_is_conf_group() -> None:
    link = ROOT / "conf" / "sweep"
    assert link.is_symlink() and os.readlink(link) == "../sweeps"
    assert set(GRID_SWEEPS) | {"optuna"} <= set(SWEEPS)


@pytest.mark.parametrize("name", SWEEPS)
def test_every_sweep_composes_with_smoke(name: str) -> None:
    text = (ROOT / "sweeps" / f"{name}.yaml").read_text()
    assert text.startswith("# @package _global_\n")
    assert "Seed question:" in text, "each sweep says which seed question it answers"
    base = [f"sweep={name}", "debug=smoke"]
    cfg = _compose(base, hydra=True)
    if cfg.data.source != "synthetic" and not cfg.data.path:  # a corpus sweep: DIR given
        base.append("data.path=some/folder")
        cfg = _compose(base, hydra=True)
    assert cfg.sweep_name == name
    # Hydra resolves the sweep dir (and the Optuna storage) in the launching process,
    # before ${hydra:...} resolvers work: both must resolve without HydraConfig.
    assert HydraConfig.instance().cfg is None
    assert cfg.hydra.sweep.dir.startswith("outputs/train/multiruns/")
    assert cfg.hydra.sweep.dir.endswith(f"_{name}")
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"  # `train.py sweep=NAME` sweeps, no -m
    params = OmegaConf.to_container(cfg.hydra.sweeper.params)
    assert params
    if name == "optuna":
        return  # its search space is checked in test_optuna_search_space_composes
    assert cfg.hydra.sweeper._target_.endswith("BasicSweeper")
    for override in _axis_values(params):  # every value of every axis is a valid run
        job = _compose([*base, override])
        validate_train(job)


def test_sweeps_combine_with_other_overrides() -> None:
    cfg = _compose(["sweep=depth", "trainer=gpu", "debug=smoke", "data.x_len=1600"], hydra=True)
    assert cfg.trainer.accelerator == "gpu" and cfg.data.x_len == 1600
    assert cfg.trainer.max_epochs == 2  # smoke still applies
    assert cfg.hydra.sweeper.params.model == "lstm_300x1,lstm_300x2,lstm_300x3"


def test_frames_keep_ten_second_sequences() -> None:
    options = sorted(p.stem for p in (ROOT / "conf" / "frames").glob("*.yaml"))
    assert options == ["x1600_10s", "x2000_10s", "x4000_10s", "x8000_10s"]
    for option in options:
        cfg = _compose([f"frames={option}"])
        assert cfg.data.x_len * cfg.data.seq_len == 10 * cfg.data.sample_rate
    # frames comes after experiment: a frames sweep over a seed setup still varies x
    cfg = _compose(["experiment=seed001_300x3", "frames=x1600_10s"])
    assert (cfg.data.x_len, cfg.data.seq_len) == (1600, 100)


def test_optuna_search_space_composes() -> None:
    import optuna

    from hydra_plugins.audiolstm_optuna_sweeper.study import SearchSpace

    cfg = _compose(["sweep=optuna", "debug=smoke"], hydra=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("AudiolstmOptunaSweeper")
    assert sweeper.storage == "sqlite:///outputs/train/optuna/train_optuna.db"
    assert sweeper.pruner.name == "median"
    params = OmegaConf.to_container(sweeper.params)
    space = SearchSpace(OverridesParser.create().parse_overrides(
        [f"{k}={v}" for k, v in params.items()]))
    assert set(space.distributions) == {"model.optimizer.lr", "model.hidden_sizes",
                                        "model.dropout", "model.input_dropout",
                                        "model.input_noise"}
    assert space.distributions["model.optimizer.lr"].log
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(5):  # sampled trials are valid runs
        trial = study.ask(space.distributions)
        job = _compose(["sweep=optuna", "debug=smoke", *space.to_overrides(trial.params)])
        validate_train(job)
        assert isinstance(job.model.hidden_sizes[0], int)
        study.tell(trial, 1.0)


def test_wandb_sweep_file_drives_train_py() -> None:
    """The agent's `${args_no_hyphens}` must be valid Hydra overrides of train.py."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    spec = yaml.safe_load((ROOT / "sweeps" / "wandb.yaml").read_text())
    assert spec["program"] == "train.py" and spec["method"] == "bayes"
    assert spec["metric"] == {"name": "val/loss", "goal": "minimize"}
    assert spec["command"][:4] == ["${env}", "${interpreter}", "${program}",
                                   "${args_no_hyphens}"]
    assert "logger=wandb" in spec["command"]
    for pick in (0, -1):  # lowest and highest of every parameter
        values = {k: (p["values"][pick] if "values" in p else (p["min"], p["max"])[pick])
                  for k, p in spec["parameters"].items()}
        args = create_sweep_command_args({"args": {k: {"value": v} for k, v in values.items()}})
        cfg = _compose([*args["args_no_hyphens"], *spec["command"][4:]])
        validate_train(cfg)
        assert cfg.sweep_name == "wandb" and "wandb" in cfg.logger
    with pytest.raises(Exception, match="sweep"):  # not a Hydra sweep: does not compose
        _compose(["sweep=wandb"])


def test_launcher_configs_compose(hydra_config: Any) -> None:
    from hydra.utils import instantiate

    cfg = _compose(["sweep=depth", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
                   hydra=True)
    hydra_config(cfg)
    launcher = instantiate(cfg.hydra.launcher)
    assert type(launcher).__name__ == "JoblibLauncher" and cfg.hydra.launcher.n_jobs == 2


def test_slurm_launcher_renders_sbatch_without_submitting(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hydra_config: Any) -> None:
    """conf/hydra/launcher/slurm.yaml through the real submitit launcher, up to sbatch."""
    import submitit
    from hydra._internal.callbacks import Callbacks
    from hydra.core.plugins import Plugins
    from hydra.types import HydraContext

    with pytest.raises(Exception, match="partiton"):  # typos are caught at composition
        _compose(["hydra/launcher=slurm", "hydra.launcher.partiton=gpu"], hydra=True)
    cfg = _compose(["sweep=depth", "hydra/launcher=slurm", "hydra.launcher.partition=gpu",
                    "hydra.launcher.account=lab", f"hydra.sweep.dir={tmp_path}"], hydra=True)
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
    hydra_config(cfg)
    fake_bin = tmp_path / "bin"  # submitit refuses to build a SLURM executor without srun
    fake_bin.mkdir()
    (fake_bin / "srun").write_text("#!/bin/sh\nexit 1\n")
    (fake_bin / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    seen: dict[str, Any] = {}

    def fake_map_array(executor: Any, fn: Any, *args: Any) -> list[Any]:
        seen["jobs"] = len(args[0])
        seen["sbatch"] = executor._executor._make_submission_file_text("python train.py", "0")
        return []

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", fake_map_array)
    launcher = Plugins.instance().instantiate_launcher(
        hydra_context=HydraContext(config_loader=None, callbacks=Callbacks()),
        task_function=lambda c: None, config=cfg)
    launcher.launch([["model=lstm_300x1"], ["model=lstm_300x2"]], initial_job_idx=0)
    assert seen["jobs"] == 2
    for line in ("--partition=gpu", "--account=lab", "--gpus-per-node=1", "--time=240",
                 "--cpus-per-task=8", "--mem=32GB", "--job-name=train"):
        assert f"#SBATCH {line}" in seen["sbatch"]


# ------------------------------------------------------------------------- Optuna pieces


def test_override_formatting_round_trips() -> None:
    from hydra_plugins.audiolstm_optuna_sweeper.study import format_value, short_float

    node = {"study_name": "it's a study", "storage": "sqlite:////tmp/x y/optuna.db",
            "trial_number": 3, "pruner": {"name": "median", "n_warmup_steps": 0},
            "flags": [True, None, 0.5]}
    parsed = OverridesParser.create().parse_override(f"optuna={format_value(node)}")
    assert parsed.value() == node
    assert short_float(0.000123456789) == 0.0001235 and short_float(0.0) == 0.0


def test_relative_sqlite_storage_is_made_absolute(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Jobs may run in another directory (SLURM): they must open the sweeper's file."""
    from hydra_plugins.audiolstm_optuna_sweeper.study import absolute_storage

    monkeypatch.chdir(tmp_path)
    expected = f"sqlite:///{tmp_path.resolve()}/outputs/s.db"
    assert absolute_storage("sqlite:///outputs/s.db") == expected
    for url in ("sqlite:////abs/s.db", "postgresql://host/db", None):
        assert absolute_storage(url) == url


def test_search_space_kinds() -> None:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from hydra_plugins.audiolstm_optuna_sweeper.study import SearchSpace

    space = SearchSpace(OverridesParser.create().parse_overrides([
        "a=choice([300],[300,300])", "b=range(1,10,3)", "c=interval(0,1)",
        "d=tag(log,interval(1e-4,1e-2))", "e=x,y", "f=7"]))
    d = space.distributions
    assert isinstance(d["a"], CategoricalDistribution) and d["a"].choices == ("[300]",
                                                                              "[300,300]")
    assert isinstance(d["b"], IntDistribution) and (d["b"].low, d["b"].high, d["b"].step) == (
        1, 7, 3)  # Hydra's range excludes its stop
    assert isinstance(d["c"], FloatDistribution) and not d["c"].log
    assert d["d"].log and isinstance(d["e"], CategoricalDistribution)
    assert space.fixed == ["f=7"]
    assert space.to_overrides({"a": "[300,300]", "b": 4, "d": 0.00123456}) == [
        "a=[300,300]", "b=4", "d=0.001235"]


class _Trainer:
    """Just what OptunaPruning reads from a Lightning Trainer."""

    class _Strategy:
        @staticmethod
        def broadcast(obj: Any, src: int = 0) -> Any:
            return obj

    def __init__(self, val: float, epoch: int) -> None:
        import torch

        self.callback_metrics = {"val/loss": torch.tensor(val)}
        self.current_epoch = epoch
        self.sanity_checking = False
        self.is_global_zero = True
        self.strategy = self._Strategy()


def test_pruning_callback_prunes_and_run_is_recorded(tmp_path: Path) -> None:
    import optuna
    from optuna.trial import TrialState

    from audiolstm.cli import guarded
    from audiolstm.training.pruning import OptunaPruning

    storage = f"sqlite:///{tmp_path}/optuna.db"
    study = optuna.create_study(study_name="s", storage=storage)
    for value in (0.1, 0.2):  # two finished trials that were good at epoch 0
        t = study.ask()
        t.report(value, step=0)
        study.tell(t, value)
    trial = study.ask()
    pruner = {"name": "median", "n_startup_trials": 1, "n_warmup_steps": 0}
    cb = OptunaPruning.from_config({"study_name": "s", "storage": storage,
                                    "trial_number": trial.number, "pruner": pruner},
                                   monitor="val/loss")
    cfg = OmegaConf.create({"paths": {"output_dir": str(tmp_path / "run")},
                            "sweep_name": "optuna"})

    def task(_: Any) -> float:
        cb.on_validation_end(_Trainer(5.0, epoch=0), None)  # much worse than the median
        return 0.0

    assert guarded(task, cfg) == 5.0
    frozen = optuna.load_study(study_name="s", storage=storage).trials[trial.number]
    assert frozen.state == TrialState.PRUNED and frozen.intermediate_values == {0: 5.0}
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "pruned" and summary["best_val_loss"] == 5.0
    assert "pruned by Optuna" in summary["error"] and summary["epochs"] == 1

    good = OptunaPruning("s", storage, study.ask().number, pruner)
    good.on_validation_end(_Trainer(0.05, epoch=0), None)  # better: keeps training


# ------------------------------------------------------------------------------- report


def _fake_run(root: Path, name: str, summary: dict[str, Any] | None,
              val: list[float] | None = None, overrides: list[str] | None = None) -> Path:
    from audiolstm.data.audio import write_wav
    from audiolstm.evaluation.plots import plot_waveform

    d = root / name
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides or []))
    if val:
        rows = ["epoch,step,train/loss_epoch,val/loss"]
        for e, v in enumerate(val):  # Lightning writes train and val on separate rows
            rows += [f"{e},{e},{v * 1.1},", f"{e},{e},,{v}"]
        (d / "metrics.csv").write_text("\n".join(rows) + "\n")
        wav = d / "samples" / f"epoch_{len(val):03d}.wav"
        x = (0.1 * np.sin(np.arange(4000) / 5.0)).astype(np.float32)
        write_wav(wav, x, 16000)
        plot_waveform(wav.with_suffix(".png"), x, 16000)
    if summary is not None:
        (d / "summary.json").write_text(json.dumps(summary))
    return d


def test_report_table_from_run_dirs(tmp_path: Path) -> None:
    from audiolstm.analysis.report import main

    sweep = tmp_path / "multirun"
    common = ["sweep=depth", "debug=smoke"]
    base = {"status": "completed", "sweep_name": "depth", "params": 1000, "epochs": 3,
            "test_loss": 0.5, "test_mse_zero": 1.0, "test_mse_persistence": 2.0,
            "test_rel_zero": 0.5, "test_rel_persistence": 0.25, "tick_score": 1.3,
            "rms_ratio": 0.8, "train_seconds": 12.5}
    _fake_run(sweep, "0_model=lstm_300x1", base | {"best_val_loss": 0.9},
              [1.2, 1.0, 0.9], [*common, "model=lstm_300x1"])
    _fake_run(sweep, "1_model=lstm_300x2", base | {"best_val_loss": 0.7, "params": 2000},
              [1.1, 0.8, 0.7], [*common, "model=lstm_300x2"])
    _fake_run(sweep, "2_model=lstm_300x3", {"status": "failed", "sweep_name": "depth",
                                            "error": "data.x_len=-1 must be a positive integer"},
              None, [*common, "model=lstm_300x3"])
    _fake_run(sweep, "3_model=gru_300x3", None, [1.5, 1.4], [*common, "model=gru_300x3"])
    (sweep / "multirun.yaml").write_text("{}\n")

    assert main([str(sweep)]) == 0
    rows = list(csv.DictReader((sweep / "report.csv").open()))
    assert [r["varying"] for r in rows] == ["model=lstm_300x2", "model=lstm_300x1",
                                            "model=gru_300x3", "model=lstm_300x3"]
    assert [r["status"] for r in rows] == ["completed", "completed", "incomplete", "failed"]
    assert rows[0]["best"] == "1" and rows[1]["best"] == "0"
    assert float(rows[0]["best_val_loss"]) == 0.7 and rows[0]["params"] == "2000"
    assert float(rows[2]["best_val_loss"]) == 1.4  # killed run: best epoch of metrics.csv
    assert "positive integer" in rows[3]["reason"]
    md = (sweep / "report.md").read_text()
    table = [ln for ln in md.splitlines() if ln.startswith("| ")]
    assert len(table) == 1 + 4 and "**1 ★**" in table[1] and "model=lstm_300x2" in table[1]
    assert "Shared by every run: `sweep=depth debug=smoke`" in md
    assert "0.25" in table[1] and "12.5 s" in table[1]
    assert (sweep / "learning_curves.png").stat().st_size > 1000
    page = (sweep / "report.html").read_text()
    assert page.count('<audio controls') == 3 and page.count("data:audio/wav;base64,") == 3
    assert page.count("<tr class=") == 4 and "incomplete" in page

    out = tmp_path / "both"  # several run dirs into one report
    assert main([str(sweep / "0_model=lstm_300x1"), str(sweep / "1_model=lstm_300x2"),
                 "--out", str(out), "--title", "two"]) == 0
    assert len(list(csv.DictReader((out / "report.csv").open()))) == 2
    assert (out / "report.md").read_text().startswith("# two")


@pytest.mark.slow  # ~15-30 s on 2 cores: runs in CI (make test-slow)
def test_report_bad_input_is_one_line(tmp_path: Path) -> None:
    for args, message in (([str(tmp_path / "missing")], "no such directory"),
                          ([str(tmp_path)], "no runs found"),
                          ([str(tmp_path), str(tmp_path)], "--out")):
        proc = run_script("report.py", *args)
        assert proc.returncode == 2, proc.stderr
        assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
        assert "Traceback" not in proc.stderr


# --------------------------------------------------------------------------- real sweeps


def _summaries(sweep_dir: Path) -> dict[str, dict[str, Any]]:
    return {d.name: json.loads((d / "summary.json").read_text())
            for d in sweep_dir.iterdir() if (d / "summary.json").is_file()}


@pytest.fixture(scope="module")
def depth_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`python train.py sweep=depth` (no -m: the file sets MULTIRUN) at smoke size + report."""
    sweep_dir = tmp_path_factory.mktemp("depth")
    proc = run_script("train.py", "sweep=depth", *SMOKE, f"hydra.sweep.dir={sweep_dir}",
                      timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run_script("report.py", str(sweep_dir))
    assert proc.returncode == 0, proc.stderr
    return sweep_dir


@pytest.mark.slow
def test_depth_sweep_and_report(depth_sweep: Path) -> None:
    summaries = _summaries(depth_sweep)
    assert len(summaries) == 3
    models = sorted(re.search(r"model=(\w+)", n).group(1) for n in summaries)
    assert models == ["lstm_300x1", "lstm_300x2", "lstm_300x3"]
    assert all(s["status"] == "completed" and s["sweep_name"] == "depth"
               for s in summaries.values())
    rows = list(csv.DictReader((depth_sweep / "report.csv").open()))
    assert len(rows) == 3
    for row in rows:  # every number in the table comes from that run's summary.json
        s = summaries[row["run"]]
        for key in ("best_val_loss", "test_loss", "test_rel_zero", "test_rel_persistence",
                    "tick_score", "rms_ratio", "train_seconds"):
            assert math.isclose(float(row[key]), s[key], rel_tol=1e-12), key
        assert int(row["params"]) == s["params"]
    vals = [float(r["best_val_loss"]) for r in rows]
    assert vals == sorted(vals) and rows[0]["best"] == "1"
    md = (depth_sweep / "report.md").read_text()
    assert len([ln for ln in md.splitlines() if ln.startswith("| ")]) == 4
    assert md.startswith("# Sweep depth")
    assert (depth_sweep / "report.html").read_text().count("<audio controls") == 3


@pytest.mark.slow
def test_failed_job_does_not_stop_a_parallel_sweep(tmp_path: Path) -> None:
    """joblib, 2 jobs at once; one job's config is rejected inside the job."""
    proc = run_script("train.py", "-m", "model=lstm_300x1", "data.x_len=2000,-1", *SMOKE,
                      "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                      f"hydra.sweep.dir={tmp_path}", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    status = {re.search(r"data.x_len=(-?\d+)", n).group(1): s for n, s in
              _summaries(tmp_path).items()}
    assert status["2000"]["status"] == "completed"
    assert status["-1"]["status"] == "failed"
    assert status["-1"]["error"] == "data.x_len=-1 must be a positive integer"
    assert run_script("report.py", str(tmp_path)).returncode == 0
    rows = {r["status"]: r for r in csv.DictReader((tmp_path / "report.csv").open())}
    assert set(rows) == {"completed", "failed"} and "positive integer" in rows["failed"]["reason"]
    assert "**failed**: data.x_len=-1" in (tmp_path / "report.md").read_text()


@pytest.mark.slow
def test_optuna_sweep_runs_trials_and_resumes(tmp_path: Path) -> None:
    import optuna

    storage = f"sqlite:///{tmp_path}/study.db"
    common = ["sweep=optuna", *SMOKE, f"hydra.sweeper.storage={storage}",
              "model.hidden_sizes=choice([32],[64,64])",  # small nets: a fast test
              "hydra.sweeper.pruner.n_startup_trials=1"]
    proc = run_script("train.py", *common, "hydra.sweeper.n_trials=2",
                      f"hydra.sweep.dir={tmp_path}/first", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = optuna.load_study(study_name="train_optuna", storage=storage)
    assert len(study.trials) == 2
    finished = {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
    assert all(t.state in finished for t in study.trials)
    assert {str(t.params["model.hidden_sizes"]) for t in study.trials} <= {"[32]", "[64,64]"}
    assert all(t.intermediate_values for t in study.trials)  # reported from inside training
    results = yaml.safe_load((tmp_path / "first" / "optimization_results.yaml").read_text())
    assert results["best_trial"] in (0, 1)

    proc = run_script("train.py", *common, "hydra.sweeper.n_trials=1",
                      f"hydra.sweep.dir={tmp_path}/second", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed with 2 earlier trials" in proc.stdout + proc.stderr
    study = optuna.load_study(study_name="train_optuna", storage=storage)
    assert len(study.trials) == 3 and study.trials[2].state in finished
    (run,) = [d for d in (tmp_path / "second").iterdir() if d.is_dir()]
    assert run.name.startswith("2_") and "optuna" not in run.name  # numbered by trial
    assert json.loads((run / "summary.json").read_text())["status"] in ("completed", "pruned")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="needs headless Chromium on PATH (apt-get install -y chromium)")
def test_report_html_opens_in_chromium(depth_sweep: Path) -> None:
    page = depth_sweep / "report.html"
    proc = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
         "--v=0", "--virtual-time-budget=5000", "--dump-dom", page.resolve().as_uri()],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = [ln for ln in proc.stderr.splitlines() if ":CONSOLE" in ln]
    assert not console, console  # the page logs only when something is broken
    dom = proc.stdout
    assert dom.count("<tr class=") == 3 and "Sweep depth" in dom
    n_img = page.read_text().count("<img ")
    assert f'data-images-ok="{n_img}"' in dom and 'data-audio-ok="3"' in dom


def test_every_project_path_named_in_configs_and_docs_exists() -> None:
    """`audiolstm/...` files and `audiolstm.x.y` objects named in conf/, sweeps/,
    hydra_plugins/ and the README exist (issue 20: conf/train.yaml and the Optuna sweeper
    still named audiolstm/optuna_pruning.py after it moved).

    Mutant caught: putting that stale path back into either file.
    """
    import importlib

    texts = [p.read_text() for d in ("conf", "sweeps", "hydra_plugins")
             for p in sorted((ROOT / d).rglob("*")) if p.suffix in (".yaml", ".py")]
    texts.append((ROOT / "README.md").read_text())
    text = "\n".join(texts)
    paths = set(re.findall(r"\baudiolstm/[\w/]+\.(?:py|c|yaml)\b", text))
    assert paths and [p for p in sorted(paths) if not (ROOT / p).exists()] == []
    missing = []
    for dotted in sorted(set(re.findall(r"\baudiolstm(?:\.\w+)+", text))):
        parts = dotted.split(".")
        for i in range(len(parts), 0, -1):  # the longest importable module, then attributes
            try:
                obj = importlib.import_module(".".join(parts[:i]))
            except ImportError:
                continue
            try:
                for name in parts[i:]:
                    obj = getattr(obj, name)
            except AttributeError:
                missing.append(dotted)
            break
        else:
            missing.append(dotted)
    assert missing == []
