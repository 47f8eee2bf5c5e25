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


def lookup(key: dict, cache_dir: str | Path) -> tuple[np.ndarray, dict] | None:
    """The memory-mapped entry for `key` if a complete, matching one exists, else None."""
    npy, side, key_json = _cache_paths(key, Path(cache_dir))
    return _load_cached(npy, side, key_json)


def peek(key: dict, cache_dir: str | Path) -> dict | None:
    """The sidecar record of a complete entry for `key` (nothing is mapped), else None.

    Cheap enough to ask for every file of a large corpus: one small JSON read and a
    stat. The array itself is checked when it is read.
    """
    npy, side, key_json = _cache_paths(key, Path(cache_dir))
    try:
        record = json.loads(side.read_text(encoding="utf-8"))
        n = int(record["num_samples"])
        size = npy.stat().st_size
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(record, dict) or record.get("key") != key_json:
        return None
    if not n * 4 < size <= n * 4 + 4096:  # .npy header + float32 data
        return None
    record["npy"] = str(npy)
    return record


def store(
    key: dict, signal: np.ndarray, meta: dict, cache_dir: str | Path, map_result: bool = True
) -> tuple[np.ndarray | None, dict]:
    """Write `signal` (non-empty 1-D float32) and `meta` as the entry for `key`, atomically.

    Returns the memory-mapped array (None when `map_result` is false) and the meta as
    stored. Writes go .npy then .json, each atomic, so a present sidecar means a
    complete array; several processes may store the same entry at once safely.
    """
    cache = Path(cache_dir)
    npy, side, key_json = _cache_paths(key, cache)
    arr = np.ascontiguousarray(signal, dtype=np.float32)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"build() must return a non-empty 1-D signal, got shape {arr.shape}")

    def write(fh) -> None:
        np.save(fh, arr, allow_pickle=False)

    return _commit(npy, side, key_json, int(arr.shape[0]), meta, write, map_result)


def _commit(npy: Path, side: Path, key_json: Any, n: int, meta: dict,
            write: Callable[[Any], None], map_result: bool) -> tuple[np.ndarray | None, dict]:
    """Temp .npy (fsync) -> map -> rename; then the sidecar, atomic. Shared by all writers."""
    meta_json = json.loads(_canonical(meta))  # fail on unserialisable meta before writing
    record = {
        "cache_version": CACHE_VERSION,
        "key": key_json,
        "num_samples": n,
        "dtype": "float32",
        "meta": meta_json,
    }
    npy.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(npy)
    tmp = temp_sibling(npy)
    mapped = None
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        # Map the temp before the rename: the mapping follows the inode, so it stays
        # valid even if another rank replaces the entry a moment later.
        if map_result:
            mapped = np.load(tmp, mmap_mode="r", allow_pickle=False)
        os.replace(tmp, npy)
    finally:
        tmp.unlink(missing_ok=True)
    atomic_write(side, lambda fh: fh.write(json.dumps(record, indent=1).encode("utf-8")))
    fsync_dir(npy.parent)
    return mapped, meta_json


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
    hit = lookup(key, cache_dir)
    if hit is not None:
        return hit
    signal, meta = build()
    mapped, meta_json = store(key, signal, meta, cache_dir)
    assert mapped is not None
    return mapped, meta_json


# --------------------------------------------------------------------------- corpora

_COPY_CHUNK = 1 << 22  # bytes per copy when the kernel cannot copy file to file


def _npy_data(path: Path, fh, n: int) -> None:
    """Position `fh` at the data of a float32 (n,) .npy, checking its header."""
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
    else:
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
    if shape != (n,) or fortran or dtype != np.dtype("<f4"):
        raise ValueError(f"{path}: holds {dtype} {shape}, expected float32 ({n},)")


def _copy_bytes(src, dst, nbytes: int, buf: bytearray) -> None:
    """Copy `nbytes` from src's position to dst's: in the kernel where it can, else chunks.

    Both are buffered file objects: the kernel copy uses explicit offsets (their buffers
    are ahead of or behind the descriptors), then both are seeked past what was copied.
    """
    dst.flush()
    src_pos, dst_pos = src.tell(), dst.tell()
    left = nbytes
    if hasattr(os, "copy_file_range"):
        try:
            while left > 0:
                done = os.copy_file_range(src.fileno(), dst.fileno(), min(left, 1 << 30),
                                          src_pos, dst_pos)
                if done == 0:
                    break
                left -= done
                src_pos += done
                dst_pos += done
        except OSError:  # another filesystem, an old kernel: copy through user space
            pass
        src.seek(src_pos)
        dst.seek(dst_pos)
    view = memoryview(buf)
    while left > 0:
        got = src.readinto(view[: min(left, len(buf))])
        if not got:
            raise ValueError(f"{src.name}: ends {left} bytes early")
        dst.write(view[:got])
        left -= got


def assemble(
    key: dict, parts: list[tuple[str, int]], meta: dict, cache_dir: str | Path
) -> tuple[np.ndarray, dict]:
    """Concatenate cached `.npy` parts `[(path, num_samples), ...]` into one entry for `key`.

    Streaming: each part is copied file to file (`copy_file_range`, else 4 MiB chunks),
    so memory stays a buffer whatever the corpus size. Atomic like every entry; returns
    the memory-mapped result.
    """
    cache = Path(cache_dir)
    npy, side, key_json = _cache_paths(key, cache)
    total = sum(n for _, n in parts)
    if total <= 0:
        raise ValueError("assemble() needs at least one non-empty part")

    def write(out) -> None:
        header = {"descr": "<f4", "fortran_order": False, "shape": (total,)}
        np.lib.format.write_array_header_1_0(out, header)
        out.flush()
        buf = bytearray(_COPY_CHUNK)
        for path, n in parts:
            with open(path, "rb") as src:
                _npy_data(Path(path), src, n)
                _copy_bytes(src, out, 4 * n, buf)
        out.flush()

    mapped, meta_json = _commit(npy, side, key_json, total, meta, write, True)
    assert mapped is not None
    return mapped, meta_json
