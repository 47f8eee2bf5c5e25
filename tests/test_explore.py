"""`python explore.py`: the analysis functions against naive references and the drone's TRUTH,
panel selection on any length, and the command end to end (outputs, errors)."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from audiolstm.analysis import explore as E
from audiolstm.data.synth import TRUTH, synth_drone

ROOT = Path(__file__).resolve().parent.parent
SR = 16_000


# ----------------------------------------------------------------------------- panels


def test_select_panels_three_hours_has_every_panel_at_the_right_place() -> None:
    n = 3 * 3600 * SR
    kept, skipped = E.select_panels(n, SR)
    assert skipped == []
    assert [p.index for p in kept] == list(range(1, 16))
    by_slug = {p.slug: p for p in kept}
    minute = 60 * SR
    assert (by_slug["first_1s"].start, by_slug["first_1s"].stop) == (0, SR)
    assert (by_slug["first_2min"].start, by_slug["first_2min"].stop) == (0, 2 * minute)
    assert (by_slug["minute_2"].start, by_slug["minute_2"].stop) == (minute, 2 * minute)
    assert (by_slug["minute_100"].start, by_slug["minute_100"].stop) == (99 * minute, 100 * minute)
    # "the 5th minute from the end" = [end - 5 min, end - 4 min)
    p5 = by_slug["minute_5_from_end"]
    assert (p5.start, p5.stop) == (n - 5 * minute, n - 4 * minute)
    p20 = by_slug["minute_20_from_end"]
    assert (p20.start, p20.stop) == (n - 20 * minute, n - 19 * minute)
    assert (by_slug["last_minute"].start, by_slug["last_minute"].stop) == (n - minute, n)
    names = [p.filename for p in kept]
    assert len(set(names)) == 15 and names[0] == "01_first_1s.png"
    assert all(re.fullmatch(r"\d\d_[a-z0-9_]+\.png", f) for f in names)
    assert by_slug["minute_100"].title == "100th minute (1:39:00–1:40:00)"


@pytest.mark.parametrize(
    ("seconds", "kept_slugs"),
    [
        (180, ["first_1s", "first_5s", "first_10s", "first_30s", "first_1min", "first_2min",
               "minute_2", "minute_3", "last_minute"]),
        (20, ["first_1s", "first_5s", "first_10s"]),
        (6000, None),  # exactly 100 minutes: the 100th minute fits
    ],
)
def test_select_panels_skips_what_lies_beyond_the_end(seconds: int, kept_slugs) -> None:
    kept, skipped = E.select_panels(seconds * SR, SR)
    if kept_slugs is not None:
        assert [p.slug for p in kept] == kept_slugs
    assert len(kept) + len(skipped) == len(E.PANEL_SPECS)
    assert all(0 <= p.start < p.stop <= seconds * SR for p in kept)
    assert all(s["reason"] for s in skipped)
    if seconds == 6000:
        assert "minute_100" in [p.slug for p in kept]
        assert "minute_100" in [s["slug"] for s in E.select_panels(6000 * SR - 1, SR)[1]]


def test_select_panels_tiny_file_gets_the_whole_file() -> None:
    kept, skipped = E.select_panels(SR // 2, SR)
    assert [(p.index, p.slug, p.start, p.stop) for p in kept] == [(0, "whole_file", 0, SR // 2)]
    assert len(skipped) == len(E.PANEL_SPECS)
    assert E.select_panels(0, SR)[0] == []


def test_clock() -> None:
    assert E.clock(0) == "0:00"
    assert E.clock(59.5) == "0:59.500"
    assert E.clock(3600 + 62) == "1:01:02"


# ----------------------------------------------------------------------------- streaming math


@pytest.mark.parametrize("n", [1, 999, 1000, 12_345])
def test_minmax_decimate_matches_naive(n: int) -> None:
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    values, bucket = E.minmax_decimate(x, 100, chunk=257)
    if n <= 100:
        assert bucket == 1 and np.array_equal(values, x)
        return
    assert values.size <= 100
    expect = []
    for a in range(0, n, bucket):
        expect += [x[a:a + bucket].min(), x[a:a + bucket].max()]
    np.testing.assert_array_equal(values, np.array(expect, dtype=np.float32))
    assert values.min() == x.min() and values.max() == x.max()


def test_rms_envelope_matches_naive() -> None:
    x = np.random.default_rng(0).standard_normal(10_007).astype(np.float32)
    env = E.rms_envelope(x, 100, chunk=333)
    naive = [math.sqrt(np.mean(x[i:i + 100].astype(np.float64) ** 2)) for i in range(0, 10_000, 100)]
    np.testing.assert_allclose(env, naive, rtol=1e-12)
    assert E.rms_envelope(x[:50], 100).size == 0


def test_moments_match_numpy_and_merge() -> None:
    x = (np.random.default_rng(1).standard_normal(50_001) * 3 + 0.5).astype(np.float32)
    m = E.moments(x, chunk=4096)
    x64 = x.astype(np.float64)
    assert m.n == x.size
    assert m.mean == pytest.approx(x64.mean(), rel=1e-12)
    assert m.std == pytest.approx(x64.std(), rel=1e-12)
    assert m.rms == pytest.approx(math.sqrt(np.mean(x64**2)), rel=1e-12)
    assert (m.min, m.max) == (x.min(), x.max())
    merged = E.moments(x[:20_000]).merge(E.moments(x[20_000:])).merge(E.moments(x[:0]))
    assert merged.std == pytest.approx(m.std, rel=1e-12)
    assert math.isnan(E.moments(x[:0]).std)


def test_autocorrelation_matches_unbiased_naive() -> None:
    x = np.random.default_rng(2).standard_normal(300)
    r = E.autocorrelation(x)
    v = x - x.mean()
    naive = np.array([np.dot(v[: 300 - k], v[k:]) / (300 - k) for k in range(300)])
    np.testing.assert_allclose(r, naive / naive[0], atol=1e-12)
    assert not E.autocorrelation(np.ones(50)).any()


def _pulsing_envelope(period: float, seconds: float, rate: float = 20.0, seed: int = 0,
                      alternate: float = 1.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    height = np.where(np.floor(t / period) % 2 == 0, 1.0, alternate)
    noise = 0.05 * np.random.default_rng(seed).standard_normal(t.size)
    return 0.2 + height * np.sin(np.pi * t / period) ** 2 + noise


@pytest.mark.parametrize("period", [1.7, 4.2857, 7.0, 13.3])
def test_pulsation_period_sub_sample_precise(period: float) -> None:
    est = E.pulsation_period(_pulsing_envelope(period, 120), 20.0, 1.0, 20.0)
    assert est.period_seconds == pytest.approx(period, rel=0.005)  # 1/20 s steps: interpolated
    assert est.per_minute == pytest.approx(60 / period, rel=0.005)
    assert est.strength > 0.8


def test_pulsation_period_takes_the_first_strong_peak_not_a_multiple() -> None:
    # alternate swells of 1 and 0.6: the autocorrelation is highest at 2P, yet P is the period
    env = _pulsing_envelope(5.0, 200, alternate=0.6)
    r = E.autocorrelation(env)
    assert r[200] > r[100]
    assert E.pulsation_period(env, 20.0, 1.0, 20.0).period_seconds == pytest.approx(5.0, rel=0.01)
    # ... unless the peak at P is below the strength fraction: then a multiple of 2P wins
    multiple = E.pulsation_period(env, 20.0, 1.0, 20.0, peak_fraction=1.0).period_seconds
    assert multiple > 9 and multiple == pytest.approx(10.0 * round(multiple / 10), rel=0.01)


def test_pulsation_period_none_found() -> None:
    assert math.isnan(E.pulsation_period(np.ones(2000), 20.0).period_seconds)
    assert math.isnan(E.pulsation_period(np.arange(2000.0), 20.0).period_seconds)  # monotone
    short = _pulsing_envelope(7.0, 10)  # under two cycles: no search range left
    assert math.isnan(E.pulsation_period(short, 20.0, 1.0, 20.0).period_seconds)


def test_regional_periods_follow_a_change() -> None:
    env = np.concatenate([_pulsing_envelope(7.0, 60, seed=1), _pulsing_envelope(3.0, 90, seed=2)])
    regions = E.regional_periods(env, 20.0, 60.0)
    assert [(r["start_seconds"], r["end_seconds"]) for r in regions] == [(0, 60), (60, 120),
                                                                        (120, 150)]
    assert regions[0]["period_seconds"] == pytest.approx(7.0, rel=0.02)
    assert regions[1]["period_seconds"] == pytest.approx(3.0, rel=0.02)
    # a last region under half the size is dropped
    assert len(E.regional_periods(env[: 20 * 140], 20.0, 60.0)) == 2


def test_first_and_last_loud_sample() -> None:
    x = np.zeros(20_000, dtype=np.float32)
    x[5_000:15_000] = 0.5
    x[100] = 0.9  # a lone click in the lead-in: its 10 ms window's RMS is below the threshold
    assert E.first_loud_sample(x, 0.2, 160, chunk=1000) == 5_000
    assert E.last_loud_sample(x, 0.2, 160, chunk=1000) == 14_999
    assert E.first_loud_sample(np.zeros(1000), 0.1, 160) is None
    # the file's last window may be partial
    y = np.zeros(1_000, dtype=np.float32)
    y[-3:] = 1.0
    assert E.first_loud_sample(y, 0.1, 160) == 997


@pytest.mark.parametrize(("length", "back"), [(37, 0), (37, 5), (120, 2)])
def test_fit_fade_recovers_a_ramp_on_a_drifting_level(length: int, back: int) -> None:
    n = 300
    j = np.arange(n) - (n - back - length)
    ramp = 0.5 * (1 + np.cos(np.pi * (j + 0.5) / length))
    gain = np.where(j < 0, 1.0, np.where(j < length, ramp, 0.0))
    level = (1.0 + 0.1 * np.linspace(-1, 1, n)) * gain
    got_length, got_back, sse = E.fit_fade(level, max_back=10, min_flat=20)
    assert (got_length, got_back) == (length, back)
    assert sse == pytest.approx(0.0, abs=1e-9)


# ----------------------------------------------------------------------------- the drone's truth


@pytest.mark.parametrize(("seconds", "seed"), [(150.0, 1), (237.0, 2)])
def test_recovers_the_drones_truth(seconds: float, seed: int) -> None:
    x = synth_drone(seconds, SR, seed)
    rms = E.moments(x).rms
    first = E.first_loud_sample(x, 0.01 * rms, 160)
    last = E.last_loud_sample(x, 0.01 * rms, 160)
    assert first / SR == pytest.approx(TRUTH.lead_in_seconds, abs=0.1)
    assert first >= round(TRUTH.lead_in_seconds * SR)  # the lead-in is digital silence
    env = E.rms_envelope(x, 800)
    regions = E.regional_periods(env, 20.0, 60.0)
    assert regions[0]["period_seconds"] == pytest.approx(TRUTH.pulse_period_early, rel=0.05)
    assert regions[1]["period_seconds"] == pytest.approx(TRUTH.pulse_period_late, rel=0.05)
    assert regions[-1]["period_seconds"] == pytest.approx(TRUTH.pulse_period_late, rel=0.05)
    fade = E.estimate_fade(x, SR, first, last + 1, regions[-1]["period_seconds"])
    assert fade["seconds"] == pytest.approx(TRUTH.fade_seconds, abs=0.1)
    assert fade["end_seconds"] == pytest.approx(seconds, abs=0.1)


# ----------------------------------------------------------------------------- in-process study


def test_short_file_skips_panels_and_survives_no_period(tmp_path: Path) -> None:
    x = synth_drone(20.0, SR, 0)
    r = E.explore_signal(x, SR, {"source": "synthetic"}, E.ExploreOptions(), tmp_path)
    assert [p["slug"] for p in r["panels"]] == ["first_1s", "first_5s", "first_10s"]
    assert len(r["skipped_panels"]) == 12
    for f in r["files"]:
        assert (tmp_path / f).is_file(), f
    assert not list(tmp_path.rglob("*.tmp"))
    # 20 s: regions shorter than two 7-s cycles leave the period search nothing or a guess,
    # but nothing fails and the JSON stays valid (nan -> null)
    data = json.loads((tmp_path / "explore.json").read_text())
    assert data["silence"]["lead_in_seconds"] == pytest.approx(TRUTH.lead_in_seconds, abs=0.01)


def test_silent_and_tiny_files_are_described_not_failed(tmp_path: Path) -> None:
    r = E.explore_signal(np.zeros(SR // 2, dtype=np.float32), SR, {"source": "x"},
                         E.ExploreOptions(), tmp_path)
    assert r["silence"]["silent"] and r["silence"]["lead_in_samples"] == SR // 2
    assert [p["slug"] for p in r["panels"]] == ["whole_file"]
    assert "silent" in r["normalization"]["std"]["error"]
    assert r["normalization"]["none"]["splits"]["train"]["max"] == 0.0
    data = json.loads((tmp_path / "explore.json").read_text())
    assert data["fade_out"]["seconds"] is None and data["pulsation"]["overall"]["period_seconds"] is None
    assert "whole file" in (tmp_path / "explore.md").read_text()


def test_options_are_validated() -> None:
    with pytest.raises(E.UserError, match="pulse_max_seconds"):
        E.ExploreOptions(pulse_min_seconds=30.0)
    with pytest.raises(E.UserError, match="splits"):
        E.ExploreOptions(splits=(0.5, 0.5, 0.5))
    with pytest.raises(E.UserError, match="envelope_hz"):
        E.ExploreOptions(envelope_hz=0)
    with pytest.raises(E.UserError, match="max_panel_samples"):
        E.ExploreOptions(max_panel_samples=10)


def test_config_composes_with_the_training_data_group(tmp_path: Path) -> None:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from audiolstm.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("explore", overrides=["data=wav", "data.path=/x.wav", "data.splits=[0.6,0.2,0.2]",
                                            f"paths.cache_dir={tmp_path}"])
    assert cfg.task_name == "explore" and cfg.data.source == "wav"
    assert OmegaConf.to_container(cfg.data)["x_len"] == 2000  # the DataConfig schema applies
    opts = E.ExploreOptions.from_cfg(cfg)
    assert opts.splits == (0.6, 0.2, 0.2)  # `splits` follows data.splits
    assert opts == E.ExploreOptions(splits=(0.6, 0.2, 0.2))  # defaults match the yaml


# ----------------------------------------------------------------------------- the command


def _explore(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AUDIOLSTM_CACHE_DIR": str(tmp_path / "cache")}
    return subprocess.run(
        [sys.executable, str(ROOT / "explore.py"), f"hydra.run.dir={tmp_path / 'run'}", *overrides],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )


@pytest.mark.slow  # ~15-30 s on 2 cores: runs in CI (make test-slow)
def test_explore_command_on_three_minutes(tmp_path: Path) -> None:
    proc = _explore(tmp_path, "data.synth_seconds=180")
    assert proc.returncode == 0, proc.stderr
    run = tmp_path / "run"
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and str(run) in lines[0]
    r = json.loads((run / "explore.json").read_text())

    # every panel that fits, one file each, plus the grid and the other figures
    assert [p["index"] for p in r["panels"]] == [1, 2, 3, 4, 5, 6, 7, 8, 15]
    pngs = ["waveforms.png", "spectrogram.png", "envelope.png", "pulsation.png",
            "autocorrelation.png"] + [p["file"] for p in r["panels"]]
    for name in pngs + ["explore.md", "explore.html", "explore.json", "envelope.npy"]:
        assert (run / name).is_file(), name
    assert sorted(f.name for f in (run / "waveforms").iterdir()) == sorted(
        Path(p["file"]).name for p in r["panels"])
    assert not list(run.rglob("*.tmp"))

    # the drone's known structure, recovered
    regions = r["pulsation"]["regions"]
    early, late = regions[0]["period_seconds"], regions[1]["period_seconds"]
    assert early == pytest.approx(TRUTH.pulse_period_early, rel=0.05)
    assert late == pytest.approx(TRUTH.pulse_period_late, rel=0.05)
    assert r["silence"]["lead_in_seconds"] == pytest.approx(TRUTH.lead_in_seconds, abs=0.1)
    assert r["fade_out"]["seconds"] == pytest.approx(TRUTH.fade_seconds, abs=0.1)
    assert r["splits"]["train"]["end_seconds"] == pytest.approx(144.0)
    assert set(r["normalization"]) == {"minmax", "minmax_union", "minmax01", "std", "none"}
    assert r["normalization"]["minmax"]["splits"]["train"]["max"] <= 1.0 + 1e-9
    assert r["normalization"]["std"]["splits"]["train"]["std"] == pytest.approx(1.0)
    assert r["normalization"]["minmax01"]["splits"]["train"]["min"] == pytest.approx(0.0)
    assert len(np.load(run / "envelope.npy")) == 180 * 20

    # the HTML stands alone: every image inlined, the numbers in its tables
    page = (run / "explore.html").read_text()
    srcs = re.findall(r'src="([^"]*)"', page)
    assert len(srcs) == len(pngs) and all(s.startswith("data:image/png;base64,") for s in srcs)
    for number in (f"{early:.4g}", f"{late:.4g}", f"{r['silence']['lead_in_seconds']:.4g}",
                   f"{r['fade_out']['seconds']:.4g}", f"{r['whole']['std']:.4g}"):
        assert f"<td>{number}</td>" in page, number
    md = (run / "explore.md").read_text()
    assert "](waveforms.png)" in md and f"| {late:.4g} |" in md


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["data=wav", "data.path=/nope.wav"], "/nope.wav: no such file"),
        (["data=wav"], "data.path is required"),
        (["pulse_min_seconds=30"], "pulse_max_seconds"),
    ],
)
def test_explore_command_bad_input_is_one_line(tmp_path: Path, overrides, needle: str) -> None:
    proc = _explore(tmp_path, *overrides)
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and needle in err[0] and err[0].startswith("error: ")
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run" / "explore.json").exists()
