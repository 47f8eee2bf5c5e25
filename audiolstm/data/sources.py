"""Data sources: which audio the configuration means, resolved to one cached signal.

`data.source=synthetic` (the built-in drone), `wav` (one file) or `folder` (every audio
file in a folder). Input is validated before any cache file is written, so bad input
leaves nothing behind.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from audiolstm.data import synth
from audiolstm.data.audio import _check_is_file, list_audio_files, load_audio, load_folder
from audiolstm.data.cache import CACHE_VERSION, cached_signal
from audiolstm.errors import UserError

SOURCES = ("synthetic", "wav", "folder")
RESAMPLER = "soxr-HQ"  # part of the cache key: a different resampler means different data



def _file_fingerprint(p: Path) -> dict:
    """What identifies a file's content cheaply: a changed size or mtime means rebuild."""
    st = _check_is_file(p)
    return {"name": p.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def source_signal(
    source: str,
    path: str | None,
    sample_rate: int,
    cache_dir: str | Path,
    synth_seconds: float,
    synth_seed: int,
) -> tuple[np.ndarray, dict]:
    """Resolve the configured data source to a memory-mapped mono float32 signal.

    Returns `(signal, meta)` with meta `{"source", "sample_rate", "num_samples",
    "boundaries": [(name, start), ...], "path"}`. Input is validated before any cache
    file is written, so bad input leaves nothing behind.
    """
    if source not in SOURCES:
        raise UserError(
            f"data.source: unknown source {source!r}; expected one of {', '.join(SOURCES)}"
        )
    if not (isinstance(sample_rate, (int, np.integer)) and sample_rate > 0):
        raise UserError(f"data.sample_rate: must be a positive integer, got {sample_rate!r}")
    sr = int(sample_rate)
    common = {"cache_version": CACHE_VERSION, "sample_rate": sr, "source": source}

    build: Callable[[], tuple[np.ndarray, dict]]
    if source == "synthetic":
        if not (
            isinstance(synth_seconds, (int, float))
            and math.isfinite(synth_seconds)
            and synth_seconds > 0
        ):
            raise UserError(f"data.synth_seconds: must be a positive number, got {synth_seconds!r}")
        seconds, seed = float(synth_seconds), int(synth_seed)
        key = {**common, "seconds": seconds, "seed": seed, "synth_version": synth.VERSION}
        origin = f"synth_drone(seconds={seconds:g}, seed={seed})"

        def build() -> tuple[np.ndarray, dict]:
            return synth.synth_drone(seconds, sr, seed), {"boundaries": [["synthetic", 0]]}

    else:
        if not path:
            raise UserError(
                f"data.path: required when data.source={source} "
                f"({'an audio file' if source == 'wav' else 'a folder of audio'})"
            )
        p = Path(path).expanduser().resolve()
        origin = str(p)
        if source == "wav":
            key = {**common, "path": origin, "resampler": RESAMPLER, **_file_fingerprint(p)}

            def build() -> tuple[np.ndarray, dict]:
                return load_audio(p, sr), {"boundaries": [[p.name, 0]]}

        else:
            files = [_file_fingerprint(f) for f in list_audio_files(p)]
            key = {**common, "path": origin, "resampler": RESAMPLER, "files": files}

            def build() -> tuple[np.ndarray, dict]:
                signal, bounds = load_folder(p, sr)
                return signal, {"boundaries": [[name, start] for name, start in bounds]}

    def build_with_meta() -> tuple[np.ndarray, dict]:
        signal, meta = build()
        meta.update(source=source, path=origin, sample_rate=sr, num_samples=int(len(signal)))
        return signal, meta

    try:
        signal, meta = cached_signal(key, build_with_meta, cache_dir)
    except OSError as e:
        where = e.filename or cache_dir
        raise UserError(f"{where}: cannot write the data cache ({e.strerror or e})") from None
    meta = dict(meta)
    meta["boundaries"] = [(str(name), int(start)) for name, start in meta["boundaries"]]
    return signal, meta
