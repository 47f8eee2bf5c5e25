"""GPU day in one command: every GPU claim of the project measured in at most 8 minutes.

Why (issue 23): no GPU path of this project had ever run, and a GPU is lent only now and
then, for about 15 minutes start-up included. So the measurement is ready before the
machine is: this script, run once, answers every GPU question, writes its results and
ends; `--dry-run` runs every step on CPU at toy size (under a minute on a quiet 2-core
machine), and a test runs it, so the script cannot rot between GPU days.

    python bench/gpu_check.py               # CUDA machine: bench/RESULTS-gpu.{md,json}, ...
    python bench/gpu_check.py --dry-run     # CPU, toy sizes: outputs/gpu_check_dry/
    python bench/gpu_check.py --only env,cudnn --budget 120
    make gpu-check / make gpu-dry-run

Steps (bench/gpu_steps.py; one process each, in this order):

- prepare: the built-in data cache the runs share (timed, inside the budget);
- env: GPU, driver, CUDA, cuDNN, torch and Lightning versions; fp32 / TF32 / bf16 matmul
  peaks measured on the card (the "% of peak" denominators);
- cudnn: the kernels torch.profiler sees in AudioRNN training steps (cuDNN's RNN kernels
  named), with TF32 off (`float32_matmul_precision=highest`) and on (`high`);
- lstm_fp32, lstm_tf32, lstm_bf16: lstm_300x3 @ x_len 2000, seq 40, batch 100 training
  steps/s and % of peak through `run()` (train.py's job) and through a bare loop over the
  same module with random batches already on the GPU (framework overhead as a ratio);
  the host time between steps and the loader alone (its idle share);
- host_syncs: the per-step host syncs (`isfinite` in models/base.py, `.cpu()` of the
  Gaussian-equivalent bits bookkeeping in models/frame_rnn.py) on vs off, by a patched
  run (gpu_steps.host_syncs_off: no library switch) and a bare loop; syncs per step
  counted with torch's sync debug mode;
- samplernn: SampleRNN 2-tier and 3-tier (H = 1024) training samples/s, fp32 / TF32 / bf16;
- generation: real-time factor of SampleRNN generation (H = 1024 and 256) for 1 and 100
  streams, the frame model's stateful generation; generated logits == teacher forcing on
  the device, stateful == refeed;
- ddp: trainer=ddp on every visible GPU (skipped, with the reason, when fewer than 2;
  the dry run takes trainer=ddp_cpu);
- launcher: a 4-run sweep=depth under hydra/launcher=gpus, jobs_per_device=4 vs 1 (wall
  ratio and per-job training time);
- curves_fp32, curves_bf16: loss curves of the default model on the built-in data, the
  two precisions given the same wall-clock budget (what is left of the total, at most
  90 s each), compared epoch by epoch and plotted.

Each step has its own timeout and the total budget (`--budget`, 480 s) is enforced: a
step that would start with too little time left is skipped, a step still running at its
limit is killed with its whole process group, and the loss curves get what remains.
Results are rewritten after every step, so a run cut short still leaves what it measured.
Everything the steps import is checked before the clock starts.

Files written to `--out`: RESULTS-gpu.md, RESULTS-gpu.json, gpu-loss-curves.png,
gpu-check-logs.tar.gz (every step's log and JSON fragment): four files, as the device
tool brings back at most eight.

On the lent device machine (Python 3.12 with torch, Lightning, numpy and matplotlib, but
no Hydra, omegaconf, soundfile or soxr, and no network): here, once, `make gpu-wheels`
(bench/gpu_wheels.sh: the wheels into the git-ignored .whl/), then one call of the device
tool's `run` with carry [".whl"] and timeout_s 600:

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit; nvidia-smi; PYTHONUNBUFFERED=1 python3 bench/gpu_check.py --out $OUT

then copy RESULTS-gpu.md, RESULTS-gpu.json and gpu-loss-curves.png from its files_at into
bench/, and give the machine back.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
if str(ROOT) not in sys.path:  # audiolstm.atomic for the results, from a bare checkout
    sys.path.insert(0, str(ROOT))
STEPS_SCRIPT = BENCH / "gpu_steps.py"

#: the issue's limit for the whole run on one H100/H200 (seconds)
GPU_BUDGET_S = 480.0
#: the dry run's: toy sizes on CPU, about a minute on a quiet 2-core machine; the budget
#: is for a loaded one (4 minutes at load average 11), where a skipped step would fail
#: its test
DRY_BUDGET_S = 900.0
#: what the result files are called (in --out)
RESULTS_MD, RESULTS_JSON = "RESULTS-gpu.md", "RESULTS-gpu.json"
CURVES_PNG, LOGS_TAR = "gpu-loss-curves.png", "gpu-check-logs.tar.gz"
#: loss-curve training seconds per precision: at least, at most, and what a curve step
#: costs besides (process start, data, the last validation, writing)
CURVE_MIN_S, CURVE_MAX_S, CURVE_OVERHEAD_S = 20.0, 90.0, 20.0
#: the dry run's fixed curve budget (seconds of training per precision)
DRY_CURVE_S = 2.0
#: bf16-mixed's validation loss must end within this of float32's at the same epoch:
#: looser than the CPU runs' 1 % (README), since GPU runs are not bit-reproducible even
#: in float32 (cuDNN's RNN backward sums with atomics)
CURVE_TOLERANCE = 0.02
#: what the steps import; checked before the clock starts (the device lacks some)
REQUIRED_MODULES = (
    "numpy", "yaml", "matplotlib", "cloudpickle", "torch", "pytorch_lightning",
    "antlr4", "omegaconf", "hydra", "soundfile", "soxr",
    "audiolstm.training.run", "hydra_plugins.audiolstm_gpu_launcher.launcher",
)


@dataclass(frozen=True)
class Step:
    """One measurement: its own process, its own limit."""

    name: str
    title: str
    #: what it should take on one H100/H200 (the plan that fits the budget)
    expect_s: float
    #: its limit there (a hung step cannot eat the budget)
    timeout_s: float
    #: runs before all others, alone (the data cache; the peaks the others divide by)
    first: bool = False

    @property
    def curve(self) -> bool:
        return self.name.startswith("curves_")


STEPS: tuple[Step, ...] = (
    Step("prepare", "Built-in data cache", 12, 90, first=True),
    Step("env", "Machine, versions and matmul peaks", 20, 90, first=True),
    Step("cudnn", "cuDNN kernels and TF32", 20, 90),
    Step("lstm_fp32", "lstm_300x3 training, 32-true with TF32 off", 25, 120),
    Step("lstm_tf32", "lstm_300x3 training, 32-true with TF32", 25, 120),
    Step("lstm_bf16", "lstm_300x3 training, bf16-mixed", 25, 120),
    Step("host_syncs", "Per-step host syncs on and off", 40, 120),
    Step("samplernn", "SampleRNN training, 2 and 3 tiers, H = 1024", 45, 150),
    Step("generation", "Generation real-time factor", 30, 120),
    Step("ddp", "trainer=ddp on every visible GPU", 40, 150),
    Step("launcher", "hydra/launcher=gpus: 4 jobs per device vs one at a time", 90, 240),
    Step("curves_fp32", "Loss curve, 32-true (TF32 off)", 80, 200),
    Step("curves_bf16", "Loss curve, bf16-mixed", 80, 200),
)
STEP_NAMES = tuple(s.name for s in STEPS)


@dataclass
class Fragment:
    """What one step leaves (bench/gpu_steps.py writes it, this script assembles them)."""

    step: str
    title: str
    #: ok | skipped (with the reason in headline) | failed | timeout
    status: str = "ok"
    #: one line for the summary table
    headline: str = ""
    #: the step's section of RESULTS-gpu.md
    markdown: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Fragment:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


# ----------------------------------------------------------------------------- running


def child_env(work: Path, dry: bool = False) -> dict[str, str]:
    """The steps' environment: the project and bench/ importable, one data cache, no W&B.

    A dry run's steps use one CPU thread each: its steps run two at a time, and on a
    shared machine two-thread CPU kernels wait for a descheduled peer (a 256^2 float32
    matmul ran 45x slower with 2 threads than with 1 at load average 10).
    """
    path = [str(ROOT), str(BENCH), *filter(None, os.environ.get("PYTHONPATH", "").split(":"))]
    env = {**os.environ, "PYTHONPATH": ":".join(dict.fromkeys(path)),
           "AUDIOLSTM_CACHE_DIR": str(work / "cache"), "PYTHONUNBUFFERED": "1",
           "WANDB_MODE": "disabled", "MPLBACKEND": "Agg"}
    if dry:
        env |= {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return env


def run_child(cmd: Sequence[str], timeout: float, log: Path, env: dict[str, str] | None = None,
              ) -> tuple[str, int | None, float]:
    """Run `cmd` as the leader of its own process group, output to `log`.

    Returns ("done", exit code, seconds) or ("timeout", None, seconds); at the limit, or
    when it ends, its whole group is killed (train.py jobs, DDP ranks, loader workers).
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with log.open("ab") as fh:
        proc = subprocess.Popen(list(cmd), cwd=ROOT, env=env, stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code: int | None = proc.wait(timeout=max(timeout, 0.01))
            status = "done"
        except subprocess.TimeoutExpired:
            code, status = None, "timeout"
        finally:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return status, code, time.monotonic() - t0


def log_tail(log: Path, lines: int = 15) -> str:
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


class Budget:
    """The whole run's clock: started after the preflight, shared by every step."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.t0 = time.monotonic()

    def used(self) -> float:
        return time.monotonic() - self.t0

    def left(self) -> float:
        return self.seconds - self.used()


def curve_seconds(left: float, curves_left: int) -> float:
    """Training seconds for the next loss curve: an equal share of what is left."""
    share = (left - 5.0) / max(curves_left, 1) - CURVE_OVERHEAD_S
    return max(CURVE_MIN_S, min(CURVE_MAX_S, share))


def step_limits(step: Step, dry: bool, budget: Budget, curves_left: int) -> tuple[float, float, str]:
    """(timeout, curve seconds, reason to skip or "") for a step about to start."""
    left = budget.left()
    if dry:
        seconds = DRY_CURVE_S if step.curve else 0.0
        return min(step.timeout_s, left), seconds, "" if left > 1 else "no budget left"
    seconds = curve_seconds(left, curves_left) if step.curve else 0.0
    need = (seconds + CURVE_OVERHEAD_S) if step.curve else step.expect_s * 0.5
    if left < need:
        return 0.0, 0.0, (f"budget: {left:.0f} s left of {budget.seconds:.0f}, the step "
                          f"needs ~{need:.0f} s")
    timeout = min(step.timeout_s if not step.curve else seconds + 60.0, left)
    return timeout, seconds, ""


def run_step(step: Step, args: argparse.Namespace, work: Path, budget: Budget,
             curves_left: int) -> Fragment:
    """One step in its own process; its fragment, or why there is none."""
    timeout, seconds, skip = step_limits(step, args.dry_run, budget, curves_left)
    if skip:
        return Fragment(step.name, step.title, "skipped", skip, f"Skipped: {skip}.")
    frag_path = work / "fragments" / f"{step.name}.json"
    log = work / "logs" / f"{step.name}.log"
    frag_path.parent.mkdir(parents=True, exist_ok=True)
    frag_path.unlink(missing_ok=True)  # a stale fragment must not pass for this run's
    cmd = [sys.executable, str(STEPS_SCRIPT), step.name, "--work", str(work),
           "--fragment", str(frag_path), "--seconds", f"{seconds:.1f}"]
    if args.dry_run:
        cmd.append("--dry-run")
    print(f"[{budget.used():6.1f} s] {step.name}: start (limit {timeout:.0f} s)", flush=True)
    status, code, took = run_child(cmd, timeout, log, child_env(work, args.dry_run))
    if status == "done" and code == 0 and frag_path.is_file():
        frag = Fragment.from_dict(json.loads(frag_path.read_text()))
    elif status == "timeout":
        frag = Fragment(step.name, step.title, "timeout",
                        f"killed at its {timeout:.0f} s limit",
                        f"Timed out: killed at its {timeout:.0f} s limit. Log tail:\n\n"
                        f"```\n{log_tail(log)}\n```")
    else:
        why = f"exit code {code}" + ("" if frag_path.is_file() else ", no fragment")
        frag = Fragment(step.name, step.title, "failed", why,
                        f"Failed ({why}). Log tail:\n\n```\n{log_tail(log)}\n```")
        if frag_path.is_file():  # a step that failed on purpose says why in its fragment
            frag = Fragment.from_dict(json.loads(frag_path.read_text()))
            frag.status = "failed"
    frag.seconds = took
    print(f"[{budget.used():6.1f} s] {step.name}: {frag.status} in {took:.1f} s: "
          f"{frag.headline}", flush=True)
    return frag


# ----------------------------------------------------------------------------- preflight

PREFLIGHT = """
import importlib, json, sys
missing = {}
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except Exception as e:
        missing[name] = f"{type(e).__name__}: {e}"
info = {"missing": missing, "cuda": False, "devices": 0}
if not missing:
    import torch
    info.update(cuda=torch.cuda.is_available(), devices=torch.cuda.device_count(),
                torch=torch.__version__)
print(json.dumps(info))
"""


def preflight(dry: bool, work: Path) -> str | None:
    """Why the run cannot start (one line), or None; costs no budget."""
    proc = subprocess.run([sys.executable, "-c", PREFLIGHT, *REQUIRED_MODULES], cwd=ROOT,
                          env=child_env(work), capture_output=True, text=True, timeout=300)
    try:
        info = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return f"the import check failed ({proc.stderr.strip().splitlines()[-1:]})"
    if info["missing"]:
        what = "; ".join(f"{k} ({v})" for k, v in info["missing"].items())
        return (f"missing on this machine: {what}. Build the wheels with `make gpu-wheels`, "
                "carry .whl/ and install them first (bench/gpu_check.py's docstring)")
    if not dry and not info["cuda"]:
        return (f"no CUDA device is visible (torch {info.get('torch')}): this script measures "
                "a GPU; --dry-run runs every step on CPU")
    return None


# ----------------------------------------------------------------------------- results


def render(frags: dict[str, Fragment], meta: dict[str, Any]) -> str:
    """RESULTS-gpu.md: the machine, one summary line per step, then each step's section."""
    env = frags.get("env")
    lines = ["# GPU check results", "",
             f"Written by `bench/gpu_check.py` ({meta['finished_at']}); "
             f"{meta['wall_s']:.0f} s of a {meta['budget_s']:.0f} s budget.", ""]
    if meta["dry_run"]:
        lines += ["**Dry run**: every step on CPU at toy sizes. It proves the script runs; "
                  "its numbers mean nothing.", ""]
    if env is not None and env.status == "ok":
        lines += [f"Machine: {env.headline}", ""]
    lines += ["| step | status | seconds | result |", "|---|---|---|---|"]
    for s in STEPS:
        f = frags.get(s.name)
        if f is None:
            continue
        cell = f.headline.replace("|", "/").replace("\n", " ")
        lines.append(f"| {s.name} | {f.status} | {f.seconds:.1f} | {cell} |")
    for s in STEPS:
        f = frags.get(s.name)
        if f is None:
            continue
        lines += ["", f"## {s.name}: {f.title}", "", f.markdown.strip() or f.headline]
    c = meta.get("curves_compare")
    if c:
        word = "within" if c["within_tolerance"] else "OUTSIDE"
        lines += ["", "## Loss curves: bf16-mixed vs float32", "",
                  f"At epoch {c['epoch']} (the last both reached) bf16-mixed's validation loss "
                  f"is {100 * c['relative_diff']:+.2f} % of float32's, **{word}** the "
                  f"{100 * c['tolerance']:.0f} % tolerance; the largest gap over the "
                  f"{c['common_epochs']} common epochs is {100 * c['max_relative_diff']:.2f} %. "
                  f"Plot: `{CURVES_PNG}`."]
    return "\n".join(lines) + "\n"


def compare_curves(frags: dict[str, Fragment]) -> dict[str, Any] | None:
    """bf16-mixed vs float32 validation loss at the last epoch both curves reached."""
    a, b = frags.get("curves_fp32"), frags.get("curves_bf16")
    if a is None or b is None or a.status != "ok" or b.status != "ok":
        return None
    ref = {p["epoch"]: p["val_loss"] for p in a.data["points"]}
    new = {p["epoch"]: p["val_loss"] for p in b.data["points"]}
    common = sorted(set(ref) & set(new))
    if not common:
        return None
    e = common[-1]
    rel = (new[e] - ref[e]) / ref[e]
    return {"epoch": e, "relative_diff": rel, "common_epochs": len(common),
            "max_relative_diff": max(abs(new[k] - ref[k]) / ref[k] for k in common),
            "tolerance": CURVE_TOLERANCE, "within_tolerance": abs(rel) <= CURVE_TOLERANCE}


def plot_curves(frags: dict[str, Fragment], path: Path, dry: bool) -> bool:
    """Validation loss per epoch and per training second, one line per precision."""
    runs = {f.data.get("precision", f.step): f.data["points"] for f in frags.values()
            if f.step.startswith("curves_") and f.status == "ok" and f.data.get("points")}
    if not runs:
        return False
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from audiolstm.atomic import atomic_write

    fig = Figure(figsize=(11, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    by_epoch, by_time = fig.subplots(1, 2)
    for label, points in runs.items():
        epochs = [p["epoch"] for p in points]
        secs = [p["seconds"] for p in points]
        val = [p["val_loss"] for p in points]
        by_epoch.plot(epochs, val, marker="o" if len(val) <= 30 else None, label=label)
        by_time.plot(secs, val, label=label)
    by_epoch.set(xlabel="epoch", ylabel="validation loss (float32)", title="per epoch")
    by_time.set(xlabel="training seconds", ylabel="validation loss (float32)",
                title="per wall-clock second")
    for ax in (by_epoch, by_time):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("dry run, toy sizes on CPU: float32 vs bf16-mixed" if dry else
                 "lstm_300x3 on the built-in data: 32-true (TF32 off) vs bf16-mixed")
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=110))
    return True


def write_results(frags: dict[str, Fragment], meta: dict[str, Any], out: Path,
                  work: Path) -> None:
    """RESULTS-gpu.{md,json}, the curves and the logs, each file atomically."""
    from audiolstm.atomic import atomic_write, write_json, write_text

    meta = {**meta, "finished_at": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "curves_compare": compare_curves(frags)}
    out.mkdir(parents=True, exist_ok=True)
    if plot_curves(frags, out / CURVES_PNG, meta["dry_run"]):
        meta["curves_png"] = CURVES_PNG
    else:  # an earlier run's plot must not pass for this one's
        (out / CURVES_PNG).unlink(missing_ok=True)
    write_json(out / RESULTS_JSON, {**meta, "steps": {k: asdict(v) for k, v in frags.items()}})
    write_text(out / RESULTS_MD, render(frags, meta))

    def tar(fh: Any) -> None:
        with tarfile.open(fileobj=fh, mode="w:gz") as t:
            for sub in ("logs", "fragments"):
                if (work / sub).is_dir():
                    t.add(work / sub, arcname=sub)

    atomic_write(out / LOGS_TAR, tar)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true",
                    help="every step on CPU at toy size (the test runs this)")
    ap.add_argument("--out", type=Path, default=None,
                    help="where the results go (default bench/, dry run outputs/gpu_check_dry/)")
    ap.add_argument("--work", type=Path, default=None,
                    help="scratch folder: data cache, run dirs, logs (default a temp dir, removed)")
    ap.add_argument("--budget", type=float, default=None,
                    help=f"seconds for everything (default {GPU_BUDGET_S:.0f}; dry {DRY_BUDGET_S:.0f})")
    ap.add_argument("--only", default=None,
                    help=f"comma-separated steps (default all: {','.join(STEP_NAMES)})")
    ap.add_argument("--jobs", type=int, default=None,
                    help="steps at once (default 1; 2 in a dry run, whose timings mean nothing)")
    args = ap.parse_args(argv)

    steps = list(STEPS)
    if args.only:
        wanted = [w.strip() for w in args.only.split(",") if w.strip()]
        unknown = [w for w in wanted if w not in STEP_NAMES]
        if unknown:
            print(f"error: --only: unknown step(s) {', '.join(unknown)}; the steps are "
                  f"{', '.join(STEP_NAMES)}", file=sys.stderr)
            return 2
        steps = [s for s in STEPS if s.name in wanted or s.name == "prepare"]
    jobs = args.jobs or (2 if args.dry_run else 1)
    if jobs < 1 or (jobs > 1 and not args.dry_run):
        print(f"error: --jobs={jobs}: timings need the GPU alone; more than one step at once "
              "only in a dry run", file=sys.stderr)
        return 2
    out = args.out or (ROOT / "outputs" / "gpu_check_dry" if args.dry_run else BENCH)
    keep_work = args.work is not None
    work = args.work or Path(tempfile.mkdtemp(prefix="audiolstm-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        why = preflight(args.dry_run, work)
        if why:
            print(f"error: {why}", file=sys.stderr)
            return 2
        budget = Budget(args.budget or (DRY_BUDGET_S if args.dry_run else GPU_BUDGET_S))
        meta = {"dry_run": args.dry_run, "budget_s": budget.seconds, "argv": sys.argv,
                "python": platform.python_version(), "wall_s": 0.0, "work": str(work)}
        frags: dict[str, Fragment] = {}
        lock = threading.Lock()

        def record(frag: Fragment) -> None:
            with lock:
                frags[frag.step] = frag
                meta["wall_s"] = budget.used()
                write_results(frags, meta, out, work)

        first = [s for s in steps if s.first]
        rest = [s for s in steps if not s.first]
        for s in first:
            record(run_step(s, args, work, budget, 0))
        if frags.get("prepare") and frags["prepare"].status != "ok":
            print("error: the data cache could not be built (see the prepare log); "
                  "nothing else can run", file=sys.stderr)
            return 1
        curves = [s for s in rest if s.curve]
        if jobs == 1:
            for s in rest:
                left = sum(1 for c in curves if c.name not in frags)
                record(run_step(s, args, work, budget, left))
        else:
            # longest first (the launcher starts six processes): the pool ends sooner
            order = sorted(rest, key=lambda s: -s.expect_s)
            with ThreadPoolExecutor(jobs) as pool:
                for f in [pool.submit(run_step, s, args, work, budget, len(curves)) for s in order]:
                    record(f.result())
        meta["wall_s"] = budget.used()
        write_results(frags, meta, out, work)
        bad = [f.step for f in frags.values() if f.status in ("failed", "timeout")]
        print(f"wrote {out / RESULTS_MD} and {out / RESULTS_JSON} "
              f"({budget.used():.0f} s of {budget.seconds:.0f}); "
              + (f"not ok: {', '.join(bad)}" if bad else "every step ok or skipped"), flush=True)
        return 1 if bad else 0
    finally:
        if not keep_work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
