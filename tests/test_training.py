"""train.py end to end: artefacts, resume, warm start, configs, loggers, errors, DDP."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from audiolstm.config import validate_train
from audiolstm.data.datamodule import AudioDataModule
from audiolstm.models.checkpoints import load_checkpoint, model_from_checkpoint
from audiolstm.models.frame_rnn import AudioRNN
from audiolstm.models.registry import build_model
from audiolstm.training.run import run
from tests.conftest import CONF, SMOKE, compose_cfg, run_script

TINY = [*SMOKE, "model=lstm_300x1", "model.hidden_sizes=[16]", "data.x_len=200",
        "callbacks.progress_bar._target_=audiolstm.training.callbacks.PlainProgressBar"]


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONF) / group).glob("*.yaml"))


def test_cli_smoke_run_writes_every_artefact(tmp_path: Path) -> None:
    out = tmp_path / "run"
    res = run_script("train.py", "model=lstm_300x3", "data.x_len=2000", "debug=smoke",
                     "data.synth_seconds=30", f"hydra.run.dir={out}")
    assert res.returncode == 0, res.stderr[-2000:]
    for name in ("config.yaml", "metrics.csv", "summary.json", "learning_curves.png",
                 "checkpoints/last.ckpt", ".hydra/config.yaml"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    for key in ("best_val_loss", "test_loss", "test_mse_zero", "test_mse_persistence", "params",
                "epochs", "steps", "train_seconds", "ckpt_best", "ckpt_last", "tick_score",
                "rms_ratio"):
        assert summary[key] is not None, key
    assert summary["epochs"] == 2 and summary["steps"] == 6
    lstm = 4 * 300 * (2000 + 300) + 8 * 300 + 2 * (4 * 300 * 600 + 8 * 300)
    assert summary["params"] == lstm + 300 * 2000 + 2000
    assert Path(summary["ckpt_best"]).is_file()
    assert sorted(p.name for p in (out / "samples").iterdir()) == [
        f"epoch_00{e}.{x}" for e in (1, 2) for x in ("json", "png", "wav")]
    resolved = OmegaConf.load(out / "config.yaml")
    assert resolved.data.x_len == 2000 and resolved.model.hidden_sizes == [300, 300, 300]
    assert f"outputs: {out}" in res.stdout


@pytest.mark.parametrize("extra", [
    pytest.param(["data.num_workers=0"], id="0 workers"),
    pytest.param(["data.num_workers=2"], id="2 workers"),
    pytest.param(["data.num_workers=2", "data.train_examples_per_epoch=8"],
                 id="random crops, 2 workers"),
])
def test_resume_is_exact(tmp_path: Path, extra: list[str]) -> None:
    # 2 epochs straight vs 1 + resume: bit-identical weights, with input noise and dropout
    # on and with loader workers (which draw their first indices when the iterator is
    # created, before Lightning's set_epoch: the loader defers its start to the first batch)
    base = [*TINY, "model.input_noise=0.1", "model.input_dropout=0.2",
            "trainer.limit_val_batches=1", "~callbacks.sample_generation", *extra]
    run(compose_cfg([*base, "trainer.max_epochs=2"], tmp_path / "straight"))
    run(compose_cfg([*base, "trainer.max_epochs=1"], tmp_path / "first"))
    first_last = tmp_path / "first/checkpoints/last.ckpt"
    run(compose_cfg([*base, "trainer.max_epochs=2", f"ckpt_path={first_last}"],
                    tmp_path / "resumed"))
    a = torch.load(tmp_path / "straight/checkpoints/last.ckpt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "resumed/checkpoints/last.ckpt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    c = torch.load(first_last, weights_only=True)["state_dict"]
    assert not torch.equal(a["head.weight"], c["head.weight"])  # epoch 2 did change weights


def test_checkpoint_restores_model_normaliser_and_representation(tmp_path: Path) -> None:
    cfg = compose_cfg([*TINY, "repr=rfft", "repr.standardize=true", "norm=minmax"], tmp_path)
    run(cfg)
    ckpt_path = tmp_path / "checkpoints/last.ckpt"
    ckpt = load_checkpoint(ckpt_path)  # weights_only: no arbitrary code
    model = AudioRNN.load_from_checkpoint(ckpt_path, weights_only=True)
    state = model.data_state
    dm = AudioDataModule(OmegaConf.to_container(cfg.data, resolve=True),
                         {"scheme": "minmax"}, {"kind": "rfft", "standardize": True})
    dm.setup()
    assert state.normalizer() == dm.normalizer
    restored = AudioDataModule.from_data_state(state)
    x = torch.randn(3, 200)
    assert torch.allclose(restored.representation.encode(x), dm.representation.encode(x))
    assert restored.normalizer == dm.normalizer
    same = model_from_checkpoint(ckpt_path)
    assert not same.training
    for k, v in ckpt["state_dict"].items():
        assert torch.equal(same.state_dict()[k], v)


def test_max_steps_before_any_validation_finishes_the_run(tmp_path: Path) -> None:
    """Early stopping watches val/loss: a run stopped by max_steps mid-epoch has none yet."""
    run(compose_cfg([*TINY, "~callbacks.sample_generation", "+trainer.max_steps=2",
                     "trainer.max_epochs=-1"], tmp_path))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 2


def test_init_from_loads_weights_with_new_hyperparameters(tmp_path: Path) -> None:
    run(compose_cfg([*TINY, "~callbacks.sample_generation"], tmp_path / "a"))
    src = tmp_path / "a/checkpoints/last.ckpt"
    cfg = compose_cfg([*TINY, "~callbacks.sample_generation", f"init_from={src}",
                       "model.input_dropout=0.5", "trainer.max_epochs=1",
                       "trainer.limit_train_batches=1"], tmp_path / "b")
    run(cfg)
    ckpt = torch.load(tmp_path / "b/checkpoints/last.ckpt", weights_only=True)
    assert ckpt["hyper_parameters"]["input_dropout"] == 0.5
    assert ckpt["epoch"] == 0  # a fresh run, not a resume
    bad = compose_cfg([*TINY, "model.hidden_sizes=[8]", f"init_from={src}"], tmp_path / "c")
    with pytest.raises(Exception, match="init_from=.*do not fit"):
        run(bad)


@pytest.mark.parametrize("model", [m for m in _options("model") if m != "schema"])
def test_every_model_config_composes_and_builds(model: str) -> None:
    cfg = compose_cfg([f"model={model}"])
    validate_train(cfg)
    net = build_model(64, OmegaConf.to_container(cfg.model, resolve=True))
    if cfg.model.arch == "frame_rnn":
        assert [m.hidden_size for m in net.layers] == list(cfg.model.hidden_sizes)
    else:
        assert net.hparams.frame_sizes == list(cfg.model.frame_sizes)


@pytest.mark.parametrize("overrides", [
    ["experiment=samplernn"],
    ["experiment=samplernn", "model=samplernn_3tier"],
    ["model.head=gaussian"],
    ["model.head=logistic_mixture", "norm=minmax"],
    ["model.loss=mse+stft", "model.scheduled_sampling=0.5"],
])
def test_issue7_options_train_at_smoke_size(overrides: list[str], tmp_path: Path) -> None:
    out = tmp_path / "run"
    size = ["data.x_len=256", "model.hidden_sizes=[16]"] if "experiment=samplernn" not in \
        overrides else ["model.hidden_sizes=[32]", "model.mlp_hidden=32"]
    run(compose_cfg([*SMOKE, *overrides, *size], out))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["test_loss"] is not None
    assert (out / "samples/epoch_002.wav").is_file()
    model = model_from_checkpoint(out / "checkpoints/last.ckpt")
    assert type(model).__name__ == ("SampleRNN" if "experiment=samplernn" in overrides
                                    else "AudioRNN")


def test_samplernn_works_as_typed() -> None:
    """Default norm (std) and x_len (2000: no multiple of the 3-tier's 64): it quantises
    the original-scale audio and cuts examples to whole top frames (tests/test_guards.py)."""
    for model in ("samplernn_2tier", "samplernn_3tier"):
        validate_train(compose_cfg([f"model={model}"]))


@pytest.mark.parametrize("trainer", _options("trainer"))
def test_every_trainer_config_instantiates(trainer: str, tmp_path: Path) -> None:
    cfg = compose_cfg([f"trainer={trainer}"], tmp_path)
    node = cfg.trainer
    if node.accelerator == "gpu" and not torch.cuda.is_available():
        node.accelerator, node.devices = "cpu", 1  # the arguments are still checked
    t = instantiate(node, logger=False)
    assert t.max_epochs == cfg.trainer.max_epochs


def test_trainer_ddp_cpu_is_two_gloo_processes(tmp_path: Path) -> None:
    cfg = compose_cfg(["trainer=ddp_cpu"], tmp_path)
    assert cfg.trainer.devices == 2 and cfg.trainer.strategy == "ddp"
    assert cfg.trainer.accelerator == "cpu"


@pytest.mark.parametrize("logger", _options("logger"))
def test_every_logger_config_instantiates(logger: str, tmp_path: Path) -> None:
    from audiolstm.training.run import build_loggers

    cfg = compose_cfg([f"logger={logger}"], tmp_path)
    loggers = build_loggers(cfg, tmp_path, None)
    names = sorted(type(lg).__name__ for lg in loggers)
    assert "CSVLogger" in names  # always on
    expected = {"wandb": 1, "tensorboard": 1, "many": 2}.get(logger, 0)
    assert len(names) == 1 + expected


def test_logger_list_combination(tmp_path: Path) -> None:
    cfg = compose_cfg(["logger=[wandb,tensorboard]"], tmp_path)
    assert set(cfg.logger) == {"csv", "wandb", "tensorboard"}


@pytest.mark.parametrize("experiment", _options("experiment"))
def test_every_experiment_composes_and_builds(experiment: str) -> None:
    cfg = compose_cfg([f"experiment={experiment}"])
    if cfg.data.source != "synthetic" and not cfg.data.path:  # a corpus recipe: DIR given
        cfg = compose_cfg([f"experiment={experiment}", "data.path=some/folder"])
    validate_train(cfg)
    dim = cfg.data.x_len * (2 if cfg.repr.kind == "fft" else 1)
    net = build_model(dim, OmegaConf.to_container(cfg.model, resolve=True))
    if cfg.model.arch == "frame_rnn":
        assert net.head.out_features == dim


def test_experiment_presets_match_the_posts() -> None:
    s0 = compose_cfg(["experiment=seed000"])
    assert (s0.data.x_len, s0.data.seq_len, s0.data.window_shift, s0.data.batch_size,
            s0.model.tbptt_steps, s0.norm.scheme) == (8000, 25, 1000, 100, 100, "minmax_union")
    s1 = compose_cfg(["experiment=seed001_300x3"])
    assert s1.model.hidden_sizes == [300, 300, 300]
    assert s1.data.seq_len * s1.data.x_len / s1.data.sample_rate == 10.0
    g = compose_cfg(["experiment=gruv"])
    assert (g.repr.kind, g.repr.standardize, g.model.hidden_sizes) == ("fft", True, [2048])
    assert g.model.optimizer._target_ == "torch.optim.RMSprop"


@pytest.mark.parametrize("debug", _options("debug"))
def test_every_debug_config_composes(debug: str) -> None:
    validate_train(compose_cfg([f"debug={debug}"]))


def test_wandb_offline_run_directory_holds_the_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    res = run_script("train.py", *TINY, "logger=wandb", f"hydra.run.dir={out}",
                     env={"WANDB_MODE": "", "HOME": str(tmp_path)})  # no credentials at all
    assert res.returncode == 0, res.stderr[-2000:]
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["wandb_id"] and summary["wandb_id"] in runs[0].name
    ckpt = torch.load(out / "checkpoints/last.ckpt", weights_only=True)
    assert ckpt["audiolstm"]["wandb_id"] == summary["wandb_id"]  # resume continues this run


@pytest.mark.parametrize(
    "override,field",
    [
        ("data.x_len=-5", "data.x_len"),
        ("data.seq_len=0", "data.seq_len"),
        ("data.hop=0", "data.hop"),
        ("data.window_shift=-1", "data.window_shift"),
        ("data.batch_size=0", "data.batch_size"),
        ("data.splits=[0.5,0.2,0.2]", "data.splits"),
        ("norm.scheme=zscore", "norm.scheme"),
        ("repr.kind=wavelet", "repr.kind"),
        ("model.cell=rnn", "model.cell"),
        ("model.dropout=1.5", "model.dropout"),
        ("data.source=youtube", "data.source"),
    ],
)
def test_bad_config_fails_with_one_line(override: str, field: str, tmp_path: Path) -> None:
    res = run_script("train.py", override, f"hydra.run.dir={tmp_path / 'r'}")
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and field in lines[0], res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "r/checkpoints").exists()  # failed before any model or data


def test_missing_wav_path_is_named(tmp_path: Path) -> None:
    res = run_script("train.py", "data=wav", f"data.path={tmp_path}/nope.wav",
                     f"hydra.run.dir={tmp_path / 'r'}")
    assert res.returncode == 2 and "nope.wav" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.slow
def test_ddp_cpu_two_processes(tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    res = run_script("train.py", *TINY, "trainer=ddp_cpu", f"hydra.run.dir={out}", timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and (out / "checkpoints/last.ckpt").is_file()
    out = res.stdout + res.stderr
    assert "MEMBER: 1/2" in out and "MEMBER: 2/2" in out  # two ranks joined the process group
    assert summary["steps"] > 0
