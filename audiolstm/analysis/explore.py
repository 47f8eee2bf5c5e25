"""Data exploration: the seed post's multi-scale study of a track as one command.

`python explore.py [data=wav data.path=FILE]` writes to the run directory:

- `waveforms.png` (grid) and `waveforms/NN_<slug>.png`: the seed post's panels (first
  second ... first 2 minutes, the 2nd/3rd/5th/10th/35th/100th minute, the 5th and 20th
  minute from the end, the last minute); a panel whose range lies beyond the file is
  skipped and listed, not failed. Long panels are min/max-decimated.
- `spectrogram.png`: a representative stretch from the middle of the file.
- `envelope.png` (+ `envelope.npy`): the long-term RMS envelope, split boundaries marked.
- `pulsation.png`, `autocorrelation.png`: the amplitude "pulsation" period, overall and
  per region, from the autocorrelation of the envelope.
- lead-in silence, trailing silence, fade-out length; per-split statistics and what
  each normalisation scheme (fitted on train) maps them to.
- `explore.md`, self-contained `explore.html` (images inlined), `explore.json` (numbers).

Everything streams over the memory-mapped signal in chunks of `CHUNK` samples, so a
3-hour file costs its map plus a few MB (measured in bench/bench_explore.py). The
analysis functions are pure and tested directly against the built-in drone's `TRUTH`.
"""

from __future__ import annotations

import base64
import contextlib
import gc
import html
import logging
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from audiolstm.atomic import atomic_write, write_json
from audiolstm.data.normalize import SCHEMES as NORM_SCHEMES
from audiolstm.data.normalize import fit_normalizer
from audiolstm.data.settings import validate_data
from audiolstm.data.sources import source_signal
from audiolstm.data.splits import SPLITS, split_bounds
from audiolstm.errors import UserError
from audiolstm.evaluation import plots

log = logging.getLogger(__name__)

#: Samples processed at once by every streamed pass (~2 MB as float64 temporaries).
CHUNK = 1 << 18
#: Rate (values per second) of the fine envelope the fade-out is fitted on.
FADE_ENVELOPE_HZ = 100.0
#: The fitted fade may end this long after the last audible sample (quiet tail of the ramp).
FADE_END_MARGIN_SECONDS = 0.5
#: At least this much of the fade window stays un-faded, so the level can be fitted.
FADE_MIN_FLAT_SECONDS = 0.5

SILENCE_DEFINITION = (
    "threshold = silence_threshold x overall RMS; the lead-in ends at the first sample "
    "louder than the threshold inside the first silence_window_ms window whose RMS exceeds "
    "it (windows aligned to the start); the sound ends after the last such sample inside "
    "the last such window (windows aligned to the end); trailing silence is what follows"
)
FADE_DEFINITION = (
    "a raised-cosine gain ramp fitted (least squares, level and linear level trend free) to "
    "the 10 ms RMS envelope of the last fade_window_seconds before the end of sound, divided "
    "by the envelope one and two pulsation periods earlier (same pulsation phase) so the "
    "pulsation does not pass for a fade; the ramp may end up to 0.5 s after the last audible "
    "sample; plain envelope when no period is known"
)
PERIOD_DEFINITION = (
    "autocorrelation (unbiased, mean removed) of the RMS envelope; the first local maximum "
    "within [pulse_min_seconds, pulse_max_seconds] (and at most half the stretch) reaching "
    "pulse_peak_fraction of the highest one, refined by parabolic interpolation"
)


# ----------------------------------------------------------------------------- options


@dataclass(frozen=True)
class ExploreOptions:
    """The top-level knobs of `conf/explore.yaml`, validated (one UserError line per field)."""

    envelope_hz: float = 20.0
    spectrogram_seconds: float = 20.0
    pulse_min_seconds: float = 1.0
    pulse_max_seconds: float = 20.0
    pulse_peak_fraction: float = 0.5
    region_seconds: float = 60.0
    splits: tuple[float, float, float] = (0.8, 0.1, 0.1)
    max_panel_samples: int = 20000
    silence_window_ms: float = 10.0
    silence_threshold: float = 0.01
    fade_window_seconds: float = 3.0

    def __post_init__(self) -> None:
        for name in ("envelope_hz", "spectrogram_seconds", "pulse_min_seconds",
                     "pulse_max_seconds", "region_seconds", "silence_window_ms",
                     "fade_window_seconds"):
            value = getattr(self, name)
            if not _is_number(value) or not value > 0:
                raise UserError(f"{name}={value!r} must be a positive number")
        if self.pulse_max_seconds <= self.pulse_min_seconds:
            raise UserError(f"pulse_max_seconds={self.pulse_max_seconds!r} must be greater than "
                            f"pulse_min_seconds={self.pulse_min_seconds!r}")
        for name in ("pulse_peak_fraction", "silence_threshold"):
            value = getattr(self, name)
            if not _is_number(value) or not 0 < value <= 1:
                raise UserError(f"{name}={value!r} must be in (0, 1]")
        if (not isinstance(self.max_panel_samples, int) or isinstance(self.max_panel_samples, bool)
                or self.max_panel_samples < 100):
            raise UserError(f"max_panel_samples={self.max_panel_samples!r} must be an integer "
                            ">= 100")
        splits = list(self.splits)
        if len(splits) != 3 or not all(_is_number(r) and r > 0 for r in splits):
            raise UserError(f"splits={splits!r} must be three positive ratios (train, val, test)")
        if not math.isclose(sum(splits), 1.0, abs_tol=1e-6):
            raise UserError(f"splits={splits!r} must sum to 1 (they sum to {sum(splits):g})")

    @classmethod
    def from_cfg(cls, cfg: DictConfig | Mapping[str, Any]) -> ExploreOptions:
        """Read the known keys (missing ones keep their defaults)."""
        kwargs: dict[str, Any] = {}
        for name in cls.__dataclass_fields__:
            if name in cfg:
                value = cfg[name]
                if OmegaConf.is_config(value):
                    value = OmegaConf.to_container(value, resolve=True)
                kwargs[name] = tuple(value) if name == "splits" else value
        return cls(**kwargs)


