"""Audio I/O, validation and cache: round trips, every user error, crash safety."""

from __future__ import annotations

import json
import logging
import os
import re
import struct
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiolstm.data import audio, sources, synth
from audiolstm.data.audio import (
    AUDIO_EXTENSIONS,
    list_audio_files,
    load_audio,
    write_wav,
)
from audiolstm.data.cache import cached_signal
from audiolstm.data.sources import load_corpus
from audiolstm.errors import UserError

SR = 16000


def sine(freq: float, sr: int, n: int, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(n) / sr)).astype(np.float32)


def noise(n: int, channels: int, seed: int = 0, amp: float = 0.3) -> np.ndarray:
    x = amp * np.random.default_rng(seed).uniform(-1, 1, (n, channels))
    return x.astype(np.float32)


def dominant_hz(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * sr / len(x))


def user_error(excinfo: pytest.ExceptionInfo, path: Path | str) -> str:
    """The message, after checking it is one line that names `path`."""
    msg = str(excinfo.value)
    assert "\n" not in msg
    assert str(path) in msg
    return msg


def cache_files(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


# --------------------------------------------------------------------------- formats


def test_extensions_are_decodable_by_libsndfile():
    formats = sf.available_formats()
    for needed in ("WAV", "FLAC", "OGG", "AIFF", "MP3"):
        assert needed in formats
    assert ".wav" in AUDIO_EXTENSIONS and ".flac" in AUDIO_EXTENSIONS


def test_wav_pcm16_mono_round_trip(tmp_path):
    x = noise(5000, 1)[:, 0]
    p = tmp_path / "a.wav"
    sf.write(p, x, SR, subtype="PCM_16")
    y = load_audio(p, SR)
    assert y.dtype == np.float32 and y.ndim == 1 and y.flags.c_contiguous
    assert len(y) == len(x)
    np.testing.assert_allclose(y, x, atol=1.0 / 32768)


def test_wav_24bit_extensible_multichannel_is_averaged(tmp_path):
    x = noise(4000, 3, seed=1)
    p = tmp_path / "surround.wav"
    sf.write(p, x, SR, subtype="PCM_24", format="WAVEX")
    raw = p.read_bytes()
    assert raw[:4] == b"RIFF" and raw[12:16] == b"fmt "
    assert struct.unpack("<H", raw[20:22])[0] == 0xFFFE  # WAVE_FORMAT_EXTENSIBLE
    assert sf.info(str(p)).subtype == "PCM_24"
    y = load_audio(p, SR)
    np.testing.assert_allclose(y, x.mean(axis=1), atol=2.0**-22)


def test_stereo_float_wav_mix_is_exact_average(tmp_path):
    x = noise(3000, 2, seed=2, amp=2.0)  # beyond [-1, 1]: float keeps it
    p = tmp_path / "st.wav"
    sf.write(p, x, SR, subtype="FLOAT")
    y = load_audio(p, SR)
    np.testing.assert_array_equal(y, (x[:, 0] + x[:, 1]) * np.float32(0.5))


def test_long_file_spans_several_decode_blocks(tmp_path, monkeypatch):
    monkeypatch.setattr(audio, "_BLOCK_FRAMES", 1000)
    x = noise(4567, 2, seed=3)
    p = tmp_path / "long.wav"
    sf.write(p, x, SR, subtype="FLOAT")
    np.testing.assert_array_equal(load_audio(p, SR), (x[:, 0] + x[:, 1]) * np.float32(0.5))


def test_flac_round_trip(tmp_path):
    x = noise(6000, 2, seed=4)
    p = tmp_path / "a.flac"
    sf.write(p, x, SR, subtype="PCM_24")
    np.testing.assert_allclose(load_audio(p, SR), x.mean(axis=1), atol=2.0**-22)


def test_ogg_vorbis_round_trip_is_close(tmp_path):
    x = sine(440, SR, SR)
    p = tmp_path / "a.ogg"
    sf.write(p, np.stack([x, x], axis=1), SR, format="OGG", subtype="VORBIS")
    y = load_audio(p, SR)
    assert len(y) == len(x)
    assert np.sqrt(np.mean((y - x) ** 2)) < 0.02  # lossy, but the same waveform
    assert dominant_hz(y, SR) == pytest.approx(440, abs=2)


@pytest.mark.parametrize("sr_in", [44100, 22050])
def test_resampling_keeps_duration_and_frequency(tmp_path, sr_in):
    n = 2 * sr_in + 7
    p = tmp_path / f"s{sr_in}.wav"
    sf.write(p, sine(1000, sr_in, n), sr_in, subtype="FLOAT")
    y = load_audio(p, SR)
    assert y.dtype == np.float32
    assert abs(len(y) - n * SR / sr_in) <= 1
    assert dominant_hz(y, SR) == pytest.approx(1000, abs=1)
    mid = y[2000:-2000]
    assert np.abs(mid).max() == pytest.approx(0.5, abs=0.01)  # amplitude preserved


def test_write_wav_float_round_trip_is_exact(tmp_path):
    x = noise(7777, 1, seed=5, amp=3.0)[:, 0]  # beyond [-1, 1]: scale must survive
    p = tmp_path / "deep" / "er" / "out.wav"
    write_wav(p, x, 22050)
    info = sf.info(str(p))
    assert (info.format, info.subtype, info.samplerate) == ("WAV", "FLOAT", 22050)
    back, sr = sf.read(p, dtype="float32")
    assert sr == 22050
    np.testing.assert_array_equal(back, x)
    np.testing.assert_array_equal(load_audio(p, 22050), x)
    assert cache_files(p.parent) == ["out.wav"]  # no temp leftovers


def test_write_wav_failure_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    p = tmp_path / "out.wav"
    write_wav(p, np.ones(10, np.float32), SR)

    def boom(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        write_wav(p, np.zeros(50, np.float32), SR)
    assert cache_files(tmp_path) == ["out.wav"]
    np.testing.assert_array_equal(sf.read(p, dtype="float32")[0], np.ones(10, np.float32))


# --------------------------------------------------------------------------- bad input


def _truncate(p: Path, keep: float) -> None:
    raw = p.read_bytes()
    p.write_bytes(raw[: int(len(raw) * keep)])


def test_missing_file(tmp_path):
    p = tmp_path / "nope.wav"
    with pytest.raises(UserError, match="no such file") as e:
        load_audio(p, SR)
    assert user_error(e, p) == f"{p}: no such file"


def test_directory_instead_of_file(tmp_path):
    d = tmp_path / "dir.wav"
    d.mkdir()
    with pytest.raises(UserError, match="is a directory") as e:
        load_audio(d, SR)
    user_error(e, d)


def test_empty_file(tmp_path):
    p = tmp_path / "empty.wav"
    p.touch()
    with pytest.raises(UserError, match=r"empty file \(0 bytes\)") as e:
        load_audio(p, SR)
    user_error(e, p)


def test_not_audio(tmp_path):
    p = tmp_path / "notes.wav"
    p.write_text("these are my notes,\nnot a recording\n" * 20)
    with pytest.raises(UserError, match="not a readable audio file") as e:
        load_audio(p, SR)
    user_error(e, p)


def test_zero_samples(tmp_path):
    p = tmp_path / "silent.wav"
    sf.write(p, np.zeros((0, 1), np.float32), SR)
    assert p.stat().st_size > 0
    with pytest.raises(UserError, match="contains no audio samples") as e:
        load_audio(p, SR)
    user_error(e, p)


@pytest.mark.parametrize(
    "fmt, subtype, channels, bytes_per_frame",
    [("WAV", "PCM_16", 1, 2), ("WAVEX", "PCM_24", 2, 6), ("WAV", "FLOAT", 2, 8)],
)
def test_truncated_wav_is_detected(tmp_path, fmt, subtype, channels, bytes_per_frame):
    p = tmp_path / "cut.wav"
    sf.write(p, noise(1000, channels), SR, subtype=subtype, format=fmt)
    header = p.stat().st_size - 1000 * bytes_per_frame
    p.write_bytes(p.read_bytes()[: header + 400 * bytes_per_frame])
    assert sf.info(str(p)).frames == 400  # libsndfile alone would accept the stump
    with pytest.raises(UserError, match="header promises 1000 frames but the file holds 400") as e:
        load_audio(p, SR)
    user_error(e, p)


def test_truncated_aiff_is_detected(tmp_path):
    p = tmp_path / "cut.aiff"
    sf.write(p, noise(1000, 1), SR, subtype="PCM_16", format="AIFF")
    _truncate(p, 0.5)
    with pytest.raises(UserError, match="truncated: header promises 1000 frames") as e:
        load_audio(p, SR)
    user_error(e, p)


def test_truncated_flac_is_detected(tmp_path):
    p = tmp_path / "cut.flac"
    sf.write(p, noise(50000, 2), SR, subtype="PCM_16")
    _truncate(p, 0.5)
    with pytest.raises(UserError, match="truncated or corrupt: header promises 50000 frames") as e:
        load_audio(p, SR)
    user_error(e, p)


class ShortDecoder:
    """Stands in for a SoundFile whose decoder quietly stops before the promised frames."""

    frames, channels = 1000, 2

    def __init__(self, held: int) -> None:
        self.left = held

    def read(self, n, dtype, always_2d, out):
        k = min(n, self.left)
        self.left -= k
        out[:k] = 0.25
        return out[:k]


def test_decoder_returning_fewer_frames_than_promised(tmp_path, monkeypatch):
    p = tmp_path / "x.mp3"
    monkeypatch.setattr(audio, "_BLOCK_FRAMES", 256)
    assert np.all(audio._decode_mono(p, ShortDecoder(1000)) == 0.25)
    with pytest.raises(UserError, match="header promises 1000 frames but the file holds 700") as e:
        audio._decode_mono(p, ShortDecoder(700))
    user_error(e, p)


def test_truncated_ogg_without_samples(tmp_path):
    p = tmp_path / "cut.ogg"
    sf.write(p, noise(50000, 2), SR, format="OGG", subtype="VORBIS")
    raw = p.read_bytes()
    # Cut before the first audio page (granule position > 0): headers only, no end page.
    pages = [m.start() for m in re.finditer(b"OggS", raw)]
    first_audio = next(o for o in pages if struct.unpack("<q", raw[o + 6 : o + 14])[0] > 0)
    p.write_bytes(raw[:first_audio])
    with pytest.raises(UserError, match="no audio samples.*truncated") as e:
        load_audio(p, SR)
    user_error(e, p)


def test_truncated_ogg_with_samples_warns(tmp_path, caplog):
    p = tmp_path / "cut.ogg"
    sf.write(p, noise(50000, 1), SR, format="OGG", subtype="VORBIS")
    _truncate(p, 0.6)
    with caplog.at_level(logging.WARNING, logger="audiolstm.data.audio"):
        y = load_audio(p, SR)
    assert 0 < len(y) < 50000
    assert "truncated" in caplog.text and str(p) in caplog.text


def test_non_finite_samples(tmp_path):
    x = noise(4000, 1)[:, 0]
    x[1234], x[2000], x[3000] = np.nan, np.inf, -np.inf
    p = tmp_path / "nan.wav"
    sf.write(p, x, SR, subtype="FLOAT")
    with pytest.raises(UserError) as e:
        load_audio(p, SR)
    assert user_error(e, p) == (
        f"{p}: 3 non-finite samples (NaN/Inf), first at sample 1234 (0.077 s)"
    )


def test_non_finite_is_reported_at_the_file_rate(tmp_path):
    x = noise(44100, 2)
    x[22050, 1] = np.nan  # one channel is enough to poison the mix
    p = tmp_path / "nan44.wav"
    sf.write(p, x, 44100, subtype="FLOAT")
    with pytest.raises(UserError, match=r"1 non-finite samples .* sample 22050 \(0\.500 s\)"):
        load_audio(p, SR)


# --------------------------------------------------------------------------- folders


def load_folder(d: Path, sr: int) -> tuple[np.ndarray, list[tuple[str, int]]]:
    """A folder corpus (data=folder), as (signal, [(file name, start sample), ...])."""
    c = load_corpus("folder", str(d), sr, d.parent / "cache", decode_workers=1)
    return c.signal, [(f.name, f.start) for f in c.files]


def source_signal(source, path, sr, cache, seconds, seed):
    """`load_corpus` as (signal, meta): what each data source gives the datamodule."""
    c = load_corpus(source, path, sr, cache, seconds, seed)
    return c.signal, c.meta


def test_load_folder_order_boundaries_and_filtering(tmp_path):
    d = tmp_path / "music"
    d.mkdir()
    a = noise(300, 2, seed=1)
    b = noise(200, 1, seed=2)[:, 0]
    c = sine(1000, 8000, 800)
    sf.write(d / "b.wav", b, SR, subtype="FLOAT")
    sf.write(d / "A.flac", a, SR, subtype="PCM_24")
    sf.write(d / "c.WAV", c, 8000, subtype="FLOAT")  # upper-case extension, other rate
    (d / "notes.txt").write_text("ignored")
    (d / "._b.wav").write_bytes(b"\x00\x05\x16\x07 AppleDouble junk")  # hidden: skipped
    (d / "sub.wav").mkdir()  # a folder is not a file
    sf.write(d / "sub.wav" / "inner.wav", b, SR)  # subfolders are not searched

    assert [p.name for p in list_audio_files(d)] == ["A.flac", "b.wav", "c.WAV"]
    signal, bounds = load_folder(d, SR)
    assert bounds == [("A.flac", 0), ("b.wav", 300), ("c.WAV", 500)]
    assert signal.dtype == np.float32 and len(signal) == 300 + 200 + 1600
    np.testing.assert_allclose(signal[:300], a.mean(axis=1), atol=2.0**-22)
    np.testing.assert_array_equal(signal[300:500], b)
    assert dominant_hz(signal[500:], SR) == pytest.approx(1000, abs=10)


def test_folder_errors(tmp_path):
    missing = tmp_path / "missing"
    with pytest.raises(UserError, match="no such folder") as e:
        load_folder(missing, SR)
    user_error(e, missing)

    f = tmp_path / "file.wav"
    sf.write(f, np.zeros(10, np.float32), SR)
    with pytest.raises(UserError, match="not a folder") as e:
        load_folder(f, SR)
    user_error(e, f)

    empty = tmp_path / "no_audio"
    empty.mkdir()
    (empty / "readme.md").write_text("x")
    with pytest.raises(UserError, match="no audio files") as e:
        load_folder(empty, SR)
    user_error(e, empty)


def test_folder_names_the_bad_file(tmp_path):
    d = tmp_path / "music"
    d.mkdir()
    sf.write(d / "a.wav", np.zeros(10, np.float32), SR)
    (d / "b.wav").touch()
    with pytest.raises(UserError, match="empty file") as e:
        load_folder(d, SR)
    user_error(e, d / "b.wav")


# --------------------------------------------------------------------------- cache


class Builder:
    """A counting `build` callable."""

    def __init__(self, n: int = 1000, seed: int = 0, fail: bool = False) -> None:
        self.calls = 0
        self.signal = noise(n, 1, seed=seed)[:, 0]
        self.fail = fail

    def __call__(self) -> tuple[np.ndarray, dict]:
        self.calls += 1
        if self.fail:
            raise RuntimeError("decoder exploded")
        return self.signal.copy(), {"boundaries": [["x.wav", 0]], "sample_rate": SR}


KEY = {"path": "/data/x.wav", "size": 123, "mtime_ns": 456, "sample_rate": SR}


def test_cache_hit_maps_without_building(tmp_path):
    build = Builder()
    x1, m1 = cached_signal(KEY, build, tmp_path / "c")
    x2, m2 = cached_signal(dict(reversed(list(KEY.items()))), build, tmp_path / "c")
    assert build.calls == 1  # key order does not matter: canonical JSON
    for x in (x1, x2):
        assert isinstance(x, np.memmap) and not x.flags.writeable
        assert x.dtype == np.float32 and x.ndim == 1
        np.testing.assert_array_equal(x, build.signal)
    assert m1 == m2 == {"boundaries": [["x.wav", 0]], "sample_rate": SR}
    names = cache_files(tmp_path / "c")
    assert len(names) == 2 and names[0].endswith(".json") and names[1].endswith(".npy")
    assert len(Path(names[0]).stem) == 16
    side = json.loads((tmp_path / "c" / names[0]).read_text())
    assert side["key"] == KEY and side["num_samples"] == 1000


def test_cache_key_change_rebuilds(tmp_path):
    build = Builder()
    cached_signal(KEY, build, tmp_path)
    cached_signal({**KEY, "mtime_ns": 457}, build, tmp_path)
    cached_signal({**KEY, "sample_rate": 8000}, build, tmp_path)
    cached_signal(KEY, build, tmp_path)
    assert build.calls == 3
    assert len(cache_files(tmp_path)) == 6


def test_failed_build_writes_nothing(tmp_path):
    with pytest.raises(RuntimeError, match="exploded"):
        cached_signal(KEY, Builder(fail=True), tmp_path / "c")
    assert cache_files(tmp_path / "c") == []


@pytest.mark.parametrize("fail_on_call", [1, 2])
def test_crash_during_write_leaves_no_entry(tmp_path, monkeypatch, fail_on_call):
    """Call 1 is the .npy rename, call 2 the sidecar's: a crash at either leaves no sidecar."""
    real_replace = os.replace
    calls = []

    def flaky_replace(src, dst):
        calls.append(dst)
        if len(calls) == fail_on_call:
            raise OSError(5, "Input/output error")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", flaky_replace)
    with pytest.raises(OSError):
        cached_signal(KEY, Builder(), tmp_path)
    names = cache_files(tmp_path)
    assert not any(n.endswith(".json") or n.endswith(".tmp") for n in names)
    assert names == ([] if fail_on_call == 1 else [names[0]])  # at most an orphan .npy

    monkeypatch.setattr(os, "replace", real_replace)
    build = Builder()
    x, _ = cached_signal(KEY, build, tmp_path)  # the orphan is never trusted
    assert build.calls == 1
    np.testing.assert_array_equal(x, build.signal)


def _corrupt_truncate(npy: Path, side: Path) -> None:
    _truncate(npy, 0.5)


def _corrupt_garbage(npy: Path, side: Path) -> None:
    npy.write_bytes(b"this is not a numpy file" * 100)


def _corrupt_no_sidecar(npy: Path, side: Path) -> None:
    side.unlink()


def _corrupt_bad_sidecar(npy: Path, side: Path) -> None:
    side.write_text('{"key": ')


def _corrupt_wrong_length(npy: Path, side: Path) -> None:
    record = json.loads(side.read_text())
    record["num_samples"] += 1
    side.write_text(json.dumps(record))


def _corrupt_wrong_key(npy: Path, side: Path) -> None:
    record = json.loads(side.read_text())
    record["key"]["size"] = 999
    side.write_text(json.dumps(record))


def _corrupt_wrong_dtype(npy: Path, side: Path) -> None:
    with open(npy, "wb") as f:
        np.save(f, np.zeros(1000, np.float64))


def _corrupt_wrong_shape(npy: Path, side: Path) -> None:
    with open(npy, "wb") as f:
        np.save(f, np.zeros((500, 2), np.float32))


def _corrupt_missing_npy(npy: Path, side: Path) -> None:
    npy.unlink()


@pytest.mark.parametrize(
    "corrupt",
    [
        _corrupt_truncate,
        _corrupt_garbage,
        _corrupt_no_sidecar,
        _corrupt_bad_sidecar,
        _corrupt_wrong_length,
        _corrupt_wrong_key,
        _corrupt_wrong_dtype,
        _corrupt_wrong_shape,
        _corrupt_missing_npy,
    ],
)
def test_corrupt_cache_is_rebuilt(tmp_path, caplog, corrupt):
    build = Builder()
    cached_signal(KEY, build, tmp_path)
    (npy,) = tmp_path.glob("*.npy")
    corrupt(npy, npy.with_suffix(".json"))
    with caplog.at_level(logging.WARNING, logger="audiolstm.data.audio"):
        x, meta = cached_signal(KEY, build, tmp_path)
    assert build.calls == 2
    assert "rebuilding" in caplog.text
    np.testing.assert_array_equal(x, build.signal)
    assert meta["boundaries"] == [["x.wav", 0]]
    x3, _ = cached_signal(KEY, build, tmp_path)  # and the rebuilt entry is trusted again
    assert build.calls == 2
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".json", ".npy"]


def test_concurrent_builders_agree(tmp_path):
    """Threads stand in for DDP ranks: all build at once, all get the data, one entry stays."""
    results: list[np.ndarray] = []
    errors: list[BaseException] = []
    start = threading.Barrier(6)
    signal = noise(20000, 1)[:, 0]

    def build():
        time.sleep(0.01)
        return signal.copy(), {"n": 1}

    def rank():
        try:
            start.wait()
            results.append(np.array(cached_signal(KEY, build, tmp_path)[0]))
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=rank) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 6
    for r in results:
        np.testing.assert_array_equal(r, signal)
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".json", ".npy"]


