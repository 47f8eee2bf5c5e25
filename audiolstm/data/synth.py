"""The built-in data set: a deterministic procedural drone, a bell motif and soft drums.

It imitates what the seed posts saw in the "spiritual ascension" track, so that
`python train.py` works with no download and the exploration tools have something
with known structure to find: a silent lead-in of 2000 samples, a handful of slowly
drifting harmonic partials over a low noise floor, amplitude "pulsations" every ~7 s
for the first minute and then ~14 per minute, and a fade-out to exactly zero.

Over the drone (VERSION 2, issue 14) there is structure that only a model with memory
can predict: the drone's partials are stationary sinusoids, so one frame predicts the
next linearly (a ridge regression did better than the LSTMs on VERSION 1). Now

- a **bell motif**: `len(MOTIF_ONSETS)` notes of a pentatonic scale over A (220 Hz and
  up), each struck (8 ms attack) and decaying, rings once per pulsation swell (every
  7 s, then every 4.29 s), with variations: repetition r is transposed by
  `MOTIF_SHIFTS[r % 4]` scale degrees, and in one repetition in four (drawn per
  repetition) one note moves a degree. The next note's pitch and onset follow from the
  notes before it and the place in the cycle, not from the last frame;
- **soft drums** on a slow pattern over two cycles: a low pitched-down thump with a
  short noise click at the cycle phases `DRUM_HITS`.

VERSION 3 (issue 22) makes every slow drift (the fundamental's wander, each partial's
detune and level) repeat every `_DRIFT_PERIOD` = 120 s, so every split of a long enough
render plays the same drone: with VERSION 2's free drift rates the test split's first
12 s sat above every pitch the training split played, a frame-ahead predictor's phase is
very sensitive to pitch, and the default model's verdict against the ridge on test
measured that accident instead of what the model learnt (README "A linear path").

Locking the events to the pulsation keeps the drone's analyses true: the envelope still
repeats with the pulsation period, which `explore` measures and the fade estimate
divides by.

`score(seconds, seed)` lists every note and hit (time, pitch); the tests check the
signal against it.

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

from audiolstm.errors import positive_int

# Bump whenever the output for a given (seconds, sample_rate, seed) changes: it is
# part of the on-disk cache key, so stale caches are rebuilt instead of reused.
VERSION = 3

#: what `synth_drone` adds together (tests render the parts apart)
PARTS = ("drone", "motif", "drums")


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
    motif_tonic_hz: float = 220.0


TRUTH = SynthTruth()

# Relative amplitudes of the harmonic partials (1st = fundamental).
_PARTIALS = (1.0, 0.55, 0.35, 0.22, 0.12)
_F0_WANDER = 0.025  # fundamental wanders +-2.5 %
_DETUNE = 0.003  # each partial drifts +-0.3 % off its harmonic: slow beating
_AMP_DRIFT = 0.25  # each partial's level drifts +-25 %
_NOISE_STD = 0.01  # noise floor relative to the fundamental's amplitude
_PULSE_JITTER = 0.2  # each pulse peaks at 80-100 % of the full swell
_ATTACK_SECONDS = 0.05  # short fade-in after the lead-in, so the onset does not click
_DRIFT_PERIOD = 120.0  # s: every slow drift repeats with this period (VERSION 3)
_CONTROL_HZ = 50.0  # slow drifts are evaluated at this rate and interpolated
_CHUNK = 1 << 20  # samples synthesised at once: bounds the temporaries' memory

# The motif: onsets within one repetition, as fractions of a pulsation cycle (the motif
# rings once per swell, starting as it rises), and the scale degrees of its notes.
MOTIF_ONSETS = (0.2, 0.26, 0.32, 0.38, 0.44, 0.56)
_MOTIF_DEGREES = (0, 2, 4, 3, 5, 1)
MOTIF_SHIFTS = (0, 0, 2, -1)  # transposition (scale degrees) of repetition r: [r % 4]
_SCALE = (0, 3, 5, 7, 10)  # minor pentatonic semitones, repeating every octave
_BELL_PARTIALS = ((1.0, 1.0), (2.0, 0.35), (3.0, 0.12))  # (frequency ratio, level)
_BELL_LEVEL = 0.12  # a note's peak amplitude (the drone peaks at TRUTH.peak)
_BELL_DECAY = 0.35  # s, exponential decay time constant
_BELL_ATTACK = 0.008  # s
_BELL_RELEASE = 0.01  # s: a note ends with a short ramp to zero at the next onset
_NOTE_MAX = 0.6  # s: a note rings at most this long
_VARIATION_P = 0.25  # chance that a repetition moves one note by a degree
# Drums: a pattern over two pulsation cycles (hits at these cycle phases, 0 <= phase < 2);
# a thump gliding from 110 to 50 Hz plus a click.
DRUM_HITS = (0.0, 0.75, 1.0, 1.5)
_DRUM_LEVEL = 0.15
_DRUM_DECAY = 0.09  # s
_CLICK_LEVEL = 0.05
_CLICK_DECAY = 0.006  # s
_DRUM_LENGTH = 0.5  # s rendered per hit


def _drift(rng: np.random.Generator, t: np.ndarray, kmin: int, kmax: int) -> np.ndarray:
    """A smooth random curve in [-1, 1] that repeats every `_DRIFT_PERIOD` seconds: three
    sinusoids of `k / _DRIFT_PERIOD` Hz (random whole k in [kmin, kmax]) and random phases.

    Periodic so that every split of a long enough render plays the same drone (VERSION 3):
    with free rates the fundamental's wander could sit at an extreme the training split
    never visits, and VERSION 2's test split started 0.1 Hz above every training second.
    """
    freqs = rng.integers(kmin, kmax + 1, 3) / _DRIFT_PERIOD
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


def _degree_hz(degree: int) -> float:
    """A degree of the pentatonic scale over the tonic (5 degrees per octave) -> Hz."""
    octave, step = divmod(degree, len(_SCALE))
    return TRUTH.motif_tonic_hz * 2.0 ** ((_SCALE[step] + 12 * octave) / 12.0)


def cycle_time(cycles: float, truth: SynthTruth = TRUTH) -> float:
    """The time (s) at which `cycles` pulsation cycles have elapsed: `_pulse_phase`'s inverse."""
    at_change = truth.change_seconds / truth.pulse_period_early
    if cycles < at_change:
        return cycles * truth.pulse_period_early
    return truth.change_seconds + (cycles - at_change) * truth.pulse_period_late


