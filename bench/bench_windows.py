"""Benchmark: WindowDataset memory (vs materialised examples) and loader throughput.

Memory: 30 min of 16 kHz noise as a memmapped .npy (like the audio cache), x_len 8000,
seq_len 25 (seed 000); each window_shift runs in a fresh subprocess, which fits the
normaliser (streams the whole signal), builds the dataset and loads a few batches of
100; its peak RSS is compared with an interpreter that only imported the same modules.

Throughput: batches/s through a real DataLoader (num_workers=0, shuffle) for batch 100,
x_len 2000, seq_len 40: `__getitems__` with and without buffer reuse, and the
per-example `__getitem__` + default_collate path; plus seed 000's 83 MB batches.

    python bench/bench_windows.py                 # run, print, update bench/RESULTS.md
    python bench/bench_windows.py --no-write --minutes 5
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import machine

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

HEADING = "## Windows: memory and loader throughput"
SR = 16_000


def child_memory(path: str, window_shift: int, batches: int, sampler: str) -> dict:
    """Runs in a fresh interpreter: build, touch, report peak RSS."""
    import numpy as np
    from torch.utils.data import DataLoader

    from audiolstm.data.normalize import fit_normalizer
    from audiolstm.data.windows import ShuffleSampler, WindowDataset, WindowSpec, identity_collate

    out: dict = {}
    if window_shift > 0:
        signal = np.load(path, mmap_mode="r")
        norm = fit_normalizer("minmax", signal)
        spec = WindowSpec(x_len=8000, seq_len=25, window_shift=window_shift)
        ds = WindowDataset(signal, spec, norm.shift, norm.scale)
        kw = dict(shuffle=True) if sampler == "random" else dict(sampler=ShuffleSampler(len(ds)))
        loader = DataLoader(ds, batch_size=100, collate_fn=identity_collate, **kw)
        for i, batch in enumerate(loader):
            assert batch.shape[1:] == (26, 8000)
            # enumerate holds this batch while the loader builds the next: two live
            # batches, like Lightning's one-batch prefetch.
            if i + 1 == batches:
                break
        out["count"] = len(ds)
    out["maxrss"] = peak_rss()
    return out


def peak_rss() -> int:
    """Peak RSS of this process in bytes.

    VmHWM, not ru_maxrss: on Linux a subprocess's ru_maxrss starts at its parent's
    RSS at fork (it survives exec), which would charge this script's memory to the child.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class PerItem:
    """Hides `__getitems__`, so DataLoader takes the per-example + default_collate path."""

    def __init__(self, ds) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int):
        return self.ds[i]


def throughput(signal, x_len, seq_len, batch, mode, seconds) -> float:
    from torch.utils.data import DataLoader

    from audiolstm.data.windows import WindowDataset, WindowSpec, identity_collate

    spec = WindowSpec(x_len=x_len, seq_len=seq_len, window_shift=100)
    ds = WindowDataset(signal, spec, 0.01, 3.0, reuse_buffers=mode == "reuse")
    if mode == "per-item":
        loader = DataLoader(PerItem(ds), batch_size=batch, shuffle=True, drop_last=True)
    else:
        loader = DataLoader(
            ds, batch_size=batch, shuffle=True, drop_last=True, collate_fn=identity_collate
        )
    n, t0, it = 0, None, iter(loader)
    while True:
        b = next(it, None)
        if b is None:  # short signal: next epoch
            it = iter(loader)
            continue
        assert b.shape == (batch, seq_len + 1, x_len)
        if t0 is None:  # the first batch is warm-up
            t0 = time.perf_counter()
            continue
        n += 1
        dt = time.perf_counter() - t0
        if dt > seconds and n >= 5:
            return n / dt


