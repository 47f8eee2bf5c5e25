"""Corpora (issue 12): files never mixed, splits by time or file, manifests, the per-file
cache, bad files, MP3; random-crop epochs (issue 14) over a corpus."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from audiolstm.data import sources
from audiolstm.data.datamodule import AudioDataModule
from audiolstm.data.sources import load_corpus, read_manifest
from audiolstm.data.splits import (
    SPLITS,
    assign_files,
    file_table,
    split_by_file,
    split_by_time,
)
from audiolstm.data.state import DataState
from audiolstm.data.windows import RandomStartSampler, WindowDataset, WindowSpec
from audiolstm.errors import UserError
from tests.conftest import run_script

SR = 16000


def naive_examples(s, x_len, seq_len, window_shift, hop=None, offsets=(0,)):
    """The seeds' loop over ONE file: every example as a list of seq_len + 1 sliced frames."""
    step = hop or x_len
    out = []
    for o in offsets:
        a = o
        while a + seq_len * step + x_len <= len(s):
            out.append(np.stack([s[a + j * step : a + j * step + x_len]
                                 for j in range(seq_len + 1)]))
            a += window_shift
    return out


def _write(path: Path, x: np.ndarray, sr: int = SR, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.asarray(x, np.float32), sr, **({"subtype": "FLOAT"} | kw))
    return path


def _noise(n: int, seed: int, amp: float = 0.2) -> np.ndarray:
    return (amp * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)


def _data(tmp_path: Path, **kw) -> dict:
    base = {"source": "folder", "path": str(tmp_path / "music"), "sample_rate": SR,
            "synth_seconds": 1.0, "synth_seed": 0, "splits": [0.6, 0.2, 0.2], "x_len": 100,
            "seq_len": 3, "hop": None, "window_shift": 100, "offsets": [0],
            "eval_window_shift": None, "batch_size": 4, "num_workers": 0, "pin_memory": None,
            "cache_dir": str(tmp_path / "cache"), "decode_workers": 1}
    return base | kw


def _dm(tmp_path: Path, norm: str = "none", **kw) -> AudioDataModule:
    dm = AudioDataModule(_data(tmp_path, **kw), {"scheme": norm}, {"kind": "time"}, seed=3)
    dm.setup()
    return dm


def _folder(tmp_path: Path, lengths: list[int], seed: int = 0) -> list[np.ndarray]:
    """Files f00.wav, f01.wav, ... whose samples say which file they are (i + position)."""
    xs = []
    for i, n in enumerate(lengths):
        x = (i + 1) + np.arange(n, dtype=np.float32) / (4 * max(lengths))  # file i in [i+1, i+1.25)
        _write(tmp_path / "music" / f"f{i:02d}.wav", x)
        xs.append(x)
    return xs


def _file_of(value: float) -> int:
    return int(np.floor(value)) - 1


# --------------------------------------------------------------------------- boundaries


@st.composite
def corpora(draw):
    x_len = draw(st.integers(1, 8))
    seq_len = draw(st.integers(1, 4))
    hop = draw(st.one_of(st.none(), st.integers(1, 2 * x_len)))
    shift = draw(st.integers(1, 12))
    offsets = draw(st.lists(st.integers(0, 10), min_size=1, max_size=3,
                            unique_by=lambda o: o % shift))
    lengths = draw(st.lists(st.integers(0, 120), min_size=1, max_size=6))
    return WindowSpec(x_len, seq_len, shift, hop, tuple(offsets)), lengths


