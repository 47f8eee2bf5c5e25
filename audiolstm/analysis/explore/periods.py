"""When things happen: the pulsation period, the lead-in and trailing silence, the fade-out.

- the amplitude "pulsation" period, overall and per region, from the autocorrelation of
  the RMS envelope (`pulsation_period`, `regional_periods`);
- the lead-in and the end of sound, where the first and last loud windows are
  (`first_loud_sample`, `last_loud_sample`, gathered by `silence_extent`);
- the fade-out, a raised-cosine gain ramp fitted to the envelope divided by the envelope
  one and two pulsation periods earlier (`fit_fade`, `estimate_fade`, `fade_out`).

Pure functions over (memory-mapped) arrays, streamed in chunks; each is tested directly
against naive references and the built-in drone's `TRUTH`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from audiolstm.analysis.explore.statistics import CHUNK, chunks, rms_envelope

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
    for a, c in chunks(x, step):
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




# ----------------------------------------------------------------------------- the study's use


def silence_extent(
    x: np.ndarray, sample_rate: int, threshold: float, window: int
) -> dict[str, Any]:
    """Lead-in, end of sound and trailing silence (see SILENCE_DEFINITION), samples and s.

    A silent file (nothing above `threshold`, or a threshold that is not positive) has a
    lead-in of the whole file and its sound ends at 0.
    """
    sr = int(sample_rate)
    n = int(x.shape[0])
    first = first_loud_sample(x, threshold, window) if threshold > 0 else None
    last = last_loud_sample(x, threshold, window) if first is not None else None
    lead_in = n if first is None else first
    sound_end = 0 if last is None else last + 1
    return {
        "threshold": threshold, "window_samples": window, "definition": SILENCE_DEFINITION,
        "lead_in_samples": lead_in, "lead_in_seconds": lead_in / sr,
        "end_of_sound_samples": sound_end, "end_of_sound_seconds": sound_end / sr,
        "trailing_silence_samples": n - sound_end, "trailing_silence_seconds": (n - sound_end) / sr,
        "silent": first is None,
    }


def fade_out(
    x: np.ndarray,
    sample_rate: int,
    silence: Mapping[str, Any],
    overall: PeriodEstimate,
    regions: Sequence[Mapping[str, float]],
    window_seconds: float,
) -> dict[str, Any]:
    """`estimate_fade` before the end of sound, with the last region's period (else overall)."""
    period = next((r["period_seconds"] for r in reversed(regions)
                   if math.isfinite(r["period_seconds"])), overall.period_seconds)
    if silence["silent"]:
        fade: dict[str, Any] = {"seconds": math.nan, "samples": None, "start_seconds": math.nan,
                                "end_seconds": math.nan, "method": "silent file"}
    else:
        fade = estimate_fade(x, sample_rate, silence["lead_in_samples"],
                             silence["end_of_sound_samples"], period, window_seconds)
    fade["period_used_seconds"] = period
    fade["definition"] = FADE_DEFINITION
    return fade