def fmt_bytes(b: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if b < 1000 or unit == "PB":
            return f"{b:.0f} {unit}" if unit in ("B", "KB", "MB") else f"{b:.1f} {unit}"
        b /= 1000
    return ""


def write_section(path: Path, text: str) -> None:
    """Replace our section in `path` (or append it), leaving other sections alone."""
    old = path.read_text() if path.exists() else "# Benchmark results\n"
    pattern = re.compile(rf"^{re.escape(HEADING)}\n.*?(?=^## |\Z)", re.M | re.S)
    new = pattern.sub(lambda _: text, old) if pattern.search(old) else old.rstrip() + "\n\n" + text
    path.write_text(new.rstrip() + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--minutes", type=float, default=30.0, help="signal length (16 kHz)")
    p.add_argument("--shifts", type=int, nargs="+", default=[1, 100, 1000, 8000])
    p.add_argument("--batches", type=int, default=5, help="batches touched in the memory runs")
    p.add_argument("--seconds", type=float, default=3.0, help="time per throughput run")
    p.add_argument("--repeats", type=int, default=3, help="throughput runs per case (best kept)")
    p.add_argument("--results", type=Path, default=ROOT / "bench" / "RESULTS.md")
    p.add_argument("--no-write", action="store_true", help="print only")
    p.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(
            json.dumps(
                child_memory(args.child[0], int(args.child[1]), int(args.child[2]), args.child[3])
            )
        )
        return

    import numpy as np

    n = int(args.minutes * 60 * SR)
    lines = [HEADING, "", f"Machine: {machine()}.", ""]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "signal.npy")
        rng = np.random.default_rng(0)
        mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n,))
        for i in range(0, n, 1 << 22):
            mm[i : i + (1 << 22)] = rng.standard_normal(min(1 << 22, n - i), dtype=np.float32)
        mm.flush()
        del mm

        def run_child(shift: int, sampler: str = "shuffle") -> dict:
            cmd = [
                sys.executable,
                __file__,
                "--child",
                path,
                str(shift),
                str(args.batches),
                sampler,
            ]
            res = subprocess.run(cmd, capture_output=True, text=True, check=True)
            return json.loads(res.stdout.strip().splitlines()[-1])

        base = run_child(0)["maxrss"]
        signal_bytes = n * 4
        batches = 2 * 100 * 26 * 8000 * 4  # two live batches
        bound = 1.5 * (signal_bytes + base)
        lines += [
            f"### Memory: {args.minutes:g} min at 16 kHz ({n:,} float32 samples, "
            f"{fmt_bytes(signal_bytes)}, memmapped), x_len 8000, seq_len 25",
            "",
            f"Interpreter baseline (same imports, no data): {fmt_bytes(base)} peak RSS. "
            f"Bound: 1.5 × (signal + baseline) = {fmt_bytes(bound)}. Each row: a fresh "
            f"process fits the minmax normaliser (reads every sample), builds the dataset, "
            f"loads {args.batches} shuffled batches of 100 (83 MB each) through a DataLoader. "
            "Two batches are alive at the peak (the one in use and the next being built, as "
            f"with Lightning's one-batch prefetch): {fmt_bytes(batches)} that depend on the "
            "batch shape, not on the number of examples; 'overhead' is what remains after "
            "baseline, signal and those two batches. The last column is what the seeds' code "
            "would allocate: separate x and y copies, count × seq_len × x_len × 4 B × 2.",
            "",
            "| window_shift | sampler | examples | peak RSS | overhead | ≤ bound | "
            "≤ bound + 2 batches | materialised x + y |",
            "|---:|---|---:|---:|---:|:---:|:---:|---:|",
        ]
        runs = [(shift, "ShuffleSampler") for shift in args.shifts]
        runs.append((min(args.shifts), "RandomSampler (shuffle=True)"))
        for shift, sampler in runs:
            r = run_child(shift, "random" if sampler.startswith("Random") else "shuffle")
            peak = r["maxrss"]
            mat = r["count"] * 25 * 8000 * 4 * 2
            over = peak - base - signal_bytes - batches
            ok = ["yes" if peak <= x else "**no**" for x in (bound, bound + batches)]
            lines.append(
                f"| {shift} | {sampler} | {r['count']:,} | {fmt_bytes(peak)} | "
                f"{'-' if over < 0 else ''}{fmt_bytes(abs(over))} | {ok[0]} | {ok[1]} | "
                f"{fmt_bytes(mat)} |"
            )
            print(lines[-1], flush=True)

        signal = np.load(path, mmap_mode="r")
        lines += [
            "",
            "### Loader throughput: DataLoader(num_workers=0, shuffle=True), batches/s",
            "",
            "Target: ≥ 100 batches/s for batch 100, x_len 2000, seq_len 40 (32.8 MB/batch). "
            f"Each case: {args.repeats} runs of {args.seconds:g} s after a warm-up batch; "
            "best and median reported (the machine may be shared: load average "
            f"{os.getloadavg()[0]:.1f} when the runs started).",
            "",
            "| batch × (seq_len+1) × x_len | path | batches/s (best) | median | GB/s out |",
            "|---|---|---:|---:|---:|",
        ]
        cases = [
            (2000, 40, "reuse", "`__getitems__`, reuse_buffers=True"),
            (2000, 40, "fresh", "`__getitems__`, reuse_buffers=False"),
            (2000, 40, "per-item", "`__getitem__` + default_collate"),
            (8000, 25, "reuse", "`__getitems__`, reuse_buffers=True"),
            (8000, 25, "fresh", "`__getitems__`, reuse_buffers=False"),
        ]
        for x_len, seq_len, mode, label in cases:
            runs = sorted(
                throughput(signal, x_len, seq_len, 100, mode, args.seconds)
                for _ in range(args.repeats)
            )
            bps, med = runs[-1], runs[len(runs) // 2]
            gbs = bps * 100 * (seq_len + 1) * x_len * 4 / 1e9
            lines.append(
                f"| 100 × {seq_len + 1} × {x_len} | {label} | {bps:.0f} | {med:.0f} | {gbs:.1f} |"
            )
            print(lines[-1], flush=True)
        del signal

    text = "\n".join(lines) + "\n"
    print("\n" + text)
    if not args.no_write:
        write_section(args.results, text)
        print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
