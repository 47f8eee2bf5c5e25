"""`explore.py` on a corpus (issue 12 item 7): each file's duration, RMS, peak, silence share
and split against naive per-file references, the study on the whole, and the command on a
folder of WAV files of different lengths and loudness."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiolstm.analysis.explore import ExploreOptions, explore_signal, file_table
from audiolstm.analysis.explore.corpus import file_ranges, level_and_silence
from audiolstm.analysis.explore.statistics import (
    contiguous_ranges,
    normalization_table,
    split_statistics,
)
from audiolstm.analysis.explore.study import split_marks
from audiolstm.data.normalize import SCHEMES, fit_normalizer
from audiolstm.data.splits import SPLITS
from audiolstm.errors import UserError
from tests.conftest import run_script

SR = 16_000
WINDOW = 160  # the default 10 ms silence window at 16 kHz


def _files(seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """Four tracks of different lengths and loudness; one starts with 1 s of silence."""
    rng = np.random.default_rng(seed)
    t = np.arange(4 * SR) / SR
    loud = 0.8 * np.sin(2 * np.pi * 220 * t[: 4 * SR])
    loud[:SR] = 0.0  # a 1 s digital-silence lead-in: 25 % of the file
    return [
        ("a_tone.wav", (0.5 * np.sin(2 * np.pi * 330 * t[: round(2.5 * SR)])).astype(np.float32)),
        ("b_quiet.wav", (0.02 * rng.standard_normal(11_713)).astype(np.float32)),  # 0.73 s
        ("c_late.wav", loud.astype(np.float32)),
        ("d_short.wav", (0.2 * rng.standard_normal(17_623)).astype(np.float32)),  # not whole windows
    ]


def _concat(files: list[tuple[str, np.ndarray]]) -> tuple[np.ndarray, list[tuple[str, int]]]:
    starts = np.cumsum([0] + [x.size for _, x in files[:-1]])
    return np.concatenate([x for _, x in files]), [(n, int(s)) for (n, _), s in zip(files, starts, strict=True)]


def _naive(x: np.ndarray, threshold: float, window: int) -> tuple[float, float, float]:
    """RMS, peak, silent share by the definition, one window at a time."""
    x64 = x.astype(np.float64)
    silent = 0
    for a in range(0, x.size, window):
        seg = x64[a:a + window]
        if math.sqrt(float(np.mean(seg**2))) <= threshold:
            silent += seg.size
    return math.sqrt(float(np.mean(x64**2))), float(np.max(np.abs(x64))), silent / x.size


def _cut_80_10_10(n: int) -> dict[str, tuple[int, int]]:
    """A file of n samples cut 80/10/10 by hand: ends at round(0.8 n) and round(0.9 n)."""
    a, b = round(0.8 * n), round(0.9 * n)
    return {"train": (0, a), "val": (a, b), "test": (b, n)}


def _per_file_time_split(bounds: list[tuple[str, int]], n: int) -> dict[str, list[tuple[int, int]]]:
    """Every file cut 80/10/10 (what data.split_by=time does): many ranges per split."""
    out: dict[str, list[tuple[int, int]]] = {s: [] for s in SPLITS}
    for _, a, b in file_ranges(bounds, n):
        for s, (lo, hi) in _cut_80_10_10(b - a).items():
            out[s].append((a + lo, a + hi))
    return out


# ----------------------------------------------------------------------------- the table


@pytest.mark.parametrize("per_file_split", [False, True])
def test_file_table_matches_a_naive_per_file_reference(per_file_split: bool) -> None:
    files = _files()
    signal, bounds = _concat(files)
    n = signal.size
    ranges = (_per_file_time_split(bounds, n) if per_file_split
              else contiguous_ranges(n, (0.8, 0.1, 0.1)))
    threshold = 0.01 * math.sqrt(float(np.mean(signal.astype(np.float64) ** 2)))
    rows = file_table(signal, SR, bounds, ranges, threshold, WINDOW)

    owner = np.empty(n, dtype=object)  # which split holds each sample
    for s, rs in ranges.items():
        for a, b in rs:
            owner[a:b] = s
    assert [r.name for r in rows] == [name for name, _ in files]
    for row, (_, x), (_, start) in zip(rows, files, bounds, strict=True):
        assert (row.start, row.stop, row.samples) == (start, start + x.size, x.size)
        assert row.duration_seconds == x.size / SR
        rms, peak, share = _naive(x, threshold, WINDOW)
        assert row.rms == pytest.approx(rms, rel=1e-12)
        assert row.peak == peak
        assert row.silence_share == pytest.approx(share, abs=1e-12)
        mine = owner[row.start:row.stop]
        assert row.split_samples == {s: int(np.count_nonzero(mine == s)) for s in SPLITS}
        held = [s for s in SPLITS if row.split_samples[s]]
        assert row.split == "+".join(held)
        d = row.as_dict()
        assert d["rms_dbfs"] == pytest.approx(20 * math.log10(rms))
        assert sum(d["split_seconds"].values()) == pytest.approx(row.duration_seconds)
    by_name = {r.name: r for r in rows}
    assert by_name["c_late.wav"].silence_share == pytest.approx(0.25, abs=WINDOW / (4 * SR))
    assert by_name["a_tone.wav"].silence_share == 0.0
    assert min(rows, key=lambda r: r.rms).name == "b_quiet.wav"
    if per_file_split:
        assert all(r.split == "train+val+test" for r in rows)
    else:  # contiguous over the concatenation: the first files train, the last test
        assert rows[0].split == "train" and rows[-1].split.endswith("test")


@pytest.mark.parametrize("n", [1, 159, 160, 161, 5_000, 70_001])
@pytest.mark.parametrize("chunk", [160, 1_000, 1 << 18])
def test_level_and_silence_does_not_depend_on_the_chunking(n: int, chunk: int) -> None:
    rng = np.random.default_rng(n)
    x = (rng.standard_normal(n) * np.where(np.arange(n) % 3000 < 1000, 0.001, 1.0))
    x = x.astype(np.float32)
    rms, peak, share = level_and_silence(x, 0.05, WINDOW, chunk=chunk)
    ref = _naive(x, 0.05, WINDOW)
    assert rms == pytest.approx(ref[0], rel=1e-12)
    assert peak == ref[1]
    assert share == pytest.approx(ref[2], abs=1e-12)


def test_silent_empty_and_unknown_threshold() -> None:
    assert level_and_silence(np.zeros(1000, np.float32), 0.0, WINDOW) == (0.0, 0.0, 1.0)
    assert all(math.isnan(v) for v in level_and_silence(np.zeros(0, np.float32), 0.1, WINDOW))
    assert math.isnan(level_and_silence(np.ones(10, np.float32), math.nan, WINDOW)[2])


# ----------------------------------------------------------------------------- statistics


def test_normalization_table_is_fit_normalizer_without_rereading() -> None:
    """The statistics' one pass per split gives what training's fit gives, scheme by scheme."""
    rng = np.random.default_rng(3)
    x = (rng.standard_normal(90_001) * np.linspace(0.2, 1.5, 90_001) + 0.3).astype(np.float32)
    ranges = contiguous_ranges(x.size, (0.7, 0.2, 0.1))
    parts = {s: x[a:b] for s, [(a, b)] in ranges.items()}
    table = normalization_table(SCHEMES, split_statistics(x, ranges))
    for scheme in SCHEMES:
        nz = fit_normalizer(scheme, parts["train"], {k: v for k, v in parts.items() if k != "train"})
        assert table[scheme]["shift"] == pytest.approx(nz.shift, rel=1e-12, abs=1e-15)
        assert table[scheme]["scale"] == pytest.approx(nz.scale, rel=1e-12)
        for s in SPLITS:
            shift, scale = nz.affine(s)
            got = table[scheme]["splits"][s]
            assert (got["shift"], got["scale"]) == pytest.approx((shift, scale), rel=1e-12)
            assert got["max"] == pytest.approx((float(parts[s].max()) - shift) / scale, rel=1e-9)
    assert table["minmax_union"]["splits"]["val"]["scale"] > table["minmax"]["scale"]
    silent = np.zeros(1000, np.float32)
    silent_table = normalization_table(SCHEMES, split_statistics(silent, contiguous_ranges(
        1000, (0.8, 0.1, 0.1))))
    for scheme in ("minmax", "std", "minmax01"):
        with pytest.raises(UserError) as e:
            fit_normalizer(scheme, silent[:800])
        assert silent_table[scheme] == {"error": str(e.value)}


def test_split_marks() -> None:
    ranges = contiguous_ranges(10 * SR, (0.8, 0.1, 0.1))
    assert split_marks(ranges, SR) == {"train|val": 8.0, "val|test": 9.0}
    signal, bounds = _concat(_files())
    assert split_marks(_per_file_time_split(bounds, signal.size), SR) == {}  # 11: too many


# ----------------------------------------------------------------------------- the study


def test_explore_signal_on_a_corpus(tmp_path: Path) -> None:
    signal, bounds = _concat(_files())
    ranges = _per_file_time_split(bounds, signal.size)
    meta = {"source": "folder", "path": "corpus", "boundaries": bounds}
    r = explore_signal(signal, SR, meta, ExploreOptions(), tmp_path, ranges, "every file 80/10/10")

    rows = r["corpus"]["files"]
    assert [f["name"] for f in rows] == [b[0] for b in bounds]
    assert r["corpus"]["split_rule"] == "every file 80/10/10"
    assert sum(f["duration_seconds"] for f in rows) == pytest.approx(signal.size / SR)
    # then the usual study on the whole, its splits made of one piece per file
    assert r["whole"]["samples"] == signal.size
    assert [len(r["splits"][s]["ranges_seconds"]) for s in SPLITS] == [4, 4, 4]
    assert r["splits"]["val"]["samples"] == sum(b - a for a, b in ranges["val"])
    assert "files.png" in r["files"]
    for f in r["files"]:
        assert (tmp_path / f).is_file(), f
    assert not list(tmp_path.rglob("*.tmp"))
    data = json.loads((tmp_path / "explore.json").read_text())
    assert data["corpus"]["files"][2]["silence_share"] == pytest.approx(0.25, abs=0.01)
    md = (tmp_path / "explore.md").read_text()
    assert "## Files (4)" in md and "](files.png)" in md
    assert re.search(r"\| 3 \| c_late\.wav \| 0:03\.232 \| 0:04 \| [-0-9.]+ \| [-0-9.]+ \| 25 \| "
                     r"train 0:03\.200, val 0:00\.400, test 0:00\.400 \|", md), md
    assert "4 pieces in" in md
    page = (tmp_path / "explore.html").read_text()
    assert "<td>c_late.wav</td>" in page
    assert len(re.findall(r'src="data:image/png;base64,', page)) == len(
        [f for f in r["files"] if f.endswith(".png")])


def test_one_file_has_no_corpus_section(tmp_path: Path) -> None:
    x = _files()[0][1]
    r = explore_signal(x, SR, {"source": "wav", "boundaries": [("a_tone.wav", 0)]},
                       ExploreOptions(), tmp_path)
    assert "corpus" not in r and "files.png" not in r["files"]
    assert not (tmp_path / "files.png").exists()
    assert "## Files" not in (tmp_path / "explore.md").read_text()


@pytest.mark.slow  # a fresh interpreter with Hydra: ~10 s, more on a busy machine
def test_explore_command_on_a_folder(tmp_path: Path) -> None:
    folder = tmp_path / "tracks"
    folder.mkdir()
    files = _files(1)
    for name, x in files:
        sf.write(folder / name, x, SR, subtype="FLOAT")  # float WAV: decoded exactly
    proc = run_script("explore.py", f"hydra.run.dir={tmp_path / 'run'}", "data=folder",
                      f"data.path={folder}")
    assert proc.returncode == 0, proc.stderr
    run = tmp_path / "run"
    r = json.loads((run / "explore.json").read_text())
    rows = r["corpus"]["files"]
    assert [f["name"] for f in rows] == sorted(name for name, _ in files)
    signal, bounds = _concat(files)
    n = signal.size
    assert r["source"]["num_samples"] == n
    # split_by=time (the default): every file is split by data.splits, as training does
    ranges: dict[str, list[tuple[int, int]]] = {s: [] for s in SPLITS}
    for (_, x), (_, start) in zip(files, bounds, strict=True):
        for s, (a, b) in _cut_80_10_10(x.size).items():
            ranges[s].append((start + a, start + b))
    threshold = 0.01 * math.sqrt(float(np.mean(signal.astype(np.float64) ** 2)))
    for f, (name, x), (_, start) in zip(rows, files, bounds, strict=True):
        assert (f["name"], f["start_sample"], f["end_sample"]) == (name, start, start + x.size)
        rms, peak, share = _naive(x, threshold, WINDOW)
        assert f["rms"] == pytest.approx(rms, rel=1e-9) and f["peak"] == pytest.approx(peak)
        assert f["silence_share"] == pytest.approx(share, abs=1e-12)
        a, b = start, start + x.size
        expect = {s: sum(max(0, min(b, hi) - max(a, lo)) for lo, hi in rs) / SR
                  for s, rs in ranges.items()}
        assert f["split_seconds"] == pytest.approx(expect)
    assert (run / "files.png").is_file() and "files.png" in r["files"]
    assert r["splits"]["train"]["end_seconds"] == pytest.approx(ranges["train"][-1][1] / SR)
    np.testing.assert_allclose(r["splits"]["val"]["ranges_seconds"],
                               [[a / SR, b / SR] for a, b in ranges["val"]])
    assert "## Files (4)" in (run / "explore.md").read_text()
