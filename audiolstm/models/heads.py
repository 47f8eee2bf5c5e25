"""Distribution heads: probabilistic outputs for each sample of the next frame.

Why: a next-frame regressor trained with squared error predicts the *conditional
mean*. Fed back its own means at generation time it regresses towards the mean of all
plausible continuations and collapses into a near-silent, frame-periodic buzz. A head that
outputs a *distribution* per sample can be trained by maximum likelihood and *sampled*,
which keeps the variance (and the texture) the mean throws away.

Conventions shared by both heads:

- the recurrent output `h` is `[B, T, H]`; targets `y` are `[B, T, D]` normalised samples
  (time representation, `D = x_len`);
- `forward(h)` returns the raw distribution parameters; `nll(params, y)` the mean negative
  log-likelihood per sample in **nats**; `mean(params)` and `sample(params, temperature)`
  return `[B, T, D]`;
- `temperature` 0 is the deterministic path (the mean, or the mean of the most likely
  mixture component); 1 samples the model's distribution; values in between trade variance
  for stability, the usual knob for autoregressive audio.

Use `bits_per_sample` to compare numbers across heads and with the literature (SampleRNN
reports ≈1–1.4 bits/sample at 256 levels).
"""

from __future__ import annotations

import math
from typing import Literal, overload

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["GaussianHead", "LogisticMixtureHead", "bits_per_sample"]

Reduction = Literal["mean", "none"]

_LN2 = math.log(2.0)
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def _check_temperature(temperature: float) -> float:
    temperature = float(temperature)
    if not math.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}")
    return temperature


def _reduce(nll: Tensor, reduction: Reduction) -> Tensor:
    if reduction == "mean":
        return nll.mean()
    if reduction == "none":
        return nll
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


def _check_positive_int(value: int, name: str) -> int:
    if isinstance(value, bool) or int(value) != value or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


# ----------------------------------------------------------------------------- Gaussian


class GaussianHead(nn.Module):
    """Independent Gaussian per sample: `params = mean ‖ log_scale`, shape `[B, T, 2D]`.

    The cheapest probabilistic head: the same linear layer as the MSE model, twice as wide.
    With `log_scale` fixed at 0 its NLL is the MSE / 2 plus a constant, so it strictly
    generalises the squared-error model. `log_scale` is clamped below at `min_log_scale`
    (σ ≥ e⁻⁷ ≈ 1e-3 by default) so that a confidently-right prediction cannot drive the
    density to infinity and the loss to −∞. The NLL is a *continuous* density (it can be
    negative); convert with `bits_per_sample(nll, bins=..., scale=...)` to compare.
    """

    def __init__(self, hidden: int, dim: int, min_log_scale: float = -7.0) -> None:
        super().__init__()
        self.hidden = _check_positive_int(hidden, "hidden")
        self.dim = _check_positive_int(dim, "dim")
        self.min_log_scale = float(min_log_scale)
        self.proj = nn.Linear(self.hidden, 2 * self.dim)

    def forward(self, h: Tensor) -> Tensor:
        """`[B, T, H]` → `[B, T, 2D]` = mean ‖ log_scale (clamped below)."""
        out = self.proj(h)
        mean, log_scale = out.split(self.dim, dim=-1)
        return torch.cat([mean, log_scale.clamp(min=self.min_log_scale)], dim=-1)

    def _split(self, params: Tensor) -> tuple[Tensor, Tensor]:
        if params.shape[-1] != 2 * self.dim:
            raise ValueError(
                f"GaussianHead expects params with last dim 2*dim = {2 * self.dim}, "
                f"got shape {tuple(params.shape)}"
            )
        mean, log_scale = params.split(self.dim, dim=-1)
        # Re-clamp: params may come from elsewhere (a checkpoint, a test, a user).
        return mean, log_scale.clamp(min=self.min_log_scale)

    def nll(self, params: Tensor, y: Tensor, reduction: Reduction = "mean") -> Tensor:
        """Negative log-density in nats: `log σ + ½ ln 2π + ½ ((y − μ)/σ)²`, mean over all.

        `reduction="none"` returns the per-sample `[B, T, D]` values (for masks/weights).
        """
        mean, log_scale = self._split(params)
        if y.shape != mean.shape:
            raise ValueError(
                f"targets shape {tuple(y.shape)} does not match the head's "
                f"{tuple(mean.shape)}"
            )
        z = (y - mean) * torch.exp(-log_scale)
        return _reduce(log_scale + _HALF_LOG_2PI + 0.5 * z.square(), reduction)

    def mean(self, params: Tensor) -> Tensor:
        """The predicted mean (what the MSE model would have output)."""
        return self._split(params)[0]

    def scale(self, params: Tensor) -> Tensor:
        """The predicted standard deviation σ = exp(log_scale)."""
        return self._split(params)[1].exp()

    def sample(
        self, params: Tensor, temperature: float = 1.0, generator: torch.Generator | None = None
    ) -> Tensor:
        """`mean + temperature · σ · ε`, ε ~ N(0, 1); temperature 0 returns exactly the mean."""
        temperature = _check_temperature(temperature)
        mean, log_scale = self._split(params)
        if temperature == 0.0:
            return mean.clone()
        eps = torch.randn(
            mean.shape, generator=generator, device=mean.device, dtype=mean.dtype
        )
        return mean + temperature * log_scale.exp() * eps


