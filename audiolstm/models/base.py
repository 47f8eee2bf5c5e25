"""What every audiolstm network shares, whatever it predicts (frames or samples).

- recurrent state helpers and the one truncated-BPTT chunk loop (`run_chunks`), used by
  both networks for training and chunked evaluation;
- `cpu_backend`, the oneDNN switch for single-step generation loops;
- manual optimisation (truncated BPTT is ours): `optimizer_update` checks the loss is
  finite, back-propagates, clips and steps;
- optimiser and scheduler from `_partial_` Hydra nodes in the hyper-parameters;
- exact split-wide evaluation means: subclasses `accumulate` sums and counts per
  batch, `reduced_eval_sums` sums them over DDP ranks at epoch end; evaluation runs in
  float32 even under `trainer.precision=bf16-mixed` (`float32_eval`);
- checkpoint extras (data state: settings, normaliser, representation; W&B run id)
  stored as plain containers so checkpoints load with `weights_only=True`.
"""

from __future__ import annotations

import contextlib
import inspect
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from torch import Tensor

from audiolstm.data.state import DataState
from audiolstm.errors import UserError

State = list[Any]  # per layer (or tier): (h, c) for LSTM, h for GRU
ProgressFn = Callable[[int, int], None]  # (done, total): generation progress reports
ChunkFn = Callable[[int, int, "State | None"], "tuple[Tensor, State]"]


def detach_state(state: State) -> State:
    """The same state cut from the graph: gradients stop at a chunk boundary."""
    return [tuple(t.detach() for t in s) if isinstance(s, tuple)
            else None if s is None else s.detach() for s in state]


def run_chunks(n: int, chunk: int | None, step: ChunkFn) -> list[Tensor]:
    """The truncated-BPTT loop: `step(start, stop, state) -> (value, state)` per chunk.

    Steps cover [0, n) in chunks of `chunk` (all of it when None); the state leaves each
    chunk detached, so no gradient crosses a boundary while the forward pass still sees
    the whole history. Returns each chunk's value (a loss to log, or an evaluation sum).
    """
    chunk = chunk or n
    state: State | None = None
    values: list[Tensor] = []
    for start in range(0, n, chunk):
        value, state = step(start, min(start + chunk, n), state)
        state = detach_state(state)
        values.append(value)
    return values


@contextlib.contextmanager
def cpu_backend(single_step: bool) -> Iterator[None]:
    """oneDNN speeds whole CPU sequences up but makes single-step recurrent loops slower.

    Measured in bench/bench_generate.py; `single_step=True` turns it off for per-frame or
    per-sample generation loops, whole-sequence passes keep the default.
    """
    if single_step:
        with warnings.catch_warnings():  # flags() also resets oneDNN TF32, which warns on CPU
            warnings.simplefilter("ignore", UserWarning)
            with torch.backends.mkldnn.flags(enabled=False):
                yield
    else:
        yield


@contextlib.contextmanager
def float32_eval(device: torch.device | str) -> Iterator[None]:
    """Turn autocast off: evaluation and generation run in float32 whatever the precision.

    Under `trainer.precision=bf16-mixed` Lightning wraps every step in a bf16 autocast;
    only training needs the speed. Validation/test metrics, baselines and likelihoods are
    then computed from float32 outputs (the exact means stay exact, and a run's val/loss
    measures the float32 model that generation and checkpoints use), and generation from
    bf16-trained weights is float32 too. The weights are float32 under mixed precision.
    """
    device_type = torch.device(device).type
    if device_type not in ("cpu", "cuda", "mps", "xpu"):
        yield
        return
    with torch.autocast(device_type=device_type, enabled=False):
        yield


def at_least_float32(t: Tensor) -> Tensor:
    """bf16/float16 -> float32 (a loss's digits); float32 and float64 stay as they are."""
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t


DEFAULT_OPTIMIZER = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3}


def fused_kwargs(factory: Any) -> dict[str, bool]:
    """`{"fused": True}` for an optimiser factory (a `_partial_` node) whose class has a
    fused kernel (Adam, AdamW, SGD, Adagrad) and whose node picks no implementation itself
    (`fused` or `foreach`); else nothing. The same update in one kernel over all the
    parameters instead of several per tensor: measured ~3x cheaper per SampleRNN step on
    CPU (bench/RESULTS.md), where steps come every 128-1024 samples."""
    chosen = getattr(factory, "keywords", {}) or {}
    if "fused" in chosen or "foreach" in chosen:
        return {}
    try:
        accepted = inspect.signature(getattr(factory, "func", factory)).parameters
    except (TypeError, ValueError):
        return {}
    return {"fused": True} if "fused" in accepted else {}


