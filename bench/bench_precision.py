"""bf16 mixed precision on CPU (issue 15): matmul peaks, training throughput, learning curves.

Parts (any subset, in this order):

- `matmul`: a 4096^2 `torch.mm` in float32 and in bfloat16 (the ceilings);
- `throughput`: steps/s and audio-seconds/s of `trainer.precision=32-true` vs `bf16-mixed`
  through `audiolstm.training.run.run` (what `train.py` calls: the same config, data module,
  Trainer, manual optimisation and clipping), for lstm_300x3 @ x_len 2000,
  lstm_1000 @ x_len 8000 and samplernn_2tier (experiment=samplernn); the two precisions
  alternate `--repeats` times so that a shared machine's load falls on both alike; achieved
  GFLOP/s against the float32 and bf16 matmul peaks;
- `heads`: every head, the STFT loss and SampleRNN trained `--head-steps` Adam steps on one
  fixed batch from the same initialisation in both precisions; the final float32 loss;
- `curves`: the default model (lstm_300x3 @ 2000) trained in both precisions with the same
  budget on the built-in data and on `--real FILE`; validation loss per epoch (always
  computed in float32), written to docs/precision/.

The budget of `curves` is `--minutes` of wall clock each (the issue's 8 CPU-minutes, fair on
an idle machine) or, on a shared machine, `--curve-epochs` epochs each (the same optimiser
steps for both precisions, whatever the load).

    python bench/bench_precision.py matmul throughput heads curves --real /path/to.wav --write
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import itertools
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from _common import machine, write_section
from bench_train import flops_per_step
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from audiolstm import PROJECT_ROOT
from audiolstm.config import register_configs
from audiolstm.training.precision import cpu_bf16_flags

PRECISIONS = ("32-true", "bf16-mixed")
DOCS = PROJECT_ROOT / "docs" / "precision"

THROUGHPUT_CASES = [  # name, overrides
    ("lstm_300x3 @ x_len 2000", ["model=lstm_300x3", "data.x_len=2000"]),
    ("lstm_1000 @ x_len 8000", ["model=lstm_1000", "data.x_len=8000", "data.seq_len=25"]),
    ("samplernn_2tier", ["experiment=samplernn"]),
]


def load() -> str:
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


# ----------------------------------------------------------------------------- matmul


def matmul_gflops(dtype: torch.dtype, n: int = 4096, repeats: int = 5) -> tuple[float, float]:
    """(GFLOP per wall second, GFLOP per process-CPU second), best of `repeats`.

    Per CPU second is the rate a core delivers while it runs this process: on a shared
    machine it is what load does not change (with one thread; with more, threads waiting
    for a descheduled peer spin and count too).
    """
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    wall = cpu = math.inf
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        torch.mm(a, b)
        wall = min(wall, time.perf_counter() - t0)
        cpu = min(cpu, time.process_time() - c0)
    return 2 * n**3 / wall / 1e9, 2 * n**3 / cpu / 1e9


# ----------------------------------------------------------------------------- runs


class StepTimer(pl.Callback):
    """Wall and process-CPU seconds of every training batch after `warmup` (one per run)."""

    last: StepTimer | None = None

    def __init__(self, warmup: int = 2) -> None:
        self.warmup = warmup
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self.batches = 0
        self._t0 = self._c0 = 0.0
        StepTimer.last = self

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._t0, self._c0 = time.perf_counter(), time.process_time()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.batches += 1
        if self.batches > self.warmup:
            self.wall.append(time.perf_counter() - self._t0)
            self.cpu.append(time.process_time() - self._c0)


def compose_train(overrides: list[str], out: Path, warmup: int) -> Any:
    register_configs()
    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    with open_dict(cfg):  # what Hydra's run dir would give train.py
        cfg.paths.root_dir = str(PROJECT_ROOT)
        cfg.paths.output_dir = str(out)
        cfg.callbacks.step_timer = {"_target_": "__main__.StepTimer", "warmup": warmup}
    return cfg


def train(overrides: list[str], out: Path, warmup: int = 2) -> dict[str, Any]:
    """run() (train.py's job) on a composed config; what it took and left."""
    import json

    from audiolstm.training.run import run

    cfg = compose_train(overrides, out, warmup)
    c0, t0, load0 = time.process_time(), time.perf_counter(), load()
    run(cfg)
    summary = json.loads((out / "summary.json").read_text())
    return {"summary": summary, "timer": StepTimer.last, "wall": time.perf_counter() - t0,
            "cpu": time.process_time() - c0, "load": f"{load0} -> {load()}", "cfg": cfg}


def samplernn_flops_per_target(model_cfg: dict[str, Any]) -> float:
    """Multiply-adds x 2 x 3 (forward + backward) per predicted sample of SampleRNN."""
    fs = list(model_cfg["frame_sizes"])
    h, mlp, q, e = (model_cfg["hidden_sizes"][0], model_cfg["mlp_hidden"],
                    model_cfg["q_levels"], model_cfg["embed_dim"])
    below = [*fs[1:], 1]
    macs = e * fs[-1] * mlp + 2 * mlp * mlp + mlp * q  # the sample MLP, per sample
    for k, (f, nxt) in enumerate(zip(fs, below, strict=True)):
        out = mlp if k == len(fs) - 1 else h
        macs += (f * h + 4 * h * 2 * h + h * (f // nxt) * out) / f  # per sample of the tier
    return 6.0 * macs


def throughput(args: argparse.Namespace, peaks: dict[str, float], tmp: Path) -> str:
    rows = []
    for name, case in THROUGHPUT_CASES:
        if args.cases and not any(c in name for c in args.cases):
            continue
        per: dict[str, list[StepTimer]] = {p: [] for p in PRECISIONS}
        info: dict[str, Any] = {}
        loads = []
        for r in range(args.repeats):
            for prec in (PRECISIONS if r % 2 == 0 else PRECISIONS[::-1]):
                out = tmp / f"tp_{name.split()[0]}_{prec}_{r}"
                res = train([*case, f"trainer.precision={prec}", "trainer.max_epochs=1",
                             f"++trainer.limit_train_batches={args.warmup + args.steps}",
                             "++trainer.limit_val_batches=0", "trainer.num_sanity_val_steps=0",
                             "test=false", "ridge_baseline=false",
                             "~callbacks.sample_generation", "~callbacks.early_stopping",
                             "~callbacks.model_checkpoint", "logger=none"], out, args.warmup)
                timer = res["timer"]
                per[prec].append(timer)
                info = res["summary"] | {"cfg": res["cfg"]}
                loads.append(res["load"])
                print(f"{name} {prec} round {r}: median {statistics.median(timer.wall):.3f} "
                      f"wall s/batch, {statistics.median(timer.cpu):.3f} CPU-s/batch, "
                      f"{torch.get_num_threads()} threads (load {res['load']})", flush=True)
        cfg = info["cfg"]
        b, t, x = cfg.data.batch_size, cfg.data.seq_len, cfg.data.x_len
        sr = cfg.data.sample_rate
        if cfg.model.arch == "samplernn":
            targets = b * ((t + 1) * x - cfg.model.frame_sizes[0])
            flops = targets * samplernn_flops_per_target(dict(cfg.model))
        else:
            targets = b * t * x
            flops = flops_per_step(list(cfg.model.hidden_sizes), x, b, t)
        batches = args.warmup + args.steps
        opt_steps = info["steps"] / batches
        cells = []
        cpu_med: dict[str, float] = {}
        for prec in PRECISIONS:
            wall = [w for tm in per[prec] for w in tm.wall]
            cpu = [c for tm in per[prec] for c in tm.cpu]
            c = cpu_med[prec] = statistics.median(cpu)
            own = peaks["bf16"][1] if prec == "bf16-mixed" else peaks["fp32"][1]
            cells.append(
                f"| {name} | {prec} | {b}x{t}x{x} | {c:.3f} | {min(wall):.2f} | "
                f"{opt_steps / c:.3g} | {targets / sr / c:.3g} | {flops / c / 1e9:.3g} | "
                f"{100 * flops / c / 1e9 / own:.0f} % | "
                f"{100 * flops / c / 1e9 / peaks['bf16'][1]:.0f} % |")
        speedup = cpu_med["32-true"] / cpu_med["bf16-mixed"]
        cells[-1] += f" **{speedup:.2f}x** |"
        cells[0] += " |"
        rows += cells
        print("\n".join(cells), flush=True)
    header = ("| case | precision | batch x seq x x_len | CPU-s/batch | best wall s/batch | "
              "opt. steps per CPU-s | audio-s per CPU-s | GFLOP per CPU-s | % of own matmul "
              "peak | % of bf16 matmul peak | bf16 speed-up |\n"
              "|---|---|---|---|---|---|---|---|---|---|---|")
    return (f"Each case runs `run()` (train.py's job: composed config, data module, Trainer, "
            f"manual optimisation, clipping at 1.0) with {torch.get_num_threads()} torch "
            f"thread(s) for {args.warmup} warm-up + {args.steps} timed batches per run, "
            f"{args.repeats} runs per precision, the two precisions alternating. The measure is "
            f"the process CPU time per batch (median over all timed batches): what a batch "
            f"costs a core, which other processes on a shared machine do not change; "
            f"'best wall' is the fastest batch by the clock. Rates are per CPU-second (on an "
            f"idle machine, x cores for a perfectly parallel step); the peaks are the 4096^2 "
            f"matmul's, per CPU-second, same threads. SampleRNN: a batch is many "
            f"truncated-BPTT optimiser steps (opt. steps per CPU-s); its FLOPs count the tiers "
            f"and the sample MLP.\n\n" + header + "\n" + "\n".join(rows))


# ----------------------------------------------------------------------------- heads


def heads(args: argparse.Namespace) -> str:
    from audiolstm.models.frame_rnn import AudioRNN
    from audiolstm.models.samplernn import SampleRNN

    d, b, t = 256, 16, 9
    g = torch.Generator().manual_seed(0)
    n = torch.arange(b * t * d, dtype=torch.float32)
    batch = (0.5 * torch.sin(0.07 * n) + 0.3 * torch.sin(0.31 * n)
             + 0.05 * torch.randn(n.shape, generator=g)).reshape(b, t, d)
    cases: dict[str, dict[str, Any] | list[int]] = {
        "mse": {}, "gaussian": {"head": "gaussian"},
        "logistic_mixture": {"head": "logistic_mixture", "mixture_bins": 256},
        "stft": {"loss": "stft"}, "mse+stft": {"loss": "mse+stft"},
        "gru (mse)": {"cell": "gru"}, "samplernn 2-tier": [16], "samplernn 3-tier": [64, 16]}
    rows = []
    for name, kw in cases.items():
        final = {}
        for prec in PRECISIONS:
            torch.manual_seed(0)
            if isinstance(kw, list):
                net = SampleRNN(kw, hidden=64, mlp_hidden=64)
                codes = net.quantize(batch.reshape(b, -1).clamp(-1, 1))

                def loss_fn(net=net, codes=codes) -> torch.Tensor:
                    logits = net(codes)[0]
                    return F.cross_entropy(logits.reshape(-1, net.q_levels),
                                           codes[:, net.lookback:].reshape(-1))
            else:
                net = AudioRNN(d, hidden_sizes=[64, 64], **kw)

                def loss_fn(net=net) -> torch.Tensor:
                    return net.objective(net(batch[:, :-1])[0], batch[:, 1:])
            opt = torch.optim.Adam(net.parameters(), lr=1e-3)
            for _ in range(args.head_steps):
                opt.zero_grad()
                ctx = (torch.autocast("cpu", dtype=torch.bfloat16) if prec == "bf16-mixed"
                       else contextlib.nullcontext())
                with ctx:
                    loss = loss_fn()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
                opt.step()
            with torch.no_grad():
                final[prec] = loss_fn().item()  # float32 evaluation
        a, c = final["32-true"], final["bf16-mixed"]
        rows.append(f"| {name} | {a:.4f} | {c:.4f} | {c - a:+.4f} | {100 * (c - a) / abs(a):+.2f} % |")
        print(rows[-1], flush=True)
    return (f"{args.head_steps} Adam steps (lr 1e-3, clipping 1.0) on one fixed batch "
            f"({b} x {t - 1} frames of {d} samples: two sines and noise), same initialisation, "
            f"hidden 64x2 (SampleRNN: 64, MLP 64); the loss of the final weights evaluated in "
            f"float32.\n\n| objective | float32 | bf16-mixed | difference | relative |\n"
            f"|---|---|---|---|---|\n" + "\n".join(rows))


# ----------------------------------------------------------------------------- curves


def val_curve(metrics_csv: Path) -> list[tuple[int, int, float]]:
    """(epoch, step, val/loss) per validation from Lightning's metrics.csv."""
    points = []
    with open(metrics_csv, newline="") as f:
        for row in csv.DictReader(f):
            if row.get("val/loss"):
                points.append((int(row["epoch"]), int(row["step"]), float(row["val/loss"])))
    return points


def curves(args: argparse.Namespace, tmp: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data_sets = []
    if args.curve_data in ("synthetic", "both"):
        data_sets.append(("built-in data (10 min)", "synthetic", []))
    if args.real and args.curve_data in ("real", "both"):
        data_sets.append((f"{Path(args.real).name}", Path(args.real).stem,
                          ["data=wav", f"data.path={args.real}"]))
    if args.minutes:
        budget = [f"++trainer.max_time=00:00:{int(args.minutes):02d}:00", "trainer.max_epochs=-1"]
        what = f"{args.minutes} minutes of wall clock each"
    else:
        budget = [f"trainer.max_epochs={args.curve_epochs}"]
        what = f"{args.curve_epochs} epochs (the same optimiser steps) each"
    DOCS.mkdir(parents=True, exist_ok=True)
    rows = []
    for label, key, data in data_sets:
        results = {}
        for prec in PRECISIONS:
            out = tmp / f"curve_{key}_{prec}"
            res = train([*data, *args.curve_overrides, *budget, f"trainer.precision={prec}",
                         "~callbacks.early_stopping", "~callbacks.sample_generation",
                         "ridge_baseline=false"], out, warmup=0)
            res["curve"] = val_curve(out / "metrics.csv")
            results[prec] = res
            s = res["summary"]
            print(f"{label} {prec}: {s['steps']} steps, {s['epochs']} epochs, "
                  f"{s['train_seconds']:.0f} s, best val {s['best_val_loss']:.4f} "
                  f"(load {res['load']})", flush=True)
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for prec, res in results.items():
            steps = [p[1] for p in res["curve"]]
            vals = [p[2] for p in res["curve"]]
            cum = list(itertools.accumulate(res["timer"].cpu))  # one entry per batch
            secs = [cum[max(min(st, len(cum)), 1) - 1] for st in steps]
            axes[0].plot(steps, vals, label=prec, marker="o", markersize=3)
            axes[1].plot(secs, vals, label=prec, marker="o", markersize=3)
        axes[0].set_xlabel("optimiser step")
        axes[1].set_xlabel("training CPU-seconds (process time of the training batches)")
        for ax in axes:
            ax.set_ylabel("val/loss (float32)")
            ax.set_yscale("log")
            ax.grid(alpha=0.3)
            ax.legend()
        fig.suptitle(f"lstm_300x3 @ x_len 2000, {label}: float32 vs bf16-mixed, {what}")
        fig.tight_layout()
        png = DOCS / f"curves_{key}.png"
        fig.savefig(png, dpi=80)
        plt.close(fig)
        a, c = (results[p]["summary"] for p in PRECISIONS)
        fa, fc = (results[p]["curve"][-1][2] for p in PRECISIONS)
        for prec, s, fin in (("32-true", a, fa), ("bf16-mixed", c, fc)):
            r = results[prec]
            rows.append(f"| {label} | {prec} | {s['steps']} | {s['epochs']} | "
                        f"{s['train_seconds']:.0f} | {sum(r['timer'].cpu):.0f} | {fin:.4f} | "
                        f"{s['best_val_loss']:.4f} | {s.get('test_loss') or float('nan'):.4f} | "
                        f"{r['load']} |")
        rows[-1] += f" {100 * (fc - fa) / fa:+.2f} % |"
        rows[-2] += " |"
        print("\n".join(rows[-2:]), flush=True)
    header = ("| data | precision | steps | epochs | train wall s | training CPU-s | final val "
              "loss | best val loss | test loss | load (1/5/15 min) | final val bf16 vs fp32 |\n"
              "|---|---|---|---|---|---|---|---|---|---|---|")
    extra = " ".join(args.curve_overrides) or "defaults"
    return (f"`train.py` defaults (lstm_300x3 @ x_len 2000, batch 100 x 40 frames, std norm, "
            f"Adam 1e-3; {extra}), no early stopping, both precisions with the same budget: "
            f"{what}. Validation loss is computed in float32 for both. Curves: "
            f"`docs/precision/curves_*.png`.\n\n" + header + "\n" + "\n".join(rows))


# ----------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("parts", nargs="*", default=["matmul", "throughput", "heads", "curves"],
                    choices=["matmul", "throughput", "heads", "curves"])
    ap.add_argument("--steps", type=int, default=3, help="timed batches per throughput run")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2, help="runs per precision and case")
    ap.add_argument("--cases", nargs="*", default=None, help="throughput: cases whose name "
                    "contains one of these")
    ap.add_argument("--head-steps", type=int, default=200)
    ap.add_argument("--minutes", type=float, default=None, help="curves: wall budget per run")
    ap.add_argument("--curve-epochs", type=int, default=60, help="curves: epochs per run")
    ap.add_argument("--curve-overrides", nargs="*", default=[])
    ap.add_argument("--real", default=None, help="curves: a real recording as well")
    ap.add_argument("--curve-data", default="both", choices=["synthetic", "real", "both"])
    ap.add_argument("--tmp", default="outputs/bench_precision")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (1 on a shared "
                    "machine: CPU time then counts no spinning on descheduled peers)")
    ap.add_argument("--write", action="store_true", help="record in bench/RESULTS.md")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = Path(args.tmp)
    os.environ.setdefault("WANDB_MODE", "offline")
    flags = cpu_bf16_flags()
    head = (f"Machine: {machine()}; native bf16: {', '.join(flags) or 'none'}; "
            f"load average {load()} when this part started.")
    peaks = {"fp32": matmul_gflops(torch.float32), "bf16": matmul_gflops(torch.bfloat16)}
    (fw, fc), (bw, bc) = peaks["fp32"], peaks["bf16"]
    peak_line = (f"4096^2 `torch.mm`, {torch.get_num_threads()} thread(s), best of 5: float32 "
                 f"{fw:.0f} GFLOP/s by the clock, {fc:.0f} per CPU-second; bfloat16 {bw:.0f} "
                 f"GFLOP/s, {bc:.0f} per CPU-second ({bc / fc:.1f}x per CPU-second).")
    print(head, "\n", peak_line, flush=True)
    sections = {}
    if "matmul" in args.parts:
        sections["bf16 mixed precision: matmul peaks (CPU)"] = f"{head}\n\n{peak_line}"
    if "throughput" in args.parts:
        sections["bf16 mixed precision: training throughput (CPU)"] = (
            f"{head}\n\n{peak_line}\n\n{throughput(args, peaks, tmp)}")
    if "heads" in args.parts:
        sections["bf16 mixed precision: every objective on a fixed batch (CPU)"] = (
            f"Machine: {machine()}.\n\n{heads(args)}")
    if "curves" in args.parts:
        head = (f"Machine: {machine()}; native bf16: {', '.join(flags) or 'none'}; "
                f"load average {load()} when this part started.")
        which = {"synthetic": "built-in data", "real": Path(args.real or "real").name,
                 "both": "built-in data and " + Path(args.real or "-").name}[args.curve_data]
        sections[f"bf16 mixed precision: learning curves, {which} (CPU)"] = (
            f"{head}\n\n{curves(args, tmp)}")
    for title, body in sections.items():
        print(f"\n## {title}\n\n{body}\n", flush=True)
        if args.write:
            write_section(title, body)


if __name__ == "__main__":
    sys.exit(main())
