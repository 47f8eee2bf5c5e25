"""The on-disk signal cache: decode once, memory-map everywhere.

A decoded signal is stored as a `.npy` that every DDP rank and dataloader worker
memory-maps, so the whole job holds one copy. Writes are atomic (temp file + fsync +
rename, `.npy` before its sidecar) and every read is checked, so a killed run or a
damaged file costs a rebuild, never wrong data.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from audiolstm.atomic import atomic_write, fsync_dir, temp_sibling

log = logging.getLogger(__name__)

CACHE_VERSION = 1  # bump when the cache layout or the decoding pipeline changes
_STALE_TMP_SECONDS = 24 * 3600  # temp files this old belong to a dead writer



def _canonical(obj: Any) -> str:
    """Canonical JSON: the same key always hashes (and compares) the same."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )


def _cache_paths(key: dict, cache_dir: Path) -> tuple[Path, Path, Any]:
    canon = _canonical(key)
    digest = hashlib.sha256(canon.encode("utf-8")).hexdigest()[:16]
    return cache_dir / f"{digest}.npy", cache_dir / f"{digest}.json", json.loads(canon)


def _remove_stale_temps(npy: Path) -> None:
    """Delete temp files a killed writer left for this entry (old enough to be dead)."""
    cutoff = time.time() - _STALE_TMP_SECONDS
    for pattern in (f".{npy.name}.*.tmp", f".{npy.stem}.json.*.tmp"):
        for tmp in npy.parent.glob(pattern):
            try:
                if tmp.stat().st_mtime < cutoff:
                    tmp.unlink()
            except OSError:
                pass


def _load_cached(npy: Path, side: Path, key_json: Any) -> tuple[np.ndarray, dict] | None:
    """Map a complete, matching cache entry; remove and report a damaged one."""
    if not side.exists():
        if npy.exists():
            log.warning("%s: cache entry has no sidecar (interrupted write?); rebuilding", npy)
        return None
    try:
        record = json.loads(side.read_text(encoding="utf-8"))
        if not isinstance(record, dict) or record.get("key") != key_json:
            raise ValueError("sidecar key does not match the requested key")
        n = record["num_samples"]
        meta = record["meta"]
        arr = np.load(npy, mmap_mode="r", allow_pickle=False)
        if arr.dtype != np.float32 or arr.ndim != 1 or arr.shape[0] != n:
            raise ValueError(f"holds {arr.dtype} {arr.shape}, sidecar records float32 ({n},)")
        if not isinstance(meta, dict):
            raise ValueError("sidecar meta is not an object")
        return arr, meta
    except (OSError, ValueError, EOFError, KeyError, TypeError) as e:
        log.warning("%s: damaged or mismatching cache entry (%s); removing and rebuilding", npy, e)
        # Sidecar first: a present sidecar must always mean a complete .npy.
        side.unlink(missing_ok=True)
        npy.unlink(missing_ok=True)
        return None


def cached_signal(
    key: dict,
    build: Callable[[], tuple[np.ndarray, dict]],
    cache_dir: str | Path,
) -> tuple[np.ndarray, dict]:
    """Return `build()`'s signal via a memory-mapped on-disk cache keyed by `key`.

    `key` (JSON-serialisable) names the file `<sha256[:16]>.npy` with a `.json`
    sidecar holding the key and `build`'s meta. A hit maps the array read-only without
    calling `build`. Writes go .npy then .json, each atomic, so a present sidecar
    means a complete array; several processes may build at once safely.
    """
    cache = Path(cache_dir)
    npy, side, key_json = _cache_paths(key, cache)
    hit = _load_cached(npy, side, key_json)
    if hit is not None:
        return hit

    signal, meta = build()
    arr = np.ascontiguousarray(signal, dtype=np.float32)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"build() must return a non-empty 1-D signal, got shape {arr.shape}")
    meta_json = json.loads(_canonical(meta))  # fail on unserialisable meta before writing
    record = {
        "cache_version": CACHE_VERSION,
        "key": key_json,
        "num_samples": int(arr.shape[0]),
        "dtype": "float32",
        "meta": meta_json,
    }
    cache.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(npy)
    tmp = temp_sibling(npy)
    try:
        with open(tmp, "wb") as fh:
            np.save(fh, arr, allow_pickle=False)
            fh.flush()
            os.fsync(fh.fileno())
        # Map the temp before the rename: the mapping follows the inode, so it stays
        # valid even if another rank replaces the entry a moment later.
        mapped = np.load(tmp, mmap_mode="r", allow_pickle=False)
        os.replace(tmp, npy)
    finally:
        tmp.unlink(missing_ok=True)
    atomic_write(side, lambda fh: fh.write(json.dumps(record, indent=1).encode("utf-8")))
    fsync_dir(cache)
    return mapped, meta_json