class NonFiniteLossError(UserError):
    """Training diverged: reported as one line; the last good checkpoint stays."""


class AudioModel(pl.LightningModule):
    """Base of AudioRNN and SampleRNN; subclasses define `_eval_step`/`_eval_epoch_end`."""

    #: written into checkpoints so loaders pick the right class
    checkpoint_class = "AudioRNN"

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self._data_state: DataState | None = None
        self.wandb_id: str | None = None
        self.sample_metrics: dict[str, Any] | None = None
        self._eval_sums: dict[str, Tensor] = {}

    # ------------------------------------------------------------------ data state
    @property
    def data_state(self) -> DataState | None:
        """The data settings and fitted statistics this model is trained on (checkpointed)."""
        return self._data_state

    @data_state.setter
    def data_state(self, state: DataState | None) -> None:
        self._data_state = state
        self.on_data_state()

    def on_data_state(self) -> None:
        """Called whenever `data_state` is set (training, checkpoint loading): subclasses
        derive what depends on the normaliser here (a head's grid, a quantiser's scale)."""

    def affine(self, split: str = "train") -> tuple[float, float]:
        """(shift, scale) of the normaliser for `split` (`x = y·scale + shift`); identity
        when no data state is attached (a model used on hand-made tensors)."""
        if self._data_state is None or self._data_state.normalizer_state is None:
            return 0.0, 1.0
        return self._data_state.normalizer().affine(split)

    # ------------------------------------------------------------------ optimisation
    def optimizer_update(self, opt: Any, loss: Tensor, batch_idx: int) -> None:
        """One manual step; refuses a non-finite loss before touching the weights."""
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"non-finite training loss ({loss.item()}) at epoch {self.current_epoch}, "
                f"batch {batch_idx}: lower model.optimizer.lr or set model.grad_clip; "
                "the last good checkpoint is kept"
            )
        opt.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        if self.hparams.grad_clip:
            self.clip_gradients(opt, gradient_clip_val=self.hparams.grad_clip,
                                gradient_clip_algorithm="norm")
        opt.step()

    #: build the optimiser with its fused kernel where it has one (`fused_kwargs`)
    fused_optimizer = False

    def configure_optimizers(self) -> Any:
        factory = instantiate(self.hparams.optimizer or DEFAULT_OPTIMIZER)
        # Lightning's mixed-precision plugins refuse to clip the gradients of a fused
        # optimiser (it would unscale them itself): fused under full precision only
        mixed = self._trainer is not None and "mixed" in str(self._trainer.precision)
        extra = fused_kwargs(factory) if self.fused_optimizer and not mixed else {}
        optimizer = factory(params=self.parameters(), **extra)
        if not self.hparams.scheduler:
            return optimizer
        scheduler = instantiate(self.hparams.scheduler)(optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler}}

    def on_train_epoch_end(self) -> None:
        """Manual optimisation steps schedulers itself (after validation, Lightning 2)."""
        sched = self.lr_schedulers()
        if sched is None:
            return
        if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
            val = self.trainer.callback_metrics.get("val/loss")
            if val is not None:
                sched.step(val)
        else:
            sched.step()

    # ------------------------------------------------------------------ evaluation
    def accumulate(self, sums: dict[str, Tensor]) -> None:
        for k, v in sums.items():
            self._eval_sums[k] = self._eval_sums.get(k, 0.0) + v.detach().double()

    def reduced_eval_sums(self) -> dict[str, float] | None:
        """This epoch's sums over all batches of all ranks; resets the accumulator."""
        if not self._eval_sums:
            return None
        keys = sorted(self._eval_sums)
        sums = torch.stack([torch.as_tensor(self._eval_sums[k]) for k in keys])
        sums = self.trainer.strategy.reduce(sums, reduce_op="sum")
        self._eval_sums = {}
        return dict(zip(keys, sums.tolist(), strict=True))

    def _eval_step(self, batch: Tensor, split: str) -> None:
        """Accumulate one batch of `split` ("val" or "test"; its normaliser may differ)."""
        raise NotImplementedError

    def _eval_epoch_end(self, prefix: str) -> None:
        raise NotImplementedError

    def validation_step(self, batch: Tensor, batch_idx: int) -> None:
        with float32_eval(self.device):
            self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def test_step(self, batch: Tensor, batch_idx: int) -> None:
        with float32_eval(self.device):
            self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["audiolstm"] = {
            "data_state": None if self.data_state is None else self.data_state.to_dict(),
            "wandb_id": self.wandb_id, "model_class": self.checkpoint_class}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        extra = checkpoint.get("audiolstm") or {}
        state = extra.get("data_state")
        self.data_state = None if not state else DataState.from_dict(state)
        self.wandb_id = extra.get("wandb_id")

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
