"""Lightning's WeightAveraging (EMA/SWA) callbacks are refused (issue 22): the test after
training would score the raw weights while generate.py loads the averaged ones. The first
test pins that Lightning behaviour, so it fails (and the guard can go) the day it changes."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EMAWeightAveraging, ModelCheckpoint, WeightAveraging

from audiolstm.errors import UserError
from audiolstm.training.run import check_weight_averaging
from tests.conftest import compose_cfg, run_script

EMA = "pytorch_lightning.callbacks.EMAWeightAveraging"


class _Line(pl.LightningModule):
    """y = w x fitted by SGD; `tested` records the weight the test step saw."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.tested: list[float] = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        return ((self.w * x - y) ** 2).mean()

    def test_step(self, batch, batch_idx):
        self.tested.append(float(self.w))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_lightning_tests_the_raw_weights_after_fit_with_weight_averaging(tmp_path: Path) -> None:
    """Fit with EMA (decay 0.5), then `trainer.test(ckpt_path=...)` as our run does: the
    weight tested is the checkpoint's `current_model_state` (raw), not its `state_dict`
    (averaged, what a checkpoint loader gets). The two differ, so the behaviour shows."""
    x = torch.linspace(-1, 1, 8)[:, None]
    data = torch.utils.data.DataLoader(list(zip(x, 3 * x, strict=True)), batch_size=2)
    model = _Line()
    ckpt_cb = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, max_epochs=2,
                         callbacks=[EMAWeightAveraging(decay=0.5), ckpt_cb])
    trainer.fit(model, data)
    trainer.test(model, data, ckpt_path=ckpt_cb.last_model_path)
    ckpt = torch.load(ckpt_cb.last_model_path, weights_only=False)
    raw, averaged = float(ckpt["current_model_state"]["w"]), float(ckpt["state_dict"]["w"])
    assert abs(raw - averaged) > 1e-3
    assert model.tested and model.tested == pytest.approx([raw] * len(model.tested))
    assert all(abs(w - averaged) > 1e-3 for w in model.tested)


@pytest.mark.parametrize("target", [EMA, "pytorch_lightning.callbacks.WeightAveraging"])
def test_weight_averaging_is_refused_naming_the_callback(target: str) -> None:
    cfg = compose_cfg([f"+callbacks.ema._target_={target}"])
    with pytest.raises(UserError, match=r"^callbacks\.ema: .* is not supported") as err:
        check_weight_averaging(cfg)
    assert "\n" not in str(err.value)


def test_every_shipped_configuration_passes(caplog: pytest.LogCaptureFixture) -> None:
    """The default callbacks, the music recipe's, and a callback Hydra cannot import (that
    is instantiate's error to report, not this check's). The default's progress bar is a
    factory function: looking it up must log nothing (Hydra's get_class logged an ERROR
    line for it at the top of every train.log)."""
    with caplog.at_level(logging.DEBUG):
        check_weight_averaging(compose_cfg([]))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    check_weight_averaging(compose_cfg(["experiment=music", "data.path=/nowhere"]))
    check_weight_averaging(compose_cfg(["+callbacks.x._target_=no.such.Callback"]))
    assert issubclass(EMAWeightAveraging, WeightAveraging)


def test_cli_refuses_in_one_line(tmp_path: Path) -> None:
    res = run_script("train.py", f"+callbacks.ema._target_={EMA}",
                     f"hydra.run.dir={tmp_path / 'r'}")
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "callbacks.ema" in lines[0], res.stderr
    assert not (tmp_path / "r/checkpoints").exists()