def _is_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


# ----------------------------------------------------------------------------- panels

# (slug, label, anchor, start, stop): seconds from the start ("head") or the end ("tail").
PANEL_SPECS: tuple[tuple[str, str, str, float, float], ...] = (
    ("first_1s", "first second", "head", 0, 1),
    ("first_5s", "first 5 seconds", "head", 0, 5),
    ("first_10s", "first 10 seconds", "head", 0, 10),
    ("first_30s", "first 30 seconds", "head", 0, 30),
    ("first_1min", "first minute", "head", 0, 60),
    ("first_2min", "first 2 minutes", "head", 0, 120),
    ("minute_2", "2nd minute", "head", 60, 120),
    ("minute_3", "3rd minute", "head", 120, 180),
    ("minute_5", "5th minute", "head", 240, 300),
    ("minute_10", "10th minute", "head", 540, 600),
    ("minute_35", "35th minute", "head", 2040, 2100),
    ("minute_100", "100th minute", "head", 5940, 6000),
    ("minute_5_from_end", "5th minute from the end", "tail", 300, 240),
    ("minute_20_from_end", "20th minute from the end", "tail", 1200, 1140),
    ("last_minute", "last minute", "tail", 60, 0),
)


@dataclass(frozen=True)
class Panel:
    """One waveform excerpt: samples [start, stop) of the signal."""

    index: int
    slug: str
    label: str
    start: int
    stop: int
    sample_rate: int

    @property
    def title(self) -> str:
        sr = self.sample_rate
        return f"{self.label} ({clock(self.start / sr)}–{clock(self.stop / sr)})"

    @property
    def filename(self) -> str:
        return f"{self.index:02d}_{self.slug}.png"


def select_panels(num_samples: int, sample_rate: int) -> tuple[list[Panel], list[dict[str, Any]]]:
    """The seed post's panels that fit in a signal of `num_samples`; the others with a reason.

    "The 5th minute from the end" is [end - 5 min, end - 4 min). A panel is kept only if
    its whole range lies inside the signal; a signal shorter than every panel gets one
    "whole file" panel (index 0) so there is always something to look at.
    """
    sr = int(sample_rate)
    kept: list[Panel] = []
    skipped: list[dict[str, Any]] = []
    for i, (slug, label, anchor, a, b) in enumerate(PANEL_SPECS, start=1):
        if anchor == "head":
            start, stop = round(a * sr), round(b * sr)
        else:
            start, stop = num_samples - round(a * sr), num_samples - round(b * sr)
        if 0 <= start < stop <= num_samples:
            kept.append(Panel(i, slug, label, start, stop, sr))
        else:
            need = max(a, b)
            skipped.append({"index": i, "slug": slug, "label": label,
                            "reason": f"needs {clock(need)} of audio, the file has "
                                      f"{clock(num_samples / sr)}"})
    if not kept and num_samples > 0:
        kept.append(Panel(0, "whole_file", "whole file", 0, num_samples, sr))
    return kept, skipped


