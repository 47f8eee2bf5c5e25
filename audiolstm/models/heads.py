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

Numbers comparable across heads, models and the literature come from the canonical
likelihood (`audiolstm.evaluation.likelihood`): the Gaussian's CDF differences over the
canonical bins (its `mean`/`scale` go there), the mixture's `canonical_log_prob`.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audiolstm.errors import check_temperature, positive_int
from audiolstm.evaluation.likelihood import linear_pieces
from audiolstm.models.draw import check_top_p, inverse_cdf, nucleus

__all__ = ["GaussianHead", "LogisticMixtureHead"]

Reduction = Literal["mean", "none"]

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def _reduce(nll: Tensor, reduction: Reduction) -> Tensor:
    if reduction == "mean":
        return nll.mean()
    if reduction == "none":
        return nll
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


# ----------------------------------------------------------------------------- Gaussian


class GaussianHead(nn.Module):
    """Independent Gaussian per sample: `params = mean ‖ log_scale`, shape `[B, T, 2D]`.

    The cheapest probabilistic head: the same linear layer as the MSE model, twice as wide.
    With `log_scale` fixed at 0 its NLL is the MSE / 2 plus a constant, so it strictly
    generalises the squared-error model. `log_scale` is clamped below at `min_log_scale`
    (σ ≥ e⁻⁷ ≈ 1e-3 by default) so that a confidently-right prediction cannot drive the
    density to infinity and the loss to −∞. The NLL is a *continuous* density (it can be
    negative, and depends on the units); the canonical bits integrate it over the canonical
    bins exactly (`likelihood.gaussian_log_prob` on `mean`/`scale` mapped to the original
    scale).
    """

    def __init__(self, hidden: int, dim: int, min_log_scale: float = -7.0) -> None:
        super().__init__()
        self.hidden = positive_int(hidden, "hidden", error=ValueError)
        self.dim = positive_int(dim, "dim", error=ValueError)
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
        temperature = check_temperature(temperature)
        mean, log_scale = self._split(params)
        if temperature == 0.0:
            return mean.clone()
        eps = torch.randn(
            mean.shape, generator=generator, device=mean.device, dtype=mean.dtype
        )
        return mean + temperature * log_scale.exp() * eps


# ----------------------------------------------------------------- mixture of logistics


def _log_interval(lo: Tensor, hi: Tensor, means: Tensor, log_scales: Tensor) -> Tensor:
    """log P(lo < X < hi) for X ~ Logistic(μ, s); lo may be −∞ and hi +∞; stable everywhere.

    With a = (hi − μ)/s, b = (lo − μ)/s and δ = a − b = (hi − lo)/s:

        σ(a) − σ(b) = (eᵃ − eᵇ) / ((1 + eᵃ)(1 + eᵇ))
        log(σ(a) − σ(b)) = log σ(a) + log σ(−b) + log(−expm1(−δ))

    Every term is a log-sigmoid (softplus form) or an `expm1` of a product, so nothing
    cancels: exact both in the tails (where the PixelCNN++ `cdf_plus − cdf_min` loses all
    digits) and for intervals much narrower than the scale. An open end drops its term
    (σ(+∞) = 1); infinite ends are replaced by finite stand-ins *before* any arithmetic, so
    no NaN can reach a gradient through the `torch.where`s. Where δ itself underflows (an
    interval absurdly narrow against the scale) it falls back to the mid-interval density ×
    width, exact to O(δ²) there.
    """
    lo_open, hi_open = torch.isneginf(lo), torch.isposinf(hi)
    zero = torch.zeros((), dtype=means.dtype, device=means.device)
    lo_f = torch.where(lo_open, zero, lo)
    hi_f = torch.where(hi_open, zero, hi)
    inv_s = torch.exp(-log_scales)
    a = (hi_f - means) * inv_s
    b = (lo_f - means) * inv_s
    up = torch.where(hi_open, zero, F.logsigmoid(a))
    down = torch.where(lo_open, zero, F.logsigmoid(-b))
    closed = ~(lo_open | hi_open)
    width = torch.where(closed, hi_f - lo_f, torch.ones_like(hi_f))
    delta = width * inv_s
    # Clamp keeps the unselected branch finite so that torch.where never back-propagates NaN.
    log_width_term = torch.where(
        closed, torch.log(torch.clamp(-torch.expm1(-delta), min=1e-37)), zero)
    exact = up + down + log_width_term
    mid = (0.5 * (hi_f + lo_f) - means) * inv_s
    fallback = mid - log_scales - 2.0 * F.softplus(mid) + torch.log(width)
    return torch.where(closed & (delta <= 1e-20), fallback, exact)