# ----------------------------------------------------------------- mixture of logistics


def _log_bin_prob(
    centre: Tensor, half_width: float, means: Tensor, log_scales: Tensor
) -> Tensor:
    """log P(c − h < X < c + h) for X ~ Logistic(μ, s), stable everywhere.

    With a = (c + h − μ)/s, b = (c − h − μ)/s and δ = a − b = 2h/s:

        σ(a) − σ(b) = (eᵃ − eᵇ) / ((1 + eᵃ)(1 + eᵇ))
        log(σ(a) − σ(b)) = log σ(a) + log σ(−b) + log(−expm1(−δ))

    Every term is a log-sigmoid (softplus form) or an `expm1` of a product, so nothing
    cancels: this is exact both in the tails (where the PixelCNN++ `cdf_plus − cdf_min`
    loses all digits) and for bins much narrower than the scale (where it underflows).
    Where δ itself underflows (a bin absurdly narrow against the scale) it falls back to
    the mid-bin density × width, which is then exact to O(δ²).
    """
    inv_s = torch.exp(-log_scales)
    centred = centre - means
    a = (centred + half_width) * inv_s
    b = (centred - half_width) * inv_s
    delta = (2.0 * half_width) * inv_s  # a − b without the cancellation
    # Clamp keeps the unselected branch finite so that torch.where never back-propagates NaN.
    log_width_term = torch.log(torch.clamp(-torch.expm1(-delta), min=1e-37))
    exact = F.logsigmoid(a) + F.logsigmoid(-b) + log_width_term
    mid = centred * inv_s
    log_pdf_mid = mid - log_scales - 2.0 * F.softplus(mid)
    fallback = log_pdf_mid + math.log(2.0 * half_width)
    return torch.where(delta > 1e-20, exact, fallback)


