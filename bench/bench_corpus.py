"""Benchmark: a corpus of many files (issue 12 item 8): cache build, rebuild, training-start
memory, loader throughput.

A generated corpus (default 1,000 files totalling 10 hours) at mixed rates (16, 22.05 and
44.1 kHz), mono and stereo, WAV (16-bit) and FLAC (16-bit), decoded to 16 kHz mono:

- first cache build: wall time, files/s, hours of audio per second, peak memory of the
  building process and of its decode workers;
- the same corpus again (all cached), and after adding one file (decodes one, re-assembles);
- a training start (`train.py` with a small model, 5 steps) over the whole corpus and over
  a tenth of it: peak RssAnon (allocated) must not grow with the corpus; RssFile (pages
  of the memory-mapped cache, shared with the page cache) does;
- loader batches/s (100 x 41 x 2000, num_workers=0, ShuffleSampler) over the corpus's
  training split (1,000 pieces) vs one segment of the same length.

Each measured step runs in a fresh interpreter, sampled from /proc every 10 ms.

    python bench/bench_corpus.py                       # 1,000 files / 10 h; updates RESULTS.md
    python bench/bench_corpus.py --hours 1 --no-write  # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import machine, write_section

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SR = 16_000
RATES = (16_000, 22_050, 44_100)


# --------------------------------------------------------------------------- corpus


def _make_files(args: tuple[str, list[tuple[int, float, int, int, str]]]) -> int:
    """Write files (index, seconds, rate, channels, format): tones + noise, 16-bit."""
    import numpy as np
    import soundfile as sf

    folder, todo = args
    for i, seconds, rate, channels, fmt in todo:
        rng = np.random.default_rng(i)
        n = int(seconds * rate)
        t = np.arange(n, dtype=np.float32) / rate
        x = np.zeros(n, np.float32)
        for f in rng.uniform(80, 2000, 3):
            x += np.float32(0.1) * np.sin(np.float32(2 * np.pi * f) * t)
        x += rng.standard_normal(n, dtype=np.float32) * np.float32(0.02)
        data = x if channels == 1 else np.stack([x, x[::-1]], axis=1)
        ext = "wav" if fmt == "WAV" else "flac"
        sf.write(f"{folder}/track{i:05d}.{ext}", data, rate, subtype="PCM_16", format=fmt)
    return len(todo)


def plan(files: int, hours: float, seed: int = 0) -> list[tuple[int, float, int, int, str]]:
    """Durations (log-normal, scaled to `hours` in total), rates, channels, formats."""
    import numpy as np

    rng = np.random.default_rng(seed)
    d = rng.lognormal(0.0, 0.5, files)
    d *= hours * 3600 / d.sum()
    return [(i, float(d[i]), RATES[i % 3], 1 + (i // 3) % 2, ("WAV", "FLAC")[(i // 6) % 2])
            for i in range(files)]


def generate(folder: Path, items: list, workers: int) -> float:
    from concurrent.futures import ProcessPoolExecutor

    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    chunks = [items[k::workers * 4] for k in range(workers * 4)]
    with ProcessPoolExecutor(workers) as pool:
        sum(pool.map(_make_files, [(str(folder), c) for c in chunks]))
    return time.perf_counter() - t0


# --------------------------------------------------------------------------- measuring


def _status(pid: int) -> dict[str, int]:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    return {k: int(v) * 1024 for k, v in re.findall(r"^(RssAnon|RssFile):\s+(\d+) kB", text, re.M)}


def _children(pid: int) -> list[int]:
    out = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            out += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
    except OSError:
        pass
    return out


def measure(cmd: list[str], parse: bool = True) -> dict:
    """Run `cmd`, sampling its memory (and its children's) every 10 ms; its JSON + peaks."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=os.environ)
    peak = {"anon": 0, "file": 0, "child_anon": 0}
    while proc.poll() is None:
        s = _status(proc.pid)
        peak["anon"] = max(peak["anon"], s.get("RssAnon", 0))
        peak["file"] = max(peak["file"], s.get("RssFile", 0))
        for c in _children(proc.pid):
            peak["child_anon"] = max(peak["child_anon"], _status(c).get("RssAnon", 0))
        time.sleep(0.01)
    out, err = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-3000:]}")
    res = json.loads(out.strip().splitlines()[-1]) if parse else {}
    return res | peak | {"process_wall": time.perf_counter() - t0}


def child_build(folder: str, cache: str, workers: int) -> None:
    """A fresh interpreter: import, note the baseline, build (or open) the corpus."""
    from audiolstm.data.sources import load_corpus

    base = _status(os.getpid())
    t0 = time.perf_counter()
    c = load_corpus("folder", folder, SR, cache, decode_workers=workers, progress=False)
    wall = time.perf_counter() - t0
    print(json.dumps({"wall": wall, "files": len(c.files), "samples": int(c.signal.shape[0]),
                      "base_anon": base.get("RssAnon", 0), "base_file": base.get("RssFile", 0)}))


