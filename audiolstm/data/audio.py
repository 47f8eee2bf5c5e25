"""Audio file I/O and validation: decode any supported file to mono float32 at a rate.

Every problem with a user's file (missing, empty, truncated, not audio, NaN, silent)
is one `UserError` line naming the file. Writing is one function, `write_wav`, atomic
and at 32-bit float so generated audio keeps its original scale exactly.
"""

from __future__ import annotations

import logging
import os
import struct
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from audiolstm.atomic import atomic_write
from audiolstm.errors import UserError, existing_file, positive_int

log = logging.getLogger(__name__)

# Extensions libsndfile (>= 1.1, which soundfile bundles) decodes; MP3 needs >= 1.1.
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".aiff", ".aif", ".mp3")

_BLOCK_FRAMES = 1 << 18  # frames decoded per read: bounds the multi-channel temporary
_PCM_TAGS = {0x0001, 0x0003, 0x0006, 0x0007}  # PCM, IEEE float, A-law, mu-law: 1 block=1 frame
_WAVE_FORMAT_EXTENSIBLE = 0xFFFE
_UNKNOWN_SIZES = {0, 0xFFFFFFFF}  # streaming writers leave these placeholders in RIFF sizes


# --------------------------------------------------------------------------- reading


def check_audio_file(p: Path) -> os.stat_result:
    """Stat a path the user named as an audio file, turning each failure into one line."""
    return existing_file(p, str(p), "an audio file")