def score(seconds: float, seed: int = 0) -> dict[str, list]:
    """Every motif note and drum hit that starts in the first `seconds`.

    `notes`: (onset s, end s, frequency Hz, repetition); `hits`: onset times (s). The
    motif's repetition r plays in pulsation cycle r, its notes at the cycle fractions
    `MOTIF_ONSETS` (so the rhythm follows the tempo change at `change_seconds`); the drums
    repeat every two cycles. Prefix-stable like the audio: repetition r's variation is
    drawn from its own stream with a fixed number of draws per repetition.
    """
    _, _, _, motif_ss, _ = np.random.SeedSequence(seed).spawn(5)
    rng = np.random.default_rng(motif_ss)
    notes: list[tuple[float, float, float, int]] = []
    r = 0
    while cycle_time(r + MOTIF_ONSETS[0]) < seconds:
        vary, which, up = rng.random(), int(rng.integers(len(MOTIF_ONSETS))), rng.random()
        degrees = [d + MOTIF_SHIFTS[r % len(MOTIF_SHIFTS)] for d in _MOTIF_DEGREES]
        if vary < _VARIATION_P:
            degrees[which] += 1 if up < 0.5 else -1
        onsets = [cycle_time(r + o) for o in MOTIF_ONSETS]
        following = [*onsets[1:], cycle_time(r + 1 + MOTIF_ONSETS[0])]
        for onset, nxt, d in zip(onsets, following, degrees, strict=True):
            if onset < seconds:
                notes.append((onset, min(nxt, onset + _NOTE_MAX), _degree_hz(d), r))
        r += 1
    hits: list[float] = []
    bar = 0
    while cycle_time(2 * bar) < seconds:
        # (a hit in the lead-in would ring on into the sound as a cut-off thump)
        hits += [t for h in DRUM_HITS
                 if TRUTH.lead_in_seconds <= (t := cycle_time(2 * bar + h)) < seconds]
        bar += 1
    return {"notes": notes, "hits": hits}


def _add_motif(out: np.ndarray, sr: int, notes: list) -> None:
    """Struck bell notes: partials of the note, 8 ms attack, exponential decay, short release."""
    n = len(out)
    for onset, end, hz, _ in notes:
        a = int(round(onset * sr))
        length = int(round((end - onset) * sr))
        if length <= 0 or a >= n:
            continue
        t = np.arange(length) / sr
        env = np.minimum(t / _BELL_ATTACK, 1.0) * np.exp(-t / _BELL_DECAY)
        release = min(length, int(round(_BELL_RELEASE * sr)))
        env[length - release :] *= np.linspace(1.0, 0.0, release)
        keep = min(length, n - a)  # cut after the envelope: prefix-stable at the end
        wave = np.zeros(keep)
        for ratio, level in _BELL_PARTIALS:
            if ratio * hz < 0.45 * sr:
                wave += level * np.sin(2.0 * np.pi * ratio * hz * t[:keep])
        out[a : a + keep] += (_BELL_LEVEL * env[:keep] * wave).astype(np.float32)


