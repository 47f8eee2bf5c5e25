"""The built-in data set: a deterministic procedural drone.

It imitates what the seed posts saw in the "spiritual ascension" track, so that
`python train.py` works with no download and the exploration tools have something
with known structure to find: a silent lead-in of 2000 samples, a handful of slowly
drifting harmonic partials over a low noise floor, amplitude "pulsations" every ~7 s
for the first minute and then ~14 per minute, and a fade-out to exactly zero.

The ground truth is published as `TRUTH` so tests and `explore` can check that
their analyses recover it. The signal is *prefix-stable*: every random draw comes
from a stream whose first values do not depend on the requested length and the
gain is fixed (not peak-normalised), so a 60 s drone equals the first 60 s of a
10 min one except where the fade-out starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Bump whenever the output for a given (seconds, sample_rate, seed) changes: it is
# part of the on-disk cache key, so stale caches are rebuilt instead of reused.
VERSION = 1


@dataclass(frozen=True)
class SynthTruth:
    """Known structure of `synth_drone`, for tests and exploration to recover."""

    lead_in_seconds: float = 0.125
    fade_seconds: float = 1.25
    pulse_period_early: float = 7.0
    pulse_period_late: float = 60.0 / 14.0
    change_seconds: float = 60.0
    fundamental_hz: float = 110.0
    pulse_depth: float = 0.7
    peak: float = 0.5


TRUTH = SynthTruth()

# Relative amplitudes of the harmonic partials (1st = fundamental).
_PARTIALS = (1.0, 0.55, 0.35, 0.22, 0.12)
_F0_WANDER = 0.025  # fundamental wanders +-2.5 %
_DETUNE = 0.003  # each partial drifts +-0.3 % off its harmonic: slow beating
_AMP_DRIFT = 0.25  # each partial's level drifts +-25 %
_NOISE_STD = 0.01  # noise floor relative to the fundamental's amplitude
_PULSE_JITTER = 0.2  # each pulse peaks at 80-100 % of the full swell
_ATTACK_SECONDS = 0.05  # short fade-in after the lead-in, so the onset does not click
_CONTROL_HZ = 50.0  # slow drifts are evaluated at this rate and interpolated
_CHUNK = 1 << 20  # samples synthesised at once: bounds the temporaries' memory


def _drift(rng: np.random.Generator, t: np.ndarray, fmin: float, fmax: float) -> np.ndarray:
    """A smooth random curve in [-1, 1]: a few slow sinusoids with random rates and phases."""
    freqs = rng.uniform(fmin, fmax, 3)
    phases = rng.uniform(0.0, 2.0 * np.pi, 3)
    weights = rng.uniform(0.5, 1.0, 3)
    curve = np.zeros_like(t)
    for f, p, w in zip(freqs, phases, weights, strict=True):
        curve += w * np.sin(2.0 * np.pi * f * t + p)
    return curve / weights.sum()


def _pulse_phase(t: np.ndarray, truth: SynthTruth = TRUTH) -> np.ndarray:
    """Number of pulsation cycles elapsed at time t: continuous through the tempo change."""
    early = t / truth.pulse_period_early
    late = (
        truth.change_seconds / truth.pulse_period_early
        + (t - truth.change_seconds) / truth.pulse_period_late
    )
    return np.where(t < truth.change_seconds, early, late)


def synth_drone(seconds: float = 600.0, sample_rate: int = 16000, seed: int = 0) -> np.ndarray:
    """Return `seconds` of the procedural drone as contiguous 1-D float32.

    Deterministic in (seconds, sample_rate, seed). Synthesised in chunks with the
    oscillator phases carried across chunk boundaries, so memory stays at the output
    plus a few chunk-sized temporaries and the waveform has no seams.
    """
    if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"seconds must be a positive finite number, got {seconds!r}")
    if not (isinstance(sample_rate, (int, np.integer)) and sample_rate > 0):
        raise ValueError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    sr = int(sample_rate)
    n = max(1, int(round(seconds * sr)))
    duration = n / sr

    # Independent streams: the number of draws from one never shifts another,
    # which is what makes the output prefix-stable.
    param_ss, pulse_ss, noise_ss = np.random.SeedSequence(seed).spawn(3)
    params = np.random.default_rng(param_ss)
    pulse_rng = np.random.default_rng(pulse_ss)
    noise_rng = np.random.default_rng(noise_ss)

    # Slow control curves over the whole duration (cheap: _CONTROL_HZ points per second).
    tc = np.arange(int(math.ceil(duration * _CONTROL_HZ)) + 2) / _CONTROL_HZ
    f0 = TRUTH.fundamental_hz * (1.0 + _F0_WANDER * _drift(params, tc, 1 / 240, 1 / 40))
    nyquist_guard = 0.45 * sr
    freq_curves: list[np.ndarray] = []
    amp_curves: list[np.ndarray] = []
    for k, amp in enumerate(_PARTIALS, start=1):
        detune = 1.0 + _DETUNE * _drift(params, tc, 1 / 120, 1 / 20)
        level = amp * (1.0 + _AMP_DRIFT * _drift(params, tc, 1 / 90, 1 / 15))
        if k * TRUTH.fundamental_hz * (1 + _F0_WANDER + _DETUNE) < nyquist_guard:
            freq_curves.append(k * f0 * detune)
            amp_curves.append(level)
    phases = params.uniform(0.0, 2.0 * np.pi, len(_PARTIALS))[: len(freq_curves)]

    n_pulses = int(math.ceil(float(_pulse_phase(np.array([duration]))[0]))) + 1
    pulse_peaks = 1.0 - _PULSE_JITTER * pulse_rng.random(n_pulses)

    gain = TRUTH.peak / sum(_PARTIALS)
    out = np.empty(n, dtype=np.float32)
    for start in range(0, n, _CHUNK):
        stop = min(n, start + _CHUNK)
        t = np.arange(start, stop, dtype=np.float64) / sr
        acc = np.zeros(stop - start, dtype=np.float64)
        for i, (fc, ac) in enumerate(zip(freq_curves, amp_curves, strict=True)):
            # Integrate frequency into phase; carry the end phase into the next chunk.
            ph = phases[i] + np.cumsum(np.interp(t, tc, fc)) * (2.0 * np.pi / sr)
            phases[i] = math.fmod(ph[-1], 2.0 * np.pi)
            acc += np.interp(t, tc, ac) * np.sin(ph)
        cycles = _pulse_phase(t)
        swell = np.sin(np.pi * cycles) ** 2 * pulse_peaks[cycles.astype(np.int64)]
        acc *= (1.0 - TRUTH.pulse_depth) + TRUTH.pulse_depth * swell
        acc += _NOISE_STD * noise_rng.standard_normal(stop - start)
        out[start:stop] = acc * gain

    lead = min(n, int(round(TRUTH.lead_in_seconds * sr)))
    out[:lead] = 0.0
    attack = min(n - lead, int(round(_ATTACK_SECONDS * sr)))
    if attack > 0:
        out[lead : lead + attack] *= np.linspace(0.0, 1.0, attack + 1, dtype=np.float32)[1:]
    fade = min(n - lead, int(round(TRUTH.fade_seconds * sr)))
    if fade > 0:
        # Raised cosine from just below 1 down to exactly 0 on the last sample.
        ramp = 0.5 * (1.0 + np.cos(np.pi * np.arange(1, fade + 1) / fade))
        out[n - fade :] *= ramp.astype(np.float32)
        out[-1] = 0.0
    return out
