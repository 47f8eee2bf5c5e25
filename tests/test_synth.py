"""The built-in drone: deterministic, well-formed, and carrying the structure TRUTH claims."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from audiolstm.data import synth
from audiolstm.data.synth import TRUTH, VERSION, SynthTruth, synth_drone

SR = 16000


@pytest.fixture(scope="module")
def ten_minutes() -> np.ndarray:
    return synth_drone(600.0, SR, 0)


def rms_envelope(x: np.ndarray, hop: int) -> np.ndarray:
    frames = x[: len(x) // hop * hop].astype(np.float64).reshape(-1, hop)
    return np.sqrt((frames**2).mean(axis=1))


def envelope_period(x: np.ndarray, sr: int, lo: float = 2.5, hi: float = 12.0) -> float:
    """Lag (s) of the highest autocorrelation peak of the 0.1 s RMS envelope in [lo, hi]."""
    hop = sr // 10
    env = rms_envelope(x, hop)
    env = env - env.mean()
    ac = np.correlate(env, env, "full")[len(env) - 1 :]
    a, b = int(lo * 10), int(hi * 10)
    lag = a + int(np.argmax(ac[a:b]))
    # Parabolic refinement: the 0.1 s grid alone is coarser than the tolerance.
    y0, y1, y2 = ac[lag - 1], ac[lag], ac[lag + 1]
    return (lag + 0.5 * (y0 - y2) / (y0 - 2 * y1 + y2)) / 10


def test_truth_is_frozen_and_matches_the_seed_track():
    assert isinstance(TRUTH, SynthTruth) and VERSION == 3
    assert round(TRUTH.lead_in_seconds * SR) == 2000
    assert round(TRUTH.fade_seconds * SR) == 20000
    assert TRUTH.pulse_period_early == pytest.approx(7.0)
    assert 60 / TRUTH.pulse_period_late == pytest.approx(14.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        TRUTH.pulse_period_early = 3.0  # type: ignore[misc]


def test_ten_minutes_shape_dtype_and_level(ten_minutes):
    x = ten_minutes
    assert x.shape == (600 * SR,) and x.dtype == np.float32 and x.flags.c_contiguous
    assert np.isfinite(x).all()
    assert 0.3 <= np.abs(x).max() <= 0.9


def test_lead_in_is_exactly_silent_then_sound_starts(ten_minutes):
    x = ten_minutes
    assert np.all(x[:2000] == 0.0)
    assert np.abs(x[2000:4000]).max() > 0.01


def test_fade_out_ends_at_exactly_zero(ten_minutes):
    x = ten_minutes
    assert x[-1] == 0.0
    fade = round(TRUTH.fade_seconds * SR)
    before = np.abs(x[-fade - SR : -fade]).max()
    assert np.abs(x[-400:]).max() < 0.01 * before


def test_fade_out_is_a_smooth_monotone_gain():
    # Prefix stability lets the longer drone stand in for the unfaded signal.
    x, longer = synth_drone(10.0, SR, 5), synth_drone(11.0, SR, 5)
    fade = round(TRUTH.fade_seconds * SR)
    np.testing.assert_allclose(x[:-fade], longer[: len(x) - fade], atol=1e-6)
    faded, unfaded = x[-fade:].astype(np.float64), longer[len(x) - fade : len(x)]
    ok = np.abs(unfaded) > 0.05
    gain = faded[ok] / unfaded[ok]
    assert np.all(np.diff(gain) <= 1e-6)  # monotone decay, not a cut
    assert gain[0] > 0.99 and gain[-1] < 0.05


def test_deterministic_per_seed():
    a, b, c = synth_drone(5.0, SR, 3), synth_drone(5.0, SR, 3), synth_drone(5.0, SR, 4)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a[4000:], c[4000:], atol=1e-3)


@pytest.mark.parametrize("seconds, sr", [(2.0, 16000), (1.5, 8000), (0.75, 44100)])
def test_length_and_dtype(seconds, sr):
    x = synth_drone(seconds, sr, 1)
    assert x.shape == (round(seconds * sr),) and x.dtype == np.float32
    assert np.isfinite(x).all() and x[-1] == 0.0


@pytest.mark.parametrize("seconds", [0.5, 0.13, 0.01, 1e-9])
def test_shorter_than_lead_in_plus_fade_is_still_valid(seconds):
    x = synth_drone(seconds, SR, 0)
    assert x.dtype == np.float32 and len(x) == max(1, round(seconds * SR))
    assert np.isfinite(x).all() and x[-1] == 0.0
    assert np.all(x[: min(len(x), 2000)] == 0.0)
    assert np.abs(x).max() <= 0.9


@pytest.mark.parametrize("seconds", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_duration_raises(seconds):
    with pytest.raises(ValueError, match="seconds"):
        synth_drone(seconds, SR, 0)


def test_chunks_are_seamless(monkeypatch):
    whole = synth_drone(6.0, SR, 2)
    monkeypatch.setattr(synth, "_CHUNK", 12345)  # boundaries fall mid-cycle
    pieces = synth_drone(6.0, SR, 2)
    np.testing.assert_allclose(pieces, whole, atol=1e-5)


def test_prefix_stable_across_durations(ten_minutes):
    short = synth_drone(30.0, SR, 0)
    body = 30 * SR - round(TRUTH.fade_seconds * SR)
    np.testing.assert_allclose(short[:body], ten_minutes[:body], atol=1e-6)


def test_fundamental_near_110_hz(ten_minutes):
    seg = ten_minutes[10 * SR : 20 * SR].astype(np.float64)
    spec = np.abs(np.fft.rfft(seg * np.hanning(len(seg))))
    freqs = np.fft.rfftfreq(len(seg), 1 / SR)
    assert 100 <= freqs[np.argmax(spec)] <= 120
    harmonics = spec[(freqs > 200) & (freqs < 600)].max()
    assert harmonics > 0.05 * spec.max()  # more than a bare sine


def _fundamental_hz(x: np.ndarray, at: float) -> float:
    """The strongest peak within 100-120 Hz of a 4 s Hann window at `at` seconds, refined
    by a parabola through the log-magnitudes of its zero-padded FFT bin and neighbours."""
    seg = x[int(at * SR) : int((at + 4) * SR)].astype(np.float64)
    n = 1 << 19  # 0.03 Hz bins
    spec = np.log(np.abs(np.fft.rfft(seg * np.hanning(len(seg)), n)) + 1e-12)
    lo, hi = int(100 * n / SR), int(120 * n / SR)
    k = lo + int(np.argmax(spec[lo:hi]))
    y0, y1, y2 = spec[k - 1], spec[k], spec[k + 1]
    return (k + 0.5 * (y0 - y2) / (y0 - 2 * y1 + y2)) * SR / n


def test_the_drone_repeats_its_pitch_every_drift_period():
    """VERSION 3: every slow drift repeats every `_DRIFT_PERIOD` s, so a training split that
    long has heard every pitch validation and test play (VERSION 2's free rates put the
    test split's start above every training second). The pitch does wander (so a constant
    fundamental cannot pass), and comes back within 0.02 Hz a period later."""
    period = synth._DRIFT_PERIOD
    drone = synth_drone(period + 110.0, SR, 0, parts=("drone",))
    now = [_fundamental_hz(drone, t) for t in (5.0, 35.0, 65.0, 100.0)]
    later = [_fundamental_hz(drone, t + period) for t in (5.0, 35.0, 65.0, 100.0)]
    assert max(now) - min(now) > 0.5
    np.testing.assert_allclose(later, now, atol=0.02)  # VERSION 2: off by 0.3-1.1 Hz


def test_pulsation_period_early_and_late(ten_minutes):
    early = envelope_period(ten_minutes[1 * SR : 59 * SR], SR)
    late = envelope_period(ten_minutes[62 * SR : 300 * SR], SR)
    assert early == pytest.approx(TRUTH.pulse_period_early, rel=0.03)
    assert late == pytest.approx(TRUTH.pulse_period_late, rel=0.03)


def test_pulsations_are_deep(ten_minutes):
    env = rms_envelope(ten_minutes[1 * SR : 59 * SR], SR // 10)
    lo, hi = np.percentile(env, [3, 97])
    assert 1 - lo / hi > 0.5  # clearly visible swells, not a ripple
    assert lo > 0.0  # but the drone never stops between them


# ----------------------------------------------------------------------------- motif and drums
# (VERSION 2, issue 14): structure that only a model with memory can predict


@pytest.fixture(scope="module")
def parts_30s() -> dict[str, np.ndarray]:
    return {p: synth_drone(30.0, SR, 0, parts=(p,)) for p in synth.PARTS}


def test_parts_add_up_to_the_mix(parts_30s):
    mix = synth_drone(30.0, SR, 0)
    np.testing.assert_allclose(sum(parts_30s.values()), mix, atol=1e-6)
    with pytest.raises(ValueError, match="parts"):
        synth_drone(1.0, SR, 0, parts=("drone", "choir"))


def test_score_follows_the_pulsation_cycles():
    notes, hits = synth.score(120.0, 0)["notes"], synth.score(120.0, 0)["hits"]
    n = len(synth.MOTIF_ONSETS)
    # repetition r plays in pulsation cycle r, at the documented cycle fractions
    assert [x[0] for x in notes[:n]] == pytest.approx(
        [7.0 * f for f in synth.MOTIF_ONSETS])
    assert [x[0] for x in notes[n : 2 * n]] == pytest.approx(
        [7.0 * (1 + f) for f in synth.MOTIF_ONSETS])
    late = [x for x in notes if x[3] == 20]  # cycle 20 is after the tempo change
    at_change = 60.0 / 7.0
    assert [x[0] for x in late] == pytest.approx(
        [60.0 + (20 + f - at_change) * TRUTH.pulse_period_late for f in synth.MOTIF_ONSETS])
    # (the hit at t = 0 falls in the lead-in: left out)
    assert hits[:3] == pytest.approx([7.0 * h for h in synth.DRUM_HITS[1:]])
    assert all(a < b for a, b in zip(hits, hits[1:], strict=False))
    # repetition 2 is transposed two scale degrees (4 or 5 semitones) above repetition 0;
    # a variation moves at most one note of each
    f = {r: [x[2] for x in notes if x[3] == r] for r in (0, 2)}
    ratios = np.array(f[2]) / np.array(f[0])
    up = (ratios > 2 ** (3.5 / 12)) & (ratios < 2 ** (5.5 / 12))
    assert up.sum() >= n - 2


def _peak_hz(x: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x)), 8 * len(x)))
    return float(np.fft.rfftfreq(8 * len(x), 1 / SR)[np.argmax(spec)])


def test_motif_notes_start_at_their_onsets_with_their_pitch(parts_30s):
    x = parts_30s["motif"].astype(np.float64)
    notes = [n for n in synth.score(30.0, 0)["notes"] if n[1] < 30.0 - TRUTH.fade_seconds]
    first = round(notes[0][0] * SR)
    assert np.all(x[:first] == 0.0)  # nothing before the first note
    for onset, end, hz, _ in notes:
        a = round(onset * SR)
        before = np.abs(x[a - 40 : a]).max()  # the previous note's release ramp: ~0
        after = np.abs(x[a + 80 : a + 400]).max()  # just after the 8 ms attack
        assert after > 0.05 and before < 0.3 * after
        seg = x[a + 160 : a + min(round((end - onset) * SR), 4000)]
        assert _peak_hz(seg) == pytest.approx(hz, rel=0.01)


def test_drum_hits_are_sparse_and_where_the_score_says(parts_30s):
    x = parts_30s["drums"].astype(np.float64)
    hits = [h for h in synth.score(30.0, 0)["hits"] if h >= TRUTH.lead_in_seconds]
    loud = np.abs(x) > 1e-3
    starts = np.flatnonzero(loud[1:] & ~loud[:-1]) + 1
    # every burst of sound starts within 2 ms of a hit, and every hit starts one
    burst_starts = [s / SR for s in starts if not loud[max(0, s - 800) : s].any()]
    assert burst_starts == pytest.approx(hits, abs=0.002)
    assert loud.mean() < 0.15  # sparse: silent most of the time


def test_the_motif_repeats_with_the_pulsation_cycle():
    """The repetition period from the autocorrelation of the motif's envelope."""
    motif = synth_drone(60.0, SR, 0, parts=("motif",))
    assert envelope_period(motif[: 58 * SR], SR) == pytest.approx(TRUTH.pulse_period_early,
                                                                  rel=0.02)


def test_ten_minutes_hold_motif_and_drums(ten_minutes):
    sc = synth.score(600.0, 0)
    assert len(sc["notes"]) == len(synth.MOTIF_ONSETS) * len({x[3] for x in sc["notes"]})
    assert 100 < len({x[3] for x in sc["notes"]}) < 150  # one per cycle: 8.6 + 126
    assert np.abs(ten_minutes).max() <= 0.9
