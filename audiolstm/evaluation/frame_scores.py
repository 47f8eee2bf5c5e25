"""Scoring a frame model on val/test: MSEs, the baselines, and the canonical likelihood.

The model (`models/frame_rnn.py`) predicts; this module says what its predictions are
worth, batch by batch as exact sums (reduced over DDP ranks by the model) and as
split-wide metrics at epoch end. On the same batches it scores the zero (training
mean), persistence and ridge baselines, and `bits_per_sample` on the canonical grid
(`evaluation.likelihood`: −log2 P per sample of the original-scale audio quantised to
256 linear levels over [−1, 1]), scored on the samples each target frame adds to the
audio (its last `hop` samples when frames overlap, all of them otherwise), decoded to
the time domain:

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

With overlapping time frames the MSE of the new samples and of the copy-overlap baseline
are logged too (`mse_new`, `mse_copy_overlap`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from audiolstm.evaluation.baselines import copy_overlap_mse, new_sample_mse
from audiolstm.evaluation.likelihood import LN2, bin_index, gaussian_log_prob
from audiolstm.evaluation.metrics import baseline_mse

#: the baselines scored beside the model (ridge only when fitted)
BASELINES = ("zero", "persistence", "ridge")


@dataclass(frozen=True)
class FrameScoring:
    """What scoring one split of a frame model needs to know (the model builds it from its
    data state): the split's affine map to the original scale, how features become time
    frames, how many samples each frame adds, and the Gaussian-equivalent variances."""

    shift: float = 0.0
    scale: float = 1.0
    #: samples each target frame adds to the audio (data.hop); None: all of them
    step: int | None = None
    #: features -> time frames (repr=fft|rfft or standardised); None: frames are samples
    decode: Callable[[Tensor], Tensor] | None = None
    #: time frames -> features, for the zero baseline's mean frame
    encode: Callable[[Tensor], Tensor] | None = None
    #: time frames that overlap: also the new-sample MSEs (data.hop < data.x_len, repr=time)
    overlap_hop: int | None = None
    #: the training mean in this split's normalised units (what the zero baseline predicts)
    mean: float = 0.0
    #: frame length in samples (the mean frame's, before encoding)
    x_len: int | None = None
    #: Gaussian-equivalent variances of this split, per predictor (original-scale units)
    reference: Mapping[str, float] = field(default_factory=dict)

    def new_samples(self, frames: Tensor) -> Tensor:
        """Frames as the model sees them -> the normalised samples each adds to the audio."""
        t = frames if self.decode is None else self.decode(frames)
        step = self.step or t.shape[-1]
        return t[..., -step:] if step < t.shape[-1] else t

    def mean_frame(self, like: Tensor) -> Tensor:
        """The training mean as a frame of the batch's features (the zero baseline)."""
        if self.encode is None:
            return torch.full(like.shape[-1:], self.mean, dtype=like.dtype, device=like.device)
        frame = torch.full((self.x_len or like.shape[-1],), self.mean, dtype=like.dtype,
                           device=like.device)
        return self.encode(frame)


def train_error(s: FrameScoring, pred: Tensor, y: Tensor) -> Tensor:
    """[squared error of the scored samples at the original scale, their count] of a
    training chunk (float64, CPU): summed over an epoch, the val score's variance."""
    r = (s.new_samples(pred) - s.new_samples(y)).double()
    return torch.stack([r.square().sum() * s.scale**2,
                        torch.tensor(float(r.numel()), dtype=torch.float64,
                                     device=r.device)]).cpu()