def clock(seconds: float) -> str:
    """h:mm:ss(.mmm) / m:ss(.mmm): how the seed post and a media player name positions."""
    ms = int(round(seconds * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, frac = divmod(rest, 1000)
    text = f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
    return f"{text}.{frac:03d}" if frac else text


def minmax_decimate(
    x: np.ndarray, max_points: int, chunk: int = CHUNK
) -> tuple[np.ndarray, int]:
    """(values, bucket): `x` itself if short, else interleaved (min, max) per bucket.

    Drawn as a line, the interleaved extremes look exactly like the full waveform at
    screen resolution while costing `max_points` values; read in chunks so a long panel
    of a memory-mapped file is never copied whole. `bucket` samples per (min, max) pair;
    1 means the values are the raw samples.
    """
    n = int(x.shape[0])
    if n <= max_points:
        return np.array(x, dtype=np.float32), 1
    bucket = math.ceil(n / max(1, max_points // 2))
    n_buckets = math.ceil(n / bucket)
    out = np.empty(2 * n_buckets, dtype=np.float32)
    step = bucket * max(1, chunk // bucket)
    k = 0
    for a in range(0, n, step):
        c = np.asarray(x[a:min(n, a + step)], dtype=np.float32)
        full = (c.shape[0] // bucket) * bucket
        if full:
            blocks = c[:full].reshape(-1, bucket)
            nb = blocks.shape[0]
            out[2 * k:2 * (k + nb):2] = blocks.min(axis=1)
            out[2 * k + 1:2 * (k + nb):2] = blocks.max(axis=1)
            k += nb
        if full < c.shape[0]:  # the last, partial bucket
            out[2 * k], out[2 * k + 1] = c[full:].min(), c[full:].max()
            k += 1
    return out[: 2 * k], bucket


def _panel_rate(sample_rate: int, bucket: int) -> float:
    """Values per second of a (possibly decimated) panel, so its time axis stays true."""
    return float(sample_rate) if bucket == 1 else 2.0 * sample_rate / bucket


@contextlib.contextmanager
def _figures_freed() -> Iterator[None]:
    """Free each figure as soon as it is saved: bounded memory however many are drawn.

    A matplotlib figure is a reference cycle holding its renderer (~30 MB while drawing):
    left to the cyclic collector, a dozen of them pile up. A full `gc.collect()` after
    each costs ~0.2 s with torch loaded; freezing the objects that existed before makes
    each collection scan only the new ones (~3 ms).
    """
    frozen = gc.get_freeze_count() == 0
    if frozen:
        gc.freeze()
    try:
        yield
    finally:
        gc.collect()
        if frozen:
            gc.unfreeze()


def _freed(path: Path) -> Path:
    """Collect the figure that wrote `path` (see `_figures_freed`)."""
    gc.collect()
    return path


def _plot_panel_grid(
    path: Path, panels: Sequence[tuple[str, np.ndarray, float, float]], ncols: int = 3
) -> Path:
    """Like `plots.plot_waveform_grid`, with a rate per panel (decimated panels differ)."""
    ncols = min(ncols, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = plots._new_figure(4.2 * ncols, 2.4 * nrows + 0.4)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for i, (ax, (title, values, start, rate)) in enumerate(zip(axes, panels, strict=False)):
        x = plots._samples(values, f"panel {title!r}")
        plots._draw_wave(ax, x, rate, start, plots.SEED_COLOR)
        ax.set_xlim(start, start + x.size / rate)
        ax.set_title(title, fontsize="medium")
        if i + ncols >= len(panels):
            ax.set_xlabel("time (s)")
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    return plots._save(fig, path)


# ----------------------------------------------------------------------------- streaming


def _chunks(x: np.ndarray, step: int) -> Iterator[tuple[int, np.ndarray]]:
    for a in range(0, x.shape[0], step):
        yield a, x[a:a + step]


def rms_envelope(x: np.ndarray, window: int, chunk: int = CHUNK) -> np.ndarray:
    """RMS of consecutive `window`-sample windows (float64; a partial last window dropped).

    Value i describes samples [i*window, (i+1)*window). Streams in chunks of whole
    windows, so memory is the output plus one chunk whatever the signal's length.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    n_win = int(x.shape[0]) // window
    out = np.empty(n_win, dtype=np.float64)
    step = window * max(1, chunk // window)
    for a, c in _chunks(x[: n_win * window], step):
        blocks = np.asarray(c, dtype=np.float64).reshape(-1, window)
        i = a // window
        out[i:i + blocks.shape[0]] = np.sqrt(np.einsum("ij,ij->i", blocks, blocks) / window)
    return out


@dataclass(frozen=True)
class Moments:
    """Streamable summary of a signal: mergeable (Chan et al.), exact in float64."""

    n: int = 0
    mean: float = math.nan
    m2: float = 0.0  # sum of squared deviations from the mean
    min: float = math.nan
    max: float = math.nan

    def merge(self, other: Moments) -> Moments:
        if other.n == 0:
            return self
        if self.n == 0:
            return other
        n = self.n + other.n
        delta = other.mean - self.mean
        return Moments(
            n=n,
            mean=self.mean + delta * other.n / n,
            m2=self.m2 + other.m2 + delta * delta * self.n * other.n / n,
            min=min(self.min, other.min),
            max=max(self.max, other.max),
        )

    @property
    def std(self) -> float:
        """Population standard deviation (what the `std` normaliser divides by)."""
        return math.sqrt(self.m2 / self.n) if self.n else math.nan

    @property
    def rms(self) -> float:
        return math.sqrt(self.mean**2 + self.m2 / self.n) if self.n else math.nan

    def as_dict(self, sample_rate: int) -> dict[str, float]:
        return {"samples": self.n, "duration_seconds": self.n / sample_rate, "mean": self.mean,
                "std": self.std, "min": self.min, "max": self.max, "rms": self.rms}


def moments(x: np.ndarray, chunk: int = CHUNK) -> Moments:
    """Mean, std, min, max of `x` in one streamed pass (per-chunk two-pass, then merged)."""
    acc = Moments()
    for _, c in _chunks(x, chunk):
        c64 = np.asarray(c, dtype=np.float64)
        mean = float(c64.mean())
        d = c64 - mean
        acc = acc.merge(Moments(int(c64.shape[0]), mean, float(d @ d),
                                float(c64.min()), float(c64.max())))
    return acc


# ----------------------------------------------------------------------------- silence


def first_loud_sample(
    x: np.ndarray, threshold: float, window: int, chunk: int = CHUNK
) -> int | None:
    """Index of the first sample with |x| > threshold inside the first window whose RMS does.

    Windows are aligned to the start of `x`. Requiring a loud *window* ignores a lone
    click; a window's RMS above the threshold guarantees such a sample in it. None if
    every window is quiet. Stops reading at the first loud window.
    """
    step = window * max(1, chunk // window)
    for a, c in _chunks(x, step):
        c = np.asarray(c, dtype=np.float64)
        full = (c.shape[0] // window) * window
        rms = np.sqrt(np.mean(c[:full].reshape(-1, window) ** 2, axis=1)) if full else np.empty(0)
        if full < c.shape[0]:  # the file's last, partial window
            rms = np.append(rms, math.sqrt(float(np.mean(c[full:] ** 2))))
        loud = np.flatnonzero(rms > threshold)
        if loud.size:
            w0 = int(loud[0]) * window
            seg = np.abs(c[w0:w0 + window])
            return a + w0 + int(np.argmax(seg > threshold))
    return None


def last_loud_sample(
    x: np.ndarray, threshold: float, window: int, chunk: int = CHUNK
) -> int | None:
    """Mirror of `first_loud_sample` from the end (windows aligned to the end of `x`)."""
    first = first_loud_sample(x[::-1], threshold, window, chunk)
    return None if first is None else int(x.shape[0]) - 1 - first


# ----------------------------------------------------------------------------- periods


def autocorrelation(x: np.ndarray) -> np.ndarray:
    """Unbiased autocorrelation of `x` with its mean removed, normalised to r[0] = 1.

    Computed with a zero-padded FFT (no circular wrap). Lag k averages the N - k products
    it has, so a peak is not pulled towards small lags. All zeros for a constant input.
    """
    v = np.asarray(x, dtype=np.float64)
    n = v.shape[0]
    if n == 0:
        return np.empty(0)
    v = v - v.mean()
    nfft = 1 << (2 * n - 1).bit_length()
    spec = np.fft.rfft(v, nfft)
    ac = np.fft.irfft(spec.real**2 + spec.imag**2, nfft)[:n]
    ac /= n - np.arange(n)
    if not ac[0] > 0:
        return np.zeros(n)
    return ac / ac[0]


@dataclass(frozen=True)
class PeriodEstimate:
    """A pulsation period (nan when none found) and its autocorrelation at that lag."""

    period_seconds: float = math.nan
    strength: float = math.nan

    @property
    def per_minute(self) -> float:
        return 60.0 / self.period_seconds if self.period_seconds > 0 else math.nan


def pulsation_period(
    envelope: np.ndarray,
    rate: float,
    min_seconds: float = 1.0,
    max_seconds: float = 20.0,
    peak_fraction: float = 0.5,
) -> PeriodEstimate:
    """Period of the envelope's strongest repetition, from its autocorrelation.

    The first local maximum in [min_seconds, max_seconds] (and at most half the envelope,
    so at least two cycles are seen) whose height reaches `peak_fraction` of the highest
    one: the fundamental, not a multiple of it. Parabolic interpolation through the
    peak and its neighbours gives sub-sample precision.
    """
    n = int(np.asarray(envelope).shape[0])
    k_min = max(1, math.ceil(min_seconds * rate))
    k_max = min(math.floor(max_seconds * rate), n // 2)
    if k_max - k_min < 2:
        return PeriodEstimate()
    r = autocorrelation(envelope)[: k_max + 2]
    ks = np.arange(k_min, min(k_max, r.shape[0] - 2) + 1)
    if ks.size == 0:
        return PeriodEstimate()
    peaks = ks[(r[ks] > r[ks - 1]) & (r[ks] >= r[ks + 1]) & (r[ks] > 0)]
    if peaks.size == 0:
        return PeriodEstimate()
    best = float(r[peaks].max())
    k = int(peaks[np.argmax(r[peaks] >= peak_fraction * best)])
    a, b, c = float(r[k - 1]), float(r[k]), float(r[k + 1])
    denom = a - 2.0 * b + c
    delta = 0.5 * (a - c) / denom if denom < 0 else 0.0
    delta = min(0.5, max(-0.5, delta))
    return PeriodEstimate((k + delta) / rate, b)


def regional_periods(
    envelope: np.ndarray,
    rate: float,
    region_seconds: float,
    min_seconds: float = 1.0,
    max_seconds: float = 20.0,
    peak_fraction: float = 0.5,
) -> list[dict[str, float]]:
    """`pulsation_period` of each consecutive region (a last region under half size dropped).

    Shows how the pulsation changes through the file (seed 000: ~9 per minute for the
    first minute, then ~14). A file shorter than one region is one region.
    """
    n = int(np.asarray(envelope).shape[0])
    size = max(1, round(region_seconds * rate))
    out: list[dict[str, float]] = []
    for a in range(0, n, size):
        b = min(n, a + size)
        if b - a < size / 2 and out:
            break
        est = pulsation_period(envelope[a:b], rate, min_seconds, max_seconds, peak_fraction)
        out.append({"start_seconds": a / rate, "end_seconds": b / rate,
                    "period_seconds": est.period_seconds, "per_minute": est.per_minute,
                    "strength": est.strength})
    return out


# ----------------------------------------------------------------------------- fade-out


def fit_fade(level: np.ndarray, max_back: int = 0, min_flat: int = 2) -> tuple[int, int, float]:
    """Fit a raised-cosine fade to the end of `level`: (length, frames after its end, SSE).

    Model: (c0 + c1*s) * g(t), s a linear ramp over the window (a slowly drifting level),
    g = 1 before the fade, a raised cosine from 1 down to 0 over `length` frames, 0 after
    it; the fade ends `back` in [0, max_back] frames before the window's end. Both linear
    coefficients are solved in closed form for every (length, back); the best SSE wins.
    `min_flat` frames before the fade stay at 1 so the level is pinned down.
    """
    q = np.asarray(level, dtype=np.float64)
    n = q.shape[0]
    s = np.linspace(-1.0, 1.0, n)
    qs, qq = q * s, float(q @ q)
    idx = np.arange(n)
    best = (0, 0, math.inf)
    for back in range(max(0, max_back) + 1):
        lengths = np.arange(2, n - back - min_flat + 1)
        if lengths.size == 0:
            continue
        j = idx[None, :] - (n - back - lengths)[:, None]
        ramp = 0.5 * (1.0 + np.cos(np.pi * (j + 0.5) / lengths[:, None]))
        g = np.where(j < 0, 1.0, np.where(j < lengths[:, None], ramp, 0.0))
        g2 = g * g
        a11, a12, a22 = g2.sum(axis=1), g2 @ s, g2 @ (s * s)
        b1, b2 = g @ q, g @ qs
        det = a11 * a22 - a12 * a12
        with np.errstate(divide="ignore", invalid="ignore"):
            c0 = (a22 * b1 - a12 * b2) / det
            c1 = (a11 * b2 - a12 * b1) / det
            sse = qq - c0 * b1 - c1 * b2
        sse = np.where(np.isfinite(sse) & (det > 1e-12) & (c0 > 0), sse, np.inf)
        i = int(np.argmin(sse))
        if sse[i] < best[2]:
            best = (int(lengths[i]), back, float(sse[i]))
    return best


def estimate_fade(
    x: np.ndarray,
    sample_rate: int,
    sound_start: int,
    sound_end: int,
    period_seconds: float = math.nan,
    window_seconds: float = 3.0,
) -> dict[str, Any]:
    """Length of the fade-out before `sound_end` (see FADE_DEFINITION); seconds, nan if n/a.

    A threshold on the raw level cannot find where a fade starts in pulsating audio (a
    pulsation trough looks like a fade, a fade during a swell hides): dividing by the
    envelope at the same pulsation phase one and two periods earlier leaves the gain ramp.
    """
    sr = int(sample_rate)
    win = max(1, round(sr / FADE_ENVELOPE_HZ))
    rate = sr / win
    n = int(x.shape[0])
    b = min(n, sound_end + round(FADE_END_MARGIN_SECONDS * sr))
    w = max(4, round(window_seconds * rate))
    method = "envelope / envelope one and two periods earlier"
    hist = 0
    k0 = 1
    if period_seconds > 0 and math.isfinite(period_seconds):
        pf = period_seconds * rate
        k0 = max(1, math.ceil(w / pf))  # references from before the fitted window
        hist = math.ceil((k0 + 1) * pf) + 1
    if hist == 0 or b - (w + hist) * win < sound_start:
        method, hist = "envelope (no pulsation period, or too little audio before the fade)", 0
        w = min(w, (b - sound_start) // win)
    if w < 8:
        return {"seconds": math.nan, "samples": None, "start_seconds": math.nan,
                "end_seconds": math.nan, "method": "too short to estimate"}
    a = b - (w + hist) * win
    env = rms_envelope(x[a:b], win)
    level = env[-w:]
    if hist:
        t = np.arange(env.shape[0], dtype=np.float64)
        pf = period_seconds * rate
        ref = 0.5 * (np.interp(t - k0 * pf, t, env) + np.interp(t - (k0 + 1) * pf, t, env))
        ref = ref[-w:]
        if np.all(ref > 0):
            level = level / ref
        else:
            method = "envelope (silent reference)"
    max_back = (b - sound_end) // win
    min_flat = min(max(2, round(FADE_MIN_FLAT_SECONDS * rate)), w // 3)
    length, back, _ = fit_fade(level, max_back, min_flat)
    end = b - back * win
    start = end - length * win
    return {"seconds": length * win / sr, "samples": length * win, "start_seconds": start / sr,
            "end_seconds": end / sr, "method": method}


# ----------------------------------------------------------------------------- statistics


def normalization_table(
    scheme_names: Sequence[str],
    signal_splits: Mapping[str, np.ndarray],
    stats: Mapping[str, Moments],
) -> dict[str, Any]:
    """For each scheme fitted on train: where each split's min/max/mean/std land.

    Uses `fit_normalizer` (what training uses), then maps the statistics through the
    affine (x - shift) / scale of each split: no extra pass over the data. A scheme that
    cannot be fitted (a silent training split) gets its error message instead.
    """
    others = {k: v for k, v in signal_splits.items() if k != "train"}
    table: dict[str, Any] = {}
    for scheme in scheme_names:
        try:
            nz = fit_normalizer(scheme, signal_splits["train"], others)
        except UserError as e:
            table[scheme] = {"error": str(e)}
            continue
        per_split = {}
        for name, st in stats.items():
            shift, scale = nz.affine(name)
            per_split[name] = {"shift": shift, "scale": scale,
                               "min": (st.min - shift) / scale, "max": (st.max - shift) / scale,
                               "mean": (st.mean - shift) / scale, "std": st.std / scale}
        table[scheme] = {"shift": nz.shift, "scale": nz.scale, "splits": per_split}
    return table


def _waveform_figures(
    signal: np.ndarray, sr: int, max_points: int, out: Path
) -> tuple[list[str], list[dict[str, Any]], list[dict[str, Any]]]:
    """The seed post's panels: one PNG each plus the grid; (files, panel rows, skipped)."""
    panels, skipped = select_panels(int(signal.shape[0]), sr)
    files: list[str] = []
    rows: list[dict[str, Any]] = []
    grid: list[tuple[str, np.ndarray, float, float]] = []
    for p in panels:
        values, bucket = minmax_decimate(signal[p.start:p.stop], max_points)
        rate = _panel_rate(sr, bucket)
        grid.append((p.title, values, p.start / sr, rate))
        rel = f"waveforms/{p.filename}"
        # plot_waveform is typed for an int rate; a float one (decimated panel) works the same
        _freed(plots.plot_waveform(out / rel, values, rate, p.start / sr, p.title))  # type: ignore
        files.append(rel)
        rows.append({"index": p.index, "slug": p.slug, "label": p.label, "title": p.title,
                     "start_seconds": p.start / sr, "end_seconds": p.stop / sr, "file": rel,
                     "points": int(values.shape[0]), "samples_per_minmax_pair": bucket})
    if grid:
        _freed(_plot_panel_grid(out / "waveforms.png", grid))
        files.insert(0, "waveforms.png")
    return files, rows, skipped


def _envelope_figures(
    env: np.ndarray,
    env_rate: float,
    env_window_seconds: float,
    marks: Mapping[str, float],
    overall: PeriodEstimate,
    regions: Sequence[Mapping[str, float]],
    opts: ExploreOptions,
    duration: float,
    out: Path,
) -> list[str]:
    """envelope.png (split boundaries marked), autocorrelation.png, pulsation.png."""
    files: list[str] = []
    if env.size:
        _freed(plots.plot_envelope(
            out / "envelope.png", env, env_rate, marks,
            title=f"RMS envelope ({1000 * env_window_seconds:g} ms windows), "
                  f"splits {' / '.join(f'{r:g}' for r in opts.splits)}"))
        files.append("envelope.png")
        lags = min(env.size - 1, math.ceil(2 * opts.pulse_max_seconds * env_rate))
        if lags > 1:
            ac = autocorrelation(env)[: lags + 1]
            _freed(plots.plot_series(
                out / "autocorrelation.png", np.arange(lags + 1) / env_rate, ac, "lag (s)",
                "autocorrelation",
                title=f"envelope autocorrelation (overall period "
                      f"{_num(overall.period_seconds)} s)"))
            files.append("autocorrelation.png")
    if regions:
        div, unit = (60.0, "min") if duration >= 600 else (1.0, "s")
        centres = [(r["start_seconds"] + r["end_seconds"]) / 2 / div for r in regions]
        _freed(plots.plot_series(
            out / "pulsation.png", centres, [r["period_seconds"] for r in regions],
            f"region centre ({unit})", "pulsation period (s)",
            title=f"pulsation period per {opts.region_seconds:g} s region (overall "
                  f"{_num(overall.period_seconds)} s, {_num(overall.per_minute)} per minute)"))
        files.append("pulsation.png")
    return files


# ----------------------------------------------------------------------------- the study


def explore_signal(
    signal: np.ndarray,
    sample_rate: int,
    meta: Mapping[str, Any],
    opts: ExploreOptions,
    out_dir: str | os.PathLike[str],
) -> dict[str, Any]:
    """Run the whole study on a (memory-mapped) signal and write every output to `out_dir`."""
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sr = int(sample_rate)
    n = int(signal.shape[0])
    timings: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        now = time.perf_counter()
        timings[name] = now - since
        return now

    # Statistics: per split, merged for the whole file.
    bounds = split_bounds(n, list(opts.splits))
    parts = {name: signal[a:b] for name, (a, b) in bounds.items()}
    stats = {name: moments(part) for name, part in parts.items()}
    whole = Moments()
    for name in SPLITS:
        whole = whole.merge(stats[name])
    t = lap("statistics", t0)

    # Envelope and pulsation.
    env_win = max(1, round(sr / opts.envelope_hz))
    env_rate = sr / env_win
    env = rms_envelope(signal, env_win)
    atomic_write(out / "envelope.npy", lambda f: np.save(f, env.astype(np.float32)))
    period_args = (opts.pulse_min_seconds, opts.pulse_max_seconds, opts.pulse_peak_fraction)
    overall = pulsation_period(env, env_rate, *period_args)
    regions = regional_periods(env, env_rate, opts.region_seconds, *period_args)
    t = lap("envelope_and_periods", t)

    # Lead-in, end of sound, fade-out.
    threshold = opts.silence_threshold * whole.rms if whole.n else math.nan
    sil_win = max(1, round(opts.silence_window_ms * sr / 1000.0))
    first = first_loud_sample(signal, threshold, sil_win) if threshold > 0 else None
    last = last_loud_sample(signal, threshold, sil_win) if first is not None else None
    lead_in = n if first is None else first
    sound_end = 0 if last is None else last + 1
    silence = {
        "threshold": threshold, "window_samples": sil_win, "definition": SILENCE_DEFINITION,
        "lead_in_samples": lead_in, "lead_in_seconds": lead_in / sr,
        "end_of_sound_samples": sound_end, "end_of_sound_seconds": sound_end / sr,
        "trailing_silence_samples": n - sound_end, "trailing_silence_seconds": (n - sound_end) / sr,
        "silent": first is None,
    }
    fade_period = next((r["period_seconds"] for r in reversed(regions)
                        if math.isfinite(r["period_seconds"])), overall.period_seconds)
    if first is None:
        fade = {"seconds": math.nan, "samples": None, "start_seconds": math.nan,
                "end_seconds": math.nan, "method": "silent file"}
    else:
        fade = estimate_fade(signal, sr, lead_in, sound_end, fade_period, opts.fade_window_seconds)
    fade["period_used_seconds"] = fade_period
    fade["definition"] = FADE_DEFINITION
    t = lap("silence_and_fade", t)

    # Normalisation schemes fitted on train, applied to every split's statistics.
    norm = normalization_table(NORM_SCHEMES, parts, stats)
    t = lap("normalization", t)

    # Figures (each freed once saved, so memory stays bounded).
    with _figures_freed():
        files, panel_rows, skipped = _waveform_figures(signal, sr, opts.max_panel_samples, out)
        t = lap("waveform_plots", t)
        spec_len = min(n, max(1, round(opts.spectrogram_seconds * sr)))
        spec_start = max(0, (n - spec_len) // 2)
        spectrogram = {"start_seconds": spec_start / sr,
                       "end_seconds": (spec_start + spec_len) / sr}
        if n:
            span = f"{clock(spec_start / sr)}–{clock((spec_start + spec_len) / sr)}"
            _freed(plots.plot_spectrogram(
                out / "spectrogram.png", np.array(signal[spec_start:spec_start + spec_len]), sr,
                title=f"spectrogram {span} (middle of the file; time axis from its start)"))
            files.append("spectrogram.png")
        marks = {f"{SPLITS[i]}|{SPLITS[i + 1]}": bounds[SPLITS[i]][1] / sr for i in range(2)}
        files += _envelope_figures(env, env_rate, env_win / sr, marks, overall, regions, opts,
                                   n / sr, out)
    t = lap("other_plots", t)

    result: dict[str, Any] = {
        "source": {**{k: v for k, v in meta.items() if k != "boundaries"},
                   "boundaries": [list(b) for b in meta.get("boundaries", [])],
                   "sample_rate": sr, "num_samples": n, "duration_seconds": n / sr},
        "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(opts).items()},
        "panels": panel_rows,
        "skipped_panels": skipped,
        "spectrogram": spectrogram,
        "envelope": {"rate_hz": env_rate, "window_samples": env_win, "values": int(env.size),
                     "file": "envelope.npy"},
        "silence": silence,
        "fade_out": fade,
        "pulsation": {"definition": PERIOD_DEFINITION,
                      "overall": {"period_seconds": overall.period_seconds,
                                  "per_minute": overall.per_minute, "strength": overall.strength},
                      "regions": regions},
        "splits": {name: {"start_seconds": bounds[name][0] / sr,
                          "end_seconds": bounds[name][1] / sr, **stats[name].as_dict(sr)}
                   for name in SPLITS},
        "whole": whole.as_dict(sr),
        "normalization": norm,
    }
    timings["total"] = time.perf_counter() - t0
    result["timings_seconds"] = timings
    files += ["envelope.npy", "explore.json", "explore.md", "explore.html"]
    result["files"] = files
    write_json(out / "explore.json", result)
    atomic_write(out / "explore.md", lambda f: f.write(render_markdown(result).encode()))
    atomic_write(out / "explore.html", lambda f: f.write(render_html(result, out).encode()))
    return result


# ----------------------------------------------------------------------------- reports


def _num(v: Any, digits: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        if not math.isfinite(v):
            return "–"
        return f"{v:.{digits}g}"
    return str(v)


def _tables(r: Mapping[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """The report's tables as (title, header, rows) of text, shared by Markdown and HTML."""
    src, sil, fade, pul = r["source"], r["silence"], r["fade_out"], r["pulsation"]
    sr = src["sample_rate"]
    tables = []
    tables.append(("Source", ["field", "value"], [
        ["source", str(src.get("source"))], ["path", str(src.get("path"))],
        ["sample rate (Hz)", _num(sr)], ["samples", _num(src["num_samples"])],
        ["duration", f"{clock(src['duration_seconds'])} ({_num(src['duration_seconds'], 6)} s)"],
    ]))
    lead = sil["lead_in_samples"]
    fade_start = fade["start_seconds"]
    fade_start_sample = round(fade_start * sr) if math.isfinite(fade_start) else None
    tables.append(("Lead-in and fade-out", ["quantity", "samples", "seconds"], [
        ["lead-in silence", _num(lead), _num(sil["lead_in_seconds"])],
        ["trailing silence", _num(sil["trailing_silence_samples"]),
         _num(sil["trailing_silence_seconds"])],
        ["fade-out length", _num(fade["samples"]), _num(fade["seconds"])],
        ["fade-out start (from file start)", _num(fade_start_sample), _num(fade_start, 7)],
        ["silence threshold (amplitude)", "", _num(sil["threshold"])],
    ]))
    ov = pul["overall"]
    rows = [["whole file", _num(ov["period_seconds"]), _num(ov["per_minute"]),
             _num(ov["strength"], 3)]]
    rows += [[f"{clock(reg['start_seconds'])}–{clock(reg['end_seconds'])}",
              _num(reg["period_seconds"]), _num(reg["per_minute"]), _num(reg["strength"], 3)]
             for reg in pul["regions"]]
    tables.append(("Pulsation period", ["stretch", "period (s)", "pulses per minute",
                                        "autocorrelation"], rows))
    stat_rows = []
    for name, st in [*r["splits"].items(), ("whole", r["whole"])]:
        span = (f"{clock(st['start_seconds'])}–{clock(st['end_seconds'])}"
                if "start_seconds" in st else "")
        stat_rows.append([name, span, _num(st["duration_seconds"]), _num(st["mean"]),
                          _num(st["std"]), _num(st["min"]), _num(st["max"]), _num(st["rms"])])
    tables.append(("Per-split statistics", ["split", "range", "duration (s)", "mean", "std",
                                            "min", "max", "RMS"], stat_rows))
    norm_rows = []
    for scheme, entry in r["normalization"].items():
        if "error" in entry:
            norm_rows.append([scheme, "", entry["error"], "", "", "", ""])
            continue
        for split, m in entry["splits"].items():
            norm_rows.append([scheme, split, _num(m["shift"]), _num(m["scale"]), _num(m["min"]),
                              _num(m["max"]), f"{_num(m['mean'])} ± {_num(m['std'])}"])
    tables.append(("Normalisation (fitted on train): where each split lands",
                   ["scheme", "split", "shift", "scale", "min →", "max →", "mean ± std →"],
                   norm_rows))
    panel_rows = [[_num(p["index"]), p["title"], p["file"],
                   "raw" if p["samples_per_minmax_pair"] == 1
                   else f"min/max of {p['samples_per_minmax_pair']} samples"]
                  for p in r["panels"]]
    panel_rows += [[_num(s["index"]), s["label"], "skipped", s["reason"]]
                   for s in r["skipped_panels"]]
    tables.append(("Waveform panels", ["#", "panel", "file", "drawn as"], panel_rows))
    return tables


_FIGURES = (
    ("waveforms.png", "Waveforms at the seed post's scales"),
    ("spectrogram.png", "Spectrogram of a representative stretch"),
    ("envelope.png", "Long-term RMS envelope with the split boundaries"),
    ("pulsation.png", "Pulsation period over time"),
    ("autocorrelation.png", "Autocorrelation of the envelope"),
)


def _notes(r: Mapping[str, Any]) -> list[str]:
    return [
        f"Silence: {r['silence']['definition']}.",
        f"Fade-out: {r['fade_out']['definition']} (here: {r['fade_out']['method']}).",
        f"Pulsation period: {r['pulsation']['definition']}.",
    ]


def render_markdown(r: Mapping[str, Any]) -> str:
    """`explore.md`: tables and links to the PNGs next to it."""
    src = r["source"]
    lines = [f"# Exploration of {src.get('path') or src.get('source')}", ""]
    for title, header, rows in _tables(r):
        lines += [f"## {title}", "", "| " + " | ".join(header) + " |",
                  "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
        lines.append("")
    lines += ["## Figures", ""]
    for name, caption in _FIGURES:
        if name in r["files"]:
            lines += [f"### {caption}", "", f"![{caption}]({name})", ""]
    lines += ["## Definitions", ""] + [f"- {note}" for note in _notes(r)] + [""]
    return "\n".join(lines)


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def render_html(r: Mapping[str, Any], out_dir: Path) -> str:
    """`explore.html`: one self-contained file (PNGs inlined as base64 data URIs)."""
    esc = html.escape
    src = r["source"]
    title = f"Exploration of {src.get('path') or src.get('source')}"
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1300px;margin:auto;padding:1em}"
        "table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;"
        "padding:2px 8px;text-align:right}td:first-child,th:first-child{text-align:left}"
        "img{max-width:100%}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
    ]
    for t_title, header, rows in _tables(r):
        parts.append(f"<h2>{esc(t_title)}</h2><table><tr>"
                     + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows]
        parts.append("</table>")
    for name, caption in _FIGURES:
        if name in r["files"] and (out_dir / name).is_file():
            parts.append(f"<h2>{esc(caption)}</h2>"
                         f'<img alt="{esc(caption)}" src="{_data_uri(out_dir / name)}">')
    panels = [p for p in r["panels"] if (out_dir / p["file"]).is_file()]
    if panels:
        parts.append("<h2>Waveform panels, one by one</h2>")
        parts += [f"<h3>{esc(p['title'])}</h3>"
                  f'<img alt="{esc(p["title"])}" src="{_data_uri(out_dir / p["file"])}">'
                  for p in panels]
    parts.append("<h2>Definitions</h2><ul>"
                 + "".join(f"<li>{esc(n)}</li>" for n in _notes(r)) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# ----------------------------------------------------------------------------- entry point


def run(cfg: DictConfig) -> dict[str, Any]:
    """`python explore.py`: validate, load (cached, memory-mapped), study, write, say where."""
    opts = ExploreOptions.from_cfg(cfg)
    data = cfg.data
    validate_data(data)  # same checks and messages as training
    signal, meta = source_signal(
        source=data.source, path=data.get("path"), sample_rate=data.sample_rate,
        cache_dir=data.cache_dir, synth_seconds=data.synth_seconds, synth_seed=data.synth_seed,
    )
    out = Path(cfg.paths.output_dir)
    log.debug("exploring %d samples (%s) into %s", signal.shape[0], meta.get("path"), out)
    result = explore_signal(signal, int(data.sample_rate), meta, opts, out)
    print(f"explore: {len(result['files'])} files in {out} (open {out / 'explore.html'})",
          flush=True)
    return result
