"""Errors of the command line are one line and exit code 2, like every other user error:
Hydra's own (a value of the wrong type, an option that does not exist, an override it cannot
parse, an unknown key) and a setting added with `+` that nothing reads."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ValidationError

from audiolstm import cli
from audiolstm.config import check_known_keys
from audiolstm.errors import UserError
from tests.conftest import CONF, compose_cfg, run_script

#: (override, fragments the one line must hold)
BAD_COMMAND_LINES = [
    ("ridge_alpha=abc", ["ridge_alpha=abc", "could not be converted to Float",
                         "full_key: ridge_alpha"]),
    ("data.batch_size=abc", ["data.batch_size", "Integer"]),
    ("model=nosuch", ["model/nosuch", "samplernn_3tier, schema"]),
    ("data.x_len=[1", ["no viable alternative"]),
    ("nosuchkey=1", ["nosuchkey", "+nosuchkey=1"]),
    ("+data.x_length=2000", ["data.x_length: no such setting", "x_len"]),
    ("+model.baz=3", ["model.baz: no such setting"]),
    ("+bar=2", ["bar: no such setting"]),
]


@pytest.mark.parametrize("override,fragments", BAD_COMMAND_LINES,
                         ids=[o for o, _ in BAD_COMMAND_LINES])
def test_train_refuses_a_bad_command_line_in_one_line(override: str, fragments: list[str],
                                                      tmp_path: Path) -> None:
    res = run_script("train.py", override, f"hydra.run.dir={tmp_path / 'run'}")
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "Traceback" not in res.stderr + res.stdout
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_generate_refuses_a_bad_command_line_in_one_line(tmp_path: Path) -> None:
    res = run_script("generate.py", "ckpt_path=x.ckpt", "temprature=0.9",
                     f"hydra.run.dir={tmp_path / 'run'}")
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "Could not override 'temprature'" in lines[0]


def test_a_user_asking_for_hydras_traceback_gets_it(tmp_path: Path) -> None:
    res = run_script("train.py", "model=nosuch", f"hydra.run.dir={tmp_path / 'run'}",
                     env={"HYDRA_FULL_ERROR": "1"})
    assert res.returncode == 1
    assert "Traceback" in res.stderr and "Could not find 'model/nosuch'" in res.stderr


def test_an_error_inside_the_task_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    """An OmegaConf error raised by the task is a bug of ours, not a bad override; a bad
    override composed after a task ran (a later job of a sweep) is still one line."""
    monkeypatch.setattr(cli, "_task_raised", False)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.delenv(cli._OWN_FULL_ERROR, raising=False)

    def composes_badly() -> None:
        raise ConfigCompositionException("In 'train': Could not find 'model/x'")

    def a_job_ran_then_the_next_composes_badly() -> None:
        cli.guarded(lambda cfg: 0.0, None)
        composes_badly()

    for main in (composes_badly, a_job_ran_then_the_next_composes_badly):
        with pytest.raises(SystemExit) as stop:
            cli.hydra_entry(main)()
        assert stop.value.code == UserError.exit_code

    def task_with_a_bug(cfg: object) -> None:
        raise ValidationError("a bug in our own code")

    with pytest.raises(ValidationError):
        cli.hydra_entry(lambda: cli.guarded(task_with_a_bug, None))()


def test_config_error_line_joins_the_reason_and_the_field() -> None:
    cause = ValueError("Value 'abc' of type 'str' could not be converted to Float\n"
                       "    full_key: ridge_alpha\n    object_type=TrainConfig")
    err = ConfigCompositionException("Error merging override ridge_alpha=abc")
    err.__cause__ = cause
    assert cli.config_error_line(err) == (
        "Error merging override ridge_alpha=abc; Value 'abc' of type 'str' could not be "
        "converted to Float; full_key: ridge_alpha")
    options = ConfigCompositionException(
        "In 'train': Could not find 'model/x'\n\nAvailable options in 'model':\n\ta\n\tb\n"
        "Config search path:\n\tprovider=hydra, path=pkg://hydra.conf")
    assert cli.config_error_line(options) == (
        "In 'train': Could not find 'model/x'; Available options in 'model': a, b")


SHIPPED = ([f"experiment={p.stem}" for p in sorted((Path(CONF) / "experiment").glob("*.yaml"))]
           + [f"sweep={p.stem}" for p in sorted((Path(CONF) / "sweep").glob("*.yaml"))
              if p.stem != "wandb"]  # W&B's own sweep format, not a Hydra config
           + [f"model={p.stem}" for p in sorted((Path(CONF) / "model").glob("*.yaml"))
              if p.stem != "schema"])


@pytest.mark.parametrize("choice", SHIPPED)
def test_every_shipped_config_holds_only_known_keys(choice: str) -> None:
    check_known_keys(compose_cfg([choice]))


@pytest.mark.parametrize("section,key", itertools.product(["data", "norm", "repr", "model"],
                                                          ["not_a_setting"]))
def test_a_key_added_to_a_schema_section_is_refused(section: str, key: str) -> None:
    with pytest.raises(UserError, match=rf"^{section}\.{key}: no such setting"):
        check_known_keys(compose_cfg([f"+{section}.{key}=1"]))


def test_keys_added_where_lightning_or_hydra_read_them_pass() -> None:
    """trainer, callbacks, logger take new keys on purpose (Lightning refuses a wrong one)."""
    check_known_keys(compose_cfg(["+trainer.detect_anomaly=false",
                                  "+callbacks.x._target_=no.such.Callback"]))