def child_loader(folder: str, cache: str, seconds: float) -> None:
    """Batches/s over the corpus's train pieces vs one segment of the same length."""
    import numpy as np
    from torch.utils.data import DataLoader

    from audiolstm.data.sources import load_corpus
    from audiolstm.data.splits import split_by_time
    from audiolstm.data.windows import ShuffleSampler, WindowDataset, WindowSpec, identity_collate

    c = load_corpus("folder", folder, SR, cache, progress=False)
    pieces = split_by_time([(f.start, f.end) for f in c.files], [0.8, 0.1, 0.1])["train"]
    spec = WindowSpec(x_len=2000, seq_len=40, window_shift=1000)
    segs = [(p.start, p.end) for p in pieces]
    n = sum(b - a for a, b in segs)
    out = {}
    for name, segments in (("corpus", segs), ("one segment", [(0, n)])):
        ds = WindowDataset(c.signal, spec, 0.0, 1.0, reuse_buffers=True, segments=segments)
        loader = DataLoader(ds, batch_size=100, sampler=ShuffleSampler(len(ds), 1),
                            collate_fn=identity_collate)
        it = iter(loader)
        next(it)
        for _ in range(3):  # warm the page cache for a fair comparison
            next(it)
        best = 0.0
        for _ in range(3):
            k, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                b = next(it)
                assert b.shape == (100, 41, 2000)
                k += 1
            best = max(best, k / (time.perf_counter() - t0))
        out[name] = {"batches_per_s": best, "examples": len(ds), "segments": len(segments)}
        np.asarray(b[0, 0, 0])
    print(json.dumps(out))


TRAIN_START = [
    "model=lstm_300x1", "model.hidden_sizes=[64]", "data.split_by=file", "data.x_len=2000",
    "data.seq_len=40",
    "data.window_shift=16000", "data.batch_size=32", "trainer.max_epochs=1",
    "+trainer.limit_train_batches=5", "+trainer.limit_val_batches=2", "test=false",
    "~callbacks.sample_generation", "~callbacks.early_stopping",
    "callbacks.progress_bar._target_=audiolstm.training.callbacks.PlainProgressBar",
]


def train_start(folder: Path, cache: Path, out: Path) -> dict:
    cmd = [sys.executable, str(ROOT / "train.py"), "data=folder", f"data.path={folder}",
           f"paths.cache_dir={cache}", f"hydra.run.dir={out}", *TRAIN_START]
    r = measure(cmd, parse=False)
    summary = json.loads((out / "summary.json").read_text())
    return r | {"examples": summary.get("examples"), "files": summary.get("files")}


