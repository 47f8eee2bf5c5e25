"""Benchmark: `explore` on a 3-hour 16 kHz file (the seed track's size): wall time, memory.

Synthesises `synth_drone(seconds=10800)` once into a float32 `.npy` (172.8 M samples,
691 MB), then, in a fresh interpreter per case, memory-maps it (like the audio cache)
and runs `explore_signal` with the default options: every statistic, envelope, period,
lead-in/fade estimate, normaliser fit, figure and report. The parent samples the child's
/proc status every 10 ms: peak RssAnon (what the process allocated) and peak RssFile
(pages of the mapped signal, shared and reclaimable). A 30-minute prefix of the same
file runs too: if the analysis streams, its allocated peak does not grow with length.

    python bench/bench_explore.py                  # run, print, update bench/RESULTS.md
    python bench/bench_explore.py --no-write --hours 0.5
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import machine

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

SR = 16_000
TITLE = "Explore: 3-hour file"


def child(path: str, seconds: float, out: str) -> None:
    """Fresh interpreter: memmap, explore, print one JSON line."""
    import numpy as np

    from audiolstm.analysis.explore import ExploreOptions, explore_signal

    signal = np.load(path, mmap_mode="r")[: round(seconds * SR)]
    base = _status(os.getpid())
    t0 = time.perf_counter()
    r = explore_signal(signal, SR, {"source": "synthetic", "path": path}, ExploreOptions(), out)
    wall = time.perf_counter() - t0
    regions = r["pulsation"]["regions"]
    print(json.dumps({
        "wall": wall, "baseline_anon": base.get("RssAnon", 0),
        "baseline_file": base.get("RssFile", 0), "timings": r["timings_seconds"],
        "lead_in": r["silence"]["lead_in_seconds"], "fade": r["fade_out"]["seconds"],
        "early": regions[0]["period_seconds"], "late": regions[1]["period_seconds"],
        "last": regions[-1]["period_seconds"], "regions": len(regions),
        "panels": len(r["panels"]), "files": len(r["files"]),
    }))


def _status(pid: int) -> dict[str, int]:
    """RssAnon / RssFile / VmHWM of a process in bytes (Linux /proc)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    return {k: int(v) * 1024 for k, v in re.findall(r"^(RssAnon|RssFile|VmHWM):\s+(\d+) kB",
                                                   text, re.M)}


def run_case(path: Path, seconds: float) -> dict:
    with tempfile.TemporaryDirectory() as out:
        proc = subprocess.Popen(
            [sys.executable, __file__, "--child", str(path), str(seconds), out],
            stdout=subprocess.PIPE, text=True)
        peak: dict[str, int] = {}
        while proc.poll() is None:
            for k, v in _status(proc.pid).items():
                peak[k] = max(peak.get(k, 0), v)
            time.sleep(0.01)
        stdout = proc.stdout.read() if proc.stdout else ""
        if proc.returncode:
            raise SystemExit(f"child failed ({proc.returncode})")
    res = json.loads(stdout.strip().splitlines()[-1])
    res.update(peak_anon=peak.get("RssAnon", 0), peak_file=peak.get("RssFile", 0),
               hwm=peak.get("VmHWM", 0), seconds=seconds)
    return res


def mb(b: float) -> str:
    return f"{b / 1e6:,.0f} MB"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--hours", type=float, default=3.0)
    p.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md alone")
    p.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child[0], float(args.child[1]), args.child[2])
        return

    import numpy as np

    from audiolstm.data.synth import TRUTH, synth_drone

    seconds = args.hours * 3600
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "drone.npy"
        t0 = time.perf_counter()
        np.save(path, synth_drone(seconds, SR, 0))
        synth_s = time.perf_counter() - t0
        load = os.getloadavg()[0]
        cases = [run_case(path, s) for s in sorted({min(1800.0, seconds), seconds})]

    lines = [
        f"Machine: {machine()}; load average {load:.1f} when the runs started (the machine "
        "may be shared: an earlier run under load from parallel test suites took 21 s for "
        "the 3-hour case, mostly page-cache reads in the first pass).",
        "",
        f"`synth_drone(seconds={seconds:g})` ({round(seconds * SR):,} float32 samples, "
        f"{mb(seconds * SR * 4)}; synthesised in {synth_s:.0f} s, not measured) saved as .npy "
        "and memory-mapped, page cache warm (just written). Each row: a fresh interpreter "
        "runs `explore_signal` with the default options (all statistics, envelope, periods, "
        "lead-in/fade, the five normalisers fitted from the split statistics, every figure, md/html/json). Memory sampled "
        "from /proc every 10 ms: *allocated* = peak RssAnon minus the interpreter's after "
        "imports; *mapped* = peak RssFile minus the same (the signal's pages: shared with the "
        "page cache, reclaimable). Wall time excludes the interpreter start and imports.",
        "",
        "| length | wall | stats | envelope + periods | silence + fade | normalisers | "
        "waveforms | other plots + reports | peak RssAnon (allocated) | peak RssFile (mapped) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in cases:
        t = c["timings"]
        other = c["wall"] - sum(t[k] for k in ("statistics", "envelope_and_periods",
                                                "silence_and_fade", "normalization",
                                                "waveform_plots"))
        lines.append(
            f"| {c['seconds'] / 60:g} min | **{c['wall']:.1f} s** | {t['statistics']:.1f} s | "
            f"{t['envelope_and_periods']:.1f} s | {t['silence_and_fade']:.2f} s | "
            f"{t['normalization']:.1f} s | {t['waveform_plots']:.1f} s | {other:.1f} s | "
            f"{mb(c['peak_anon'])} ({mb(c['peak_anon'] - c['baseline_anon'])}) | "
            f"{mb(c['peak_file'])} ({mb(c['peak_file'] - c['baseline_file'])}) |")
    big = cases[-1]
    lines += [
        "",
        f"Recovered on the {big['seconds'] / 3600:g}-hour drone: lead-in {big['lead_in']:.4f} s "
        f"(truth {TRUTH.lead_in_seconds}), fade-out {big['fade']:.3f} s (truth "
        f"{TRUTH.fade_seconds}), pulsation period {big['early']:.3f} s in the first minute "
        f"(truth {TRUTH.pulse_period_early}), {big['late']:.3f} s in the second and "
        f"{big['last']:.3f} s in the last (truth {TRUTH.pulse_period_late:.3f}); "
        f"{big['regions']} regions, {big['panels']} panels, {big['files']} files.",
    ]
    body = "\n".join(lines)
    print(f"## {TITLE}\n\n{body}")
    if not args.no_write:
        from _common import write_section

        write_section(TITLE, body)


if __name__ == "__main__":
    main()
