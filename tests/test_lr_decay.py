"""callbacks.lr_decay: the learning rate over the run's budget (training/lr_decay.py)."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint, Timer
from torch.utils.data import DataLoader, TensorDataset

from audiolstm.errors import UserError
from audiolstm.training.lr_decay import (
    BudgetLRDecay,
    budget_progress,
    check_lr_decay,
    decay_factor,
)
from tests.conftest import compose_cfg, run_script

BATCHES = 5  # per epoch in the toy runs below


def test_decay_factor_closed_form() -> None:
    assert decay_factor(0.0, 0.5, 0.05) == 1.0
    assert decay_factor(0.5, 0.5, 0.05) == 1.0
    assert decay_factor(0.75, 0.5, 0.05) == pytest.approx(0.525)  # half-way: the mean
    assert decay_factor(1.0, 0.5, 0.05) == pytest.approx(0.05)
    assert decay_factor(0.6, 0.0, 0.0) == pytest.approx(0.5 * (1 + math.cos(0.6 * math.pi)))
    values = [decay_factor(p / 100, 0.3, 0.1) for p in range(101)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


class _FixedTimer(Timer):
    """A Timer that has used `elapsed` of its `duration` seconds."""

    def __init__(self, elapsed: float, duration: float) -> None:
        super().__init__(duration={"seconds": duration})
        self.elapsed = elapsed

    def time_elapsed(self, stage: str = "train") -> float:
        return self.elapsed


def _trainer(**kw: object) -> SimpleNamespace:
    base = dict(callbacks=[], max_steps=-1, max_epochs=None, global_step=0,
                current_epoch=0, num_training_batches=BATCHES)
    return SimpleNamespace(**{**base, **kw})


def test_progress_is_the_budget_used_first() -> None:
    assert budget_progress(_trainer(), 0) is None
    assert budget_progress(_trainer(max_epochs=4, current_epoch=1), 2) == pytest.approx(1.4 / 4)
    assert budget_progress(_trainer(max_steps=100, global_step=30), 0) == pytest.approx(0.3)
    timer = _FixedTimer(elapsed=450.0, duration=1800.0)
    # time, steps and epochs all set: the largest fraction wins
    t = _trainer(callbacks=[timer], max_steps=1000, global_step=100, max_epochs=10000,
                 current_epoch=3)
    assert budget_progress(t, 0) == pytest.approx(0.25)
    t.global_step = 400
    assert budget_progress(t, 0) == pytest.approx(0.4)
    timer.elapsed = 5000.0  # past the budget (the Timer stops the run at its next check)
    assert budget_progress(t, 0) == 1.0


class _Toy(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Linear(3, 1)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self) -> DataLoader:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(4 * BATCHES, 3, generator=g)
        return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=4)


class _RecordLR(Callback):
    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_train_batch_start(self, trainer: pl.Trainer, *args: object) -> None:
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


class _StopAfter(Callback):
    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_train_epoch_end(self, trainer: pl.Trainer, *args: object) -> None:
        if trainer.current_epoch + 1 >= self.epochs:
            trainer.should_stop = True


def _fit(tmp: Path, callbacks: list[Callback], ckpt: Path | None = None) -> _Toy:
    torch.manual_seed(0)
    model = _Toy()
    trainer = pl.Trainer(max_epochs=4, callbacks=callbacks, logger=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp, accelerator="cpu")
    trainer.fit(model, ckpt_path=ckpt)
    return model


def test_every_batch_gets_the_closed_form_rate(tmp_path: Path) -> None:
    record = _RecordLR()
    _fit(tmp_path, [BudgetLRDecay(decay_from=0.25, final_ratio=0.1), record])
    expected = [0.1 * decay_factor((e + b / BATCHES) / 4, 0.25, 0.1)
                for e in range(4) for b in range(BATCHES)]
    assert record.lrs == pytest.approx(expected, rel=1e-12)
    assert record.lrs[-1] < 0.1 * 0.2  # it did decay


def test_resume_continues_the_same_curve(tmp_path: Path) -> None:
    # 4 epochs straight vs 2 + resume: the resumed run's base rate is the checkpoint's
    # `initial_lr`, not the decayed rate it was saved with (else the decay compounds)
    straight = _fit(tmp_path / "a", [BudgetLRDecay(decay_from=0.0, final_ratio=0.0)])
    ckpt = ModelCheckpoint(dirpath=tmp_path / "b", save_last=True)
    _fit(tmp_path / "b", [BudgetLRDecay(decay_from=0.0, final_ratio=0.0), _StopAfter(2), ckpt])
    record = _RecordLR()
    resumed = _fit(tmp_path / "c", [BudgetLRDecay(decay_from=0.0, final_ratio=0.0), record],
                   ckpt=tmp_path / "b/last.ckpt")
    assert record.lrs[0] == pytest.approx(0.1 * decay_factor(0.5, 0.0, 0.0), rel=1e-12)
    for a, b in zip(straight.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("overrides,field", [
    (["+callbacks.lr_decay.decay_from=1.0"], "callbacks.lr_decay.decay_from"),
    (["+callbacks.lr_decay.final_ratio=-0.1"], "callbacks.lr_decay.final_ratio"),
    (["+callbacks.lr_decay.final_ratio=true"], "callbacks.lr_decay.final_ratio"),
    (["model.scheduler={_target_: torch.optim.lr_scheduler.StepLR, _partial_: true, "
      "step_size: 1}"], "model.scheduler"),
    (["trainer.max_epochs=-1"], "trainer.max_time"),
])
def test_bad_settings_are_refused_before_any_data(overrides: list[str], field: str) -> None:
    target = "+callbacks.lr_decay._target_=audiolstm.training.lr_decay.BudgetLRDecay"
    with pytest.raises(UserError, match=field.replace(".", r"\.")):
        check_lr_decay(compose_cfg([target, *overrides]))


def test_cli_refuses_in_one_line(tmp_path: Path) -> None:
    res = run_script("train.py", "+callbacks.lr_decay._target_=audiolstm.training.lr_decay."
                     "BudgetLRDecay", "+callbacks.lr_decay.decay_from=2",
                     f"hydra.run.dir={tmp_path / 'r'}")
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "callbacks.lr_decay.decay_from" in lines[0], res.stderr
    assert not (tmp_path / "r/checkpoints").exists()


def test_music_recipe_decays_over_its_time_budget() -> None:
    cfg = compose_cfg(["experiment=music", "data.path=/nowhere"])
    check_lr_decay(cfg)
    assert cfg.callbacks.lr_decay._target_.endswith("BudgetLRDecay")
    assert cfg.trainer.max_time is not None and not cfg.model.scheduler
