"""The generated-audio score: exact pieces, then known answers on real and broken audio.

Real audio here is made in the test (the built-in synthetic data set, and a melody of
harmonic notes), so nothing outside the repository is read.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from audiolstm.atomic import json_safe
from audiolstm.data.synth import synth_drone
from audiolstm.errors import UserError
from audiolstm.evaluation import audio_score as S
from audiolstm.evaluation.metrics import mean_power_spectrum

SR = 16_000


def melody(seconds: float, seed: int = 0) -> np.ndarray:
    """Overlapping harmonic notes (random pitch on a semitone grid, 6 partials, struck and
    decaying) over a -60 dB noise floor: tonal, dynamic, not periodic."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    out = np.zeros(n)
    t = 0.0
    while t < seconds:
        dur = rng.uniform(0.15, 0.6)
        f0 = 110.0 * 2 ** (int(rng.integers(0, 25)) / 12)
        amp = rng.uniform(0.05, 0.2)
        m = int(min(dur * 1.5, seconds - t) * SR)
        tt = np.arange(m) / SR
        env = np.minimum(tt / 0.01, 1.0) * np.exp(-tt / (dur * 0.6))
        note = sum(np.sin(2 * np.pi * f0 * k * tt + rng.uniform(0, 2 * np.pi)) / k
                   for k in range(1, 7))
        start = int(t * SR)
        out[start : start + m] += amp * env * note
        t += dur
    return out + 1e-3 * rng.standard_normal(n)


CLIP = 10.0


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    """150 s of each kind: the last 60 s is the reference, clips come from the first 80 s."""
    return {"synthetic": synth_drone(150.0, SR, seed=0), "melody": melody(150.0, seed=0)}


@pytest.fixture(scope="module")
def refs(data) -> dict[str, S.AudioReference]:
    return {k: S.build_reference(x[90 * SR :], SR, CLIP) for k, x in data.items()}


def held_out(x: np.ndarray) -> list[np.ndarray]:
    n = int(CLIP * SR)
    return [x[s : s + n] for s in range(SR, 80 * SR - n, 7 * SR)]


# ----------------------------------------------------------------------- exact pieces


def test_mel_filterbank_is_a_partition_of_unity_between_first_and_last_centre() -> None:
    """Mutants: area-normalised filters, edges shifted by one, bands not sharing edges."""
    fb = S.mel_filterbank(SR, 1024, 40)
    assert fb.shape == (40, 513)
    centres = S.mel_to_hz(np.linspace(0, S.hz_to_mel(SR / 2), 42))[1:-1]
    freqs = np.arange(513) * SR / 1024
    inside = (freqs >= centres[0]) & (freqs <= centres[-1])
    np.testing.assert_allclose(fb[:, inside].sum(axis=0), 1.0, atol=1e-12)
    assert fb.max() <= 1.0 and (fb.max(axis=1) > 0.5).all()
    # each filter is one triangle: rises then falls, no bin outside its two neighbours' centres
    for m in range(1, 39):
        support = np.flatnonzero(fb[m] > 0)
        assert freqs[support[0]] > centres[m - 1] and freqs[support[-1]] < centres[m + 1]
    assert S.hz_to_mel(1000.0) == pytest.approx(999.9855, abs=1e-3)  # HTK: 1 kHz ≈ 1000 mel
    np.testing.assert_allclose(S.mel_to_hz(S.hz_to_mel(np.array([0.0, 440.0, 8000.0]))),
                               [0.0, 440.0, 8000.0], atol=1e-9)


def test_mel_filterbank_refuses_bands_with_no_bin() -> None:
    with pytest.raises(ValueError, match="catches no FFT bin"):
        S.mel_filterbank(SR, 64, 40)


def test_analysis_sizes_follow_the_sample_rate() -> None:
    assert S.analysis_sizes(16_000) == (1024, 256)
    assert S.analysis_sizes(8_000) == (512, 128)
    assert S.analysis_sizes(44_100) == (2048, 512)
    for sr in (4_000, 8_000, 22_050, 48_000):  # the filterbank exists at every usual rate
        S.MelAnalysis.for_reference(sr, 0.1)