class LogisticMixtureHead(nn.Module):
    """Discretised mixture of logistics per sample (PixelCNN++ / Parallel WaveNet style).

    `params` has shape `[B, T, D, 3K]`: mixture logits ‖ means ‖ log_scales for the K
    components (log_scales clamped below at `min_log_scale`).

    **Grid.** The interval `[lo, hi]` of the model's (normalised) units is cut into `bins`
    equal cells; cell k is `[lo + k·w, lo + (k+1)·w)` with `w = (hi − lo)/bins`. A target is
    scored by the mixture's probability of the cell it falls in; the first and last cells
    extend to −∞ and +∞ (CDF tails), so the cell probabilities sum to exactly 1 and the NLL
    is a true discrete likelihood (≥ 0 nats). `AudioRNN` sets `[lo, hi]` to the image of the
    original-scale `[-1, 1]` under the run's normaliser (`set_grid`), so with any `norm`
    the cells tile the audio's full range and an edge cell is exactly "clipped at ±1"; with
    `bins=256` the grid *is* the canonical grid (`audiolstm.evaluation.likelihood`). The
    default `[-1, 1]` suits data already in that range. `sample` and `mean` stay inside
    `[lo, hi]` (the audio's range). Every method takes an optional `grid=(lo, hi)` for one
    call (a split normalised with its own scale, `norm=minmax_union`).
    """

    def __init__(
        self,
        hidden: int,
        dim: int,
        components: int = 5,
        bins: int = 65536,
        min_log_scale: float = -7.0,
        grid: tuple[float, float] = (-1.0, 1.0),
    ) -> None:
        super().__init__()
        self.hidden = positive_int(hidden, "hidden", error=ValueError)
        self.dim = positive_int(dim, "dim", error=ValueError)
        self.components = positive_int(components, "components", error=ValueError)
        self.bins = positive_int(bins, "bins", error=ValueError)
        if self.bins < 2:
            raise ValueError(f"bins must be >= 2, got {bins}")
        self.min_log_scale = float(min_log_scale)
        self.proj = nn.Linear(self.hidden, 3 * self.components * self.dim)
        self.grid: tuple[float, float] = (-1.0, 1.0)
        self.set_grid(*grid)
        self._pieces: tuple[Tensor, Tensor, Tensor] | None = None

    def set_grid(self, lo: float, hi: float) -> None:
        """Cells cover `[lo, hi]` of the model's units (edge cells open beyond)."""
        lo, hi = float(lo), float(hi)
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"grid must be finite with lo < hi, got ({lo}, {hi})")
        self.grid = (lo, hi)

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

    def _grid(self, grid: tuple[float, float] | None) -> tuple[float, float]:
        return self.grid if grid is None else (float(grid[0]), float(grid[1]))

    def bin_index(self, y: Tensor, grid: tuple[float, float] | None = None) -> Tensor:
        """Cell index in `[0, bins-1]` of each target (beyond the grid: the edge cells)."""
        lo, hi = self._grid(grid)
        k = torch.floor((y - lo) * (self.bins / (hi - lo)))
        return k.clamp(0, self.bins - 1).long()

    def edge(self, k: Tensor, grid: tuple[float, float] | None = None,
             dtype: torch.dtype | None = None) -> Tensor:
        """Lower edge of cell k (k = bins: the upper edge of the last), −∞/+∞ at the ends."""
        lo, hi = self._grid(grid)
        dtype = dtype or torch.get_default_dtype()
        e = lo + (hi - lo) * k.to(dtype) / self.bins
        e = torch.where(k <= 0, torch.full_like(e, -math.inf), e)
        return torch.where(k >= self.bins, torch.full_like(e, math.inf), e)

    def _log_cells(self, params: Tensor, start: Tensor, stop: Tensor,
                   grid: tuple[float, float] | None) -> Tensor:
        """log P(cells start … stop − 1) under the mixture: `[..., P]` for `[..., P]` indices."""
        logits, means, log_scales = self._split(params)
        lo = self.edge(start, grid, means.dtype).unsqueeze(-1)
        hi = self.edge(stop, grid, means.dtype).unsqueeze(-1)
        log_pi = F.log_softmax(logits, dim=-1).unsqueeze(-2)
        comp = _log_interval(lo, hi, means.unsqueeze(-2), log_scales.unsqueeze(-2))
        return torch.logsumexp(comp + log_pi, dim=-1)

    def log_prob(self, params: Tensor, y: Tensor,
                 grid: tuple[float, float] | None = None) -> Tensor:
        """log P(cell of y) under the mixture, `[B, T, D]`, in nats."""
        if y.shape != params.shape[:-1]:
            raise ValueError(
                f"targets shape {tuple(y.shape)} does not match the head's "
                f"{tuple(params.shape[:-1])}"
            )
        k = self.bin_index(y.detach(), grid).unsqueeze(-1)
        return self._log_cells(params, k, k + 1, grid).squeeze(-1)

    def canonical_log_prob(self, params: Tensor, k: Tensor,
                           grid: tuple[float, float] | None = None) -> Tensor:
        """log P(canonical bin k) `[B, T, D]`, for a grid that is the canonical [−1, 1]
        mapped to the model's units (`set_grid` by AudioRNN): each own cell's mass spread
        uniformly over it (`likelihood.linear_pieces`); `k` are the canonical bins of the
        original-scale targets. With `bins=256` it equals `log_prob`.
        """
        if self._pieces is None:
            start, stop, frac = linear_pieces(self.bins)
            used = (frac > 0).any(axis=0)  # 1 piece when bins is a multiple of 256
            self._pieces = tuple(torch.as_tensor(a[:, used]) for a in (start, stop, frac))
        start, stop, frac = (t.to(k.device) for t in self._pieces)
        dtype = params.dtype
        lp = self._log_cells(params, start[k], stop[k], grid)  # [..., 3]
        log_frac = torch.log(frac[k].to(dtype))  # −∞ for unused pieces
        return torch.logsumexp(lp + log_frac, dim=-1)

    def nll(self, params: Tensor, y: Tensor, reduction: Reduction = "mean",
            grid: tuple[float, float] | None = None) -> Tensor:
        """Discretised NLL in nats per sample (mean over all; `"none"` for `[B, T, D]`)."""
        return _reduce(-self.log_prob(params, y, grid), reduction)

    def mean(self, params: Tensor, grid: tuple[float, float] | None = None) -> Tensor:
        """Mixture mean `Σ πₖ μₖ`, clamped to the grid's `[lo, hi]` (the range it covers)."""
        lo, hi = self._grid(grid)
        logits, means, _ = self._split(params)
        return (torch.softmax(logits, dim=-1) * means).sum(dim=-1).clamp(lo, hi)

    def sample(
        self, params: Tensor, temperature: float = 1.0, generator: torch.Generator | None = None,
        grid: tuple[float, float] | None = None, top_p: float = 1.0,
    ) -> Tensor:
        """Draw one value per sample, clamped to `[lo, hi]` (continuous, not snapped to cells).

        The component is drawn from `softmax(logits / max(T, 1e-5))` (Gumbel-max) and the
        value from its logistic with scale `T·s`: lowering T both sharpens the component
        choice and shrinks the noise. T = 0 is the deterministic argmax path: the mean of
        the most likely component.

        `top_p` < 1 is nucleus sampling over the *cells*, the head's discrete outcomes: the
        cell is drawn from the nucleus (models/draw.py) of that tempered mixture's cell
        probabilities, then the value inside the cell from the tempered mixture restricted
        to it (`_sample_cells`). So the cells the values fall in follow the truncated,
        renormalised cell distribution exactly. `top_p` = 1 is the draw above, unchanged.
        """
        temperature = check_temperature(temperature)
        top_p = check_top_p(top_p)
        lo, hi = self._grid(grid)
        logits, means, log_scales = self._split(params)
        if temperature == 0.0:
            idx = logits.argmax(dim=-1, keepdim=True)
            return means.gather(-1, idx).squeeze(-1).clamp(lo, hi)
        if top_p < 1.0:
            return self._sample_cells(logits, means, log_scales, temperature, top_p,
                                      generator, (lo, hi))
        u = torch.rand(logits.shape, generator=generator, device=logits.device,
                       dtype=logits.dtype)
        gumbel = -torch.log(-torch.log(u.clamp(1e-10, 1.0 - 1e-7)))
        idx = (logits / max(temperature, 1e-5) + gumbel).argmax(dim=-1, keepdim=True)
        mu = means.gather(-1, idx).squeeze(-1)
        s = log_scales.gather(-1, idx).squeeze(-1).exp()
        v = torch.rand(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        v = v.clamp(1e-5, 1.0 - 1e-5)
        noise = torch.log(v) - torch.log1p(-v)  # standard logistic
        return (mu + temperature * s * noise).clamp(lo, hi)

    def _sample_cells(self, logits: Tensor, means: Tensor, log_scales: Tensor,
                      temperature: float, top_p: float, generator: torch.Generator | None,
                      grid: tuple[float, float]) -> Tensor:
        """Nucleus sampling of the tempered mixture (weights softmax(logits / T), scales
        T·s) over its cells, in float64, three uniforms per value:

        1. the cell: its mass is the mixture CDF's difference across it (Σ πⱼ σ((e − μⱼ)/sⱼ)
           at the bins − 1 inner edges; the edge cells open to ±∞): the nucleus of those
           masses, then the inverse CDF. Absolute errors ~1e-16 (the differences lose
           *relative* digits in the tails, where no nucleus reaches);
        2. a component in proportion to πⱼ × its mass in the cell (inverse CDF);
        3. the value: that logistic's inverse CDF at a uniform point between its CDF at the
           cell's edges, kept inside the cell (1/1024 of a cell from an inner edge, for
           rounding) and inside `[lo, hi]` as every sample is.

        Work per value: (bins − 1) × K sigmoids, rows processed in chunks of ~4M of them.
        """
        lo, hi = grid
        k_comp, bins = self.components, self.bins
        dev, f64 = means.device, torch.float64
        out_shape, out_dtype = means.shape[:-1], means.dtype
        pi = torch.softmax(logits.to(f64) / max(temperature, 1e-5), dim=-1).reshape(-1, k_comp)
        mu = means.to(f64).reshape(-1, k_comp)
        scale = (log_scales.to(f64).exp() * temperature).reshape(-1, k_comp)
        n = mu.shape[0]
        width = (hi - lo) / bins
        inner = lo + width * torch.arange(1, bins, device=dev, dtype=f64)  # bins − 1 edges
        u = 1.0 - torch.rand(3, n, 1, generator=generator, device=dev, dtype=f64)  # (0, 1]
        cell = torch.empty(n, dtype=torch.long, device=dev)
        chunk = max(1, (1 << 22) // (bins * k_comp))
        for r in range(0, n, chunk):
            rows = slice(r, r + chunk)
            cdf = torch.sigmoid((inner[:, None] - mu[rows, None]) / scale[rows, None])
            mix = (cdf * pi[rows, None]).sum(-1)  # the mixture's CDF at the inner edges
            mix = F.pad(F.pad(mix, (1, 0), value=0.0), (0, 1), value=1.0)
            mass = (mix[:, 1:] - mix[:, :-1]).clamp_(min=0.0)
            cell[rows] = inverse_cdf(nucleus(mass, top_p), u[0, rows])[:, 0]
        # the cell's edges (−∞ / +∞ for the edge cells) and each component's CDF there
        a = torch.where(cell > 0, lo + width * cell.to(f64), -math.inf)[:, None]
        b = torch.where(cell < bins - 1, lo + width * (cell + 1).to(f64), math.inf)[:, None]
        fa, fb = torch.sigmoid((a - mu) / scale), torch.sigmoid((b - mu) / scale)
        j = inverse_cdf(pi * (fb - fa), u[1])
        fa, fb = fa.gather(1, j)[:, 0], fb.gather(1, j)[:, 0]
        v = (fa + (fb - fa) * u[2, :, 0]).clamp(1e-300, 1.0 - 1e-16)
        x = mu.gather(1, j)[:, 0] + scale.gather(1, j)[:, 0] * (torch.log(v) - torch.log1p(-v))
        margin = width / 1024
        low = torch.where(cell > 0, a[:, 0] + margin, lo)
        high = torch.where(cell < bins - 1, b[:, 0] - margin, hi)
        return torch.minimum(torch.maximum(x, low), high).to(out_dtype).reshape(out_shape)
