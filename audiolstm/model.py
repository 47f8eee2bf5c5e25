"""`AudioRNN`: next-frame prediction with stacked LSTM/GRU layers.

    frames (B, T+1, D) -> inputs frames[:, :-1], targets frames[:, 1:]
    input noise (sigma, training only) -> input dropout -> RNN layer 1 -> dropout -> ...
    -> RNN layer L -> linear head to D

Training uses manual optimisation so truncated BPTT (removed from Lightning 2)
is ours: each example is cut into chunks of `tbptt_steps` frames, the
recurrent state is carried across chunks *detached*, and the optimiser steps
once per chunk. Without `tbptt_steps` a batch is one chunk (full BPTT).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import Tensor, nn

from audiolstm.errors import UserError
from audiolstm.metrics import baseline_mse

State = list[Any]  # per layer: (h, c) for LSTM, h for GRU


class NonFiniteLossError(UserError):
    """Training diverged: reported as one line; the last good checkpoint stays."""


def detach_state(state: State) -> State:
    return [tuple(t.detach() for t in s) if isinstance(s, tuple) else s.detach() for s in state]


def tbptt_step(model: nn.Module, x: Tensor, y: Tensor, chunk: int | None,
               update: Callable[[Tensor], None]) -> Tensor:
    """Truncated BPTT over one batch: one `update(loss)` per chunk of `chunk` frames.

    The state leaves each chunk detached, so no gradient crosses a chunk
    boundary while the forward pass still sees the whole history. Returns the
    frame-weighted mean loss of the batch (detached) for logging.
    """
    steps = x.shape[1]
    chunk = chunk or steps
    state: State | None = None
    total = torch.zeros((), device=x.device)
    for start in range(0, steps, chunk):
        pred, state = model(x[:, start : start + chunk], state)
        loss = F.mse_loss(pred, y[:, start : start + chunk])
        update(loss)
        state = detach_state(state)
        total = total + loss.detach() * pred.shape[1]
    return total / steps


class AudioRNN(pl.LightningModule):
    def __init__(
        self,
        input_dim: int,
        cell: str = "lstm",
        hidden_sizes: list[int] | tuple[int, ...] = (300, 300, 300),
        dropout: float = 0.0,
        input_dropout: float = 0.0,
        input_noise: float = 0.0,
        forget_bias: float | None = 1.0,
        tbptt_steps: int | None = None,
        grad_clip: float | None = 1.0,
        head: str = "mse",
        optimizer: dict[str, Any] | None = None,
        scheduler: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        # Plain containers only: checkpoints then load with torch.load(weights_only=True).
        self.save_hyperparameters()
        self.automatic_optimization = False
        rnn = {"lstm": nn.LSTM, "gru": nn.GRU}[cell]
        sizes = [input_dim, *hidden_sizes]
        self.input_dropout = nn.Dropout(input_dropout)
        self.layers = nn.ModuleList(
            rnn(i, h, batch_first=True) for i, h in zip(sizes[:-1], sizes[1:], strict=True)
        )
        self.between = nn.Dropout(dropout)
        self.head = nn.Linear(sizes[-1], input_dim)
        if forget_bias is not None:
            self.set_forget_bias(forget_bias)
        # Data settings, normaliser and representation ride along in checkpoints
        # (filled by train.py / on_load_checkpoint); see `data_state`.
        self.data_state: dict[str, Any] | None = None
        self.wandb_id: str | None = None
        self._eval_sums: dict[str, Tensor] = {}

    # ------------------------------------------------------------------ network
    def set_forget_bias(self, value: float) -> None:
        """Effective remember-gate bias `b_ih + b_hh` = value on gate slice [H:2H].

        LSTM gate order is (i, f, g, o): slice [H:2H] is the forget gate. GRU
        order is (r, z, n): [H:2H] is the update gate z, whose open state keeps
        the old hidden state, the GRU's way of remembering.
        """
        with torch.no_grad():
            for layer in self.layers:
                h = layer.hidden_size
                layer.bias_ih_l0[h : 2 * h].fill_(value)
                layer.bias_hh_l0[h : 2 * h].zero_()

    def forward(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """x (B, T, D) -> prediction of the next frame at every step (B, T, D), new state."""
        if self.training and self.hparams.input_noise > 0:
            x = x + self.hparams.input_noise * torch.randn_like(x)
        h = self.input_dropout(x)
        new_state: State = []
        for i, layer in enumerate(self.layers):
            if i > 0:
                h = self.between(h)
            h, s = layer(h, None if state is None else state[i])
            new_state.append(s)
        return self.head(h), new_state

    # ------------------------------------------------------------------ training
    def training_step(self, batch: Tensor, batch_idx: int) -> Tensor:
        opt = self.optimizers()

        def update(loss: Tensor) -> None:
            if not torch.isfinite(loss):
                raise NonFiniteLossError(
                    f"non-finite training loss ({loss.item()}) at epoch {self.current_epoch}, "
                    f"batch {batch_idx}: lower model.optimizer.lr or set model.grad_clip; "
                    "the last good checkpoint is kept"
                )
            opt.zero_grad(set_to_none=True)
            self.manual_backward(loss)
            if self.hparams.grad_clip:
                self.clip_gradients(
                    opt, gradient_clip_val=self.hparams.grad_clip, gradient_clip_algorithm="norm"
                )
            opt.step()

        loss = tbptt_step(self, batch[:, :-1], batch[:, 1:], self.hparams.tbptt_steps, update)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True,
                 batch_size=batch.shape[0])
        return loss

    def on_train_epoch_end(self) -> None:
        sched = self.lr_schedulers()
        if sched is None:
            return
        if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
            val = self.trainer.callback_metrics.get("val/loss")
            if val is not None:
                sched.step(val)
        else:
            sched.step()

    def configure_optimizers(self) -> Any:
        opt_cfg = self.hparams.optimizer or {
            "_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3,
        }
        optimizer = instantiate(opt_cfg)(params=self.parameters())
        if not self.hparams.scheduler:
            return optimizer
        scheduler = instantiate(self.hparams.scheduler)(optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler}}

    # ------------------------------------------------------------------ evaluation
    def _eval_step(self, batch: Tensor) -> None:
        x, y = batch[:, :-1], batch[:, 1:]
        pred, _ = self(x)
        n = torch.tensor(float(y.numel()), device=y.device)
        sums = {"loss": F.mse_loss(pred, y, reduction="sum")}
        sums |= {k: v * n for k, v in baseline_mse(x, y).items()}
        sums["count"] = n
        for k, v in sums.items():
            self._eval_sums[k] = self._eval_sums.get(k, 0.0) + v.detach().double()

    def _eval_epoch_end(self, prefix: str) -> None:
        """Exact split-wide means (summed over ranks), and the model relative to baselines."""
        if not self._eval_sums:
            return
        keys = sorted(self._eval_sums)
        sums = torch.stack([torch.as_tensor(self._eval_sums[k]) for k in keys])
        sums = self.trainer.strategy.reduce(sums, reduce_op="sum")
        total = dict(zip(keys, sums.tolist(), strict=True))
        self._eval_sums = {}
        n = total.pop("count")
        means = {k: v / n for k, v in total.items()}
        metrics = {
            f"{prefix}/loss": means["loss"],
            f"{prefix}/mse_zero": means["mse_zero"],
            f"{prefix}/mse_persistence": means["mse_persistence"],
            f"{prefix}/rel_zero": _ratio(means["loss"], means["mse_zero"]),
            f"{prefix}/rel_persistence": _ratio(means["loss"], means["mse_persistence"]),
        }
        # Already reduced over ranks above: no sync_dist here.
        self.log(f"{prefix}/loss", metrics.pop(f"{prefix}/loss"), prog_bar=True)
        self.log_dict(metrics)

    def validation_step(self, batch: Tensor, batch_idx: int) -> None:
        self._eval_step(batch)

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def test_step(self, batch: Tensor, batch_idx: int) -> None:
        self._eval_step(batch)

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["audiolstm"] = {"data_state": self.data_state, "wandb_id": self.wandb_id}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        extra = checkpoint.get("audiolstm") or {}
        self.data_state = extra.get("data_state")
        self.wandb_id = extra.get("wandb_id")

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else math.nan