def _riff_truncation(p: Path) -> str | None:
    """For RIFF/RF64 WAVE files: describe a `data` chunk that promises more than the file holds.

    libsndfile silently clamps such a chunk to the bytes present, so a half-copied
    file would otherwise load as a shorter, plausible signal.
    """
    with open(p, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[8:12] != b"WAVE" or head[:4] not in (b"RIFF", b"RF64"):
            return None
        file_size = os.fstat(f.fileno()).st_size
        rf64_data_size: int | None = None
        block_align = 0
        format_tag = 0
        pos = 12
        while pos + 8 <= file_size:
            f.seek(pos)
            chunk_id, size = struct.unpack("<4sI", f.read(8))
            if chunk_id == b"ds64":
                body = f.read(min(size, 24))
                if len(body) >= 16:
                    rf64_data_size = struct.unpack("<Q", body[8:16])[0]
            elif chunk_id == b"fmt ":
                body = f.read(min(size, 40))
                if len(body) >= 14:
                    format_tag, _, _, _, block_align = struct.unpack("<HHIIH", body[:14])
                if format_tag == _WAVE_FORMAT_EXTENSIBLE and len(body) >= 26:
                    format_tag = struct.unpack("<H", body[24:26])[0]  # SubFormat GUID
            elif chunk_id == b"data":
                if head[:4] == b"RF64" and size == 0xFFFFFFFF and rf64_data_size is not None:
                    size = rf64_data_size
                elif size in _UNKNOWN_SIZES:
                    return None
                present = file_size - (pos + 8)
                if size <= present:
                    return None
                if format_tag in _PCM_TAGS and block_align > 0:
                    promised, held = size // block_align, present // block_align
                    if promised > held:
                        return f"header promises {promised} frames but the file holds {held}"
                    return None
                return f"header promises {size} bytes of audio data but the file holds {present}"
            pos += 8 + size + (size & 1)  # chunks are padded to even sizes
    return None


def _aiff_promised_frames(p: Path) -> int | None:
    """For AIFF/AIFC files: the frame count the COMM chunk promises (libsndfile clamps it)."""
    with open(p, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"FORM" or head[8:12] not in (b"AIFF", b"AIFC"):
            return None
        file_size = os.fstat(f.fileno()).st_size
        pos = 12
        while pos + 8 <= file_size:
            f.seek(pos)
            chunk_id, size = struct.unpack(">4sI", f.read(8))
            if chunk_id == b"COMM":
                body = f.read(6)
                return struct.unpack(">hI", body)[1] if len(body) == 6 else None
            pos += 8 + size + (size & 1)
    return None


def _ogg_truncated(info: str) -> bool:
    """libsndfile's log says so when an Ogg stream stops without its end-of-stream page."""
    return "lacks an end-of-stream" in info or "ended unexpectedly" in info


def _decode_mono(p: Path, f: sf.SoundFile) -> np.ndarray:
    """Decode all frames to a mono float32 array, block by block (one copy of the signal)."""
    expected = f.frames
    out = np.empty(expected, dtype=np.float32)
    buf = np.empty((min(_BLOCK_FRAMES, max(expected, 1)), f.channels), dtype=np.float32)
    extra: list[np.ndarray] = []  # only if the decoder yields more than the header said
    pos = 0
    while True:
        try:
            block = f.read(len(buf), dtype="float32", always_2d=True, out=buf)
        except sf.LibsndfileError as e:
            raise UserError(
                f"{p}: truncated or corrupt: header promises {expected} frames but decoding "
                f"failed after {pos} ({getattr(e, 'error_string', e)})"
            ) from None
        if len(block) == 0:
            break
        mono = block[:, 0] if f.channels == 1 else block.mean(axis=1, dtype=np.float32)
        take = min(len(mono), expected - pos)
        out[pos : pos + take] = mono[:take]
        if take < len(mono):
            extra.append(mono[take:].copy())
        pos += len(mono)
    if pos < expected:
        raise UserError(
            f"{p}: truncated: header promises {expected} frames but the file holds {pos}"
        )
    return np.concatenate([out, *extra]) if extra else out


def load_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """Read any libsndfile-supported file as contiguous mono float32 at `sample_rate`.

    Channels are averaged; other rates are resampled with soxr (HQ). Every problem a
    user can fix (missing, empty, not audio, truncated, NaN/Inf) is one `UserError`
    line starting with the path, raised before anything is returned or cached.
    """
    return decode_audio(path, sample_rate)[0]


def decode_audio(path: str | Path, sample_rate: int) -> tuple[np.ndarray, dict]:
    """`load_audio` plus what the file was: `{"rate", "channels", "frames", "format"}`."""
    positive_int(sample_rate, "sample_rate", error=ValueError)
    p = Path(path)
    check_audio_file(p)
    try:
        problem = _riff_truncation(p)
        promised = _aiff_promised_frames(p)
    except OSError as e:
        raise UserError(f"{p}: cannot read ({e.strerror or e})") from None
    if problem:
        raise UserError(f"{p}: truncated: {problem}")
    try:
        f = sf.SoundFile(p)
    except sf.LibsndfileError as e:
        reason = getattr(e, "error_string", str(e))
        raise UserError(f"{p}: not a readable audio file (libsndfile: {reason})") from None
    with f:
        sr_in = f.samplerate
        info = {"rate": int(sr_in), "channels": int(f.channels), "format": str(f.format)}
        if promised is not None and promised > f.frames:
            raise UserError(
                f"{p}: truncated: header promises {promised} frames but the file holds {f.frames}"
            )
        ogg_cut = f.format == "OGG" and _ogg_truncated(f.extra_info)
        if f.frames <= 0:
            hint = " (the Ogg stream ends without its end page: truncated?)" if ogg_cut else ""
            raise UserError(f"{p}: contains no audio samples{hint}")
        x = _decode_mono(p, f)
    info["frames"] = int(len(x))
    if ogg_cut:
        log.warning(
            "%s: Ogg stream ends without its end page (truncated?); using its %d frames", p, len(x)
        )
    bad = ~np.isfinite(x)
    n_bad = int(np.count_nonzero(bad))
    if n_bad:
        first = int(np.argmax(bad))
        raise UserError(
            f"{p}: {n_bad} non-finite samples (NaN/Inf), first at sample {first} "
            f"({first / sr_in:.3f} s)"
        )
    del bad
    if sr_in != sample_rate:
        x = soxr.resample(x, sr_in, int(sample_rate), quality="HQ")
    return np.ascontiguousarray(x, dtype=np.float32), info


def _is_hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


def list_audio_files(directory: str | Path, recursive: bool = False) -> list[Path]:
    """Audio files in `directory` (extension, case-insensitive), sorted by relative path.

    With `recursive`, subfolders are searched too (symlinked folders are not followed).
    Hidden files and folders are skipped: macOS leaves `._name.wav` resource forks next
    to real audio on shared drives, and they do not decode.
    """
    d = Path(directory)
    if not d.exists():
        raise UserError(f"{d}: no such folder")
    if not d.is_dir():
        raise UserError(f"{d}: not a folder (data.source=folder expects a directory of audio)")
    try:
        entries = list(d.rglob("*") if recursive else d.iterdir())
    except OSError as e:
        raise UserError(f"{d}: cannot list folder ({e.strerror or e})") from None
    files = sorted(
        (
            e
            for e in entries
            if e.suffix.lower() in AUDIO_EXTENSIONS
            and not _is_hidden(e.relative_to(d))
            and e.is_file()
        ),
        key=lambda e: e.relative_to(d).as_posix(),
    )
    if not files:
        where = "subfolders included" if recursive else (
            "subfolders are not searched; data.recursive=true searches them")
        raise UserError(
            f"{d}: no audio files (looked for {', '.join(AUDIO_EXTENSIONS)}; {where})"
        )
    return files


# --------------------------------------------------------------------------- writing


def write_wav(path: str | Path, signal: np.ndarray, sample_rate: int) -> None:
    """Write a 32-bit float WAV atomically, so the original scale survives exactly.

    A reader never sees a half-written file; parent folders are created. Signals over
    4 GiB of samples are written as RF64, which plain WAV cannot hold.
    """
    positive_int(sample_rate, "sample_rate", error=ValueError)
    x = np.asarray(signal, dtype=np.float32)
    if x.ndim not in (1, 2):
        raise ValueError(f"signal must be 1-D (or frames x channels), got shape {x.shape}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fmt = "RF64" if x.nbytes > 0xFFFFFFFF - (1 << 20) else "WAV"
    atomic_write(target, lambda fh: sf.write(fh, x, int(sample_rate), subtype="FLOAT", format=fmt))
