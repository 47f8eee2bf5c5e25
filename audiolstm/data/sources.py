"""Data sources: which audio the configuration means, resolved to one cached corpus.

`data.source=synthetic` (the built-in drone), `wav` (one file), `folder` (every audio
file in a folder, `data.recursive=true` for subfolders) or `manifest` (a list of files:
one path per line, or a CSV with a `path[,split]` header; relative paths are resolved
against the manifest's folder).

Every source becomes a `Corpus`: one memory-mapped float32 signal (the files decoded,
resampled, mixed to mono and concatenated) plus the table of where each file starts and
ends in it. Corpora of several files are cached per file (key: absolute path, size,
mtime, sample rate, resampler), decoded in parallel processes (`data.decode_workers`)
and assembled into the corpus entry by streaming file-to-file copies, so adding or
changing one file decodes only that file and memory stays a few files whatever the
corpus size. A bad file is one `UserError` line naming it (`data.on_bad_file=error`) or
is skipped with a warning that lists every skipped file and why (`skip`).
"""

from __future__ import annotations

import concurrent.futures as cf
import csv
import hashlib
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from audiolstm.data import synth
from audiolstm.data.audio import check_audio_file, decode_audio, list_audio_files, load_audio
from audiolstm.data.cache import CACHE_VERSION, assemble, cached_signal, lookup, peek, store
from audiolstm.data.splits import SPLITS
from audiolstm.errors import UserError, existing_file, positive_int

log = logging.getLogger(__name__)

SOURCES = ("synthetic", "wav", "folder", "manifest")
BAD_FILE_POLICIES = ("error", "skip")
RESAMPLER = "soxr-HQ"  # part of the cache key: a different resampler means different data
FILE_ENTRIES = "files"  # the cache's subfolder of per-file entries of corpora


# --------------------------------------------------------------------------- types


@dataclass(frozen=True)
class CorpusFile:
    """One decoded file of a corpus: where it lies in the corpus signal and what it was."""

    name: str  # as the user knows it: relative to the folder, or as the manifest wrote it
    path: str  # absolute
    start: int  # first sample in the corpus signal
    end: int  # one past its last sample
    rate: int = 0  # the file's own sample rate (0: unknown, e.g. the built-in drone)
    channels: int = 1
    format: str = ""

    @property
    def num_samples(self) -> int:
        return self.end - self.start

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CorpusFile:
        return cls(**{k: d[k] for k in ("name", "path", "start", "end", "rate", "channels",
                                        "format") if k in d})


@dataclass(frozen=True)
class SkippedFile:
    """A file `data.on_bad_file=skip` left out, and why."""

    name: str
    path: str
    reason: str


@dataclass(frozen=True)
class ListedFile:
    """One file a folder or manifest names, before decoding."""

    name: str
    path: Path
    split: str | None = None  # a manifest's `split` column
    where: str = ""  # "manifest.csv:12" for messages


@dataclass
class Corpus:
    """A resolved source: the memory-mapped signal and its file table."""

    signal: np.ndarray
    sample_rate: int
    source: str
    origin: str  # the folder, manifest or file (or the drone's description)
    files: tuple[CorpusFile, ...]
    skipped: tuple[SkippedFile, ...] = ()
    listed_splits: tuple[str | None, ...] = ()  # per file: a manifest's split column
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.listed_splits:
            self.listed_splits = (None,) * len(self.files)
        self.meta = {
            "source": self.source, "path": self.origin, "sample_rate": self.sample_rate,
            "num_samples": int(self.signal.shape[0]),
            "boundaries": [(f.name, f.start) for f in self.files],
            "files": [f.to_dict() for f in self.files],
            "skipped": [asdict(s) for s in self.skipped],
        }


# --------------------------------------------------------------------------- listing


def _resolve(p: Path) -> Path:
    try:
        return p.expanduser().resolve()
    except (OSError, RuntimeError):  # symlink loops
        return p.expanduser().absolute()


