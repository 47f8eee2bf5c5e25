"""`AudioRNN`: next-frame prediction with stacked LSTM/GRU layers.

    frames (B, T+1, D) -> inputs frames[:, :-1], targets frames[:, 1:]
    input noise (sigma, training only) -> input dropout -> RNN layer 1 -> dropout -> ...
    -> RNN layer L -> linear head to D

Training uses manual optimisation so truncated BPTT (removed from Lightning 2)
is ours: each example is cut into chunks of `tbptt_steps` frames, the
recurrent state is carried across chunks *detached*, and the optimiser steps
once per chunk. Without `tbptt_steps` a batch is one chunk (full BPTT).

Heads (`head=`): `mse` (a linear regressor of the next frame: the seeds'
recipe, which predicts the conditional mean), `gaussian` and
`logistic_mixture` (a distribution per sample, trained by negative
log-likelihood and *sampled* at generation time; see heads.py). With the mse
head, `loss=stft|mse+stft` adds a multi-resolution STFT loss (losses.py).
`linear_ar=zero|ridge|ridge_fixed` adds a linear map of the current input frame to the head's
location (LSTNet's autoregressive path; linear_ar.py), optionally starting at the ridge
baseline's fit, so the RNN learns the residual of the best linear one-frame predictor.
`scheduled_sampling=p` trains on the model's own outputs: a first
teacher-forced pass predicts every frame, then each input frame is replaced
by the (detached) prediction for it with probability p and the loss is taken
on a second pass (parallel scheduled sampling, Duckworth et al. 2019: one
extra forward instead of a step-by-step loop).

Evaluation (val/test) is scored by `audiolstm.evaluation.frame_scores` (the model's
MSE beside the zero, persistence and ridge baselines on the same batches, and its
`bits_per_sample` on the canonical grid); the model supplies its predictions and a
`FrameScoring` built from its data state, and keeps the Gaussian-equivalent variances
with its weights (`reference_variance`, checkpointed).

The gaussian and logistic_mixture heads need `repr=time` without standardisation (a
density over DFT coefficients is not a density over samples); `config.validate_train`
refuses the other combinations.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audiolstm.errors import UserError
from audiolstm.evaluation.baselines import RidgeFit, fit_ridge_baseline, ridge_predict
from audiolstm.evaluation.frame_scores import (
    FrameScoring,
    batch_sums,
    epoch_metrics,
    train_error,
)
from audiolstm.models.base import AudioModel, State, at_least_float32, run_chunks
from audiolstm.models.frame_step import FrameStepper
from audiolstm.models.heads import GaussianHead, LogisticMixtureHead
from audiolstm.models.linear_ar import FROM_RIDGE, LinearAR, add_at_location, check_linear_ar
from audiolstm.models.losses import multi_resolution_stft_loss

CELLS = ("lstm", "gru")
HEADS = ("mse", "gaussian", "logistic_mixture")
LOSSES = ("mse", "stft", "mse+stft")


class MeanHead(nn.Linear):
    """The seeds' regressor: a linear map to the next frame, with the heads' interface."""

    def mean(self, out: Tensor) -> Tensor:
        return out

    def sample(self, out: Tensor, temperature: float = 0.0) -> Tensor:
        return out


def tbptt_step(model: nn.Module, x: Tensor, y: Tensor, chunk: int | None,
               update: Callable[[Tensor], None],
               objective: Callable[[Tensor, Tensor], Tensor] | None = None) -> Tensor:
    """Truncated BPTT over one batch of frames: one `update(loss)` per chunk of `chunk` frames.

    Returns the frame-weighted mean loss of the batch (detached) for logging.
    """
    objective = objective or F.mse_loss

    def step(start: int, stop: int, state: State | None) -> tuple[Tensor, State]:
        pred, state = model(x[:, start:stop], state)
        loss = objective(pred, y[:, start:stop])
        update(loss)
        return loss.detach() * (stop - start), state

    steps = x.shape[1]
    return torch.stack(run_chunks(steps, chunk, step)).sum() / steps


class AudioRNN(AudioModel):
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
        loss: str = "mse",
        stft_weight: float = 1.0,
        mixture_components: int = 5,
        mixture_bins: int = 256,
        scheduled_sampling: float = 0.0,
        linear_ar: str | None = None,
        optimizer: dict[str, Any] | None = None,
        scheduler: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        # Plain containers only: checkpoints then load with torch.load(weights_only=True).
        self.save_hyperparameters()
        rnn = {"lstm": nn.LSTM, "gru": nn.GRU}[cell]
        sizes = [input_dim, *hidden_sizes]
        self.input_dropout = nn.Dropout(input_dropout)
        self.layers = nn.ModuleList(
            rnn(i, h, batch_first=True) for i, h in zip(sizes[:-1], sizes[1:], strict=True)
        )
        self.between = nn.Dropout(dropout)
        if head == "mse":
            self.head = MeanHead(sizes[-1], input_dim)
        elif head == "gaussian":
            self.head = GaussianHead(sizes[-1], input_dim)
        elif head == "logistic_mixture":
            self.head = LogisticMixtureHead(sizes[-1], input_dim, mixture_components,
                                            mixture_bins)
        else:
            raise UserError(f"model.head={head!r} is not one of {', '.join(HEADS)}")
        if loss != "mse" and head != "mse":
            raise UserError(f"model.loss={loss!r} needs model.head=mse (the other heads are "
                            "trained by likelihood)")
        if forget_bias is not None:
            self.set_forget_bias(forget_bias)
        check_linear_ar(linear_ar)
        # built last and at zero: the other weights draw the same random numbers as without
        self.linear_ar = LinearAR(input_dim) if linear_ar else None
        if linear_ar == "ridge_fixed":  # the ridge fit stays; only the RNN learns
            self.linear_ar.requires_grad_(False)
        # Ridge baseline (last frame -> next frame), fitted on the training split by
        # training.run (`fit_ridge`); evaluation only, never saved.
        self.ridge: tuple[Tensor, Tensor] | None = None
        # Gaussian-equivalent variances (original-scale units) per scored split and
        # predictor: "val" from the training split, "test" from the validation split
        # (checkpointed with the weights they belong to).
        self.reference_variance: dict[str, dict[str, float]] = {"val": {}, "test": {}}
        # the model's squared error and sample count over the training epoch
        self._train_sse = torch.zeros(2, dtype=torch.float64)
        self._representation: Any = None  # decodes features to samples (repr != time)

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
        x_in = x
        if self.training and self.hparams.input_noise > 0:
            x = x + self.hparams.input_noise * torch.randn_like(x)
        h = self.input_dropout(x)
        new_state: State = []
        for i, layer in enumerate(self.layers):
            if i > 0:
                h = self.between(h)
            h, s = layer(h, None if state is None else state[i])
            new_state.append(s)
        return self.with_linear_ar(self.head(h), x_in), new_state

    def with_linear_ar(self, out: Tensor, x: Tensor) -> Tensor:
        """The head's output `out` plus the linear path of input frames `x` (if any)."""
        if self.linear_ar is None:
            return out
        return add_at_location(self.hparams.head, out, self.linear_ar(x),
                               self.hparams.mixture_components)

    def init_linear_ar(self) -> None:
        """`linear_ar=ridge|ridge_fixed`: start at the ridge fit (`fit_ridge` first).

        The path is loaded with the fit and the head's *location* output (the mse head's
        frame, the Gaussian's mean) starts at zero, so the untrained model predicts
        exactly what the ridge does and the RNN's residual grows from nothing: a random
        head would add noise the size of the signal to every prediction and cost the
        first epochs undoing it (built-in data: best validation 0.87 -> 0.85 x the ridge,
        test 1.000 -> 0.997; README "A linear path"). The head's weights still get
        gradient at once (the hidden state is not zero), the RNN's from the next step.
        The logistic mixture's locations keep their random start: zeroed, its components
        would all sit on the linear prediction and get equal gradients forever.
        """
        kind = self.hparams.linear_ar
        if kind not in FROM_RIDGE:
            return
        if self.ridge is None:
            raise UserError(f"model.linear_ar={kind} starts from the ridge baseline, which this "
                            "run did not fit (ridge_baseline=false, or an input dim above "
                            "the ridge's limit): use model.linear_ar=zero or null")
        self.linear_ar.load_ridge(*self.ridge)
        with torch.no_grad():
            if isinstance(self.head, MeanHead):
                self.head.weight.zero_()
                self.head.bias.zero_()
            elif isinstance(self.head, GaussianHead):  # rows [0, D) of mean ‖ log_scale
                self.head.proj.weight[: self.head.dim].zero_()
                self.head.proj.bias[: self.head.dim].zero_()

    def objective(self, out: Tensor, y: Tensor) -> Tensor:
        """The training loss for head outputs `out` and target frames `y`.

        Always computed in float32: under bf16-mixed the head's outputs are bf16, and the
        likelihoods (logs of CDF differences) and the STFT loss need float32's digits.
        """
        out, y = at_least_float32(out), at_least_float32(y)
        if self.hparams.head != "mse":
            return self.head.nll(out, y)
        kind = self.hparams.loss
        if kind == "mse":
            return F.mse_loss(out, y)
        stft = multi_resolution_stft_loss(out, y)
        if kind == "stft":
            return stft
        return F.mse_loss(out, y) + self.hparams.stft_weight * stft

    def stepper(self, state: State | None, batch: int = 1) -> FrameStepper:
        """A fast one-frame-at-a-time path from `state` (eval mode; frame_step.py):
        `stepper(state).step(x)` equals `self(x, state)[0]` and carries the state."""
        return FrameStepper(self, state, batch)

    def next_frame(self, out: Tensor, temperature: float = 0.0,
                   generator: torch.Generator | None = None, top_p: float = 1.0) -> Tensor:
        """A frame to feed back: the mean (temperature 0) or a sample of the head, drawn
        from `generator` (None: the global one); `top_p` < 1: from the nucleus of the
        logistic mixture's cells (heads.py), which the other heads do not have."""
        if top_p < 1.0 and self.hparams.head != "logistic_mixture":
            raise ValueError(f"top_p={top_p} needs a discrete head (logistic_mixture), "
                             f"not head={self.hparams.head}")
        if self.hparams.head == "mse" or temperature == 0:
            return self.head.mean(out)
        if top_p < 1.0:
            return self.head.sample(out, temperature, generator, top_p=top_p)
        return self.head.sample(out, temperature, generator)

    def _scheduled_inputs(self, x: Tensor) -> Tensor:
        """Replace input frames by the model's own predictions with probability p."""
        p = self.hparams.scheduled_sampling
        with torch.no_grad():
            out, _ = self(x)
            own = self.next_frame(out)[:, :-1]  # prediction of frame t+1 from frames <= t
        swap = torch.rand(x.shape[0], x.shape[1] - 1, 1, device=x.device) < p
        return torch.cat([x[:, :1], torch.where(swap, own, x[:, 1:])], dim=1)

    # ------------------------------------------------------------------ training
    def training_step(self, batch: Tensor, batch_idx: int) -> Tensor:
        opt = self.optimizers()

        def update(loss: Tensor) -> None:
            self.optimizer_update(opt, loss, batch_idx)

        def objective(out: Tensor, y: Tensor) -> Tensor:
            if self.hparams.head == "mse":  # the model's training MSE (Gaussian-equivalent)
                self._accumulate_train_error(out.detach(), y.detach())
            return self.objective(out, y)

        x = batch[:, :-1]
        if self.hparams.scheduled_sampling > 0:
            x = self._scheduled_inputs(x)
        loss = tbptt_step(self, x, batch[:, 1:], self.hparams.tbptt_steps, update, objective)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True,
                 batch_size=batch.shape[0])
        return loss

    # ------------------------------------------------------------------ evaluation
    def on_data_state(self) -> None:
        """The normaliser decides the mixture's grid; the representation what to decode."""
        ds = self.data_state
        self._representation = None
        if ds is None:
            return
        if ds.repr_kind != "time" or ds.standardized:
            self._representation = ds.representation()
        if isinstance(self.head, LogisticMixtureHead) and ds.normalizer_state is not None:
            self.head.set_grid(*self.canonical_grid("train"))

    @property
    def bits_kind(self) -> str:
        """What its bits/sample are: its own likelihood, or a Gaussian-equivalent."""
        return "Gaussian-equivalent" if self.hparams.head == "mse" else "likelihood"

    def canonical_grid(self, split: str = "train") -> tuple[float, float]:
        """The original-scale [−1, 1] in `split`'s normalised units."""
        shift, scale = self.affine(split)
        return (-1.0 - shift) / scale, (1.0 - shift) / scale

    def scoring(self, split: str) -> FrameScoring:
        """How this model's frames of `split` are scored (evaluation/frame_scores.py)."""
        ds = self.data_state
        shift, scale = self.affine(split)
        rep = self._representation
        return FrameScoring(
            shift=shift, scale=scale, step=None if ds is None else ds.step,
            decode=None if rep is None else rep.decode,
            encode=None if rep is None else rep.encode,
            overlap_hop=(ds.step if ds is not None and ds.overlapping and ds.repr_kind == "time"
                         else None),
            mean=(ds.normalizer().train_mean(split) if ds and ds.normalizer_state else 0.0),
            x_len=None if ds is None else ds.x_len,
            reference=self.reference_variance.get(split, {}))

    def _accumulate_train_error(self, pred: Tensor, y: Tensor) -> None:
        """The model's squared error on the scored samples of a training chunk (original
        scale): the variance of its Gaussian-equivalent val score."""
        self._train_sse += train_error(self.scoring("train"), pred, y)

    def on_train_epoch_start(self) -> None:
        self._train_sse = torch.zeros(2, dtype=torch.float64)

    def on_validation_epoch_start(self) -> None:
        """The val score's variance (head=mse): the model's MSE on the training split."""
        sums = self._train_sse.to(self.device)
        if self._trainer is not None:
            sums = self.trainer.strategy.reduce(sums, reduce_op="sum")  # exact under DDP
        sse, count = (float(v) for v in sums)
        self.reference_variance["val"] = (
            {"model": sse / count} if count > 0 and self.hparams.head == "mse" else {})

    def fit_ridge(self, pairs: Callable[[], Iterable[Tensor]], alpha: float | None = 1.0,
                  val_pairs: Callable[[], Iterable[Tensor]] | None = None) -> RidgeFit | None:
        """Fit the ridge baseline on training frame pairs `(n, 2, D)` (evaluation, and the
        start of `linear_ar=ridge|ridge_fixed`); `alpha=None` chooses its penalty on
        `val_pairs` (`evaluation.baselines.choose_ridge`). Returns the fit's record."""
        fit = fit_ridge_baseline(pairs(), alpha, None if val_pairs is None else val_pairs())
        self.ridge = None if fit is None else (fit.w, fit.b)
        return fit

    def _eval_step(self, batch: Tensor, split: str) -> None:
        x, y = batch[:, :-1], batch[:, 1:]
        out, _ = self(x)
        ridge = None if self.ridge is None else ridge_predict(x, *self.ridge)
        self.accumulate(batch_sums(self.scoring(split), x, y, out, self.head.mean(out),
                                   self.objective(out, y), self.head, self.hparams.head,
                                   self.canonical_grid(split), ridge))

    def _eval_epoch_end(self, prefix: str) -> None:
        """Exact split-wide means (summed over ranks), and the model relative to baselines."""
        total = self.reduced_eval_sums()
        if total is None:
            return
        own = (f"bits_per_sample_linear{self.hparams.mixture_bins}"
               if self.hparams.head == "logistic_mixture" else None)
        metrics, variances = epoch_metrics(prefix, total, own)
        if prefix == "val" and not self.trainer.sanity_checking and variances:
            self.reference_variance["test"] = variances
        # Already reduced over ranks above: no sync_dist here.
        self.log(f"{prefix}/loss", metrics.pop(f"{prefix}/loss"), prog_bar=True)
        self.log_dict(metrics)

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["audiolstm"]["reference_variance"] = {
            k: dict(v) for k, v in self.reference_variance.items()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        ref = (checkpoint.get("audiolstm") or {}).get("reference_variance") or {}
        self.reference_variance = {"val": dict(ref.get("val") or {}),
                                   "test": dict(ref.get("test") or {})}