def test_entry_replaced_by_another_rank_keeps_first_mapping_valid(tmp_path):
    """A rank finishing first, then another overwriting the entry: both mappings stay valid."""
    inner = Builder()
    seen = {}

    def outer_build():
        seen["inner"] = cached_signal(KEY, inner, tmp_path)[0]
        return inner.signal.copy(), {"boundaries": [["x.wav", 0]], "sample_rate": SR}

    outer, _ = cached_signal(KEY, outer_build, tmp_path)
    np.testing.assert_array_equal(seen["inner"], inner.signal)
    np.testing.assert_array_equal(outer, inner.signal)
    again, _ = cached_signal(KEY, Builder(fail=True), tmp_path)
    np.testing.assert_array_equal(again, inner.signal)


def test_stale_temp_files_are_cleaned_on_rebuild(tmp_path):
    build = Builder()
    cached_signal(KEY, build, tmp_path)
    (npy,) = tmp_path.glob("*.npy")
    stale = tmp_path / f".{npy.name}.99999.deadbeef.tmp"
    fresh = tmp_path / f".{npy.name}.99998.cafebabe.tmp"  # maybe a live writer: kept
    stale.write_bytes(b"partial")
    fresh.write_bytes(b"partial")
    old = time.time() - 3 * 24 * 3600
    os.utime(stale, (old, old))
    npy.with_suffix(".json").unlink()
    cached_signal(KEY, build, tmp_path)
    assert not stale.exists() and fresh.exists()


