"""Benchmark: what silence-aware data costs (issue 22 item 2).

1. The index: `silence.silence_index` (one streamed pass of 50 ms block sums of squares
   over every split piece, then the allowed start intervals and the kept runs) on a real
   recording and a real corpus, for sliding windows and for random crops (window_shift 1:
   every sample a start), with its peak traced memory, next to the normaliser fit that
   every setup already does (one pass over the training split).
2. The loader: training batches/s through the datamodule's own loader (100 x 41 x 2000,
   num_workers=0, buffers reused) without the setting, with a mild one and with a harsh
   one (many more intervals, so more runs to search), for sliding windows and random
   crops. The cases are interleaved round by round in one process, so a busy machine
   slows them alike; median and best of the rounds are reported.

    bash docs/make_real_audio.sh                    # outputs/real/{orchestral.wav,corpus/}
    python bench/bench_silence.py                   # both; updates bench/RESULTS.md
    python bench/bench_silence.py --wav F --corpus D --no-write --rounds 2 --seconds 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

from _common import machine, write_section

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TITLE = "Silence-aware data: index cost and loader throughput (issue 22)"
REAL = ROOT / "outputs" / "real"  # bash docs/make_real_audio.sh writes it
FRAMES = {"x_len": 2000, "seq_len": 40, "batch_size": 100, "num_workers": 0}
SETTINGS = {  # name -> (silence_db, max_silent_fraction)
    "off": (None, None),
    "-60 dBFS, 0.5": (-60.0, 0.5),
    "-30 dBFS, 0.1": (-30.0, 0.1),
}


def datamodule(source: str, path: Path, cache: str, db, frac, crops: bool):
    from audiolstm.data.datamodule import AudioDataModule

    d = {"source": source, "path": str(path), "cache_dir": cache, "window_shift": 1000,
         "silence_db": db, "max_silent_fraction": frac, **FRAMES}
    if crops:
        d["train_examples_per_epoch"] = 10**9
    dm = AudioDataModule(d, {"scheme": "std"}, {"kind": "time"}, seed=0)
    dm.setup()
    return dm


def index_cost(dm, repeats: int) -> dict:
    """Best wall time of silence_index and of the normaliser fit; the index's size."""
    from audiolstm.data.normalize import fit_normalizer
    from audiolstm.data.silence import silence_index

    best, best_norm = float("inf"), float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        index = silence_index(dm.signal, dm.plan, dm.data_cfg, dm.spec_for)
        best = min(best, time.perf_counter() - t0)
        t0 = time.perf_counter()
        fit_normalizer("std", dm.pieces["train"])
        best_norm = min(best_norm, time.perf_counter() - t0)
    tracemalloc.start()
    silence_index(dm.signal, dm.plan, dm.data_cfg, dm.spec_for)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    ds = dm.dataset("train")
    rec = index.split_record("train")
    return {"seconds": best, "norm_seconds": best_norm, "peak": peak,
            "audio_seconds": sum(rec["seconds"] for rec in
                                 (index.split_record(s) for s in ("train", "val", "test"))),
            "intervals": sum(len(p.allowed) for p in index.pieces["train"]),
            "runs": len(ds._starts), "kept": len(ds), "before": rec["examples_before"],
            "excluded_seconds": rec["excluded_seconds"]}


