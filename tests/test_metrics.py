"""Metrics against hand-computed values and signals whose answer is known."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from audiolstm.atomic import json_safe
from audiolstm.evaluation import metrics as M

SR = 16_000


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _band_limited_noise(n: int, cutoff_hz: float, seed: int = 0) -> np.ndarray:
    spec = np.fft.rfft(_rng(seed).standard_normal(n))
    spec[np.fft.rfftfreq(n, 1.0 / SR) > cutoff_hz] = 0.0
    return np.fft.irfft(spec, n)


def _naive_tick_score(x: np.ndarray, frame_len: int, start: int) -> float:
    """Reference: loop over every difference inside audio[start:]."""
    at, other = [], []
    for i in range(start + 1, len(x)):
        d = abs(float(x[i]) - float(x[i - 1]))
        is_boundary = (i - start) % frame_len == 0
        (at if is_boundary else other).append(d)
    return float(np.mean(at) / np.mean(other))


# ------------------------------------------------------------------------ tick score


def test_tick_score_hand_made() -> None:
    x = np.array([0, 1, 2, 10, 11, 12, 20], dtype=np.float32)
    # boundaries at 3 and 6: jumps 8 and 8; elsewhere 1,1,1,1
    assert M.tick_score(x, 3) == pytest.approx(8.0, abs=1e-12)
    # start=1: audio[1:] = [1,2,10,11,12,20]; only boundary at 4 (jump 11-10=1);
    # elsewhere 1, 8, 1, 8 -> 1 / 4.5.
    assert M.tick_score(x, 3, start=1) == pytest.approx(1 / 4.5, abs=1e-12)


def test_tick_score_matches_naive_reference() -> None:
    x = _rng(3).standard_normal(1003)
    for frame_len, start in [(7, 0), (50, 13), (100, 999 - 200), (1, 0)]:
        if frame_len == 1:
            assert math.isnan(M.tick_score(x, frame_len, start))  # nothing "elsewhere"
            continue
        assert M.tick_score(x, frame_len, start) == pytest.approx(
            _naive_tick_score(x, frame_len, start), rel=1e-12
        )


def test_tick_score_near_one_on_natural_signals() -> None:
    t = np.arange(SR * 20) / SR
    sine = np.sin(2 * np.pi * 441.7 * t)
    assert M.tick_score(sine, 160) == pytest.approx(1.0, abs=0.1)
    noise = _band_limited_noise(2000 * 160, 3000.0)
    assert M.tick_score(noise, 160) == pytest.approx(1.0, abs=0.1)


def test_tick_score_large_with_planted_jumps() -> None:
    frame_len = 160
    n_frames = 500
    t = np.arange(frame_len * n_frames) / SR
    sine = 0.5 * np.sin(2 * np.pi * 441.7 * t)
    offsets = np.repeat(np.where(np.arange(n_frames) % 2 == 0, 0.5, -0.5), frame_len)
    ticked = sine + offsets
    assert M.tick_score(ticked, frame_len) > 5.0
    assert M.tick_score(sine, frame_len) < 1.2


def test_tick_score_nan_cases() -> None:
    assert math.isnan(M.tick_score(np.arange(5.0), 10))  # no boundary
    assert math.isnan(M.tick_score(np.zeros(100), 10))  # silent: denominator 0
    assert math.isnan(M.tick_score(np.arange(30.0), 10, start=25))  # start past boundaries
    with pytest.raises(ValueError):
        M.tick_score(np.zeros(10), 0)


# ------------------------------------------------------------------------------ RMS


def test_rms_and_ratio_exact() -> None:
    assert M.rms(np.array([3.0, -4.0])) == pytest.approx(math.sqrt(12.5))
    assert M.rms(np.full(10, -2.0)) == 2.0
    assert M.rms_ratio(np.full(8, 3.0), np.full(5, 2.0)) == 1.5
    assert M.rms_ratio(np.array([1.0, -1.0]), np.array([2.0, -2.0, 2.0])) == 0.5
    assert math.isnan(M.rms_ratio(np.ones(4), np.zeros(4)))
    assert math.isnan(M.rms(np.zeros(0)))


def test_rms_ratio_at_windows() -> None:
    sr = 10
    gen = np.concatenate([np.full(10, 1.0), np.full(10, 2.0), np.full(10, -3.0)])
    seed = np.full(7, 2.0)
    out = M.rms_ratio_at(gen, seed, sr, (1, 2, 3, 2.5, 5))
    assert out["rms_ratio_1s"] == 0.5  # window [0, 1)
    assert out["rms_ratio_2s"] == 1.0  # window [1, 2)
    assert out["rms_ratio_3s"] == 1.5  # window [2, 3)
    assert out["rms_ratio_2.5s"] == pytest.approx(math.sqrt((5 * 4 + 5 * 9) / 10) / 2)
    assert math.isnan(out["rms_ratio_5s"])  # audio shorter than 5 s
    assert set(M.rms_ratio_at(gen, seed, sr)) == {"rms_ratio_2s", "rms_ratio_5s", "rms_ratio_10s"}
    assert all(math.isnan(v) for v in M.rms_ratio_at(gen, np.zeros(3), sr, (2,)).values())


# ----------------------------------------------------------------------- spectra


def test_log_spectral_distance_properties() -> None:
    a = _rng(1).standard_normal(SR * 2)
    b = _rng(2).standard_normal(SR * 3)  # different length and realisation, same spectrum
    low = _band_limited_noise(SR * 2, 2000.0, seed=4)
    assert M.log_spectral_distance(a, a) == 0.0
    # scaling by c shifts every bin by exactly 20 log10(c) dB
    assert M.log_spectral_distance(a, 2.0 * a) == pytest.approx(20 * math.log10(2.0), rel=1e-6)
    assert M.log_spectral_distance(a, 10.0 * a) == pytest.approx(20.0, rel=1e-6)
    d_ab, d_ba = M.log_spectral_distance(a, b), M.log_spectral_distance(b, a)
    assert d_ab == pytest.approx(d_ba, rel=1e-12)
    d_low = M.log_spectral_distance(a, low)
    assert 0.0 < d_ab < 1.0  # two white noises: same long-term spectrum
    assert d_low > 10 * d_ab  # low-passed noise: very different
    assert d_low == pytest.approx(M.log_spectral_distance(low, a), rel=1e-12)
    assert M.log_spectral_distance(np.ones(10), np.ones(10)) == 0.0  # shorter than n_fft
    assert math.isnan(M.log_spectral_distance(np.zeros(0), a))


def test_stft_power_matches_naive_and_blocks() -> None:
    x = _rng(5).standard_normal(5000)
    n_fft, hop = 64, 2  # > one block of frames
    p = M.stft_power(x, n_fft, hop)
    n_frames = (x.size - n_fft) // hop + 1
    assert p.shape == (n_frames, n_fft // 2 + 1)
    win = np.hanning(n_fft + 1)[:-1]
    for i in (0, 1, 2047, 2048, n_frames - 1):
        ref = np.abs(np.fft.rfft(x[i * hop : i * hop + n_fft] * win)) ** 2
        np.testing.assert_allclose(p[i], ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(M.mean_power_spectrum(x, n_fft, hop), p.mean(axis=0), rtol=1e-12)


# ------------------------------------------------------------------------ collapse


def test_frame_correlation() -> None:
    frame = _rng(6).standard_normal(400)
    assert M.frame_correlation(np.tile(frame, 50), 400) == pytest.approx(1.0, abs=1e-12)
    alternating = np.concatenate([frame, -frame] * 10)
    assert M.frame_correlation(alternating, 400) == pytest.approx(-1.0, abs=1e-12)
    noise = _rng(7).standard_normal(400 * 200)
    assert abs(M.frame_correlation(noise, 400)) < 0.03
    # constant frames are skipped, not counted as 0 or nan
    with_silence = np.concatenate([frame, frame, np.zeros(400), frame])
    assert M.frame_correlation(with_silence, 400) == pytest.approx(1.0, abs=1e-12)
    assert math.isnan(M.frame_correlation(np.zeros(4000), 400))
    assert math.isnan(M.frame_correlation(frame, 400))  # one frame: no pair


def test_frame_rate_energy_fraction() -> None:
    frame_len = 400
    frame = _rng(8).standard_normal(frame_len)
    loop = np.tile(frame, 100)
    assert M.frame_rate_energy_fraction(loop, frame_len, SR) > 0.99
    # a trailing partial frame and a little noise do not hide the loop
    noisy = np.concatenate([loop, frame[:123]]) + 0.01 * _rng(9).standard_normal(loop.size + 123)
    assert M.frame_rate_energy_fraction(noisy, frame_len, SR) > 0.99
    noise = _rng(10).standard_normal(frame_len * 100)
    frac = M.frame_rate_energy_fraction(noise, frame_len, SR)
    assert frac < 0.3
    assert frac == pytest.approx(3 / 100, abs=0.015)  # chance level: 3 bins in every m
    assert math.isnan(M.frame_rate_energy_fraction(noise[: 3 * frame_len], frame_len, SR))
    assert math.isnan(M.frame_rate_energy_fraction(np.ones(10 * frame_len), frame_len, SR))


def test_real_time_factor() -> None:
    assert M.real_time_factor(10.0, 2.0) == 5.0
    assert M.real_time_factor(10.0, 0.0) == math.inf
    assert math.isnan(M.real_time_factor(10.0, float("nan")))


# -------------------------------------------------------------------------- bundle


def test_generation_metrics_and_json_safe() -> None:
    seed = _band_limited_noise(SR * 3, 4000.0, seed=11)
    frame = seed[:400]
    generated = np.tile(frame, 40 * 6)  # 6 s of a collapsed loop
    m = M.generation_metrics(seed, generated, SR, 400, wall_seconds=3.0)
    assert m["generated_seconds"] == 6.0 and m["seed_seconds"] == 3.0
    assert m["real_time_factor"] == 2.0
    assert m["frame_correlation"] == pytest.approx(1.0)
    assert abs(m["frame_correlation_seed"]) < 0.2
    assert m["frame_rate_energy_fraction"] > 0.99
    assert m["frame_rate_energy_fraction_seed"] < 0.3
    assert m["tick_score_seed"] == pytest.approx(1.0, abs=0.15)
    assert math.isnan(m["rms_ratio_10s"]) and not math.isnan(m["rms_ratio_5s"])
    assert m["log_spectral_distance_db"] > 0
    assert all(type(v) is float for v in m.values())
    m2 = M.generation_metrics(seed, generated, SR, 400, wall_seconds=None)
    assert math.isnan(m2["real_time_factor"])
    text = json.dumps(json_safe(m2), allow_nan=False)
    assert json.loads(text)["real_time_factor"] is None


def test_json_safe_recursive() -> None:
    data = {
        "a": float("nan"),
        "b": [1.0, float("inf"), (-math.inf, np.float32(2.5))],
        "c": {"d": np.float64("nan"), "e": np.int64(3), "f": np.array([1.0, np.nan])},
        "g": "text",
        "h": None,
        "i": True,
        1: np.bool_(False),
    }
    out = json_safe(data)
    assert out == {
        "a": None,
        "b": [1.0, None, [None, 2.5]],
        "c": {"d": None, "e": 3, "f": [1.0, None]},
        "g": "text",
        "h": None,
        "i": True,
        "1": False,
    }
    assert type(out["c"]["e"]) is int and out["i"] is True
    json.dumps(out, allow_nan=False)
    assert math.isnan(data["a"])  # input untouched


# ------------------------------------------------------------------------ baselines


def test_baseline_mse_hand_computed() -> None:
    inputs = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [-1.0, 1.0]]])
    targets = torch.tensor([[[3.0, 4.0], [5.0, 6.0]], [[-1.0, 1.0], [2.0, 2.0]]])
    out = M.baseline_mse(inputs, targets)
    # zeros: (9+16+25+36 + 1+1+4+4) / 8 = 96 / 8
    assert out["mse_zero"].item() == pytest.approx(12.0)
    # persistence: diffs 2,2,2,2 and -1,1,3,1 -> (16 + 1+1+9+1) / 8 = 28 / 8
    assert out["mse_persistence"].item() == pytest.approx(3.5)
    assert out["mse_zero"].dtype == torch.float32 and out["mse_zero"].dim() == 0


def test_baseline_mse_matches_torch_and_needs_no_grad() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 7, 5, generator=g, requires_grad=True)
    y = torch.randn(4, 7, 5, generator=g)
    out = M.baseline_mse(x, y)
    assert not out["mse_persistence"].requires_grad
    expected = torch.nn.functional.mse_loss(x.detach().double(), y.double()).item()
    assert out["mse_persistence"].item() == pytest.approx(expected, rel=1e-6)
    assert out["mse_zero"].item() == pytest.approx((y.double() ** 2).mean().item(), rel=1e-6)
    with pytest.raises(ValueError):
        M.baseline_mse(x[:, :3], y)
