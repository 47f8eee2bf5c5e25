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

Evaluation (val/test) logs the MSE of the model and of the zero (training mean),
persistence and ridge baselines on the same batches, and `bits_per_sample` on the
canonical grid (`audiolstm.evaluation.likelihood`: −log2 P per sample of the original-scale
audio quantised to 256 linear levels over [−1, 1]), scored on the samples each target
frame adds to the audio (its last `hop` samples when frames overlap, all of them
otherwise), decoded to the time domain:

- `gaussian`: CDF differences of the predicted Gaussian mapped to the original scale;
- `logistic_mixture`: its grid is the canonical [−1, 1] mapped through the normaliser, so
  each own cell's mass spreads uniformly over the canonical bins it covers (exactly one
  with the default `mixture_bins=256`); also `bits_per_sample_linear{mixture_bins}`, its
  own grid;
- `mse` (any loss) and, on test, the baselines (`bits_per_sample_zero`, `_persistence`,
  `_ridge`): "Gaussian-equivalent", a Gaussian centred on the prediction whose variance is
  the predictor's MSE on data the score is not computed on: for **test**, its MSE on the
  validation split (the validation epoch of the checkpoint being tested, stored in the
  checkpoint); for **val** (the model only), its MSE on the training split over the
  training batches of the epoch just trained, in training mode. No score before the first
  training epoch, or on test without an earlier validation.