def test_cache_rejects_bad_build_output(tmp_path):
    with pytest.raises(ValueError, match="non-empty 1-D"):
        cached_signal(KEY, lambda: (np.zeros((3, 2), np.float32), {}), tmp_path)
    with pytest.raises(TypeError):
        cached_signal(KEY, lambda: (np.zeros(3, np.float32), {"p": Path("x")}), tmp_path)
    assert cache_files(tmp_path) == []


# --------------------------------------------------------------------------- source_signal


def test_source_signal_config_errors(tmp_path):
    with pytest.raises(UserError, match=r"^data\.source: unknown source 'mp4'"):
        source_signal("mp4", None, SR, tmp_path, 10.0, 0)
    for source in ("wav", "folder"):
        with pytest.raises(UserError, match=r"^data\.path: required"):
            source_signal(source, None, SR, tmp_path, 10.0, 0)
        with pytest.raises(UserError, match=r"^data\.path: required"):
            source_signal(source, "", SR, tmp_path, 10.0, 0)
    with pytest.raises(UserError, match=r"^data\.synth_seconds"):
        source_signal("synthetic", None, SR, tmp_path, 0.0, 0)
    with pytest.raises(UserError, match=r"^data\.sample_rate"):
        source_signal("synthetic", None, 0, tmp_path, 1.0, 0)
    assert cache_files(tmp_path) == []


