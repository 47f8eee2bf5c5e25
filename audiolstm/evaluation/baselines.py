"""Honest baselines for next-frame prediction: ridge regression and copy-the-overlap.

Why: "MSE went down" means nothing until it is compared with what a trivial
predictor achieves on the same frames. Two such predictors that an LSTM must beat:

- **ridge**: the best *linear* map from the last input frame to the next frame, fitted in
  closed form on the training split. It captures everything linear prediction can (the
  short-term spectral envelope, periodicities within one frame); a recurrent model that
  only matches it has learned nothing non-linear or long-range.
- **copy-overlap**: with overlapping frames (`hop < x_len`) most of the target frame is
  already in the input; copying it and predicting the mean for the `hop` new samples scores
  a low MSE while predicting nothing. `new_sample_mse` measures only the `hop` samples
  that are actually new, which is the number that matters for generation.

Ridge statistics are accumulated in float64 as centred cross-products merged batch by
batch (Chan et al.'s parallel update), so the fit streams over a data loader with memory
`O(D_in · (D_in + D_out))`, independent of the number of frames, and does not lose digits
to `XᵀX − n·x̄x̄ᵀ` cancellation. For `x_len = 8000` that is two 8000² float64 matrices
(≈1 GB): pick a smaller `x_len` or a subset of dimensions for a cheap baseline.

**The penalty is chosen on the validation split** (`choose_ridge`, `ridge_alpha=null`, the
default): a fixed `alpha = 1` was too weak on the built-in data (the one-frame ridge's
test MSE drops by about 5 % at the penalty validation picks), and a baseline left weaker
than it needs to be flatters every model compared with it. One eigendecomposition of the
training statistics gives the fit for every penalty of the grid, and each fit's validation
error is a closed form of the validation statistics, so the choice costs two `D × D`
accumulators and a few `D³` products, never a pass over the audio per penalty.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from audiolstm.errors import positive_int

__all__ = [
    "RIDGE_MAX_DIM",
    "RIDGE_RELATIVE_ALPHAS",
    "RidgeAccumulator",
    "RidgeFit",
    "choose_ridge",
    "copy_overlap_mse",
    "copy_overlap_predict",
    "fit_ridge_baseline",
    "new_sample_mse",
    "ridge_predict",
]

ArrayLike = np.ndarray | Tensor

#: Training runs fit the ridge only up to this many features (D x D normal equations).
RIDGE_MAX_DIM = 4096

#: The penalties validation chooses among, relative to the mean diagonal of the training
#: inputs' centred scatter `XcᵀXc` (the penalty a unit-variance input of `n` rows needs
#: is about `n` times the relative one): half decades, scale-free across normalisations.
RIDGE_RELATIVE_ALPHAS = tuple(float(10.0 ** (e / 2)) for e in range(-12, 1))


def _to_numpy_2d(x: Any, name: str) -> np.ndarray:
    """float64 `[N, D]` from an array or tensor `[..., D]` (leading dims flattened)."""
    if isinstance(x, Tensor):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim < 2:
        raise ValueError(f"{name} must be [N, D] (or [..., D]), got shape {arr.shape}")
    arr = arr.reshape(-1, arr.shape[-1])
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or inf")
    return arr


class RidgeAccumulator:
    """Streaming sufficient statistics for ridge regression of targets on inputs.

    `add(inputs, targets)` per batch (arrays or tensors `[..., D]`, leading dims
    flattened, e.g. `[B, T, D]` frames); `solve(alpha)` gives the same `(W, b)` as
    one fit on the concatenation of all batches.
    """

    def __init__(self) -> None:
        self.count = 0
        self.mean_x: np.ndarray | None = None
        self.mean_y: np.ndarray | None = None
        self.sxx: np.ndarray | None = None  # Σ (x − x̄)(x − x̄)ᵀ
        self.sxy: np.ndarray | None = None  # Σ (x − x̄)(y − ȳ)ᵀ
        self.syy_trace = 0.0  # Σ ‖y − ȳ‖² (a validation error needs it: choose_ridge)

    def add(self, inputs: ArrayLike, targets: ArrayLike) -> RidgeAccumulator:
        """Merge one batch into the statistics; returns self for chaining."""
        x = _to_numpy_2d(inputs, "inputs")
        y = _to_numpy_2d(targets, "targets")
        if x.shape[0] != y.shape[0]:
            raise ValueError(
                f"inputs and targets need the same number of rows, got {x.shape[0]} and {y.shape[0]}"
            )
        if self.mean_x is not None and (
            x.shape[1] != self.mean_x.shape[0] or y.shape[1] != self.mean_y.shape[0]
        ):
            raise ValueError(
                f"batch dims ({x.shape[1]}, {y.shape[1]}) differ from earlier batches "
                f"({self.mean_x.shape[0]}, {self.mean_y.shape[0]})"
            )
        n_b = x.shape[0]
        if n_b == 0:
            return self
        mx_b, my_b = x.mean(axis=0), y.mean(axis=0)
        xc, yc = x - mx_b, y - my_b
        sxx_b, sxy_b = xc.T @ xc, xc.T @ yc
        syy_b = float(np.einsum("ij,ij->", yc, yc))
        if self.count == 0:
            self.count, self.mean_x, self.mean_y = n_b, mx_b, my_b
            self.sxx, self.sxy, self.syy_trace = sxx_b, sxy_b, syy_b
            return self
        n_a = self.count
        n = n_a + n_b
        dx, dy = mx_b - self.mean_x, my_b - self.mean_y
        w = n_a * n_b / n
        self.sxx = self.sxx + sxx_b + w * np.outer(dx, dx)
        self.sxy = self.sxy + sxy_b + w * np.outer(dx, dy)
        self.syy_trace = self.syy_trace + syy_b + w * float(dy @ dy)
        self.mean_x = self.mean_x + dx * (n_b / n)
        self.mean_y = self.mean_y + dy * (n_b / n)
        self.count = n
        return self

    def solve(self, alpha: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """`(W [D_in, D_out], b [D_out])` minimising `‖Y − XW − b‖² + α‖W‖²` (b unpenalised).

        Closed form on centred data: `(XcᵀXc + αI) W = XcᵀYc`, `b = ȳ − x̄ W`. With
        `alpha = 0` it is the minimum-norm least-squares solution (pseudo-inverse), so
        duplicated or constant input dimensions (silence) do not blow the weights up.
        """
        if self.count == 0 or self.sxx is None:
            raise ValueError("RidgeAccumulator.solve needs at least one row: add() data first")
        alpha = float(alpha)
        if not np.isfinite(alpha) or alpha < 0:
            raise ValueError(f"alpha must be a finite number >= 0, got {alpha!r}")
        if alpha > 0:
            w = np.linalg.solve(self.sxx + alpha * np.eye(self.sxx.shape[0]), self.sxy)
        else:
            # Unregularised: XcᵀXc may be (numerically) singular, e.g. duplicated or constant
            # dimensions, where `solve` returns noise instead of raising. The pseudo-inverse
            # gives the minimum-norm least-squares weights (range(XcᵀXc) = row space of Xc).
            w = np.linalg.lstsq(self.sxx, self.sxy, rcond=None)[0]
        b = self.mean_y - self.mean_x @ w
        return w, b


@dataclass(frozen=True)
class RidgeFit:
    """A fitted ridge baseline and how its penalty was set (what the run records)."""

    w: Tensor  # (D_in, D_out) float32
    b: Tensor  # (D_out,) float32
    alpha: float
    #: "validation" (the grid's best on the validation pairs), "fixed" (ridge_alpha) or
    #: "fixed (no validation pairs)" (alpha 1: nothing to choose on)
    chosen_by: str
    #: the validation MSE of each penalty tried (chosen_by=validation), by penalty
    val_mse: dict[float, float] = field(default_factory=dict)


def choose_ridge(train: RidgeAccumulator, val: RidgeAccumulator,
                 relative: Iterable[float] = RIDGE_RELATIVE_ALPHAS
                 ) -> tuple[float, np.ndarray, np.ndarray, dict[float, float]]:
    """The penalty of `relative` (times the mean diagonal of the training scatter) whose
    fit on `train` has the lowest mean squared error on `val`; returns `(alpha, W, b,
    {alpha: val MSE})`. The first (weakest) of equal errors wins.

    One eigendecomposition `Sxx = Q Λ Qᵀ` serves every penalty: `W(α) = Q (Λ + αI)⁻¹ QᵀSxy`.
    """
    if train.count == 0 or train.sxx is None:
        raise ValueError("choose_ridge needs training rows")
    if val.count == 0 or val.sxx is None:
        raise ValueError("choose_ridge needs validation rows")
    lam, q = np.linalg.eigh(train.sxx)
    lam = np.clip(lam, 0.0, None)  # round-off below zero on a singular scatter
    # Everything per penalty lives in the eigenbasis, W(α) = Q P(α): the validation error's
    # terms need Qᵀ of the validation statistics once, then one D²·D_out product each.
    # Centred, the residual y − xW − b splits into the constant ȳᵥ − x̄ᵥW − b and a centred
    # part whose cross term sums to zero: SSE = n‖offset‖² + tr Syy − 2 tr WᵀSxy + tr WᵀSxxW.
    proj = q.T @ train.sxy
    val_xx = q.T @ val.sxx @ q
    val_xy = q.T @ val.sxy
    train_mx, val_mx = train.mean_x @ q, val.mean_x @ q
    unit = float(np.trace(train.sxx)) / train.sxx.shape[0] or 1.0
    n_out = val.sxy.shape[1]
    errors: dict[float, float] = {}
    best: tuple[float, np.ndarray] | None = None
    for rel in relative:
        alpha = float(rel) * unit
        p = proj / (lam + alpha)[:, None]
        offset = val.mean_y - val_mx @ p - (train.mean_y - train_mx @ p)
        centred = (val.syy_trace - 2.0 * float(np.einsum("ij,ij->", p, val_xy))
                   + float(np.einsum("ij,ij->", p, val_xx @ p)))
        sse = val.count * float(offset @ offset) + max(centred, 0.0)
        errors[alpha] = sse / (val.count * n_out)
        if best is None or errors[alpha] < errors[best[0]]:
            best = (alpha, p)
    assert best is not None, "relative is empty"
    w = q @ best[1]
    return best[0], w, train.mean_y - train.mean_x @ w, errors


def _accumulate(pairs: Iterable[Tensor]) -> RidgeAccumulator:
    acc = RidgeAccumulator()
    for batch in pairs:
        acc.add(batch[:, 0], batch[:, 1])
    return acc


def fit_ridge_baseline(pairs: Iterable[Tensor], alpha: float | None = 1.0,
                       val_pairs: Iterable[Tensor] | None = None) -> RidgeFit | None:
    """Ridge regression frame -> next frame from batches of (n, 2, D) training pairs.

    The honest linear baseline: a model that does not beat it has learned nothing a
    linear predictor could not. `alpha=None` chooses the penalty on `val_pairs`
    (`choose_ridge`); with no validation pairs it falls back to `alpha = 1` and says so in
    `chosen_by`. None when there are no training pairs.
    """
    train = _accumulate(pairs)
    if train.count == 0:
        return None
    if alpha is None:
        val = _accumulate(val_pairs if val_pairs is not None else ())
        if val.count > 0:
            a, w, b, errors = choose_ridge(train, val)
            return RidgeFit(torch.from_numpy(w).float(), torch.from_numpy(b).float(), a,
                            "validation", errors)
        w, b = train.solve(1.0)
        return RidgeFit(torch.from_numpy(w).float(), torch.from_numpy(b).float(), 1.0,
                        "fixed (no validation pairs)")
    w, b = train.solve(alpha)
    return RidgeFit(torch.from_numpy(w).float(), torch.from_numpy(b).float(), float(alpha),
                    "fixed")


def ridge_predict(x: ArrayLike, w: np.ndarray, b: np.ndarray) -> ArrayLike:
    """`x @ W + b` for `x [..., D_in]`; a tensor in gives a tensor in its dtype/device back."""
    if isinstance(x, Tensor):
        wt = torch.as_tensor(w, dtype=x.dtype, device=x.device)
        bt = torch.as_tensor(b, dtype=x.dtype, device=x.device)
        return x @ wt + bt
    return np.asarray(x, dtype=np.float64) @ w + b


# ------------------------------------------------------------------------ copy overlap


def _check_frames(inputs: Tensor, targets: Tensor, hop: int) -> int:
    hop = positive_int(hop, "hop", error=ValueError)
    if inputs.shape != targets.shape or inputs.dim() < 1:
        raise ValueError(
            f"inputs and targets must be frames of the same shape [..., x_len], "
            f"got {tuple(inputs.shape)} and {tuple(targets.shape)}"
        )
    return int(hop)


def _acc_dtype(t: Tensor) -> torch.dtype:
    # MPS has no float64; float32 there is the best available accumulator.
    return torch.float32 if t.device.type == "mps" else torch.float64


def copy_overlap_predict(inputs: Tensor, hop: int, fill: float = 0.0) -> Tensor:
    """Predict the next frame as `inputs[..., hop:]` followed by `hop` copies of `fill`.

    Target frame j is input frame j+1, which starts `hop` samples later, so its first
    `x_len − hop` samples are exactly the last `x_len − hop` of input frame j. The `hop`
    new samples are predicted as `fill`: pass the training mean in the frames' units (0
    after the mean-centred normalisations, not under `minmax01` or `none`). With
    `hop >= x_len` nothing overlaps and this is the constant predictor.
    """
    inputs = torch.as_tensor(inputs)
    hop = min(positive_int(hop, "hop", error=ValueError), inputs.shape[-1])
    new = inputs.new_full((*inputs.shape[:-1], hop), float(fill))
    return torch.cat([inputs[..., hop:], new], dim=-1)


def copy_overlap_mse(inputs: Tensor, targets: Tensor, hop: int, fill: float = 0.0) -> Tensor:
    """MSE over all samples of `copy_overlap_predict` (0-d tensor in the targets' dtype).

    Accumulated in float64. Compare a model's MSE with this, not just with the mean, when
    frames overlap: it is what "knowing the overlap, guessing nothing" scores.
    """
    inputs, targets = torch.as_tensor(inputs), torch.as_tensor(targets)
    hop = _check_frames(inputs, targets, hop)
    pred = copy_overlap_predict(inputs, hop, fill)
    acc = _acc_dtype(targets)
    return (pred.to(acc) - targets.to(acc)).square().mean().to(targets.dtype)


def new_sample_mse(pred: Tensor, targets: Tensor, hop: int) -> Tensor:
    """MSE restricted to the last `hop` samples of each target frame (the new ones).

    These are the samples generation actually has to invent; the rest overlap the input.
    `hop >= x_len` scores every sample. 0-d tensor in the targets' dtype, float64 sums.
    """
    pred, targets = torch.as_tensor(pred), torch.as_tensor(targets)
    hop = min(_check_frames(pred, targets, hop), targets.shape[-1])
    acc = _acc_dtype(targets)
    diff = pred[..., -hop:].to(acc) - targets[..., -hop:].to(acc)
    return diff.square().mean().to(targets.dtype)