def loader_rate(loader, seconds: float) -> float:
    it = iter(loader)
    next(it)  # warm-up
    k, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        b = next(it)
        assert b.shape == (100, 41, 2000)
        k += 1
    return k / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--wav", type=Path, default=REAL / "orchestral.wav")
    p.add_argument("--corpus", type=Path, default=REAL / "corpus")
    p.add_argument("--cache", default=os.environ.get("AUDIOLSTM_CACHE_DIR", ".cache/audiolstm"))
    p.add_argument("--rounds", type=int, default=5, help="interleaved loader rounds")
    p.add_argument("--seconds", type=float, default=2.0, help="per loader case and round")
    p.add_argument("--repeats", type=int, default=3, help="index timings (best kept)")
    p.add_argument("--no-write", action="store_true", help="print only")
    args = p.parse_args()
    for path in (args.wav, args.corpus):
        if not path.exists():
            sys.exit(f"error: {path} does not exist: make it with `bash docs/make_real_audio.sh` "
                     "(or pass --wav FILE --corpus DIR)")

    load0 = os.getloadavg()[0]
    lines = [f"Machine: {machine()}; load average {load0:.1f} when the runs started "
             "(the machine is shared: wall times are upper bounds).", ""]

    # ------------------------------------------------------------ 1. the index
    lines += [
        "### The index: cost of `silence_index` at setup",
        "",
        "Best of "
        f"{args.repeats} runs. It streams every split piece once (50 ms blocks' sums of squares "
        "in float64), then solves the allowed starts per piece (O(blocks)) and the kept runs; "
        "*normaliser fit* is the pass over the training split that every setup already does "
        "(`std`), for scale. *peak* is the traced (numpy) memory at its peak: mostly the "
        "streamed chunk (2^18 samples in float64, 2 MB, and its copy), the rest grows with the block "
        "count, never with the number of starts.",
        "",
        "| data | regime | setting | audio | index | normaliser fit | peak | intervals | runs "
        "| examples kept / before | train s left out |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    sources = [("orchestral.wav (27 min)", "wav", args.wav),
               ("corpus (40 files, 2.1 h)", "folder", args.corpus)]
    for label, source, path in sources:
        for crops in (False, True):
            for name, (db, frac) in SETTINGS.items():
                if db is None:
                    continue
                dm = datamodule(source, path, args.cache, db, frac, crops)
                r = index_cost(dm, args.repeats)
                lines.append(
                    f"| {label} | {'random crops' if crops else 'windows, shift 1000'} | "
                    f"{name} | {r['audio_seconds'] / 60:.1f} min | {r['seconds']:.2f} s | "
                    f"{r['norm_seconds']:.2f} s | {r['peak'] / 1e6:.1f} MB | "
                    f"{r['intervals']:,} | {r['runs']:,} | {r['kept']:,} / {r['before']:,} | "
                    f"{r['excluded_seconds']:.1f} |")
                print(lines[-1], flush=True)

    # ------------------------------------------------------------ 2. the loader
    label, source, path = sources[0]
    cases = {}
    for crops in (False, True):
        for name, (db, frac) in SETTINGS.items():
            dm = datamodule(source, path, args.cache, db, frac, crops)
            cases[(crops, name)] = (dm.train_dataloader(), len(dm.dataset("train")))
    rates: dict = {k: [] for k in cases}
    for _ in range(args.rounds):
        for k, (loader, _) in cases.items():
            rates[k].append(loader_rate(loader, args.seconds))
    lines += [
        "",
        f"### Loader: training batches/s on {label}",
        "",
        "`AudioDataModule.train_dataloader()` (its ShuffleSampler or RandomStartSampler, "
        "num_workers=0, buffers reused), batch 100 × 41 × 2000 (x_len 2000, seq_len 40; sliding "
        f"windows 1000 samples apart). {args.rounds} interleaved rounds of {args.seconds:g} s "
        "per case after a warm-up batch; *vs off* compares medians.",
        "",
        "| regime | setting | train examples | batches/s (median) | best | vs off |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for (crops, name), (_, n) in cases.items():
        med = statistics.median(rates[(crops, name)])
        off = statistics.median(rates[(crops, "off")])
        lines.append(f"| {'random crops' if crops else 'windows, shift 1000'} | {name} | {n:,} | "
                     f"{med:.0f} | {max(rates[(crops, name)]):.0f} | {med / off:.2f}× |")
        print(lines[-1], flush=True)
    lines += ["", f"Load average {os.getloadavg()[0]:.1f} when the runs ended."]

    body = "\n".join(lines)
    print("\n" + body)
    if not args.no_write:
        write_section(TITLE, body)
        print("wrote bench/RESULTS.md")


if __name__ == "__main__":
    main()