def _spd(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.standard_normal((d, d))
    return a @ a.T + 0.1 * np.eye(d)


def test_frechet_distance_closed_forms() -> None:
    """Mutants: no factor 2 on the cross term, tr sqrt taken element-wise (diag), the
    product C1 C2 square-rooted without symmetrising, the mean term not squared."""
    rng = np.random.default_rng(0)
    # diagonal covariances: |Δμ|² + Σ (√a - √b)²
    mu1, mu2 = rng.standard_normal(5), rng.standard_normal(5)
    a, b = rng.uniform(0.1, 4, 5), rng.uniform(0.1, 4, 5)
    want = float(((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum())
    assert S.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(want, rel=1e-12)
    # general 2x2: tr sqrt(M) = sqrt(tr M + 2 sqrt(det M)) for M = C1 C2 (positive eigenvalues)
    c1, c2 = _spd(rng, 2), _spd(rng, 2)
    m = c1 @ c2
    cross = math.sqrt(np.trace(m) + 2 * math.sqrt(np.linalg.det(m)))
    want = np.trace(c1) + np.trace(c2) - 2 * cross
    assert S.frechet_distance(np.zeros(2), c1, np.zeros(2), c2) == pytest.approx(want, rel=1e-10)
    # singular C1 = v vᵀ: tr sqrt(C1 C2) = sqrt(vᵀ C2 v)
    v = rng.standard_normal(6)
    c2 = _spd(rng, 6)
    want = v @ v + np.trace(c2) - 2 * math.sqrt(v @ c2 @ v)
    got = S.frechet_distance(np.zeros(6), np.outer(v, v), np.zeros(6), c2)
    assert got == pytest.approx(want, rel=1e-7)  # sqrt of rounding-level eigenvalues: ~1e-8
    # identical Gaussians: 0; symmetric; zero covariance: |Δμ|² + tr(C2)
    c = _spd(rng, 8)
    assert S.frechet_distance(mu1[:2], c[:2, :2], mu1[:2], c[:2, :2]) == pytest.approx(0, abs=1e-9)
    c1, c2 = _spd(rng, 8), _spd(rng, 8)
    z = np.zeros(8)
    assert S.frechet_distance(z, c1, z, c2) == pytest.approx(S.frechet_distance(z, c2, z, c1),
                                                             rel=1e-9)
    assert S.frechet_distance(z, np.zeros((8, 8)), z + 1, c2) == pytest.approx(8 + np.trace(c2))


def test_flatness_of_white_noise_sine_and_silence() -> None:
    """White noise: each bin's power is exponential, so E log P - log E P = -γ and the
    flatness is 10 log10(exp(-γ)) = -2.507 dB. Mutants: DC/Nyquist bins kept (a DC offset
    would then read as tonal), arithmetic and geometric means swapped, log of 0."""
    from audiolstm.evaluation.metrics import stft_power

    rng = np.random.default_rng(1)
    flat = S.flatness_db(stft_power(rng.standard_normal(20 * SR)))
    assert np.median(flat) == pytest.approx(10 * math.log10(math.exp(-np.euler_gamma)), abs=0.05)
    # the same noise on a large DC offset: unchanged (DC is not a tone)
    flat_dc = S.flatness_db(stft_power(rng.standard_normal(20 * SR) + 50.0))
    assert np.median(flat_dc) == pytest.approx(-2.507, abs=0.1)
    sine = np.sin(2 * np.pi * 440 * np.arange(2 * SR) / SR)
    assert np.median(S.flatness_db(stft_power(sine))) < -60.0
    assert np.isnan(S.flatness_db(np.zeros((3, 513)))).all()


def test_second_rms_is_per_whole_second() -> None:
    x = np.concatenate([np.full(SR, 0.5), -np.full(SR, 2.0), np.ones(SR // 2)])
    np.testing.assert_allclose(S.second_rms(x, SR), [0.5, 2.0])


def _naive_loop(x: np.ndarray, frame_rate: float, min_lag: float) -> tuple[float, float]:
    """Reference: Pearson's r over the overlap, one lag at a time."""
    n = len(x)
    best, best_lag = -math.inf, math.nan
    for lag in range(max(1, math.ceil(min_lag * frame_rate)), n // 2 + 1):
        a, b = x[:-lag] - x[:-lag].mean(0), x[lag:] - x[lag:].mean(0)
        r = float((a * b).sum() / math.sqrt((a * a).sum() * (b * b).sum()))
        if r > best:
            best, best_lag = r, lag / frame_rate
    return best, best_lag


def test_loop_correlation_equals_the_naive_lag_loop() -> None:
    """Mutants: segment means taken over the whole clip, a lag off by one, lags past n/2."""
    rng = np.random.default_rng(2)
    for n, d in ((9, 1), (64, 3), (400, 40)):
        x = rng.standard_normal((n, d)).cumsum(axis=0) + 30.0
        got, lag = S.loop_correlation(x, 10.0, 0.25)
        want, want_lag = _naive_loop(x, 10.0, 0.25)
        assert got == pytest.approx(want, abs=1e-9) and lag == want_lag
    period = rng.standard_normal((37, 4))
    r, lag = S.loop_correlation(np.tile(period, (6, 1)), 10.0, 0.5)
    assert r == pytest.approx(1.0, abs=1e-9) and lag in (3.7, 7.4, 11.1)  # ties to rounding
    # a period longer than half the clip is out of range: no lag past n // 2
    r, _ = S.loop_correlation(np.tile(rng.standard_normal((51, 4)), (2, 1))[:101], 10.0, 0.5)
    assert r < 0.9
    assert np.isnan(S.loop_correlation(np.ones((50, 3)), 10.0, 0.5)[0])  # constant
    assert np.isnan(S.loop_correlation(x[:8], 10.0, 0.5)[0])  # no lag of 0.5 s fits


def test_shaped_noise_follows_the_spectrum() -> None:
    rng = np.random.default_rng(3)
    target = np.where(np.linspace(0, 1, 513) < 0.25, 1.0, 1e-6)  # low-pass: 2 kHz at 16 kHz
    x = S.shaped_noise(target, 10 * SR, rng)
    assert x.std() == pytest.approx(1.0)
    p = mean_power_spectrum(x)
    assert p[300:].sum() < 1e-4 * p[:100].sum()
    assert np.std(10 * np.log10(p[10:120])) < 1.0  # flat where the target is flat


def naive_sustained(peaks: np.ndarray, lag: int) -> np.ndarray:
    """The literal loop: for each frame, each peak, look one bin either side two frames on."""
    t_n, k_n = peaks.shape
    out = []
    for t in range(t_n - 2 * lag):
        count = 0
        for k in range(k_n):
            if not peaks[t, k]:
                continue
            near = [j for j in (k - 1, k, k + 1) if 0 <= j < k_n]
            if any(peaks[t + lag, j] for j in near) and any(peaks[t + 2 * lag, j] for j in near):
                count += 1
        out.append(count)
    return np.array(out, dtype=np.float64)


def test_sustained_partials_equal_the_naive_loop_and_blocks_the_whole() -> None:
    """Mutants: no one-bin tolerance, one later window instead of two, frames off by one;
    the block counter dropping or double-counting the frames at a block boundary."""
    rng = np.random.default_rng(3)
    peaks = rng.random((60, 40)) < 0.15
    for lag in (1, 3, 4):
        np.testing.assert_array_equal(S.sustained_partials(peaks, lag),
                                      naive_sustained(peaks, lag))
    assert S.sustained_partials(peaks[:8], 4).size == 0  # no frame has both later windows

    x = melody(6.0, seed=4)
    n_fft, hop = S.analysis_sizes(SR)
    from audiolstm.evaluation.metrics import stft_power
    power = stft_power(x, n_fft, hop)
    whole = S.sustained_partials(S.spectral_peaks(power), n_fft // hop)
    counter = S.PartialCounter(n_fft // hop)
    for part in np.array_split(power, [5, 9, 10, 200, 201]):  # blocks shorter than 2 lag too
        counter.add(part)
    assert counter.frames == len(whole) and counter.total == whole.sum()
    assert counter.mean == pytest.approx(whole.mean())


def test_spectral_peaks_of_a_sine_of_noise_and_of_a_band_edge() -> None:
    """A sine on a bin is one peak per frame, at its bin; white noise's chance peaks are
    rare and never held; a band of noise with brick-wall edges has no peaks at its edges
    beyond noise's chance (a partial stands out on both sides). Mutants: prominence against one side, or
    against the mean of the whole frame, or no local-maximum test (the sine's main lobe
    would count 3 bins)."""
    n_fft, hop = S.analysis_sizes(SR)
    n = 4 * SR
    t = np.arange(n) / SR
    from audiolstm.evaluation.metrics import stft_power
    sine = stft_power(np.sin(2 * np.pi * (40 * SR / n_fft) * t), n_fft, hop)
    pk = S.spectral_peaks(sine)
    assert (pk.sum(axis=1) == 1).all() and pk[:, 40].all()
    assert (S.sustained_partials(pk, n_fft // hop) == 1).all()
    rng = np.random.default_rng(0)
    white = S.spectral_peaks(stft_power(rng.standard_normal(n), n_fft, hop))
    assert white.mean() < 0.01
    assert S.sustained_partials(white, n_fft // hop).sum() == 0
    freqs = np.fft.rfftfreq(n, 1 / SR)
    band = np.fft.irfft(np.fft.rfft(rng.standard_normal(n)) * ((freqs > 500) & (freqs < 2000)), n)
    band_pk = S.spectral_peaks(stft_power(band, n_fft, hop))
    edges = [int(round(f * n_fft / SR)) for f in (500, 2000)]
    at_edges = band_pk[:, [e + d for e in edges for d in range(-2, 3)]]
    assert at_edges.mean() < 0.02  # noise's chance rate (0.4 %), not a partial's
    assert S.sustained_partials(band_pk, n_fft // hop).sum() <= 1
    assert not S.spectral_peaks(np.zeros((3, 513))).any()  # silence: no peak, no warning


# ---------------------------------------------------------------------- known answers


@pytest.mark.parametrize("kind", ["synthetic", "melody"])
def test_held_out_real_audio_scores_about_one(data, refs, kind) -> None:
    """Clips of the same audio that the reference never saw score ≈ 1, flag nothing.
    Mutants: floor and ceiling swapped (real → 0), the clip's own mean not removed
    (melody clips in other keys drift), the floor not at the clip's length."""
    ref = refs[kind]
    scores = [S.score_clip(c, ref) for c in held_out(data[kind])]
    values = np.array([s.score for s in scores])
    assert 0.85 <= np.median(values) <= 1.15, values
    assert (values > 0.6).all() and (values < 1.4).all(), values
    for s in scores:
        assert not any(s.flags.values()), (s.flags, s)
        assert s.loop_corr < 0.6


@pytest.mark.parametrize("kind", ["synthetic", "melody"])
def test_shaped_noise_scores_about_zero_and_broken_audio_below(data, refs, kind) -> None:
    """Mutant: the ceiling drawn as white instead of shaped noise (shaped noise → > 0)."""
    ref = refs[kind]
    rng = np.random.default_rng(11)
    spectrum = mean_power_spectrum(data[kind][90 * SR :])
    n = ref.clip_samples
    noise = [S.score_clip(S.shaped_noise(spectrum, n, rng) * ref.level_std, ref).score
             for _ in range(3)]
    assert max(abs(v) for v in noise) < 0.1, noise
    assert S.score_clip(np.zeros(n), ref).score < -0.3
    sine = 0.1 * np.sin(2 * np.pi * 220 * np.arange(n) / SR)
    assert S.score_clip(sine, ref).score < -0.3


def test_each_failure_is_flagged_by_its_own_metric(data, refs) -> None:
    """Silence, white noise, a DC offset, a stuck loop and rumble with no held note each
    raise their own flag (and only theirs beside loudness, which silence and noise also
    change, and no partials, which silence and white noise have none of either)."""
    ref = refs["melody"]
    n = ref.clip_samples
    real = held_out(data["melody"])[2]
    rng = np.random.default_rng(5)

    silence = S.score_clip(np.zeros(n), ref)
    assert silence.silent and silence.silent_seconds == 10
    assert not (silence.noise_like or silence.dc or silence.loop)

    white = S.score_clip(rng.standard_normal(n) * ref.level_std, ref)
    assert white.noise_like and white.flatness_db == pytest.approx(-2.5, abs=0.3)
    assert white.flatness_ref_db < -20
    assert not (white.silent or white.dc or white.loop)

    offset = S.score_clip(real + 0.5 * ref.level_std, ref)
    assert offset.dc and offset.dc_offset == pytest.approx(0.5, abs=0.05)
    assert not (offset.silent or offset.noise_like or offset.loop)

    assert white.no_partials and white.partials == 0.0 and ref.partials > 3
    # low rumble (noise under 100 Hz) with clicks, as loud as the music: its flatness
    # reads tonal and its loudness passes; only the partials see that no note is held
    freqs = np.fft.rfftfreq(n, 1 / SR)
    rumble = np.fft.irfft(np.fft.rfft(rng.standard_normal(n)) * (freqs < 100), n)
    rumble[rng.integers(0, n, 60)] += 4 * rumble.std()
    rumble *= ref.level_std / rumble.std()
    low = S.score_clip(rumble, ref)
    assert low.no_partials and low.partials < 0.05 * ref.partials
    assert not (low.silent or low.noise_like or low.dc or low.loop)
    assert not S.score_clip(real, ref).no_partials

    stuck = np.tile(real[: int(0.7 * SR)], 20)[:n]
    loop = S.score_clip(stuck, ref)
    assert loop.loop and loop.loop_corr > 0.95
    assert loop.loop_lag_seconds == pytest.approx(0.7 * round(loop.loop_lag_seconds / 0.7),
                                                  abs=0.02)
    assert not (loop.silent or loop.noise_like or loop.dc)


def test_a_flagged_clip_never_outranks_a_clean_one(data, refs) -> None:
    """`rank_key` (best-audio.ckpt, rank=score): white noise given a higher score than a
    clean real clip still ranks below it; between equally flagged clips the score
    decides; `flag_count` counts the raised flags. Mutant caught: a key of the score
    alone (the noise wins), or of flags that ignore one of them (`loop`)."""
    import dataclasses

    ref = refs["melody"]
    real = S.score_clip(held_out(data["melody"])[2], ref)
    white = S.score_clip(np.random.default_rng(5).standard_normal(ref.clip_samples)
                         * ref.level_std, ref)
    assert real.flag_count == 0 and white.noise_like and white.flag_count >= 1
    loud_noise = dataclasses.replace(white, score=real.score + 1.0)
    assert real.rank_key > loud_noise.rank_key
    assert dataclasses.replace(real, score=0.1).rank_key < real.rank_key
    looped = dataclasses.replace(real, loop=True, score=real.score + 1.0)
    assert looped.flag_count == 1 and looped.rank_key < real.rank_key
    # equally flagged noise: the less noise-like first, whatever the scores (the score
    # is blind to noise); unflagged clips have no noise excess, so the score decides
    assert real.noise_excess_db == 0.0 and white.noise_excess_db == pytest.approx(
        white.flatness_db - white.flatness_ref_db)
    dull_noise = dataclasses.replace(white, flatness_db=white.flatness_ref_db + 7.0,
                                     score=white.score - 1.0)
    assert dull_noise.flags == white.flags and dull_noise.noise_excess_db == pytest.approx(7.0)
    assert white.noise_excess_db > 7.0 and dull_noise.rank_key > white.rank_key
    assert dataclasses.replace(real, flatness_db=real.flatness_ref_db + 3.0).rank_key == \
        real.rank_key  # within the tolerance: not noise-like, no excess
    assert white.to_dict()["audio_noise_excess_db"] == white.noise_excess_db
    assert tuple(real.flags) == S.AudioScore.FLAG_NAMES


def test_rms_per_second_is_relative_to_the_reference_median(refs) -> None:
    ref = refs["melody"]
    n = ref.clip_samples
    x = np.ones(n) * ref.rms_median * 2.0
    x[: 3 * SR] *= 0.05  # three seconds at 0.1 x the median second
    s = S.score_clip(x, ref)
    np.testing.assert_allclose(s.rms_per_second, [0.1] * 3 + [2.0] * 7, rtol=1e-9)
    assert s.loudness_off and s.rms_min == pytest.approx(0.1)
    assert s.silent_seconds == 0  # -20 dB is quiet, not silent (-40 dB)
    ref_x = S.build_reference(np.tile(x, 3), SR, CLIP)  # median second: 2 x ref.rms_median
    assert S.score_clip(x * 0.0101, ref_x).silent_seconds == 3  # -20 - 40 dB: silent
    assert S.score_clip(x * 0.0099, ref_x).silent_seconds == 10  # just under -40 dB


def test_to_dict_is_flat_prefixed_and_json_ready(data, refs) -> None:
    s = S.score_clip(np.zeros(refs["melody"].clip_samples), refs["melody"])
    d = s.to_dict()
    assert all(k.startswith("audio_") for k in d)
    assert {"audio_score", "audio_fd", "audio_flatness_db", "audio_silent_seconds",
            "audio_rms_per_second", "audio_loop", "audio_dc", "audio_noise_like",
            "audio_rms_min", "audio_rms_max", "audio_partials", "audio_partials_ref",
            "audio_no_partials"} <= set(d)
    assert isinstance(d["audio_rms_per_second"], list)
    json.dumps(json_safe(d), allow_nan=False)  # nan (the silent clip's flatness) -> null
    assert all(k.startswith("audio_ref_") for k in refs["melody"].to_dict())


def test_reference_pieces_never_make_a_window_across_a_boundary(data) -> None:
    """Two pieces give the windows of each, not of their concatenation."""
    x = data["melody"][90 * SR :]
    one = S.build_reference(x, SR, CLIP)
    two = S.build_reference([x[: 30 * SR], x[30 * SR :]], SR, CLIP)
    assert one.windows == 11 and two.windows == 5 + 5
    assert two.seconds == one.seconds == 60.0


def test_floor_and_ceiling_equal_a_literal_recomputation(data) -> None:
    """Reference: every window cut from each piece's whole log-mel by slicing, the pooled
    covariance and each floor window's rest by plain means over lists. Mutants: windows
    of another length or stride, a window across pieces, overlapping windows kept in the
    rest, the ceiling's noise drawn another way."""
    x = data["melody"][90 * SR :]
    pieces = [x[: 27 * SR], x[27 * SR : 30 * SR], x[30 * SR :]]  # the middle one: no window
    clip = 4.0
    ref = S.build_reference(pieces, SR, clip, seed=7)
    an = ref.analysis
    seg = an.frames(int(clip * SR)) // 2
    windows = []  # (piece, index, cov)
    for i, p in enumerate(pieces):
        frames = an.log_mel(p)
        for k in range((len(frames) // seg) - 1):
            windows.append((i, k, S.centred_cov(frames[k * seg : (k + 2) * seg])))
    assert ref.windows == len(windows) == 12 + 0 + 14
    np.testing.assert_allclose(ref.cov, np.mean([c for *_, c in windows], axis=0), rtol=1e-9)
    picks = sorted({int((j + 0.5) * len(windows) / S.FLOOR_CLIPS) for j in range(8)})
    floors = []
    for j in picks:
        i, k, cov = windows[j]
        rest = [c for (i2, k2, c) in windows if not (i2 == i and abs(k2 - k) <= 1)]
        floors.append(S._fd(cov, np.mean(rest, axis=0)))
    np.testing.assert_allclose(ref.fd_floor_clips, floors, rtol=1e-8)
    assert ref.fd_floor == pytest.approx(float(np.median(floors)))
    rng = np.random.default_rng(7)
    spectrum = np.mean(np.concatenate([np.concatenate([p for p, _ in an.blocks(q)])
                                       for q in pieces]), axis=0)
    ceilings = [S._fd(S.centred_cov(an.log_mel(
        S.shaped_noise(spectrum, int(clip * SR), rng) * ref.level_std)), ref.cov)
        for _ in range(S.CEILING_DRAWS)]
    np.testing.assert_allclose(ref.fd_ceiling_draws, ceilings, rtol=1e-8)


# ---------------------------------------------------------------------------- bad input


def test_bad_references_and_settings_are_one_line_errors(data) -> None:
    x = data["melody"][90 * SR :]
    with pytest.raises(UserError, match=r"^reference=f\.wav: the reference is silent"):
        S.build_reference(np.zeros(60 * SR), SR, CLIP, name="reference=f.wav")
    with pytest.raises(UserError, match="shorter than two 10 s clips"):
        S.build_reference(x[: 15 * SR], SR, CLIP)
    with pytest.raises(UserError, match="shorter than two 10 s clips"):  # no piece long enough
        S.build_reference([x[: 15 * SR], x[15 * SR : 30 * SR]], SR, CLIP)
    with pytest.raises(UserError, match="at least 1 s"):
        S.build_reference(x, SR, 0.5)
    for key, value in (("silence_db", 0.0), ("silence_db", -200.0), ("rms_low", 1.0),
                       ("rms_high", 0.5), ("flatness_tolerance_db", -1.0),
                       ("dc_threshold", 0.0), ("loop_threshold", 1.5), ("loop_min_lag", 0.0),
                       ("partials_fraction", 0.0), ("partials_fraction", 1.0),
                       ("loop_threshold", "high"), ("silence_db", True)):
        with pytest.raises(UserError, match=rf"^score\.{key}={value!r} must"):
            S.ScoreSettings.from_mapping({key: value})
    with pytest.raises(UserError, match=r"^callbacks\.x\.score\.silence is not a score setting"):
        S.ScoreSettings.from_mapping({"silence": -30}, prefix="callbacks.x.score")
    assert S.ScoreSettings.from_mapping({"silence_db": -50}).silence_db == -50


def test_clip_of_another_length_is_refused(refs) -> None:
    with pytest.raises(ValueError, match="calibrated for 10 s clips"):
        S.score_clip(np.zeros(5 * SR), refs["melody"])