def test_source_signal_synthetic_is_cached(tmp_path, monkeypatch):
    calls = []
    real = synth.synth_drone

    def counting(*args):
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(synth, "synth_drone", counting)
    x, meta = source_signal("synthetic", None, 8000, tmp_path / "cache", 3.0, 7)
    y, meta2 = source_signal("synthetic", None, 8000, tmp_path / "cache", 3.0, 7)
    assert calls == [(3.0, 8000, 7)]
    assert isinstance(y, np.memmap)
    np.testing.assert_array_equal(y, real(3.0, 8000, 7))
    assert meta == meta2
    assert meta["boundaries"] == [("synthetic", 0)]
    assert meta["source"] == "synthetic"
    assert (meta["sample_rate"], meta["num_samples"]) == (8000, 24000)
    source_signal("synthetic", None, 8000, tmp_path / "cache", 3.0, 8)  # other seed
    assert len(calls) == 2


def test_source_signal_wav_rebuilds_on_touch_and_rate(tmp_path, monkeypatch):
    p = tmp_path / "track.wav"
    x = noise(8000, 2)
    sf.write(p, x, SR, subtype="FLOAT")
    calls = []
    real = audio.load_audio

    def counting(path, sr):
        calls.append(sr)
        return real(path, sr)

    monkeypatch.setattr(sources, "load_audio", counting)
    cache = tmp_path / "cache"
    sig, meta = source_signal("wav", str(p), SR, cache, 0, 0)
    np.testing.assert_array_equal(sig, (x[:, 0] + x[:, 1]) * np.float32(0.5))
    assert meta["boundaries"] == [("track.wav", 0)] and meta["num_samples"] == 8000
    assert meta["path"] == str(p.resolve())
    source_signal("wav", str(p), SR, cache, 0, 0)
    assert calls == [SR]

    st = p.stat()
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    source_signal("wav", str(p), SR, cache, 0, 0)
    assert calls == [SR, SR]

    sig8, meta8 = source_signal("wav", str(p), 8000, cache, 0, 0)
    assert calls == [SR, SR, 8000]
    assert len(sig8) == 4000 and meta8["sample_rate"] == 8000