@settings(max_examples=250, deadline=None)
@given(corpora())
def test_no_example_crosses_a_file_boundary_against_a_per_file_loop(case):
    spec, lengths = case
    files = [np.arange(n, dtype=np.float32) + 1000 * (i + 1) for i, n in enumerate(lengths)]
    signal = np.concatenate(files) if files else np.zeros(0, np.float32)
    bounds = np.cumsum([0] + lengths)
    ds = WindowDataset(signal, spec, segments=list(zip(bounds[:-1], bounds[1:], strict=True)))
    ref = [e for f in files for e in naive_examples(f, spec.x_len, spec.seq_len,
                                                    spec.window_shift, spec.hop, spec.offsets)]
    assert len(ds) == len(ref) == sum(spec.count(n) for n in lengths)
    if ref:
        got = ds.__getitems__(list(range(len(ds)))).numpy()
        np.testing.assert_array_equal(got, np.stack(ref))
        # every sample says its file (its thousands): no example mixes two
        assert (got // 1000 == got[:, :1, :1] // 1000).all()


def test_the_issues_probe_val_never_mixes_two_files(tmp_path: Path) -> None:
    # files of 3000 and 1000 samples, splits 0.6/0.2/0.2: the old concatenation put 2 of
    # the 5 validation examples across the boundary
    _folder(tmp_path, [3000, 1000])
    dm = _dm(tmp_path, x_len=100, seq_len=3, window_shift=100)
    for split in SPLITS:
        batch = dm.dataset(split).__getitems__(list(range(len(dm.dataset(split))))).numpy()
        files = np.floor(batch.reshape(len(batch), -1))
        assert (files == files[:, :1]).all(), split  # every example reads one file
    # time split: each file cut 60/20/20 on its own
    assert [(p.start, p.end) for p in dm.plan.pieces["val"]] == [(1800, 2400), (3600, 3800)]
    assert dm.split_summary()["examples"] == {"train": 15 + 3, "val": 3 + 0, "test": 3 + 0}
    assert [r.examples for r in dm.files] == [{"train": 15, "val": 3, "test": 3},
                                              {"train": 3, "val": 0, "test": 0}]


def test_short_files_contribute_none_and_are_reported(tmp_path: Path, caplog) -> None:
    _folder(tmp_path, [5000, 300, 4000])  # the middle one is shorter than one example
    with caplog.at_level(logging.WARNING):
        dm = _dm(tmp_path, x_len=100, seq_len=3)
    rows = {r.name: r for r in dm.files}
    assert rows["f01.wav"].examples == {"train": 0, "val": 0, "test": 0}
    assert "f01.wav" in caplog.text and "give no train example" in caplog.text
    recorded = DataState.from_dict(dm.state_dict()).meta["corpus"]
    assert [r["examples"] for r in recorded["files"]][1] == {"train": 0, "val": 0, "test": 0}


def test_loader_batches_never_mix_files_with_workers(tmp_path: Path) -> None:
    _folder(tmp_path, [2500, 1700, 3100, 900])
    dm = _dm(tmp_path, num_workers=2, batch_size=7)
    n = 0
    for batch in dm.train_dataloader():
        files = np.floor(batch.numpy().reshape(len(batch), -1))
        assert (files == files[:, :1]).all()
        n += len(batch)
    assert n == len(dm.dataset("train"))


# --------------------------------------------------------------------------- splits


def test_split_by_time_cuts_every_file_and_fits_on_train_only(tmp_path: Path) -> None:
    xs = _folder(tmp_path, [4000, 2000])
    dm = _dm(tmp_path, norm="std", splits=[0.5, 0.25, 0.25])
    assert {s: [(p.start, p.end) for p in dm.plan.pieces[s]] for s in SPLITS} == {
        "train": [(0, 2000), (4000, 5000)], "val": [(2000, 3000), (5000, 5500)],
        "test": [(3000, 4000), (5500, 6000)]}
    train = np.concatenate([xs[0][:2000], xs[1][:1000]]).astype(np.float64)
    shift, scale = dm.normalizer.affine("train")
    assert shift == pytest.approx(train.mean()) and scale == pytest.approx(train.std())
    s = dm.split_summary()
    assert s["files"] == {"train": 2, "val": 2, "test": 2}
    assert s["seconds"] == pytest.approx({"train": 3000 / SR, "val": 1500 / SR,
                                          "test": 1500 / SR})


def test_assign_files_is_deterministic_and_follows_the_durations() -> None:
    rng = np.random.default_rng(0)
    durations = rng.uniform(60, 400, 60).tolist()
    a = assign_files(durations, [0.8, 0.1, 0.1], seed=1)
    assert a == assign_files(durations, [0.8, 0.1, 0.1], seed=1)
    assert a != assign_files(durations, [0.8, 0.1, 0.1], seed=2)
    total = sum(durations)
    for s, r in zip(SPLITS, [0.8, 0.1, 0.1], strict=True):
        share = sum(d for d, x in zip(durations, a, strict=True) if x == s) / total
        assert share == pytest.approx(r, abs=0.03), s
    # three files: one per split whatever their lengths
    assert sorted(assign_files([1000.0, 1.0, 2.0], [0.8, 0.1, 0.1], seed=5)) == sorted(SPLITS)


def test_split_plans_are_pieces_of_single_files() -> None:
    files = [(0, 100), (100, 130), (130, 400)]
    t = split_by_time(files, [0.8, 0.1, 0.1])
    assert [(p.file, p.start, p.end) for p in t["val"]] == [(0, 80, 90), (1, 124, 127),
                                                            (2, 346, 373)]
    f = split_by_file(files, ["test", "train", "val"])
    assert [(p.file, p.start, p.end) for p in f["test"]] == [(0, 0, 100)]


def test_split_by_file_holds_whole_files_out(tmp_path: Path) -> None:
    _folder(tmp_path, [3000 + 500 * i for i in range(8)])
    dm = _dm(tmp_path, split_by="file", split_seed=4)
    seen = {}
    for s in SPLITS:
        for p in dm.plan.pieces[s]:
            f = dm.corpus.files[p.file]
            assert (p.start, p.end) == (f.start, f.end)  # the whole file
            seen[p.file] = s
    assert len(seen) == 8 and set(seen.values()) == set(SPLITS)
    assert [r.split for r in dm.files] == [seen[i] for i in range(8)]
    again = _dm(tmp_path, split_by="file", split_seed=4)
    assert [r.split for r in again.files] == [r.split for r in dm.files]
    # which files: in the data state and the table for explore.py
    table = file_table(dm.data_state().meta)
    assert [(r.name, r.split, r.start, r.end) for r in table] == [
        (f.name, seen[i], f.start, f.end) for i, f in enumerate(dm.corpus.files)]
    # generation's seed: one test file, never across a boundary
    seed, name = dm.seed_signal("test")
    test_files = [dm.corpus.files[p.file] for p in dm.plan.pieces["test"]]
    assert name in {f.name for f in test_files}
    assert len(seed) == max(f.num_samples for f in test_files)
    assert np.all(np.floor(np.asarray(seed)) == np.floor(seed[0]))


def test_split_by_file_listed_in_config_and_in_a_manifest(tmp_path: Path) -> None:
    _folder(tmp_path, [3000] * 5)
    dm = _dm(tmp_path, split_by="file",
             file_splits={"val": ["f01.wav"], "test": ["f03.wav", "f04.wav"]})
    assert [r.split for r in dm.files] == ["train", "val", "train", "test", "test"]
    manifest = tmp_path / "list.csv"
    manifest.write_text("path,split,comment\nmusic/f00.wav,test,x\nmusic/f02.wav,train,\n"
                        "music/f04.wav,val,\n")
    dm = _dm(tmp_path, source="manifest", path=str(manifest), split_by="file")
    assert [(r.name, r.split) for r in dm.files] == [
        ("music/f00.wav", "test"), ("music/f02.wav", "train"), ("music/f04.wav", "val")]
    with pytest.raises(UserError, match="split column.*data.split_by=file"):
        _dm(tmp_path, source="manifest", path=str(manifest))
    with pytest.raises(UserError, match=r"data.file_splits.test: nope.wav is not a file"):
        _dm(tmp_path, split_by="file", file_splits={"test": ["nope.wav"]})


def test_split_by_file_needs_a_file_per_split(tmp_path: Path) -> None:
    _folder(tmp_path, [5000, 5000])
    with pytest.raises(UserError) as e:
        _dm(tmp_path, split_by="file")
    msg = str(e.value)
    assert "needs at least 3 files" in msg and "it has 2" in msg and "\n" not in msg


def test_a_split_with_no_example_names_the_split_and_the_duration(tmp_path: Path) -> None:
    _folder(tmp_path, [3000, 900, 1000])
    with pytest.raises(UserError) as e:
        _dm(tmp_path, split_by="file", file_splits={"val": ["f01.wav"], "test": ["f02.wav"]},
            seq_len=9)  # one example spans 1000 samples
    msg = str(e.value)
    assert "no example in the val split" in msg and "at least 0.062 s" in msg
    with pytest.raises(UserError, match="no example in the val split.*at least one file must "
                                        "last 0.31 s"):
        _dm(tmp_path, seq_len=9)  # time split: no file's 20 % holds 1000 samples


# --------------------------------------------------------------------------- manifests


def test_manifest_relative_paths_comments_and_blank_lines(tmp_path: Path) -> None:
    a = _write(tmp_path / "audio" / "a.wav", _noise(3000, 1))
    b = _write(tmp_path / "elsewhere" / "b.flac", _noise(3000, 2), subtype="PCM_24")
    lst = tmp_path / "lists" / "train.txt"
    lst.parent.mkdir()
    lst.write_text(f"# my corpus\n\n../audio/a.wav\n   {b}  \n# done\n")
    got = read_manifest(lst)
    assert [(f.name, f.path, f.split) for f in got] == [("../audio/a.wav", a.resolve(), None),
                                                         (str(b), b.resolve(), None)]
    c = load_corpus("manifest", str(lst), SR, tmp_path / "cache", decode_workers=1)
    assert [f.name for f in c.files] == ["../audio/a.wav", str(b)]
    assert c.files[1].start == 3000 and c.signal.shape == (6000,)


@pytest.mark.parametrize("text, needle", [
    ("a.wav\nmissing.wav\n", r"list.txt:2: missing.wav: no such file"),
    ("a.wav\n# x\n./a.wav\n", r"list.txt:3: ./a.wav is listed twice \(also on line 1\)"),
    ("# nothing\n\n", r"list.txt: empty manifest"),
    ("path,split\n", r"list.txt: empty manifest"),
    ("path,split\na.wav,holdout\n", r"list.txt:2: split 'holdout' is not one of train"),
    ("path\n,\n", r"list.txt:2: no path on this line"),
    ("sub\n", r"list.txt:1: sub: is a folder"),
])
def test_manifest_bad_lines_are_named(tmp_path: Path, text: str, needle: str) -> None:
    _write(tmp_path / "a.wav", _noise(100, 0))
    (tmp_path / "sub").mkdir()
    lst = tmp_path / "list.txt"
    lst.write_text(text)
    with pytest.raises(UserError, match=needle) as e:
        read_manifest(lst)
    assert "\n" not in str(e.value)


def test_recursive_folder(tmp_path: Path) -> None:
    _write(tmp_path / "music" / "b.wav", _noise(100, 1))
    _write(tmp_path / "music" / "album" / "a.wav", _noise(100, 2))
    _write(tmp_path / "music" / ".hidden" / "c.wav", _noise(100, 3))
    flat = load_corpus("folder", str(tmp_path / "music"), SR, tmp_path / "c", decode_workers=1)
    assert [f.name for f in flat.files] == ["b.wav"]
    deep = load_corpus("folder", str(tmp_path / "music"), SR, tmp_path / "c", recursive=True,
                       decode_workers=1)
    assert [f.name for f in deep.files] == ["album/a.wav", "b.wav"]
    with pytest.raises(UserError, match="data.recursive=true searches them"):
        load_corpus("folder", str(_empty_with_sub(tmp_path)), SR, tmp_path / "c")


def _empty_with_sub(tmp_path: Path) -> Path:
    d = tmp_path / "only_sub"
    _write(d / "inner" / "x.wav", _noise(100, 4))
    return d


# --------------------------------------------------------------------------- cache


def _counting(monkeypatch) -> list[str]:
    calls: list[str] = []
    real = sources.decode_audio

    def counting(path, sr):
        calls.append(Path(path).name)
        return real(path, sr)

    monkeypatch.setattr(sources, "decode_audio", counting)
    return calls


def test_incremental_cache_decodes_only_what_changed(tmp_path: Path, monkeypatch) -> None:
    d = tmp_path / "music"
    for i in range(4):
        _write(d / f"{i}.wav", _noise(1000 + i, i))
    calls = _counting(monkeypatch)
    cache = tmp_path / "cache"
    c1 = load_corpus("folder", str(d), SR, cache, decode_workers=1)
    assert sorted(calls) == ["0.wav", "1.wav", "2.wav", "3.wav"]
    assert isinstance(c1.signal, np.memmap)
    load_corpus("folder", str(d), SR, cache, decode_workers=1)
    assert len(calls) == 4  # all cached
    st = (d / "2.wav").stat()
    os.utime(d / "2.wav", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched
    _write(d / "4.wav", _noise(500, 9))  # added
    c2 = load_corpus("folder", str(d), SR, cache, decode_workers=1)
    assert sorted(calls[4:]) == ["2.wav", "4.wav"]
    assert [f.start for f in c2.files] == [0, 1000, 2001, 3003, 4006]
    np.testing.assert_array_equal(c2.signal[: c1.signal.shape[0]], c1.signal)
    np.testing.assert_array_equal(c2.signal[4006:], _noise(500, 9))
    # per-file entries in files/, the assembled corpus next to them; no temp files
    assert len(list((cache / "files").glob("*.npy"))) == 6
    assert not list(cache.rglob("*.tmp"))


def test_parallel_decoding_matches_serial(tmp_path: Path) -> None:
    d = tmp_path / "music"
    for i, (sr, ch) in enumerate([(16000, 1), (22050, 2), (44100, 1), (8000, 2), (16000, 2)]):
        x = _noise(sr // 4 * ch, i).reshape(-1, ch)
        _write(d / f"{i}.{'flac' if i % 2 else 'wav'}", x, sr,
               **({"subtype": "PCM_16"} if i % 2 else {}))
    serial = load_corpus("folder", str(d), SR, tmp_path / "a", decode_workers=1)
    parallel = load_corpus("folder", str(d), SR, tmp_path / "b", decode_workers=3)
    np.testing.assert_array_equal(serial.signal, parallel.signal)
    assert serial.files == parallel.files
    assert [(f.rate, f.channels) for f in serial.files] == [
        (16000, 1), (22050, 2), (44100, 1), (8000, 2), (16000, 2)]
    assert [f.num_samples for f in serial.files] == [4000] * 5


# --------------------------------------------------------------------------- bad files


def _with_bad_file(tmp_path: Path) -> Path:
    d = tmp_path / "music"
    for i in range(3):
        _write(d / f"{i}.wav", _noise(4000, i))
    (d / "1b.wav").write_text("not audio at all")
    return d


def test_bad_file_is_one_line_and_writes_no_corpus(tmp_path: Path) -> None:
    d = _with_bad_file(tmp_path)
    cache = tmp_path / "cache"
    with pytest.raises(UserError) as e:
        load_corpus("folder", str(d), SR, cache, decode_workers=2)
    msg = str(e.value)
    assert str(d / "1b.wav") in msg and "not a readable audio file" in msg
    assert "data.on_bad_file=skip" in msg and "\n" not in msg
    assert not list(cache.glob("*.npy"))  # no corpus; complete per-file entries may stay
    assert not list(cache.rglob("*.tmp"))


def test_skip_mode_warns_lists_and_records(tmp_path: Path, caplog) -> None:
    d = _with_bad_file(tmp_path)
    _write(d / "3.wav", _noise(4000, 0))  # the same audio as 0.wav
    with caplog.at_level(logging.WARNING):
        dm = _dm(tmp_path, on_bad_file="skip", decode_workers=2)
    assert [f.name for f in dm.corpus.files] == ["0.wav", "1.wav", "2.wav"]
    skipped = dm.split_summary()["skipped_files"]
    assert [(s["name"], "1b.wav" in s["reason"] or "0.wav" in s["reason"]) for s in skipped] == [
        ("1b.wav", True), ("3.wav", True)]
    assert "duplicate" in skipped[1]["reason"]
    assert "skipped 2 of 5 files" in caplog.text and "1b.wav" in caplog.text
    assert dm.data_state().meta["skipped"] == skipped


def test_duplicate_audio_is_an_error(tmp_path: Path) -> None:
    _folder(tmp_path, [3000, 3000])
    shutil.copy(tmp_path / "music" / "f00.wav", tmp_path / "music" / "f02.wav")
    with pytest.raises(UserError, match="f02.wav: the same audio as f00.wav"):
        _dm(tmp_path)


@pytest.mark.slow  # two train.py starts
def test_corpus_bad_input_through_the_cli(tmp_path: Path) -> None:
    d = _with_bad_file(tmp_path)
    lst = tmp_path / "list.txt"
    lst.write_text("music/0.wav\nmusic/gone.wav\n")
    cases = [  # each CLI start costs seconds: the rest are checked in-process
        (["data=folder", f"data.path={d}"], "1b.wav: not a readable audio file"),
        (["data=manifest", f"data.path={lst}"], "list.txt:2: music/gone.wav: no such file"),
    ]
    for args, needle in cases:
        res = run_script("train.py", *args, f"hydra.run.dir={tmp_path / 'r'}")
        assert res.returncode == 2, (args, res.stderr[-2000:])
        assert "Traceback" not in res.stderr, res.stderr
        assert any(needle in line for line in res.stderr.splitlines()), (args, res.stderr)


def test_corpus_bad_settings_are_one_line(tmp_path: Path) -> None:
    _with_bad_file(tmp_path)
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing yet\n")
    with pytest.raises(UserError, match="empty manifest"):
        _dm(tmp_path, source="manifest", path=str(empty))
    with pytest.raises(UserError, match="no file is assigned to the train split"):
        _dm(tmp_path, on_bad_file="skip", split_by="file",
            file_splits={"val": ["0.wav"], "test": ["1.wav", "2.wav"]})
    with pytest.raises(UserError, match=r"data.split_by='files' is not one of time, file"):
        _dm(tmp_path, split_by="files")
    with pytest.raises(UserError, match=r"data.file_splits lists files .* needs "
                                        r"data.split_by=file"):
        _dm(tmp_path, file_splits={"test": ["0.wav"]})


# --------------------------------------------------------------------------- MP3


def _check_mp3(path: Path, x: np.ndarray) -> None:
    c = load_corpus("folder", str(path.parent), SR, path.parent.parent / "cache",
                    decode_workers=1)
    assert c.files[0].format == "MP3" and c.files[0].name == path.name
    y = np.asarray(c.signal)
    # MP3 adds an encoder delay/padding: compare the tone's frequency and level
    assert abs(len(y) - len(x)) < 3000
    spec = np.abs(np.fft.rfft(y[2000:14000] * np.hanning(12000)))
    assert np.argmax(spec) * SR / 12000 == pytest.approx(440, abs=3)
    assert np.sqrt(np.mean(y[2000:14000] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.1)


def _tone() -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * 440 * np.arange(SR) / SR)).astype(np.float32)


def test_mp3_written_by_libsndfile_is_read(tmp_path: Path) -> None:
    # soundfile >= 0.12 bundles libsndfile >= 1.1, which reads and writes MPEG Layer III
    if "MP3" not in sf.available_formats():
        pytest.skip(f"libsndfile {sf.__libsndfile_version__} has no MP3 support (needs >= 1.1)")
    x = _tone()
    p = tmp_path / "mp3" / "tone.mp3"
    p.parent.mkdir()
    sf.write(p, x, SR, format="MP3", subtype="MPEG_LAYER_III")
    _check_mp3(p, x)


def test_mp3_from_an_external_encoder_is_read(tmp_path: Path) -> None:
    x = _tone()
    wav = _write(tmp_path / "tone.wav", x, subtype="PCM_16")
    p = tmp_path / "mp3" / "tone.mp3"
    p.parent.mkdir()
    if shutil.which("lame"):
        cmd = ["lame", "--quiet", "-b", "128", str(wav), str(p)]
    elif shutil.which("sox") and "mp3" in subprocess.run(
            ["sox", "-h"], capture_output=True, text=True).stdout.split("AUDIO FILE FORMATS:")[-1]:
        cmd = ["sox", str(wav), str(p)]
    else:
        pytest.skip("no MP3 encoder here (apt-get install lame, or sox with libsox-fmt-mp3)")
    subprocess.run(cmd, check=True, capture_output=True)
    _check_mp3(p, x)


# --------------------------------------------------------------------------- random crops


def test_random_crops_are_uniform_over_every_valid_start_of_every_file(tmp_path: Path) -> None:
    lengths = [700, 450, 300, 2200]  # train pieces 420, 270, 180, 1320; span 400
    xs = _folder(tmp_path, lengths)
    dm = _dm(tmp_path, splits=[0.6, 0.2, 0.2], x_len=100, seq_len=3, window_shift=8000,
             eval_window_shift=100, train_examples_per_epoch=40_000)
    ds = dm.dataset("train")
    starts = []  # every valid start (every sample position) of every train piece
    for p in dm.plan.pieces["train"]:
        starts += list(range(p.start, p.end - 400 + 1))
    assert len(ds) == len(starts) == (420 - 400 + 1) + 0 + 0 + (1320 - 400 + 1)
    sampler = RandomStartSampler(len(ds), 40_000, seed=3)
    counts = np.zeros(len(ds), np.int64)
    for i in sampler:
        counts[i] += 1
    assert counts.sum() == 40_000
    expected = 40_000 / len(ds)
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    dof = len(ds) - 1
    assert chi2 < dof + 5 * np.sqrt(2 * dof)  # ~5 sigma; a biased sampler is far outside
    # every index is one start, none crossing a boundary (a sample says where it is)
    first = ds.__getitems__(list(range(len(ds)))).numpy()[:, 0, 0].astype(np.float64)
    f = np.floor(first).astype(int) - 1
    pos = np.rint((first - (f + 1)) * 4 * max(lengths)).astype(int)
    got = sorted({dm.corpus.files[i].start + k for i, k in zip(f, pos, strict=True)})
    assert got == starts
    batch = next(iter(dm.train_dataloader()))
    files = np.floor(batch.numpy().reshape(len(batch), -1))
    assert (files == files[:, :1]).all()
    # val/test stay the deterministic windows
    assert len(dm.dataset("val")) == sum(  # naive: the val windows of every file, 100 apart
        len(naive_examples(x[round(0.6 * len(x)) : round(0.8 * len(x))], 100, 3, 100))
        for x in xs)


def test_the_random_crop_loader_draws_every_valid_start_and_nothing_else(tmp_path: Path
                                                                       ) -> None:
    """The training *loader* of a random-crop datamodule, end to end, on a tiny corpus:
    its sampler and length, and exact coverage of every valid start (each example checked
    against naive slicing), epoch after epoch.

    Mutants caught (each tried): a datamodule that ignores `train_examples_per_epoch`
    (its sliding windows: another sampler, length and starts), a sampler that never draws
    the last valid start (`integers(0, n - 1)`), a crop dataset one start short per piece
    (`window_shift` kept, or the count's `+ 1` lost).
    """
    lengths = [430, 260, 500]  # train pieces 258, 156, 300 samples (60 %)
    xs = _folder(tmp_path, lengths)
    n, batch = 12_000, 64  # 20 draws per start: P(some start missed) ~ 600 e^-20
    dm = _dm(tmp_path, splits=[0.6, 0.2, 0.2], x_len=10, seq_len=3, batch_size=batch,
             window_shift=8000, eval_window_shift=10, train_examples_per_epoch=n)
    span = 3 * 10 + 10
    starts = {(i, a) for i, x in enumerate(xs)  # naive: every start of each file's train 60 %
              for a in range(0, round(0.6 * len(x)) - span + 1)}
    assert len(starts) == (258 - 39) + (156 - 39) + (300 - 39)
    loader = dm.train_dataloader()
    assert isinstance(loader.sampler, RandomStartSampler) and loader.sampler.num_samples == n
    assert len(loader) == -(-n // batch)
    for epoch in range(2):
        loader.sampler.set_epoch(epoch)
        seen: list[tuple[int, int]] = []
        for b in loader:
            for ex in b.numpy():
                i = _file_of(float(ex[0, 0]))
                a = int(round((float(ex[0, 0]) - (i + 1)) * 4 * max(lengths)))
                naive = np.stack([xs[i][a + 10 * j : a + 10 * j + 10] for j in range(4)])
                assert np.array_equal(ex, naive), (i, a)  # frames of one file, hop apart
                seen.append((i, a))
        assert len(seen) == n
        assert set(seen) == starts  # every one, the last of each piece included
        assert (2, round(0.6 * 500) - span) in seen


def test_random_crop_epochs_are_seeded_per_epoch() -> None:
    s = RandomStartSampler(1000, 64, seed=1)
    e0, e1 = list(s), list(s)
    assert len(e0) == len(s) == 64 and e0 != e1
    s.set_epoch(1)
    assert list(s) == e1
    s.set_epoch(0)
    assert list(s) == e0
    assert list(RandomStartSampler(1000, 64, seed=2)) != e0
    # DDP: ranks deal the epoch's one stream of draws
    ranks = [RandomStartSampler(1000, 64, seed=1, num_replicas=3, rank=r) for r in range(3)]
    assert all(len(r) == 22 for r in ranks)
    streams = [list(r) for r in ranks]
    assert len({tuple(x) for x in streams}) == 3