def mb(b: float) -> str:
    return f"{b / 1e6:,.0f} MB"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--files", type=int, default=1000)
    p.add_argument("--hours", type=float, default=10.0)
    p.add_argument("--workers", type=int, default=None, help="data.decode_workers (default auto)")
    p.add_argument("--dir", type=Path, default=None, help="keep the corpus here (default: temp)")
    p.add_argument("--seconds", type=float, default=2.0, help="time per loader throughput run")
    p.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md alone")
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "build":
            child_build(rest[0], rest[1], int(rest[2]))
        else:
            child_loader(rest[0], rest[1], float(rest[2]))
        return

    from audiolstm.data.sources import default_decode_workers

    workers = args.workers or default_decode_workers()
    tmp = Path(tempfile.mkdtemp(prefix="bench_corpus_", dir=args.dir))
    try:
        folder, small = tmp / "corpus", tmp / "small"
        items = plan(args.files, args.hours)
        gen = generate(folder, items, os.cpu_count() or 1)
        src_bytes = sum(f.stat().st_size for f in folder.iterdir())
        print(f"generated {args.files} files, {args.hours:g} h, {src_bytes / 1e9:.2f} GB "
              f"in {gen:.0f} s", flush=True)
        small_items = items[: max(3, args.files // 10)]
        small.mkdir()
        for i, *_ in small_items:
            for ext in ("wav", "flac"):
                if (folder / f"track{i:05d}.{ext}").exists():
                    os.link(folder / f"track{i:05d}.{ext}", small / f"track{i:05d}.{ext}")
        small_hours = sum(s for _, s, *_ in small_items) / 3600

        cache = tmp / "cache"
        build = [sys.executable, __file__, "--child", "build", str(folder), str(cache),
                 str(workers)]
        load = os.getloadavg()[0]
        first = measure(build)
        print("first build", first, flush=True)
        again = measure(build)
        print("cached", again, flush=True)
        _make_files((str(folder), [(args.files, 60.0, 44_100, 2, "FLAC")]))
        added = measure(build)
        print("one file added", added, flush=True)
        cache_bytes = sum(f.stat().st_size for f in cache.rglob("*.npy"))

        measure([sys.executable, __file__, "--child", "build", str(small), str(cache),
                 str(workers)])  # the tenth's own cache entries (its paths differ)
        big_start = train_start(folder, cache, tmp / "run_big")
        print("training start (all)", big_start, flush=True)
        small_start = train_start(small, cache, tmp / "run_small")
        print("training start (tenth)", small_start, flush=True)
        loader = measure([sys.executable, __file__, "--child", "loader", str(folder), str(cache),
                          str(args.seconds)])
        print("loader", loader, flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    hours = first["samples"] / SR / 3600
    n = first["files"]
    scaled = "" if (args.files, args.hours) == (1000, 10.0) else (
        " (scaled from the issue's 1,000 files / 10 h to fit this machine's time and disk)")
    lines = [
        f"Machine: {machine()}; load average {load:.1f} when the builds started (the machine "
        "is shared: other sessions' tests and training ran at the same time, so wall times "
        "are upper bounds).",
        "",
        f"Corpus{scaled}: {args.files:,} files, {args.hours:g} h in total (log-normal "
        f"durations, mean {args.hours * 3600 / args.files:.0f} s), cycling 16 / 22.05 / "
        "44.1 kHz, mono / stereo, WAV / FLAC (16-bit; tones + noise), "
        f"{src_bytes / 1e9:.2f} GB on disk, generated in {gen:.0f} s (not measured below). "
        f"Decoded to 16 kHz mono float32 with {workers} decode process(es): "
        f"{hours:.2f} h, {cache_bytes / 1e9:.2f} GB of cache after the three builds (per-file "
        "entries plus the assembled corpus: about twice the decoded audio, plus the "
        "superseded corpus after the rebuild).",
        "",
        "Each row is a fresh interpreter; memory sampled from /proc every 10 ms. *anon* = "
        "peak RssAnon of the building process (what it allocated) minus its RssAnon after "
        f"the imports ({mb(first['base_anon'])}); *workers* = the largest decode worker's "
        "peak RssAnon (forked: it includes the parent's pages it shares copy-on-write); "
        "*file* = peak RssFile minus the one after imports (pages of mapped files, shared "
        "with the page cache).",
        "",
        "| step | wall | files/s | audio h/s | anon | workers | file |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, r, k in (("first build (decode all, assemble)", first, n),
                        ("again, all cached (open)", again, n),
                        ("one 60 s file added (decode 1, re-assemble)", added, 1)):
        lines.append(
            f"| {label} | {r['wall']:.1f} s | {k / r['wall']:.1f} | "
            f"{hours / r['wall'] if k == n else 60 / 3600 / r['wall']:.3f} | "
            f"{mb(r['anon'] - r['base_anon'])} | "
            f"{mb(r['child_anon']) if r['child_anon'] else '-'} | "
            f"{mb(r['file'] - r['base_file'])} |")
    lines += [
        "",
        f"Training start: `train.py data=folder {' '.join(TRAIN_START)}` over the whole "
        f"corpus and over its first {len(small_items)} files ({small_hours:.2f} h): setup "
        "(corpus map, split plan, normaliser fit over every training sample, ridge baseline), "
        "5 training steps, 2 validation batches.",
        "",
        "| corpus | files (train/val/test) | examples (train/val/test) | wall | peak RssAnon "
        "| peak RssFile |",
        "|---|---|---|---:|---:|---:|",
    ]
    for label, r in ((f"{hours:.1f} h", big_start), (f"{small_hours:.1f} h", small_start)):
        f, e = r["files"], r["examples"]
        lines.append(
            f"| {label} | {f['train']}/{f['val']}/{f['test']} | "
            f"{e['train']:,}/{e['val']:,}/{e['test']:,} | {r['process_wall']:.0f} s | "
            f"{mb(r['anon'])} | {mb(r['file'])} |")
    c, o = loader["corpus"], loader["one segment"]
    lines += [
        "",
        "Loader: batch 100 x 41 x 2000 (x_len 2000, seq_len 40, window_shift 1000), "
        "`DataLoader(num_workers=0)` with `ShuffleSampler`, buffers reused; best of 3 runs of "
        f"{args.seconds:g} s after warm-up.",
        "",
        "| dataset | segments | examples | batches/s |",
        "|---|---:|---:|---:|",
        f"| corpus train split | {c['segments']:,} | {c['examples']:,} | "
        f"{c['batches_per_s']:.0f} |",
        f"| one segment, same samples | 1 | {o['examples']:,} | {o['batches_per_s']:.0f} |",
    ]
    text = "\n".join(lines)
    print("\n" + text)
    if not args.no_write:
        write_section("Corpus: cache build, training start, loader", text)
        print("wrote bench/RESULTS.md")


if __name__ == "__main__":
    main()