def list_folder(directory: str | Path, recursive: bool = False) -> list[ListedFile]:
    """The audio files of a folder as `ListedFile`s named by their path inside it."""
    d = _resolve(Path(directory))
    files = list_audio_files(d, recursive)
    out, seen = [], {}
    for f in files:
        real = _resolve(f)
        name = f.relative_to(d).as_posix()
        if real in seen:
            raise UserError(f"{d}: {name} and {seen[real]} are the same file (a link); "
                            "remove one so no audio is counted twice")
        seen[real] = name
        out.append(ListedFile(name, real, None, str(f)))
    return out


def read_manifest(path: str | Path) -> list[ListedFile]:
    """Parse a manifest: one path per line (`#` comments, blank lines), or CSV `path[,split]`.

    A CSV is recognised by its header, whose first column is `path`; a `split` column
    assigns each file to train, val or test (used with `data.split_by=file`); other
    columns are ignored. Relative paths are resolved against the manifest's folder. A
    missing file, a duplicate, an empty path or an unknown split is one `UserError`
    line naming the manifest and the line number.
    """
    m = _resolve(Path(path))
    existing_file(m, str(m), "a list of audio files")
    try:
        text = m.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise UserError(f"{m}: not a text manifest (expected one audio path per line, "
                        "or a CSV with a path column)") from None
    except OSError as e:
        raise UserError(f"{m}: cannot read ({e.strerror or e})") from None
    lines = [(i, line) for i, line in enumerate(text.splitlines(), 1)
             if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise UserError(f"{m}: empty manifest (no audio file listed)")
    first = next(csv.reader([lines[0][1]]))
    is_csv = first and first[0].strip().lower() == "path"
    split_col = None
    if is_csv:
        header = [c.strip().lower() for c in first]
        split_col = header.index("split") if "split" in header else None
        lines = lines[1:]
        if not lines:
            raise UserError(f"{m}: empty manifest (a header and no audio file listed)")
    out: list[ListedFile] = []
    seen: dict[Path, int] = {}
    for lineno, line in lines:
        where = f"{m}:{lineno}"
        if is_csv:
            row = next(csv.reader([line]))
            raw = row[0].strip() if row else ""
            split = None
            if split_col is not None:
                split = row[split_col].strip().lower() if len(row) > split_col else ""
                if split not in SPLITS:
                    raise UserError(f"{where}: split {split!r} is not one of "
                                    f"{', '.join(SPLITS)}")
        else:
            raw, split = line.strip(), None
        if not raw:
            raise UserError(f"{where}: no path on this line")
        q = Path(raw).expanduser()
        q = _resolve(q if q.is_absolute() else m.parent / q)
        if not q.exists():
            raise UserError(f"{where}: {raw}: no such file")
        if q.is_dir():
            raise UserError(f"{where}: {raw}: is a folder (list audio files; or use data=folder)")
        if q in seen:
            raise UserError(f"{where}: {raw} is listed twice (also on line {seen[q]})")
        seen[q] = lineno
        out.append(ListedFile(raw, q, split, where))
    return out


# --------------------------------------------------------------------------- decoding


def _file_key(lf: ListedFile, sample_rate: int) -> dict:
    st = check_audio_file(lf.path)
    return {"cache_version": CACHE_VERSION, "kind": "file", "path": str(lf.path),
            "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sample_rate": sample_rate,
            "resampler": RESAMPLER}


def _decode_entry(path: str, key: dict, sample_rate: int, cache_dir: str) -> tuple[str, Any]:
    """Decode one file into its cache entry (runs in a worker process).

    Returns ("ok", record meta), ("bad", the file's one-line problem) or ("cache", the
    cache's). The decoded audio never travels back: the parent reads the entry.
    """
    try:
        x, info = decode_audio(path, sample_rate)
    except UserError as e:
        return "bad", str(e)
    info["digest"] = hashlib.blake2b(memoryview(x).cast("B"), digest_size=16).hexdigest()
    info["num_samples"] = int(x.shape[0])
    try:
        store(key, x, info, cache_dir, map_result=False)
    except OSError as e:
        return "cache", f"{e.filename or cache_dir}: cannot write the data cache ({e.strerror or e})"
    return "ok", info


def default_decode_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


class _Progress:
    """Files, hours decoded and ETA: a rich bar on a terminal, else a line every 10 s."""

    def __init__(self, total_files: int, total_bytes: int, enabled: bool | None) -> None:
        self.total_files, self.total_bytes = total_files, max(1, total_bytes)
        self.files = self.bytes = 0
        self.seconds = 0.0
        self.t0 = self._last = time.perf_counter()
        tty = sys.stderr.isatty()
        self.rich = None
        if enabled is not False and tty:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self.rich = Progress(TextColumn("decoding audio"), BarColumn(),
                                 TextColumn("{task.fields[files]}"),
                                 TextColumn("{task.fields[hours]}"), TimeRemainingColumn(),
                                 transient=True)
            self.task = self.rich.add_task("decode", total=self.total_bytes, files="", hours="")
            self.rich.start()
        self.plain = enabled is not False and not tty

    def _text(self) -> tuple[str, str, str]:
        elapsed = time.perf_counter() - self.t0
        frac = self.bytes / self.total_bytes
        eta = elapsed * (1 - frac) / frac if frac > 0 else math.nan
        eta_s = f"{eta // 60:.0f} min {eta % 60:02.0f} s" if math.isfinite(eta) else "?"
        return (f"{self.files}/{self.total_files} files", f"{self.seconds / 3600:.2f} h", eta_s)

    def update(self, nbytes: int, seconds: float) -> None:
        self.files += 1
        self.bytes += nbytes
        self.seconds += seconds
        files, hours, eta = self._text()
        if self.rich is not None:
            self.rich.update(self.task, completed=self.bytes, files=files, hours=hours)
        elif self.plain:
            now = time.perf_counter()
            if now - self._last >= 10 or self.files == self.total_files:
                self._last = now
                log.info("decoding audio: %s, %s decoded, ETA %s", files, hours, eta)

    def close(self) -> None:
        if self.rich is not None:
            self.rich.stop()


def _decode_missing(todo: list[tuple[int, ListedFile, dict]], sample_rate: int, cache_dir: str,
                    workers: int, stop_on_bad: bool, progress: bool | None
                    ) -> dict[int, tuple[str, Any]]:
    """Decode the files with no cache entry, in `workers` processes; results by index."""
    results: dict[int, tuple[str, Any]] = {}
    sizes = {i: lf.path.stat().st_size for i, lf, _ in todo}
    bar = _Progress(len(todo), sum(sizes.values()), progress)

    def done(i: int, res: tuple[str, Any]) -> bool:
        results[i] = res
        seconds = res[1]["num_samples"] / sample_rate if res[0] == "ok" else 0.0
        bar.update(sizes[i], seconds)
        return res[0] == "cache" or (stop_on_bad and res[0] == "bad")

    try:
        if workers <= 1 or len(todo) <= 1:
            for i, lf, key in todo:
                if done(i, _decode_entry(str(lf.path), key, sample_rate, cache_dir)):
                    break
            return results
        with cf.ProcessPoolExecutor(max_workers=min(workers, len(todo))) as pool:
            futures = {pool.submit(_decode_entry, str(lf.path), key, sample_rate, cache_dir): i
                       for i, lf, key in todo}
            for fut in cf.as_completed(futures):
                if done(futures[fut], fut.result()):
                    for other in futures:
                        other.cancel()
                    break
        return results
    finally:
        bar.close()


def build_corpus(
    listed: Sequence[ListedFile],
    sample_rate: int,
    cache_dir: str | Path,
    source: str,
    origin: str,
    decode_workers: int | None = None,
    on_bad_file: str = "error",
    progress: bool | None = None,
) -> Corpus:
    """Decode (what is not cached yet) and assemble `listed` into one corpus entry."""
    if on_bad_file not in BAD_FILE_POLICIES:
        raise UserError(f"data.on_bad_file={on_bad_file!r} is not one of "
                        f"{', '.join(BAD_FILE_POLICIES)}")
    workers = default_decode_workers() if decode_workers is None else int(decode_workers)
    cache = str(cache_dir)
    file_cache = os.path.join(cache, FILE_ENTRIES)
    bad: dict[int, str] = {}
    keys: dict[int, dict] = {}
    for i, lf in enumerate(listed):
        try:
            keys[i] = _file_key(lf, sample_rate)
        except UserError as e:
            bad[i] = str(e)
    records: dict[int, dict] = {}
    todo = []
    for i, key in keys.items():
        rec = peek(key, file_cache)
        if rec is None:
            todo.append((i, listed[i], key))
        else:
            records[i] = rec
    stop = on_bad_file == "error"
    if todo and not (stop and bad):
        if len(todo) > 1:
            log.info("decoding %d of %d files at %d Hz with %d process(es)", len(todo),
                     len(listed), sample_rate, min(workers, len(todo)))
        for i, (status, value) in _decode_missing(todo, sample_rate, file_cache, workers, stop,
                                                  progress).items():
            if status == "cache":
                raise UserError(value)
            if status == "bad":
                bad[i] = value
            else:
                rec = peek(keys[i], file_cache)
                if rec is None:  # removed under us: very unlikely; say so plainly
                    raise UserError(f"{cache}: a cache entry vanished while building; run again")
                records[i] = rec
    # The same audio twice would leak between splits: a bad file like any other.
    by_digest: dict[str, int] = {}
    for i in sorted(records):
        digest = records[i]["meta"].get("digest")
        if digest in by_digest:
            bad[i] = (f"{listed[i].path}: the same audio as {listed[by_digest[digest]].name} "
                      "(a duplicate)")
        else:
            by_digest[digest] = i
    if bad and stop:
        first = min(bad)
        more = f" (and {len(bad) - 1} more bad files)" if len(bad) > 1 else ""
        raise UserError(f"{bad[first]}{more}; data.on_bad_file=skip leaves bad files out")
    good = [i for i in range(len(listed)) if i in records and i not in bad]
    skipped = tuple(SkippedFile(listed[i].name, str(listed[i].path), bad[i]) for i in sorted(bad))
    if not good:
        raise UserError(f"{origin}: no readable audio ({len(listed)} files, all bad: "
                        f"{skipped[0].reason})")
    if skipped:
        log.warning("data.on_bad_file=skip: skipped %d of %d files:%s", len(skipped),
                    len(listed), "".join(f"\n  {s.name}: {s.reason}" for s in skipped))
    corpus_key = {"cache_version": CACHE_VERSION, "kind": "corpus", "sample_rate": sample_rate,
                  "resampler": RESAMPLER, "files": [keys[i] for i in good]}
    parts_meta = [{k: records[i]["meta"].get(k) for k in ("rate", "channels", "format",
                                                           "num_samples")} for i in good]
    try:
        hit = lookup(corpus_key, cache)
        if hit is None:
            hit = assemble(corpus_key, [(records[i]["npy"], records[i]["num_samples"])
                                        for i in good], {"parts": parts_meta}, cache)
    except OSError as e:
        where = e.filename or cache
        raise UserError(f"{where}: cannot write the data cache ({e.strerror or e})") from None
    except ValueError as e:  # a part damaged between peek and copy
        raise UserError(f"{cache}: damaged cache entry ({e}); delete the folder and run again"
                        ) from None
    signal, _ = hit
    files, start = [], 0
    for i, part in zip(good, parts_meta, strict=True):
        n = int(part["num_samples"])
        files.append(CorpusFile(listed[i].name, str(listed[i].path), start, start + n,
                                int(part["rate"]), int(part["channels"]), str(part["format"])))
        start += n
    return Corpus(signal, sample_rate, source, origin, tuple(files), skipped,
                  tuple(listed[i].split for i in good))


# --------------------------------------------------------------------------- sources


def _one_file_info(p: Path) -> dict:
    try:
        i = sf.info(str(p))
        return {"rate": int(i.samplerate), "channels": int(i.channels), "format": str(i.format)}
    except (sf.LibsndfileError, RuntimeError, OSError):
        return {"rate": 0, "channels": 0, "format": ""}


def load_corpus(
    source: str,
    path: str | None,
    sample_rate: int,
    cache_dir: str | Path,
    synth_seconds: float = 600.0,
    synth_seed: int = 0,
    recursive: bool = False,
    decode_workers: int | None = None,
    on_bad_file: str = "error",
    progress: bool | None = None,
) -> Corpus:
    """Resolve the configured data source to a `Corpus` (memory-mapped, cached).

    Input is validated before any cache file is written; a bad listing (missing,
    duplicate, empty) leaves nothing behind. With several files, the cache keeps one
    entry per decoded file (complete entries of good files survive a bad one, so the
    next run decodes only what changed) and one assembled corpus entry.
    """
    if source not in SOURCES:
        raise UserError(
            f"data.source: unknown source {source!r}; expected one of {', '.join(SOURCES)}"
        )
    sr = positive_int(sample_rate, "data.sample_rate")
    common = {"cache_version": CACHE_VERSION, "sample_rate": sr, "source": source}

    def cached(key: dict, build: Callable[[], tuple[np.ndarray, dict]]) -> tuple[np.ndarray, dict]:
        try:
            return cached_signal(key, build, cache_dir)
        except OSError as e:
            where = e.filename or cache_dir
            raise UserError(f"{where}: cannot write the data cache ({e.strerror or e})") from None

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
        signal, _ = cached(key, lambda: (synth.synth_drone(seconds, sr, seed), {}))
        n = int(signal.shape[0])
        return Corpus(signal, sr, source, origin,
                      (CorpusFile("synthetic", origin, 0, n, sr, 1, "synthetic"),))

    if not path:
        what = {"wav": "an audio file", "folder": "a folder of audio",
                "manifest": "a list of audio files"}[source]
        raise UserError(f"data.path: required when data.source={source} ({what})")
    p = _resolve(Path(str(path)))
    origin = str(p)
    if source == "wav":
        st = check_audio_file(p)
        key = {**common, "path": origin, "resampler": RESAMPLER, "name": p.name,
               "size": st.st_size, "mtime_ns": st.st_mtime_ns}

        def build() -> tuple[np.ndarray, dict]:
            return load_audio(p, sr), _one_file_info(p)

        signal, meta = cached(key, build)
        n = int(signal.shape[0])
        f = CorpusFile(p.name, origin, 0, n, int(meta.get("rate", 0)),
                       int(meta.get("channels", 0)), str(meta.get("format", "")))
        return Corpus(signal, sr, source, origin, (f,))

    listed = list_folder(p, recursive) if source == "folder" else read_manifest(p)
    return build_corpus(listed, sr, cache_dir, source, origin, decode_workers, on_bad_file,
                        progress)


def corpus_from_config(data: Mapping[str, Any], progress: bool | None = None) -> Corpus:
    """`load_corpus` with the `data` config node's settings."""
    return load_corpus(
        source=data["source"], path=data.get("path"), sample_rate=data["sample_rate"],
        cache_dir=data["cache_dir"], synth_seconds=data.get("synth_seconds", 600.0),
        synth_seed=data.get("synth_seed", 0), recursive=bool(data.get("recursive", False)),
        decode_workers=data.get("decode_workers"),
        on_bad_file=data.get("on_bad_file", "error"), progress=progress,
    )