class LogisticMixtureHead(nn.Module):
    """Discretised mixture of logistics per sample (PixelCNN++ / Parallel WaveNet style).

    `params` has shape `[B, T, D, 3K]`: mixture logits ‖ means ‖ log_scales for the K
    components (log_scales clamped below at `min_log_scale`).

    **Grid.** `[-1, 1]` is cut into `bins` equal cells of width `2/bins` (16-bit audio:
    65536). Cell k covers `[-1 + 2k/bins, -1 + 2(k+1)/bins)`, centre `-1 + (2k+1)/bins`
    (the same grid as `quantize.linear_encode`). A target is scored by the probability of
    the cell it falls in: `σ((c + 1/bins − μ)/s) − σ((c − 1/bins − μ)/s)` for its centre c;
    the first and last cells extend to −∞ and +∞ (CDF tails), so the cell probabilities of
    each component sum to exactly 1 and the NLL is a true discrete likelihood (≥ 0 nats).

    **Targets.** They must live in `[-1, 1]`, i.e. use the `minmax` normaliser (train
    split exactly in range). Values outside (val/test of `minmax`) are clamped into the
    edge cells, which is what a quantiser would do; `std` normalisation is a poor fit.
    """

    def __init__(
        self,
        hidden: int,
        dim: int,
        components: int = 5,
        bins: int = 65536,
        min_log_scale: float = -7.0,
    ) -> None:
        super().__init__()
        self.hidden = _check_positive_int(hidden, "hidden")
        self.dim = _check_positive_int(dim, "dim")
        self.components = _check_positive_int(components, "components")
        self.bins = _check_positive_int(bins, "bins")
        if self.bins < 2:
            raise ValueError(f"bins must be >= 2, got {bins}")
        self.min_log_scale = float(min_log_scale)
        self.proj = nn.Linear(self.hidden, 3 * self.components * self.dim)

    def forward(self, h: Tensor) -> Tensor:
        """`[B, T, H]` → `[B, T, D, 3K]` = logits ‖ means ‖ log_scales (clamped below)."""
        out = self.proj(h).unflatten(-1, (self.dim, 3 * self.components))
        logits, means, log_scales = out.split(self.components, dim=-1)
        return torch.cat([logits, means, log_scales.clamp(min=self.min_log_scale)], dim=-1)

    def _split(self, params: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if params.dim() < 1 or params.shape[-1] != 3 * self.components:
            raise ValueError(
                f"LogisticMixtureHead expects params [..., D, 3K] with 3K = "
                f"{3 * self.components}, got shape {tuple(params.shape)}"
            )
        logits, means, log_scales = params.split(self.components, dim=-1)
        return logits, means, log_scales.clamp(min=self.min_log_scale)

    def bin_index(self, y: Tensor) -> Tensor:
        """Cell index in `[0, bins-1]` of each target (clamped into `[-1, 1]` first)."""
        k = torch.floor((y.clamp(-1.0, 1.0) + 1.0) * (self.bins / 2.0))
        return k.clamp(0, self.bins - 1).long()

    def bin_centre(self, k: Tensor, dtype: torch.dtype | None = None) -> Tensor:
        """Centre `-1 + (2k+1)/bins` of cell k."""
        return -1.0 + (2.0 * k.to(dtype or torch.get_default_dtype()) + 1.0) / self.bins

    def log_prob(self, params: Tensor, y: Tensor) -> Tensor:
        """log P(cell of y) under the mixture, `[B, T, D]`, in nats."""
        logits, means, log_scales = self._split(params)
        if y.shape != means.shape[:-1]:
            raise ValueError(
                f"targets shape {tuple(y.shape)} does not match the head's "
                f"{tuple(means.shape[:-1])}"
            )
        k = self.bin_index(y.detach()).unsqueeze(-1)
        centre = self.bin_centre(k, means.dtype)
        half = 1.0 / self.bins
        inv_s = torch.exp(-log_scales)
        interior = _log_bin_prob(centre, half, means, log_scales)
        # Edge cells: lower one is (−∞, −1 + 2/bins), upper one is [1 − 2/bins, +∞).
        log_cdf_upper_edge = F.logsigmoid((centre + half - means) * inv_s)
        log_sf_lower_edge = F.logsigmoid(-(centre - half - means) * inv_s)
        log_p = torch.where(k == 0, log_cdf_upper_edge, interior)
        log_p = torch.where(k == self.bins - 1, log_sf_lower_edge, log_p)
        return torch.logsumexp(log_p + F.log_softmax(logits, dim=-1), dim=-1)

    def nll(self, params: Tensor, y: Tensor, reduction: Reduction = "mean") -> Tensor:
        """Discretised NLL in nats per sample (mean over all; `"none"` for `[B, T, D]`)."""
        return _reduce(-self.log_prob(params, y), reduction)

    def mean(self, params: Tensor) -> Tensor:
        """Mixture mean `Σ πₖ μₖ`, clamped to `[-1, 1]` (the range the grid covers)."""
        logits, means, _ = self._split(params)
        return (torch.softmax(logits, dim=-1) * means).sum(dim=-1).clamp(-1.0, 1.0)

    def sample(
        self, params: Tensor, temperature: float = 1.0, generator: torch.Generator | None = None
    ) -> Tensor:
        """Draw one value per sample, clamped to `[-1, 1]` (continuous, not snapped to cells).

        The component is drawn from `softmax(logits / max(T, 1e-5))` (Gumbel-max) and the
        value from its logistic with scale `T·s`: lowering T both sharpens the component
        choice and shrinks the noise. T = 0 is the deterministic argmax path: the mean of
        the most likely component.
        """
        temperature = _check_temperature(temperature)
        logits, means, log_scales = self._split(params)
        if temperature == 0.0:
            idx = logits.argmax(dim=-1, keepdim=True)
            return means.gather(-1, idx).squeeze(-1).clamp(-1.0, 1.0)
        u = torch.rand(logits.shape, generator=generator, device=logits.device,
                       dtype=logits.dtype)
        gumbel = -torch.log(-torch.log(u.clamp(1e-10, 1.0 - 1e-7)))
        idx = (logits / max(temperature, 1e-5) + gumbel).argmax(dim=-1, keepdim=True)
        mu = means.gather(-1, idx).squeeze(-1)
        s = log_scales.gather(-1, idx).squeeze(-1).exp()
        v = torch.rand(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        v = v.clamp(1e-5, 1.0 - 1e-5)
        noise = torch.log(v) - torch.log1p(-v)  # standard logistic
        return (mu + temperature * s * noise).clamp(-1.0, 1.0)


# ----------------------------------------------------------------------------- units


@overload
def bits_per_sample(nll_nats: float, bins: int | None = None, scale: float | None = None) -> float:
    ...


@overload
def bits_per_sample(
    nll_nats: Tensor, bins: int | None = None, scale: float | None = None
) -> Tensor:
    ...


def bits_per_sample(
    nll_nats: float | Tensor, bins: int | None = None, scale: float | None = None
) -> float | Tensor:
    """Convert a mean NLL in nats per sample to bits per sample, comparably across heads.

    - **Discrete likelihood** (`LogisticMixtureHead`, a softmax over levels): leave `bins`
      as None; bits = nll / ln 2. Already a probability of a quantisation cell.
    - **Continuous density** (`GaussianHead`): a density is not a probability; it depends
      on the units. Pass the quantisation to compare at: `bins` levels over `[-1, 1]`,
      i.e. cells of width `2/bins`. P(cell) ≈ density × cell width, so

          bits = (nll − ln(cell width in the model's units)) / ln 2.

      `scale` says how the model's data were normalised relative to that `[-1, 1]` range:
      model units `y = x / scale`, with x in the quantisation's units, so the cell width in
      model units is `2 / (bins · scale)`. `scale=None` (= 1) means the model's units *are*
      the quantisation's, e.g. `minmax` data compared on a grid over the normalised
      `[-1, 1]` (what SampleRNN does: ≈1–1.4 bits/sample at 256 levels). For `std`
      normalisation compared on a grid over raw `[-1, 1]` audio, pass the train std.

    The approximation holds when the density is smooth over one cell (σ ≫ cell width);
    a Gaussian sharper than a cell can report *negative* bits, a sign that the comparison
    needs a coarser grid or the discretised head.
    """
    if bins is None:
        if scale is not None:
            raise ValueError("scale only applies to a continuous density: pass bins as well")
        return nll_nats / _LN2
    bins = _check_positive_int(bins, "bins")
    scale = 1.0 if scale is None else float(scale)
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be a finite number > 0, got {scale!r}")
    log_width = math.log(2.0 / (bins * scale))
    return (nll_nats - log_width) / _LN2