def batch_sums(s: FrameScoring, x: Tensor, y: Tensor, out: Tensor, pred: Tensor,
               loss: Tensor, head: Any, head_kind: str, grid: tuple[float, float],
               ridge: Tensor | None = None) -> dict[str, Tensor]:
    """One batch's sums: loss and MSEs (× element count), the baselines', the likelihoods.

    `x`, `y`: input and target frames (B, T, D); `out`: the head's outputs, `pred` its
    mean; `loss`: the batch's mean objective; `head`/`head_kind`: the head that scores
    itself (gaussian, logistic_mixture; "mse" is Gaussian-equivalent); `grid`: the
    canonical [−1, 1] in this split's units; `ridge`: the ridge baseline's prediction.
    """
    n = torch.tensor(float(y.numel()), device=y.device)
    mean_frame = s.mean_frame(y)
    sums = {"loss": loss * n, "mse": F.mse_loss(pred, y, reduction="sum")}
    sums |= {k: v * n for k, v in baseline_mse(x, y, mean_frame).items()}
    if ridge is not None:
        sums["mse_ridge"] = F.mse_loss(ridge, y, reduction="sum")
    hop = s.overlap_hop
    if hop is not None:  # overlapping time frames: the new samples are the real task
        n_new = n * hop / y.shape[-1]
        sums["mse_new"] = new_sample_mse(pred, y, hop) * n_new
        sums["mse_copy_overlap"] = copy_overlap_mse(x, y, hop, float(mean_frame[0])) * n
        sums["count_new"] = n_new
    sums["count"] = n
    # squared errors of all (the test variances); likelihoods where a variance is known:
    # val: the model's (its training MSE); test: the model's and the baselines'
    predictors = {"model": pred if head_kind == "mse" else None,
                  "zero": mean_frame.expand_as(y), "persistence": x, "ridge": ridge}
    return sums | likelihood_sums(s, out, y, predictors, head, head_kind, grid)


def likelihood_sums(s: FrameScoring, out: Tensor, y: Tensor,
                    predictors: Mapping[str, Tensor | None], head: Any, head_kind: str,
                    grid: tuple[float, float]) -> dict[str, Tensor]:
    """Summed canonical log-probabilities (and squared errors) of the scored samples."""
    shift, scale = s.shift, s.scale
    target = s.new_samples(y).double()
    x = target * scale + shift  # the original-scale audio
    new = target.shape[-1]  # the probabilistic heads need repr=time: the last `new`
    sums = {"count_samples": torch.tensor(float(x.numel()), dtype=torch.float64)}
    if head_kind == "gaussian":
        mean = head.mean(out)[..., -new:].double() * scale + shift
        std = head.scale(out)[..., -new:].double() * scale
        sums["logp_head"] = gaussian_log_prob(x, mean, std).sum()
    elif head_kind == "logistic_mixture":
        params = out[..., -new:, :]
        sums["logp_head"] = head.canonical_log_prob(params, bin_index(x), grid).sum()
        sums["logp_own"] = head.log_prob(params, target, grid).double().sum()
    for name, p in predictors.items():
        if p is None:
            continue
        p = s.new_samples(p).double() * scale + shift
        sums[f"sse_{name}"] = (p - x).square().sum()
        var = s.reference.get(name)
        if var is not None and var > 0:
            sums[f"logp_{name}"] = gaussian_log_prob(x, p, math.sqrt(var)).sum()
    return {k: v.to(y.device) for k, v in sums.items()}


def epoch_metrics(prefix: str, total: dict[str, float], own_grid: str | None = None
                  ) -> tuple[dict[str, float], dict[str, float]]:
    """Split-wide metrics from an epoch's sums (reduced over ranks), and the predictors'
    squared errors per sample: the Gaussian-equivalent variances a val epoch hands to test.

    `own_grid` names the head's own-grid bits (`bits_per_sample_linear256`), if any.
    Returns `({f"{prefix}/loss": ..., ...}, {"model": ..., "zero": ..., ...})`.
    """
    total = dict(total)
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
    if "logp_own" in bits and own_grid:
        metrics[f"{prefix}/{own_grid}"] = bits.pop("logp_own")
    for name in BASELINES:
        if f"logp_{name}" in bits:
            metrics[f"{prefix}/bits_per_sample_{name}"] = bits[f"logp_{name}"]
    variances = {k: v / n_samples for k, v in sse.items()} if n_samples > 0 else {}
    return metrics, variances


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else math.nan