def test_source_signal_folder(tmp_path):
    d = tmp_path / "music"
    d.mkdir()
    sf.write(d / "1.wav", np.full(100, 0.25, np.float32), SR, subtype="FLOAT")
    sf.write(d / "2.wav", np.full(50, -0.5, np.float32), SR, subtype="FLOAT")
    cache = tmp_path / "cache"
    sig, meta = source_signal("folder", str(d), SR, cache, 0, 0)
    assert meta["boundaries"] == [("1.wav", 0), ("2.wav", 100)]
    assert len(sig) == 150 and sig[99] == 0.25 and sig[100] == -0.5
    sf.write(d / "3.flac", np.zeros(30, np.float32), SR)  # a new file changes the key
    sig, meta = source_signal("folder", str(d), SR, cache, 0, 0)
    assert meta["boundaries"][-1] == ("3.flac", 150) and len(sig) == 180


@pytest.mark.parametrize("problem", ["missing", "nan", "truncated", "empty_folder"])
def test_source_signal_bad_input_writes_nothing(tmp_path, problem):
    cache = tmp_path / "cache"
    p = tmp_path / "in.wav"
    source = "wav"
    if problem == "nan":
        sf.write(p, np.array([0.1, np.nan, 0.2], np.float32), SR, subtype="FLOAT")
    elif problem == "truncated":
        sf.write(p, np.zeros(1000, np.float32), SR, subtype="PCM_16")
        _truncate(p, 0.5)
    elif problem == "empty_folder":
        p = tmp_path / "folder"
        p.mkdir()
        source = "folder"
    with pytest.raises(UserError) as e:
        source_signal(source, str(p), SR, cache, 0, 0)
    user_error(e, p)
    assert not any(cache.rglob("*")) if cache.exists() else True


def test_source_signal_unwritable_cache_is_a_user_error(tmp_path):
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should be")
    with pytest.raises(UserError, match="cannot write the data cache"):
        source_signal("synthetic", None, 8000, blocker, 1.0, 0)