The gaussian and logistic_mixture heads need `repr=time` without standardisation (a
density over DFT coefficients is not a density over samples); `config.validate_train`
refuses the other combinations.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audiolstm.errors import UserError
from audiolstm.evaluation.baselines import (
    copy_overlap_mse,
    fit_ridge_baseline,
    new_sample_mse,
    ridge_predict,
)
from audiolstm.evaluation.likelihood import LN2, bin_index, gaussian_log_prob
from audiolstm.evaluation.metrics import baseline_mse
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
        """`linear_ar=ridge|ridge_fixed`: the linear path at the ridge fit (`fit_ridge` first)."""
        kind = self.hparams.linear_ar
        if kind not in FROM_RIDGE:
            return
        if self.ridge is None:
            raise UserError(f"model.linear_ar={kind} starts from the ridge baseline, which this "
                            "run did not fit (ridge_baseline=false, or an input dim above "
                            "the ridge's limit): use model.linear_ar=zero or null")
        self.linear_ar.load_ridge(*self.ridge)

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

    def next_frame(self, out: Tensor, temperature: float = 0.0) -> Tensor:
        """A frame to feed back: the mean (temperature 0) or a sample of the head."""
        if self.hparams.head == "mse" or temperature == 0:
            return self.head.mean(out)
        return self.head.sample(out, temperature)

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

    def _new_samples(self, frames: Tensor) -> Tensor:
        """Frames as the model sees them -> the normalised samples each adds to the audio.

        Decoded to the time domain; the last `hop` samples of each frame when frames
        overlap (the others repeat the input), all of them otherwise.
        """
        rep = self._representation
        t = frames if rep is None else rep.decode(frames)
        ds = self.data_state
        step = ds.step if ds is not None else t.shape[-1]
        return t[..., -step:] if step < t.shape[-1] else t

    def _mean_frame(self, split: str, like: Tensor) -> Tensor:
        """The training mean as a frame of `split` (what the zero baseline predicts)."""
        ds = self.data_state
        m = ds.normalizer().train_mean(split) if ds and ds.normalizer_state else 0.0
        if self._representation is None:
            return torch.full(like.shape[-1:], m, dtype=like.dtype, device=like.device)
        frame = torch.full((ds.x_len,), m, dtype=like.dtype, device=like.device)
        return self._representation.encode(frame)

    def _accumulate_train_error(self, pred: Tensor, y: Tensor) -> None:
        """The model's squared error on the scored samples of a training chunk (original
        scale): the variance of its Gaussian-equivalent val score."""
        scale = self.affine("train")[1]
        r = (self._new_samples(pred) - self._new_samples(y)).double()
        self._train_sse += torch.stack([r.square().sum() * scale**2,
                                        torch.tensor(float(r.numel()), dtype=torch.float64,
                                                     device=r.device)]).cpu()

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

    def fit_ridge(self, pairs: Callable[[], Iterable[Tensor]], alpha: float = 1.0) -> None:
        """Fit the ridge baseline on training frame pairs `(n, 2, D)` (evaluation only)."""
        self.ridge = fit_ridge_baseline(pairs(), alpha)

    def _eval_step(self, batch: Tensor, split: str) -> None:
        x, y = batch[:, :-1], batch[:, 1:]
        out, _ = self(x)
        pred = self.head.mean(out)
        n = torch.tensor(float(y.numel()), device=y.device)
        mean_frame = self._mean_frame(split, y)
        sums = {"loss": self.objective(out, y) * n, "mse": F.mse_loss(pred, y, reduction="sum")}
        sums |= {k: v * n for k, v in baseline_mse(x, y, mean_frame).items()}
        ridge = None if self.ridge is None else ridge_predict(x, *self.ridge)
        if ridge is not None:
            sums["mse_ridge"] = F.mse_loss(ridge, y, reduction="sum")
        hop = self._overlap_hop()
        if hop is not None:  # overlapping time frames: the new samples are the real task
            n_new = n * hop / y.shape[-1]
            sums["mse_new"] = new_sample_mse(pred, y, hop) * n_new
            sums["mse_copy_overlap"] = copy_overlap_mse(x, y, hop, float(mean_frame[0])) * n
            sums["count_new"] = n_new
        sums["count"] = n
        # squared errors of all (the test variances); likelihoods where a variance is known:
        # val: the model's (its training MSE); test: the model's and the baselines'
        predictors = {"model": pred if self.hparams.head == "mse" else None,
                      "zero": mean_frame.expand_as(y), "persistence": x, "ridge": ridge}
        sums |= self._likelihood_sums(split, out, y, predictors)
        self.accumulate(sums)

    def _likelihood_sums(self, split: str, out: Tensor, y: Tensor,
                         predictors: dict[str, Tensor | None]) -> dict[str, Tensor]:
        """Summed canonical log-probabilities (and squared errors) of the scored samples."""
        shift, scale = self.affine(split)
        target = self._new_samples(y).double()
        x = target * scale + shift  # the original-scale audio
        new = target.shape[-1]  # the probabilistic heads need repr=time: the last `new`
        sums = {"count_samples": torch.tensor(float(x.numel()), dtype=torch.float64)}
        if self.hparams.head == "gaussian":
            mean = self.head.mean(out)[..., -new:].double() * scale + shift
            std = self.head.scale(out)[..., -new:].double() * scale
            sums["logp_head"] = gaussian_log_prob(x, mean, std).sum()
        elif self.hparams.head == "logistic_mixture":
            grid = self.canonical_grid(split)
            params = out[..., -new:, :]
            sums["logp_head"] = self.head.canonical_log_prob(params, bin_index(x), grid).sum()
            sums["logp_own"] = self.head.log_prob(params, target, grid).double().sum()
        reference = self.reference_variance.get(split, {})
        for name, p in predictors.items():
            if p is None:
                continue
            p = self._new_samples(p).double() * scale + shift
            sums[f"sse_{name}"] = (p - x).square().sum()
            var = reference.get(name)
            if var is not None and var > 0:
                sums[f"logp_{name}"] = gaussian_log_prob(x, p, math.sqrt(var)).sum()
        return {k: v.to(y.device) for k, v in sums.items()}

    def _eval_epoch_end(self, prefix: str) -> None:
        """Exact split-wide means (summed over ranks), and the model relative to baselines."""
        total = self.reduced_eval_sums()
        if total is None:
            return
        n = total.pop("count")
        n_new = total.pop("count_new", None)
        n_samples = total.pop("count_samples")
        logp = {k: total.pop(k) for k in list(total) if k.startswith("logp_")}
        sse = {k[4:]: total.pop(k) for k in list(total) if k.startswith("sse_")}
        means = {k: v / (n_new if k == "mse_new" else n) for k, v in total.items()}
        metrics = {f"{prefix}/{k}": v for k, v in means.items()}
        metrics[f"{prefix}/rel_zero"] = _ratio(means["mse"], means["mse_zero"])
        metrics[f"{prefix}/rel_persistence"] = _ratio(means["mse"], means["mse_persistence"])
        if "mse_ridge" in means:
            metrics[f"{prefix}/rel_ridge"] = _ratio(means["mse"], means["mse_ridge"])
        bits = {k: -v / n_samples / LN2 for k, v in logp.items()}
        model_bits = bits.pop("logp_head", bits.pop("logp_model", None))
        if model_bits is not None:
            metrics[f"{prefix}/bits_per_sample"] = model_bits
        if "logp_own" in bits:
            own = bits.pop("logp_own")
            metrics[f"{prefix}/bits_per_sample_linear{self.hparams.mixture_bins}"] = own
        for name in ("zero", "persistence", "ridge"):
            if f"logp_{name}" in bits:
                metrics[f"{prefix}/bits_per_sample_{name}"] = bits[f"logp_{name}"]
        if prefix == "val" and not self.trainer.sanity_checking and n_samples > 0:
            self.reference_variance["test"] = {k: v / n_samples for k, v in sse.items()}
        # Already reduced over ranks above: no sync_dist here.
        self.log(f"{prefix}/loss", metrics.pop(f"{prefix}/loss"), prog_bar=True)
        self.log_dict(metrics)

    def _overlap_hop(self) -> int | None:
        ds = self.data_state
        return ds.step if ds is not None and ds.overlapping and ds.repr_kind == "time" else None

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


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else math.nan