def _add_drums(out: np.ndarray, sr: int, hits: list[float], rng: np.random.Generator) -> None:
    """A thump gliding from 110 to 50 Hz and a noise click per hit (fixed draws per hit)."""
    n = len(out)
    length = int(round(_DRUM_LENGTH * sr))
    t = np.arange(length) / sr
    hz = 50.0 + 60.0 * np.exp(-t / 0.03)
    thump = np.sin(2.0 * np.pi * np.cumsum(hz) / sr) * np.exp(-t / _DRUM_DECAY)
    click_env = _CLICK_LEVEL * np.exp(-t / _CLICK_DECAY)
    for onset in hits:
        click = rng.standard_normal(length) * click_env
        a = int(round(onset * sr))
        m = min(length, n - a)
        if m > 0:
            out[a : a + m] += (_DRUM_LEVEL * thump[:m] + click[:m]).astype(np.float32)


def synth_drone(seconds: float = 600.0, sample_rate: int = 16000, seed: int = 0,
                parts: tuple[str, ...] = PARTS) -> np.ndarray:
    """Return `seconds` of the built-in audio as contiguous 1-D float32.

    Deterministic in (seconds, sample_rate, seed). The drone is synthesised in chunks
    with the oscillator phases carried across chunk boundaries, so memory stays at the
    output plus a few chunk-sized temporaries and the waveform has no seams; the motif
    and drums are added note by note (`score`). `parts` picks which of `PARTS` to mix
    (the lead-in silence and the fade-out apply to any mix).
    """
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise ValueError(f"parts must be among {PARTS}, got {sorted(unknown)}")
    if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"seconds must be a positive finite number, got {seconds!r}")
    positive_int(sample_rate, "sample_rate", error=ValueError)
    sr = int(sample_rate)
    n = max(1, int(round(seconds * sr)))
    duration = n / sr

    # Independent streams: the number of draws from one never shifts another,
    # which is what makes the output prefix-stable.
    # (spawn(5)'s first three children are spawn(3)'s: the drone is VERSION 1's)
    param_ss, pulse_ss, noise_ss, _, drum_ss = np.random.SeedSequence(seed).spawn(5)
    params = np.random.default_rng(param_ss)
    pulse_rng = np.random.default_rng(pulse_ss)
    noise_rng = np.random.default_rng(noise_ss)

    # Slow control curves over the whole duration (cheap: _CONTROL_HZ points per second).
    tc = np.arange(int(math.ceil(duration * _CONTROL_HZ)) + 2) / _CONTROL_HZ
    f0 = TRUTH.fundamental_hz * (1.0 + _F0_WANDER * _drift(params, tc, 1, 3))  # 40-120 s
    nyquist_guard = 0.45 * sr
    freq_curves: list[np.ndarray] = []
    amp_curves: list[np.ndarray] = []
    for k, amp in enumerate(_PARTIALS, start=1):
        detune = 1.0 + _DETUNE * _drift(params, tc, 1, 6)  # 20-120 s
        level = amp * (1.0 + _AMP_DRIFT * _drift(params, tc, 1, 8))  # 15-120 s
        if k * TRUTH.fundamental_hz * (1 + _F0_WANDER + _DETUNE) < nyquist_guard:
            freq_curves.append(k * f0 * detune)
            amp_curves.append(level)
    phases = params.uniform(0.0, 2.0 * np.pi, len(_PARTIALS))[: len(freq_curves)]

    n_pulses = int(math.ceil(float(_pulse_phase(np.array([duration]))[0]))) + 1
    pulse_peaks = 1.0 - _PULSE_JITTER * pulse_rng.random(n_pulses)

    gain = TRUTH.peak / sum(_PARTIALS)
    out = np.zeros(n, dtype=np.float32)
    for start in range(0, n if "drone" in parts else 0, _CHUNK):
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

    events = score(duration, seed)  # faded out with the drone, like everything else
    if "motif" in parts:
        _add_motif(out, sr, events["notes"])
    if "drums" in parts:
        _add_drums(out, sr, events["hits"], np.random.default_rng(drum_ss))

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
