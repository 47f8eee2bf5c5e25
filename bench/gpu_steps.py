"""The measurements of bench/gpu_check.py, one per process: `python bench/gpu_steps.py STEP`.

gpu_check.py starts this file once per step (in a fresh process: a CUDA context, an
allocator and cuDNN's autotuning cache of its own; a hang or a crash costs that step
only) and reads the JSON fragment it leaves (`--fragment`). Sizes: `GPU` on a CUDA
machine, `DRY` (`--dry-run`) on CPU at toy size. In a dry run each CUDA-only part takes
its CPU analogue (TF32 runs as plain float32, cuDNN's kernels are CPU ops, DDP is
`trainer=ddp_cpu`, the launcher simulates device ids) so every code path still runs.

Training runs go through `audiolstm.training.run.run` (what train.py calls) on configs
composed as train.py composes them, with a `StepClock` callback added; the launcher and
DDP steps start train.py itself.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
for _p in (str(BENCH), str(ROOT)):  # the project and bench/ import from a bare checkout
    if _p not in sys.path:
        sys.path.insert(0, _p)

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from gpu_check import STEPS, Fragment  # noqa: E402

SR = 16000
TITLES = {s.name: s.title for s in STEPS}


# ----------------------------------------------------------------------------- sizes


@dataclass(frozen=True)
class Sizes:
    """Everything a step sizes: the GPU run's (the issue's cases) or the dry run's."""

    device: str
    synth_seconds: float
    matmul_n: int
    # lstm_300x3 @ x_len 2000, seq 40, batch 100 (window_shift only sets how many batches
    # an epoch has: enough for the warm-up and the timed steps in one epoch)
    lstm_hidden: tuple[int, ...]
    x_len: int
    seq_len: int
    batch: int
    window_shift: int
    warmup: int
    steps: int
    loader_batches: int
    # SampleRNN training
    srnn_hidden: int
    srnn_embed: int
    srnn_x_len: int
    srnn_seq_len: int
    srnn_batch: int
    srnn_tbptt: tuple[int, int]  # 2-tier, 3-tier: top frames per optimiser step
    srnn_warmup: int
    srnn_steps: int
    # generation
    gen_hidden: tuple[int, ...]
    gen_streams: tuple[int, ...]
    gen_samples: int
    gen_frames: int
    # the launcher's sweep and the DDP run
    sweep_models: tuple[str, ...]
    sweep_batches: int
    sweep_epochs: int
    ddp_batches: int
    # loss curves: the default run (None: the whole split) or a toy one
    curve_batches: tuple[int, int] | None

    @property
    def cuda(self) -> bool:
        return self.device == "cuda"


GPU = Sizes(
    device="cuda", synth_seconds=600.0, matmul_n=8192,
    lstm_hidden=(300, 300, 300), x_len=2000, seq_len=40, batch=100, window_shift=1000,
    warmup=10, steps=50, loader_batches=30,
    srnn_hidden=1024, srnn_embed=64, srnn_x_len=1024, srnn_seq_len=8, srnn_batch=32,
    srnn_tbptt=(64, 16), srnn_warmup=2, srnn_steps=6,
    gen_hidden=(1024, 256), gen_streams=(1, 100), gen_samples=8000, gen_frames=40,
    sweep_models=("lstm_300x1", "lstm_300x2", "lstm_300x3", "gru_300x3"),
    sweep_batches=60, sweep_epochs=1, ddp_batches=40, curve_batches=None,
)
DRY = Sizes(
    device="cpu", synth_seconds=24.0, matmul_n=256,
    lstm_hidden=(24, 24, 24), x_len=200, seq_len=8, batch=4, window_shift=200,
    warmup=1, steps=3, loader_batches=3,
    srnn_hidden=16, srnn_embed=8, srnn_x_len=64, srnn_seq_len=2, srnn_batch=2,
    srnn_tbptt=(2, 1), srnn_warmup=1, srnn_steps=2,
    gen_hidden=(16,), gen_streams=(1, 4), gen_samples=64, gen_frames=4,
    sweep_models=("lstm_300x1", "lstm_300x2"), sweep_batches=2, sweep_epochs=1, ddp_batches=2,
    curve_batches=(4, 2),
)


@dataclass(frozen=True)
class Mode:
    """A numeric setting: `trainer.precision` and the float32 matmul precision on CUDA."""

    name: str
    precision: str
    matmul: str  # float32_matmul_precision: highest = TF32 off, high = TF32 on
    peak: str  # the measured matmul peak that is its ceiling (env step)


MODES = {
    "fp32": Mode("fp32", "32-true", "highest", "fp32"),
    "tf32": Mode("tf32", "32-true", "high", "tf32"),
    "bf16": Mode("bf16", "bf16-mixed", "high", "bf16"),
}


def mode_overrides(mode: Mode, s: Sizes) -> list[str]:
    """On CPU float32_matmul_precision must stay at its default (config check)."""
    return [f"trainer.precision={mode.precision}"] + (
        [f"float32_matmul_precision={mode.matmul}"] if s.cuda else [])


def cpu_note(mode: Mode, s: Sizes) -> str:
    return " (CPU: no TF32, ran as float32)" if mode.name == "tf32" and not s.cuda else ""


def sync(s: Sizes) -> None:
    if s.cuda:
        torch.cuda.synchronize()


def load() -> str:
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


def fmt(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.{digits}g}"


def table(head: list[str], rows: list[list[Any]]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


# ----------------------------------------------------------------------------- runs


def data_overrides(s: Sizes) -> list[str]:
    return [f"data.synth_seconds={s.synth_seconds}"]


def lstm_overrides(s: Sizes) -> list[str]:
    hidden = ",".join(str(h) for h in s.lstm_hidden)
    return [*data_overrides(s), "model=lstm_300x3", f"model.hidden_sizes=[{hidden}]",
            f"data.x_len={s.x_len}", f"data.seq_len={s.seq_len}", f"data.batch_size={s.batch}",
            f"data.window_shift={s.window_shift}"]


def trainer_overrides(s: Sizes) -> list[str]:
    return ["trainer=gpu" if s.cuda else "trainer=cpu"]


def quick_overrides(batches: int) -> list[str]:
    """One epoch of `batches` training batches; nothing else (no val, test, files, W&B)."""
    return ["trainer.max_epochs=1", f"++trainer.limit_train_batches={batches}",
            "++trainer.limit_val_batches=0", "trainer.num_sanity_val_steps=0", "test=false",
            "ridge_baseline=false", "logger=none", "~callbacks.sample_generation",
            "~callbacks.early_stopping", "~callbacks.model_checkpoint", "~callbacks.lr_monitor"]


class StepClock(pl.Callback):
    """Training throughput inside Trainer.fit, touching the step as little as possible.

    The clock starts at batch `warmup` (after cuDNN's autotuning and the allocator's
    growth) and stops after the last batch, synchronising the device only there. Host
    time between a batch's end and the next one's start (the loader's next batch, the
    copy to the device, Lightning's hooks) is summed: the GPU waits for the host then,
    since the step itself synchronises (`isfinite`). `out`: also written as JSON at the
    end of training (train.py runs: the DDP step), by rank 0.
    """

    last: StepClock | None = None

    def __init__(self, warmup: int = 2, out: str | None = None) -> None:
        self.warmup, self.out = warmup, out
        self.batches = 0
        self.timed = 0
        self.gaps: list[float] = []
        self.t0 = self.t1 = self._end = 0.0
        self.opt0 = self.opt1 = 0
        StepClock.last = self

    @staticmethod
    def _sync(trainer: pl.Trainer) -> None:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        now = time.perf_counter()
        if self.batches == self.warmup:
            self._sync(trainer)
            self.t0 = now = time.perf_counter()
            self.opt0 = trainer.global_step
        elif self.batches > self.warmup:
            self.gaps.append(now - self._end)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.batches += 1
        self._end = time.perf_counter()
        if batch_idx + 1 == trainer.num_training_batches:  # the epoch's end is not a step
            self._stop(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._stop(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        self._stop(trainer)
        if self.out and trainer.is_global_zero:
            Path(self.out).write_text(json.dumps(self.result() | {
                "world_size": trainer.world_size}))

    def _stop(self, trainer: pl.Trainer) -> None:
        if self.t1 or self.batches <= self.warmup:
            return
        self._sync(trainer)
        self.t1 = time.perf_counter()
        self.timed = self.batches - self.warmup
        self.opt1 = trainer.global_step

    def result(self) -> dict[str, Any]:
        seconds = self.t1 - self.t0
        if self.timed < 1 or seconds <= 0:
            raise RuntimeError(f"StepClock: {self.batches} batches, warm-up {self.warmup}: "
                               "nothing was timed (too little data for the batches asked?)")
        return {"batches": self.timed, "seconds": seconds,
                "batches_per_s": self.timed / seconds,
                "opt_steps_per_s": (self.opt1 - self.opt0) / seconds,
                "between_steps_share": sum(self.gaps) / seconds}


class EpochClock(pl.Callback):
    """(epoch, training seconds, validation loss) after every validation: the curves."""

    last: EpochClock | None = None

    def __init__(self) -> None:
        self.points: list[dict[str, float]] = []
        self.t0 = 0.0
        self.val_s = 0.0
        self._v0 = 0.0
        EpochClock.last = self

    def on_train_start(self, trainer, pl_module) -> None:
        self.t0 = time.perf_counter()

    def on_validation_start(self, trainer, pl_module) -> None:
        self._v0 = time.perf_counter()

    def on_validation_end(self, trainer, pl_module) -> None:
        self.val_s += time.perf_counter() - self._v0
        val = trainer.callback_metrics.get("val/loss")
        if val is None or trainer.sanity_checking:
            return
        train = trainer.callback_metrics.get("train/loss_epoch")
        self.points.append({
            "epoch": trainer.current_epoch + 1, "steps": trainer.global_step,
            "seconds": time.perf_counter() - self.t0 - self.val_s,
            "val_loss": float(val), "train_loss": None if train is None else float(train)})


def compose_cfg(overrides: list[str], out: Path, callbacks: dict[str, dict[str, Any]]) -> Any:
    """The config train.py would compose for `overrides`, its run dir at `out`."""
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from audiolstm.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    with open_dict(cfg):  # what Hydra's run dir would give train.py
        cfg.paths.root_dir = str(ROOT)
        cfg.paths.output_dir = str(out)
        cfg.paths.cache_dir = os.environ.get("AUDIOLSTM_CACHE_DIR", str(out / "cache"))
        for name, node in callbacks.items():
            cfg.callbacks[name] = node
    return cfg


def train(overrides: list[str], out: Path, warmup: int,
          extra: dict[str, dict[str, Any]] | None = None) -> tuple[dict[str, Any], Any]:
    """run() on a composed config with a StepClock (and `extra` callbacks):
    (throughput, the config)."""
    from audiolstm.training.run import run

    cfg = compose_cfg(overrides, out, {"step_clock": {
        "_target_": f"{__name__}.StepClock", "warmup": warmup}} | (extra or {}))
    run(cfg)
    assert StepClock.last is not None
    summary = json.loads((out / "summary.json").read_text())
    return StepClock.last.result() | {"precision": summary["precision"]}, cfg


def peaks(work: Path) -> dict[str, float]:
    """The env step's matmul peaks (TFLOP/s), {} when it did not run."""
    path = work / "fragments" / "env.json"
    if not path.is_file():
        return {}
    frag = json.loads(path.read_text())
    return frag.get("data", {}).get("peaks_tflops", {}) if frag.get("status") == "ok" else {}


def pct(tflops: float | None, peak: float | None) -> float | None:
    return None if not tflops or not peak else 100.0 * tflops / peak


# ----------------------------------------------------------------------------- steps


def step_prepare(s: Sizes, work: Path, frag: Fragment, args: argparse.Namespace) -> None:
    """Decode/synthesise the built-in data once into the shared cache (every run reads it)."""
    from audiolstm.config import to_container
    from audiolstm.data.datamodule import AudioDataModule

    cfg = compose_cfg(lstm_overrides(s), work / "runs" / "prepare", {})
    t0 = time.perf_counter()
    dm = AudioDataModule(to_container(cfg.data), to_container(cfg.norm), to_container(cfg.repr),
                         seed=cfg.seed)
    dm.prepare_data()
    dm.setup("fit")
    took = time.perf_counter() - t0
    frag.data = {"synth_seconds": s.synth_seconds, "seconds": took,
                 "cache_dir": cfg.paths.cache_dir, "train_examples": len(dm.dataset("train"))}
    frag.headline = f"{s.synth_seconds:.0f} s of built-in audio ready in {took:.1f} s"
    frag.markdown = (f"{frag.headline} (cache `{cfg.paths.cache_dir}`); "
                     f"{frag.data['train_examples']} training examples at the lstm sizes.")


def matmul_tflops(n: int, dtype: torch.dtype, device: str, reps: int) -> float:
    """Median rate of an n x n x n product on random data (never zeros)."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(reps):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            a @ b
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times) / 1e12


def step_env(s: Sizes, work: Path, frag: Fragment, args: argparse.Namespace) -> None:
    """The machine and library versions; the fp32/TF32/bf16 matmul ceilings on this card."""
    import hydra
    import numpy as np

    info: dict[str, Any] = {
        "python": platform.python_version(), "torch": torch.__version__,
        "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
        "cudnn_available": torch.backends.cudnn.is_available(),
        "lightning": pl.__version__, "hydra": hydra.__version__, "numpy": np.__version__,
        "cpu": _cpu_model(), "cpus": os.cpu_count(), "load": load(), "device": s.device,
    }
    if s.cuda:
        props = torch.cuda.get_device_properties(0)
        info |= {"gpu": props.name, "gpus": torch.cuda.device_count(),
                 "capability": f"{props.major}.{props.minor}",
                 "gpu_memory_gib": props.total_memory / 2**30,
                 "nvidia_smi": _nvidia_smi()}
    found: dict[str, float] = {}
    prior = torch.get_float32_matmul_precision()
    try:
        for name, dtype, prec in (("fp32", torch.float32, "highest"),
                                  ("tf32", torch.float32, "high"),
                                  ("bf16", torch.bfloat16, "highest")):
            if name == "tf32" and not s.cuda:
                continue
            torch.set_float32_matmul_precision(prec)
            found[name] = matmul_tflops(s.matmul_n, dtype, s.device, 10)
    finally:
        torch.set_float32_matmul_precision(prior)
    if not s.cuda:
        found["tf32"] = found["fp32"]  # no TF32 on CPU: its ceiling is float32's
    info["peaks_tflops"] = found
    frag.data = info
    where = (f"{info['gpu']} x{info['gpus']} (sm {info['capability']}, "
             f"{info['gpu_memory_gib']:.0f} GiB; {info['nvidia_smi']})" if s.cuda
             else f"CPU only: {info['cpu']}, {info['cpus']} CPUs")
    frag.headline = (f"{where}; torch {info['torch']}, CUDA {info['cuda']}, cuDNN "
                     f"{info['cudnn']}, Lightning {info['lightning']}, Python {info['python']}; "
                     + (f"host {info['cpu']} ({info['cpus']} CPUs), " if s.cuda else "")
                     + f"load {info['load']}")
    frag.markdown = frag.headline + "\n\n" + table(
        ["matmul", "TFLOP/s (median of 10, random data)"],
        [[f"{k} {s.matmul_n}^3", fmt(v)] for k, v in found.items()]) + (
        "\n\nThese are the ceilings the steps below divide by (\"% of peak\")."
        + ("" if s.cuda else " CPU: no TF32; its ceiling is float32's."))


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def _nvidia_smi() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,clocks.max.sm,"
                              "power.limit", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=30).stdout.strip().splitlines()
    except (OSError, subprocess.TimeoutExpired):
        return "nvidia-smi not found"
    return f"driver, max SM clock, power limit: {out[0]}" if out else "nvidia-smi: no output"


def _model_and_batch(s: Sizes) -> tuple[Any, list[torch.Tensor]]:
    from audiolstm.models.frame_rnn import AudioRNN

    torch.manual_seed(0)
    model = AudioRNN(s.x_len, hidden_sizes=list(s.lstm_hidden)).to(s.device)
    batches = [torch.randn(s.batch, s.seq_len + 1, s.x_len, device=s.device) for _ in range(3)]
    return model, batches


def bare_loop(s: Sizes, mode: Mode, steps: int, check_finite: bool = False) -> float:
    """Batches/s of a plain PyTorch loop over AudioRNN (forward, MSE, backward, clip, Adam)
    on batches already on the device: the ceiling run() is compared with.
    `check_finite`: the shipped step's `if not torch.isfinite(loss)` (a host sync)."""
    from audiolstm.models.base import at_least_float32
    from audiolstm.training.device import configure_cuda

    configure_cuda(mode.matmul, s.cuda)
    torch.backends.cudnn.benchmark = s.cuda
    model, batches = _model_and_batch(s)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    bf16 = mode.precision == "bf16-mixed"

    def one(batch: torch.Tensor) -> None:
        with torch.autocast(s.device, dtype=torch.bfloat16, enabled=bf16):
            pred, _ = model(batch[:, :-1])
        loss = F.mse_loss(at_least_float32(pred), batch[:, 1:])
        if check_finite and not torch.isfinite(loss):
            raise RuntimeError("non-finite loss")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    for i in range(s.warmup):
        one(batches[i % 3])
    sync(s)
    t0 = time.perf_counter()
    for i in range(steps):
        one(batches[i % 3])
    sync(s)
    return steps / (time.perf_counter() - t0)


def loader_alone(cfg: Any, s: Sizes, n: int) -> float:
    """Seconds per batch of the training loader alone, copied to the device as Lightning
    copies it (pinned, non_blocking): what the GPU would wait for if nothing overlapped."""
    from audiolstm.config import to_container
    from audiolstm.data.datamodule import AudioDataModule

    dm = AudioDataModule(to_container(cfg.data), to_container(cfg.norm), to_container(cfg.repr),
                         seed=cfg.seed)
    dm.prepare_data()
    dm.setup("fit")
    it = iter(dm.train_dataloader())
    next(it).to(s.device, non_blocking=True)
    sync(s)
    t0 = time.perf_counter()
    got = 0
    for batch in it:
        batch.to(s.device, non_blocking=True)
        got += 1
        if got == n:
            break
    sync(s)
    return (time.perf_counter() - t0) / max(got, 1)


def step_lstm(mode: Mode) -> Callable[[Sizes, Path, Fragment, argparse.Namespace], None]:
    def step(s: Sizes, work: Path, frag: Fragment, args: argparse.Namespace) -> None:
        from bench_train import flops_per_step

        n = s.warmup + s.steps
        res, cfg = train([*lstm_overrides(s), *trainer_overrides(s), *mode_overrides(mode, s),
                          *quick_overrides(n)], work / "runs" / f"lstm_{mode.name}", s.warmup)
        bare = bare_loop(s, mode, s.steps)
        loader_s = loader_alone(cfg, s, s.loader_batches)
        flops = flops_per_step(list(s.lstm_hidden), s.x_len, s.batch, s.seq_len)
        peak = peaks(work).get(mode.peak)
        step_s = 1 / res["batches_per_s"]
        d = {"mode": mode.name, "precision": res["precision"], "matmul": mode.matmul,
             "batch": s.batch,
             "train_py": res, "bare_batches_per_s": bare, "flops_per_batch": flops,
             "train_tflops": flops * res["batches_per_s"] / 1e12,
             "bare_tflops": flops * bare / 1e12, "peak_tflops": peak,
             "overhead_ratio": bare / res["batches_per_s"],
             "loader_s_per_batch": loader_s, "loader_idle_share": max(0.0, 1 - loader_s / step_s),
             "audio_s_per_s": res["batches_per_s"] * s.batch * s.seq_len * s.x_len / SR}
        d["train_pct_peak"] = pct(d["train_tflops"], peak)
        d["bare_pct_peak"] = pct(d["bare_tflops"], peak)
        frag.data = d
        frag.headline = (f"{res['batches_per_s']:.3g} steps/s via run() "
                         f"({fmt(d['train_pct_peak'], 2)} % of {mode.peak} peak), bare loop "
                         f"{bare:.3g} ({fmt(d['bare_pct_peak'], 2)} %): overhead "
                         f"{d['overhead_ratio']:.2f}x; loader idle {100 * d['loader_idle_share']:.0f} %"
                         + cpu_note(mode, s))
        frag.markdown = (
            f"lstm_{'x'.join(str(h) for h in s.lstm_hidden)} @ x_len {s.x_len}, seq {s.seq_len}, "
            f"batch {s.batch}; `trainer.precision={res['precision']}`"
            + (f", `float32_matmul_precision={mode.matmul}`" if s.cuda else "")
            + f"{cpu_note(mode, s)}; {s.steps} timed steps after {s.warmup}.\n\n"
            + table(["path", "steps/s", "audio-s per s", "TFLOP/s", "% of peak"], [
                ["run() (train.py's job)", fmt(res["batches_per_s"]), fmt(d["audio_s_per_s"]),
                 fmt(d["train_tflops"]), fmt(d["train_pct_peak"], 2)],
                ["bare loop, batches on the device", fmt(bare),
                 fmt(d["audio_s_per_s"] * d["overhead_ratio"]), fmt(d["bare_tflops"]),
                 fmt(d["bare_pct_peak"], 2)]])
            + f"\n\n- framework overhead: the bare loop is **{d['overhead_ratio']:.2f}x** "
            "as fast as run() (Lightning, the loader, our step's bookkeeping and syncs);\n"
            f"- host time between steps (next batch, copy, hooks): "
            f"{100 * res['between_steps_share']:.1f} % of run()'s wall time;\n"
            f"- the loader alone: {1e3 * loader_s:.1f} ms per batch (with the copy to the "
            f"device) against {1e3 * step_s:.1f} ms per training step: it is idle "
            f"**{100 * d['loader_idle_share']:.0f} %** of the time"
            + (" (slower than the step: the GPU waits for data)" if loader_s > step_s else "")
            + f".\n- FLOPs per step {flops / 1e9:.1f} G (3 x 2 x B·T x (Σ 4H(I+H) + H·D), "
            "bench/bench_train.py).")
    return step


# --------------------------------------------------------------------- host syncs


class _TorchWithoutFiniteCheck:
    """`torch` for models/base.py with `isfinite` answering True without reading the GPU."""

    def __init__(self) -> None:
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(torch, name)

    def isfinite(self, t: Any) -> bool:
        self.calls += 1
        return True


@contextlib.contextmanager
def host_syncs_off() -> Iterator[dict[str, int]]:
    """The shipped training step without its two per-step host syncs (this bench only):

    - models/base.py `AudioModel.optimizer_update`: `if not torch.isfinite(loss)` reads the
      loss back to the host every optimiser step; here `isfinite` answers True unread;
    - models/frame_rnn.py `AudioRNN._accumulate_train_error`: `.cpu()` (and a scalar tensor
      made from a host number) every chunk; here the same sums stay on the device.

    Everything else runs as shipped. Yields the number of calls patched (a patch that
    never ran measured nothing); fails loudly if the code it patches has moved.
    """
    from audiolstm.models import base, frame_rnn

    src = base.AudioModel.optimizer_update.__code__.co_names
    if "isfinite" not in src or "_accumulate_train_error" not in vars(frame_rnn.AudioRNN):
        raise RuntimeError("bench/gpu_steps.py host_syncs_off patches AudioModel."
                           "optimizer_update's isfinite and AudioRNN._accumulate_train_error, "
                           "and one of them moved: update host_syncs_off")
    counts = {"isfinite": 0, "train_error": 0}
    proxy = _TorchWithoutFiniteCheck()
    shipped = frame_rnn.AudioRNN._accumulate_train_error

    def on_device(self: Any, pred: torch.Tensor, y: torch.Tensor) -> None:
        counts["train_error"] += 1
        s = self.scoring("train")  # evaluation/frame_scores.py train_error, without .cpu()
        r = (s.new_samples(pred) - s.new_samples(y)).double()
        sums = torch.stack([r.square().sum() * s.scale**2, r.new_full((), float(r.numel()))])
        self._train_sse = self._train_sse.to(sums.device) + sums

    base.torch = proxy
    frame_rnn.AudioRNN._accumulate_train_error = on_device
    try:
        yield counts
    finally:
        base.torch = torch
        frame_rnn.AudioRNN._accumulate_train_error = shipped
        counts["isfinite"] = proxy.calls


class SyncCounter(pl.Callback):
    """Synchronising CUDA calls during training, by Python source line (torch's sync
    debug mode, from the first training batch to the end of training). On CPU nothing
    synchronises and the counter stays empty."""

    last: SyncCounter | None = None

    def __init__(self) -> None:
        self.where: Counter = Counter()
        self.batches = 0
        self._ctx: Any = None
        self._caught: list[warnings.WarningMessage] = []
        SyncCounter.last = self

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._ctx is None and torch.cuda.is_available():
            self._ctx = warnings.catch_warnings(record=True)
            self._caught = self._ctx.__enter__()
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.batches += 1

    def on_train_end(self, trainer, pl_module) -> None:
        if self._ctx is None:
            return
        torch.cuda.set_sync_debug_mode("default")
        self._ctx.__exit__(None, None, None)
        for w in self._caught:
            if "synchroniz" in str(w.message):
                self.where[f"{Path(w.filename).name}:{w.lineno}"] += 1


def step_host_syncs(s: Sizes, work: Path, frag: Fragment, args: argparse.Namespace) -> None:
    mode = MODES["tf32"]  # trainer=gpu's default numerics
    n = s.warmup + s.steps
    runs: dict[str, list[float]] = {"on": [], "off": []}
    patched: dict[str, int] = {}
    base_overrides = [*lstm_overrides(s), *trainer_overrides(s), *mode_overrides(mode, s)]
    for r, setting in enumerate(("on", "off", "off", "on")):  # ABBA: drift falls on both
        ctx = host_syncs_off() if setting == "off" else contextlib.nullcontext({})
        with ctx as counts:
            res, _ = train([*base_overrides, *quick_overrides(n)],
                           work / "runs" / f"syncs_{setting}_{r}", s.warmup)
        runs[setting].append(res["batches_per_s"])
        patched |= counts or {}
    per_sync: dict[str, Any] = {}
    m = 2 + min(s.steps, 8)
    for setting in ("on", "off"):
        ctx = host_syncs_off() if setting == "off" else contextlib.nullcontext({})
        with ctx:
            train([*base_overrides, *quick_overrides(m)], work / "runs" / f"syncs_count_{setting}",
                  2, {"sync_counter": {"_target_": f"{__name__}.SyncCounter"}})
        counter = SyncCounter.last
        assert counter is not None and counter.batches == m
        per_sync[setting] = {"per_batch": sum(counter.where.values()) / m,
                             "top": counter.where.most_common(6)}
    bare = {"on": [], "off": []}
    for setting in ("on", "off", "off", "on"):
        bare[setting].append(bare_loop(s, mode, s.steps, check_finite=setting == "on"))
    med = {k: statistics.median(v) for k, v in runs.items()}
    bmed = {k: statistics.median(v) for k, v in bare.items()}
    frag.data = {"run_batches_per_s": runs, "bare_batches_per_s": bare,
                 "speedup_run": med["off"] / med["on"], "speedup_bare": bmed["off"] / bmed["on"],
                 "syncs": per_sync, "patched_calls": patched, "mode": mode.name}
    if patched.get("isfinite", 0) < 1 or patched.get("train_error", 0) < 1:
        raise RuntimeError(f"host_syncs_off patched nothing that ran ({patched})")
    frag.headline = (f"syncs off: run() {med['off'] / med['on']:.3f}x the steps/s of syncs "
                     f"on, bare loop {bmed['off'] / bmed['on']:.3f}x"
                     + (f"; syncs per batch {per_sync['on']['per_batch']:.1f} -> "
                        f"{per_sync['off']['per_batch']:.1f}" if s.cuda else ""))
    sync_lines = "\n".join(
        f"- syncs {k}: {v['per_batch']:.1f} per batch; where: "
        + (", ".join(f"`{loc}` x{c}" for loc, c in v["top"]) or "none") for k, v in per_sync.items())
    frag.markdown = (
        f"lstm_300x3 sizes as above, `{mode.precision}` with TF32 (trainer=gpu's default). "
        "Off = `gpu_steps.host_syncs_off`, a patch of this bench (no library switch): the "
        "`isfinite` check of `AudioModel.optimizer_update` answers True unread, and "
        "`AudioRNN._accumulate_train_error` keeps its sums on the device instead of `.cpu()` "
        f"(patched calls: {patched}). Runs alternate on, off, off, on.\n\n"
        + table(["path", "syncs on: steps/s", "syncs off: steps/s", "off / on"], [
            ["run()", " / ".join(fmt(v) for v in runs["on"]), " / ".join(fmt(v) for v in runs["off"]),
             f"**{med['off'] / med['on']:.3f}x**"],
            ["bare loop (± `isfinite` read each step)", " / ".join(fmt(v) for v in bare["on"]),
             " / ".join(fmt(v) for v in bare["off"]), f"**{bmed['off'] / bmed['on']:.3f}x**"]])
        + "\n\nSynchronising CUDA calls per training batch (torch.cuda.set_sync_debug_mode, "
        f"{m} batches, by source line):\n\n"
        + (sync_lines if s.cuda else "- not counted on CPU (nothing synchronises)")
        + "\n\nSampleRNN's step reads `isfinite` once per truncated-BPTT chunk (8 per batch "
        "at the samplernn step's sizes) and has no `.cpu()`; not measured separately.")


# ----------------------------------------------------------------------------- SampleRNN


def step_samplernn(s: Sizes, work: Path, frag: Fragment, args: argparse.Namespace) -> None:
    from bench_precision import samplernn_flops_per_target

    rows, data = [], {}
    found = peaks(work)
    for tiers, model, tbptt in ((2, "samplernn_2tier", s.srnn_tbptt[0]),
                                (3, "samplernn_3tier", s.srnn_tbptt[1])):
        for mode in MODES.values():
            n = s.srnn_warmup + s.srnn_steps
            res, cfg = train([
                *data_overrides(s), "experiment=samplernn", f"model={model}",
                f"model.hidden_sizes=[{s.srnn_hidden}]", f"model.mlp_hidden={s.srnn_hidden}",
                f"model.embed_dim={s.srnn_embed}", f"model.tbptt_steps={tbptt}",
                f"data.x_len={s.srnn_x_len}", f"data.seq_len={s.srnn_seq_len}",
                f"data.batch_size={s.srnn_batch}", *trainer_overrides(s),
                *mode_overrides(mode, s), *quick_overrides(n)],
                work / "runs" / f"srnn{tiers}_{mode.name}", s.srnn_warmup)
            top = cfg.model.frame_sizes[0]
            targets = s.srnn_batch * (((s.srnn_seq_len + 1) * s.srnn_x_len - top) // top * top)
            flops = targets * samplernn_flops_per_target(dict(cfg.model))
            samples_s = targets * res["batches_per_s"]
            tflops = flops * res["batches_per_s"] / 1e12
            key = f"{tiers}tier_{mode.name}"
            data[key] = res | {"samples_per_s": samples_s, "tflops": tflops,
                               "pct_peak": pct(tflops, found.get(mode.peak)),
                               "targets_per_batch": targets}
            rows.append([f"{tiers}-tier", f"{mode.name}{cpu_note(mode, s)}",
                         fmt(res["batches_per_s"]), fmt(res["opt_steps_per_s"]),
                         f"{samples_s:,.0f}", fmt(samples_s / SR), fmt(tflops),
                         fmt(data[key]["pct_peak"], 2)])
    for tiers in (2, 3):
        data[f"{tiers}tier_bf16_speedup"] = (data[f"{tiers}tier_bf16"]["samples_per_s"]
                                             / data[f"{tiers}tier_fp32"]["samples_per_s"])
    frag.data = data
    frag.headline = (f"2-tier {data['2tier_fp32']['samples_per_s']:,.0f} -> "
                     f"{data['2tier_bf16']['samples_per_s']:,.0f} samples/s fp32 -> bf16 "
                     f"({data['2tier_bf16_speedup']:.2f}x), 3-tier "
                     f"{data['3tier_fp32']['samples_per_s']:,.0f} -> "
                     f"{data['3tier_bf16']['samples_per_s']:,.0f} ({data['3tier_bf16_speedup']:.2f}x)")
    frag.markdown = (
        f"experiment=samplernn with H = mlp_hidden = {s.srnn_hidden}, embed {s.srnn_embed}, "
        f"x_len {s.srnn_x_len} x seq {s.srnn_seq_len} per example, batch {s.srnn_batch}, "
        f"truncated BPTT over {s.srnn_tbptt[0]} (2-tier) / {s.srnn_tbptt[1]} (3-tier) top "
        f"frames; {s.srnn_steps} timed batches after {s.srnn_warmup}. fp32 = TF32 off.\n\n"
        + table(["tiers", "mode", "batches/s", "optimiser steps/s", "samples/s",
                 "x real time", "TFLOP/s", "% of peak"], rows)
        + "\n\nFLOPs per sample: bench/bench_precision.py `samplernn_flops_per_target`.")


# ----------------------------------------------------------------------------- generation


def step_generation(s: Sizes, work: Path, frag: Fragment, args: argparse.Namespace) -> None:
    """Real-time factor = seconds of audio made (all streams) per wall second."""
    from audiolstm.generation.strategies import generate_refeed, generate_stateful
    from audiolstm.models.frame_rnn import AudioRNN
    from audiolstm.models.samplernn import SampleRNN
    from audiolstm.training.device import configure_cuda

    configure_cuda("highest", s.cuda)  # the equality checks want float32 products
    rows, data, checks = [], {}, {}
    for hidden in s.gen_hidden:
        torch.manual_seed(0)
        model = SampleRNN(frame_sizes=[16], hidden=hidden, mlp_hidden=hidden).to(s.device).eval()
        for streams in s.gen_streams:
            seed = torch.rand(streams, 1600, device=s.device) * 2 - 1
            g = torch.Generator(device=s.device).manual_seed(0)
            model.generate(seed, 64, generator=g)  # warm-up: TorchScript, tables, kernels
            sync(s)
            t0 = time.perf_counter()
            model.generate(seed, s.gen_samples, generator=g)
            sync(s)
            wall = time.perf_counter() - t0
            rtf = streams * s.gen_samples / SR / wall
            data[f"samplernn_h{hidden}_x{streams}"] = {"seconds": wall, "rtf": rtf,
                                                       "us_per_sample_step": 1e6 * wall / s.gen_samples}
            rows.append([f"SampleRNN 2-tier H = {hidden}", streams, s.gen_samples,
                         f"{wall:.2f}", fmt(1e6 * wall / s.gen_samples), f"**{rtf:.3g}**",
                         fmt(rtf / streams)])
        seed = torch.rand(2, 160, device=s.device) * 2 - 1
        out, logits = model.generate(seed, 48, generator=torch.Generator(device=s.device)
                                     .manual_seed(1), return_logits=True)
        with torch.no_grad():
            tf = model.teacher_forced_logits(torch.cat([seed, out], dim=1))
        checks[f"samplernn_h{hidden}_max_abs_logit_diff"] = float((tf[:, -48:] - logits)
                                                                  .abs().max())
    torch.manual_seed(0)
    frames = AudioRNN(s.x_len, hidden_sizes=list(s.lstm_hidden)).to(s.device).eval()
    fseed = torch.randn(8, s.x_len, device=s.device)
    generate_stateful(frames, fseed, 2)
    sync(s)
    t0 = time.perf_counter()
    generate_stateful(frames, fseed, s.gen_frames)
    sync(s)
    wall = time.perf_counter() - t0
    rtf = s.gen_frames * s.x_len / SR / wall
    data["frame_stateful_x1"] = {"seconds": wall, "rtf": rtf}
    rows.append([f"lstm_{'x'.join(map(str, s.lstm_hidden))} @ {s.x_len}, stateful", 1,
                 s.gen_frames * s.x_len, f"{wall:.2f}",
                 fmt(1e6 * wall / (s.gen_frames * s.x_len)), f"**{rtf:.3g}**", fmt(rtf)])
    a = generate_stateful(frames, fseed, 5)
    b = generate_refeed(frames, fseed, 5)
    checks["frame_stateful_vs_refeed_max_abs_diff"] = float((a - b).abs().max())
    tol = 1e-3
    data["checks"] = checks
    data["check_tolerance"] = tol
    bad = {k: v for k, v in checks.items() if not v <= tol}
    frag.data = data
    key = f"samplernn_h{s.gen_hidden[0]}_x"
    frag.headline = (f"SampleRNN H = {s.gen_hidden[0]}: {data[key + str(s.gen_streams[0])]['rtf']:.3g}x "
                     f"real time ({s.gen_streams[0]} stream), "
                     f"{data[key + str(s.gen_streams[-1])]['rtf']:.3g}x ({s.gen_streams[-1]} streams); "
                     f"frame model {rtf:.3g}x; "
                     + ("checks ok" if not bad else f"CHECKS FAILED {bad}"))
    frag.markdown = (
        "Random weights (speed does not depend on training); temperature 1, seed 1600 "
        "samples; one warm-up call first. Real-time factor = seconds of audio made, all "
        "streams together, per wall second (per stream: divide by the streams).\n\n"
        + table(["model", "streams", "samples per stream", "wall s", "µs per sample step",
                 "x real time", "x real time per stream"], rows)
        + "\n\nOn the device, TF32 off: generated logits vs teacher forcing (SampleRNN) and "
        f"stateful vs refeed frames (frame model), max |Δ| (tolerance {tol:g}): "
        + ", ".join(f"{k} = {v:.2e}" for k, v in checks.items()))
    if bad:
        raise RuntimeError(f"generation on {s.device} differs from its reference: {bad}")


# ----------------------------------------------------------------------------- train.py runs


def train_py(args: list[str], log: Path, timeout: float) -> tuple[int, float]:
    """`python train.py ARGS` as a user runs it; (exit code, wall seconds)."""
    t0 = time.perf_counter()
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as fh:
        code = subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT,
                              stdout=fh, stderr=subprocess.STDOUT, timeout=timeout).returncode
    return code, time.perf_counter() - t0


def step_ddp(s: Sizes, work: Path, frag: Fragment, args: argparse.Namespace) -> None:
    devices = torch.cuda.device_count() if s.cuda else 0
    if s.cuda and devices < 2:
        frag.status = "skipped"
        frag.headline = f"{devices} CUDA device visible: trainer=ddp needs 2 or more"
        frag.markdown = f"Skipped: {frag.headline}."
        return
    trainer = ["trainer=ddp", f"trainer.devices={devices}"] if s.cuda else ["trainer=ddp_cpu"]
    out = work / "runs" / "ddp"
    clock = work / "ddp_clock.json"
    n = s.warmup + s.ddp_batches
    code, wall = train_py([*lstm_overrides(s), *trainer, *quick_overrides(n),
                           f"hydra.run.dir={out}", "+callbacks.step_clock._target_=gpu_steps.StepClock", f"+callbacks.step_clock.warmup={s.warmup}",
                           f"+callbacks.step_clock.out={clock}"], work / "logs" / "ddp_train.log",
                          300)
    if code != 0 or not clock.is_file():
        tail = (work / "logs" / "ddp_train.log").read_text(errors="replace").splitlines()[-15:]
        raise RuntimeError(f"train.py {' '.join(trainer)} exited {code}:\n" + "\n".join(tail))
    res = json.loads(clock.read_text())
    world = res["world_size"]
    samples = res["batches_per_s"] * s.batch * world
    frag.data = res | {"wall_s": wall, "devices": world, "examples_per_s": samples,
                       "trainer": trainer}
    single = _single_gpu_rate(work)
    frag.headline = (f"{' '.join(trainer)}: {world} ranks, {res['batches_per_s']:.3g} steps/s "
                     f"per rank = {samples:.3g} examples/s"
                     + (f" ({samples / single:.2f}x one GPU's)" if single and s.cuda else ""))
    frag.markdown = (
        f"`python train.py {' '.join(trainer)}` with the lstm_300x3 sizes above (per-rank "
        f"batch {s.batch}; each rank its own shard), {s.ddp_batches} timed batches per rank "
        f"after {s.warmup}; {wall:.1f} s wall for the whole train.py run.\n\n"
        + table(["ranks", "steps/s per rank", "examples/s, all ranks",
                 "vs one process (the lstm_tf32 step)"],
                [[world, fmt(res["batches_per_s"]), fmt(samples),
                  f"{samples / single:.2f}x" if single else "n/a"]]))


def _single_gpu_rate(work: Path) -> float | None:
    """Examples/s of one GPU through run() (the lstm_tf32 step: trainer=gpu's numerics)."""
    path = work / "fragments" / "lstm_tf32.json"
    frag = json.loads(path.read_text()) if path.is_file() else {}
    if frag.get("status") != "ok":
        return None
    return frag["data"]["train_py"]["batches_per_s"] * frag["data"]["batch"]


def step_launcher(s: Sizes, work: Path, frag: Fragment, args: argparse.Namespace) -> None:
    """The same sweep with jobs_per_device = len(models) and = 1: wall ratio."""
    k = len(s.sweep_models)
    where = ["trainer=gpu"] if s.cuda else ["trainer=cpu", "hydra.launcher.devices=[0]"]
    common = [*data_overrides(s), "sweep=depth", f"model={','.join(s.sweep_models)}",
              f"data.x_len={s.x_len}", f"data.seq_len={s.seq_len}", f"data.batch_size={s.batch}",
              f"data.window_shift={s.window_shift}", "hydra/launcher=gpus", *where,
              f"trainer.max_epochs={s.sweep_epochs}",
              f"++trainer.limit_train_batches={s.sweep_batches}", "++trainer.limit_val_batches=2",
              "trainer.num_sanity_val_steps=0", "test=false", "ridge_baseline=false",
              "logger=none", "~callbacks.sample_generation", "~callbacks.model_checkpoint",
              # run dirs by job number: the overrides would make a name over 255 bytes
              "hydra.sweep.subdir=${hydra.job.num}"]
    results = {}
    for per_device in (k, 1):
        sweep_dir = work / "runs" / f"sweep_{per_device}"
        code, wall = train_py([*common, f"hydra.launcher.jobs_per_device={per_device}",
                               f"hydra.sweep.dir={sweep_dir}"],
                              work / "logs" / f"launcher_sweep_{per_device}.log", 600)
        summaries = [json.loads(p.read_text()) for p in sorted(sweep_dir.glob("*/summary.json"))]
        done = [x for x in summaries if x.get("status") == "completed"]
        if code != 0 or len(done) != k:
            tail = (work / "logs" / f"launcher_sweep_{per_device}.log").read_text(
                errors="replace")
            raise RuntimeError(f"sweep with jobs_per_device={per_device}: exit {code}, "
                               f"{len(done)} of {k} jobs completed:\n"
                               + "\n".join(tail.splitlines()[-15:]))
        train_s = [x["train_seconds"] for x in done]
        results[per_device] = {"wall_s": wall, "train_seconds": train_s,
                               "models": [x["overrides"] for x in done]}
    packed, alone = results[k], results[1]
    ratio = alone["wall_s"] / packed["wall_s"]
    slow = statistics.mean(packed["train_seconds"]) / statistics.mean(alone["train_seconds"])
    frag.data = {"jobs": k, "results": {str(p): r for p, r in results.items()},
                 "wall_ratio": ratio, "train_slowdown_packed": slow,
                 "train_phase_gain": k / slow}
    frag.headline = (f"{k} jobs: one at a time {alone['wall_s']:.1f} s, {k} per device "
                     f"{packed['wall_s']:.1f} s wall: {ratio:.2f}x; each job trains "
                     f"{slow:.2f}x slower when packed")
    frag.markdown = (
        f"`python train.py -m sweep=depth model={','.join(s.sweep_models)} "
        f"hydra/launcher=gpus hydra.launcher.jobs_per_device=N {' '.join(where)}` "
        f"({k} models, so that {k} jobs fill one device's slots"
        + ("; sweep=depth has three, gru_300x3 is the fourth" if k == 4 else "")
        + f"), {s.sweep_epochs} epoch(s) of {s.sweep_batches} batches per job, "
        f"lstm sizes as above. Wall = the whole multirun, process starts included.\n\n"
        + table(["jobs_per_device", "wall s", "mean training s per job", "per-job train s"], [
            [p, f"{r['wall_s']:.1f}", f"{statistics.mean(r['train_seconds']):.2f}",
             ", ".join(f"{t:.1f}" for t in r["train_seconds"])] for p, r in results.items()])
        + f"\n\n- wall ratio (one at a time / {k} per device): **{ratio:.2f}x**;\n"
        f"- training phase: each packed job trains {slow:.2f}x slower, so packing gives "
        f"about {k / slow:.2f}x the training throughput of one job at a time.")


# ----------------------------------------------------------------------------- curves


def step_curves(mode: Mode) -> Callable[[Sizes, Path, Fragment, argparse.Namespace], None]:
    def step(s: Sizes, work: Path, frag: Fragment, args: argparse.Namespace) -> None:
        from audiolstm.training.run import run

        seconds = max(round(args.seconds), 1)
        mm, ss = divmod(seconds, 60)
        hh, mm = divmod(mm, 60)
        if s.curve_batches is None:  # the default job (make train's), on the GPU
            sizes = [*data_overrides(s), "model=lstm_300x3"]
        else:
            sizes = [*lstm_overrides(s), f"++trainer.limit_train_batches={s.curve_batches[0]}",
                     f"++trainer.limit_val_batches={s.curve_batches[1]}"]
        cfg = compose_cfg([*sizes, *trainer_overrides(s), *mode_overrides(mode, s),
                           "trainer.max_epochs=100000",
                           f"++trainer.max_time=00:{hh:02d}:{mm:02d}:{ss:02d}",
                           "test=false", "ridge_baseline=false", "logger=none",
                           "~callbacks.sample_generation", "~callbacks.early_stopping",
                           "~callbacks.model_checkpoint", "trainer.num_sanity_val_steps=0"],
                          work / "runs" / f"curves_{mode.name}",
                          {"epoch_clock": {"_target_": f"{__name__}.EpochClock"}})
        run(cfg)
        clock = EpochClock.last
        assert clock is not None
        if not clock.points:
            raise RuntimeError(f"no validation epoch finished in {seconds:.0f} s")
        last = clock.points[-1]
        frag.data = {"precision": mode.precision + (" (TF32 off)" if mode.matmul == "highest"
                                                    and s.cuda else ""),
                     "seconds_budget": seconds, "points": clock.points}
        frag.headline = (f"{len(clock.points)} epochs ({last['steps']} steps) in "
                         f"{last['seconds']:.0f} s of training: val loss {last['val_loss']:.4f}")
        frag.markdown = (
            ("The default job (lstm_300x3 @ x_len 2000, seq 40, batch 100, the built-in "
               "data)" if s.curve_batches is None else "Toy sizes")
            + f", `trainer.precision={mode.precision}`{cpu_note(mode, s)}, {seconds:.0f} s of "
            "training (`trainer.max_time`), validated (in float32) after every epoch.\n\n"
            + table(["epoch", "steps", "training s", "val loss"],
                    [[p["epoch"], p["steps"], f"{p['seconds']:.1f}", f"{p['val_loss']:.4f}"]
                     for p in _thin(clock.points, 12)]))
    return step


def _thin(points: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    if len(points) <= n:
        return points
    idx = sorted({round(i * (len(points) - 1) / (n - 1)) for i in range(n)})
    return [points[i] for i in idx]


# ----------------------------------------------------------------------------- cuDNN


def step_cudnn(s: Sizes, work: Path, frag: Fragment, args: argparse.Namespace) -> None:
    """Which kernels a training step of the project's AudioRNN runs, TF32 off and on."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    from audiolstm.models.base import at_least_float32
    from audiolstm.training.device import configure_cuda

    torch.backends.cudnn.benchmark = s.cuda
    model, batches = _model_and_batch(s)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def one(batch: torch.Tensor) -> None:
        pred, _ = model(batch[:, :-1])
        loss = F.mse_loss(at_least_float32(pred), batch[:, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if s.cuda else [])
    data: dict[str, Any] = {"cudnn_enabled": torch.backends.cudnn.enabled,
                            "cudnn_version": torch.backends.cudnn.version()}
    rows = []
    for label, prec in (("TF32 off (highest)", "highest"), ("TF32 on (high)", "high")):
        configure_cuda(prec, s.cuda)
        for i in range(3):
            one(batches[i % 3])
        sync(s)
        t0 = time.perf_counter()
        for i in range(5):
            one(batches[i % 3])
        sync(s)
        step_ms = (time.perf_counter() - t0) / 5 * 1e3
        with profile(activities=activities) as prof:
            for i in range(2):
                one(batches[i % 3])
            sync(s)
        kernels: Counter = Counter()  # name -> µs; on CPU the RNN ops stand in
        for e in prof.key_averages():
            if s.cuda and e.device_type == DeviceType.CUDA:
                kernels[e.key] += e.self_device_time_total
            elif not s.cuda and re.search(r"lstm|rnn", e.key, re.I):
                kernels[e.key] += e.self_cpu_time_total
        names = [k for k, _ in kernels.most_common()]
        rnn = [k for k in names if re.search(r"cudnn|rnn|lstm", k, re.I)]
        tf32 = [k for k in names if re.search(r"tf32|s1688|s16816|tensorop_s", k, re.I)]
        data[prec] = {"step_ms": step_ms, "allow_tf32_cudnn": torch.backends.cudnn.allow_tf32,
                      "matmul_precision": torch.get_float32_matmul_precision(),
                      "top": kernels.most_common(12), "rnn_kernels": rnn, "tf32_kernels": tf32}
        rows.append([label, f"{step_ms:.2f}", len(rnn), len(tf32),
                     "<br>".join(f"`{k[:90]}`" for k in rnn[:3]) or "none"])
    used = bool(data["highest"]["rnn_kernels"]) if s.cuda else False
    tf32_on = bool(data["high"]["tf32_kernels"]) and not data["highest"]["tf32_kernels"]
    data |= {"cudnn_rnn_used": used, "tf32_switches": tf32_on}
    frag.data = data
    if s.cuda:
        frag.headline = (f"cuDNN {data['cudnn_version']} RNN kernels "
                         + ("used" if used else "NOT seen") + "; TF32 kernels "
                         + ("only with TF32 on" if tf32_on else "not told apart by name")
                         + f"; step {data['highest']['step_ms']:.1f} -> "
                         f"{data['high']['step_ms']:.1f} ms TF32 off -> on")
    else:
        frag.headline = "CPU: no cuDNN (profiled CPU ops: " + (
            ", ".join(data["highest"]["top"][i][0] for i in range(min(2, len(
                data["highest"]["top"]))))) + ")"
    frag.markdown = (
        f"AudioRNN {'x'.join(map(str, s.lstm_hidden))} @ x_len {s.x_len}, batch {s.batch} x "
        f"seq {s.seq_len}, float32; torch.profiler over two training steps; "
        "`audiolstm.training.device.configure_cuda` sets TF32 as `float32_matmul_precision` "
        "does.\n\n"
        + table(["setting", "ms per step", "RNN kernels", "TF32-named kernels",
                 "RNN kernels (first 3)"], rows)
        + "\n\nTop kernels by device time, TF32 on:\n\n"
        + "\n".join(f"- `{k[:120]}`: {t / 1e3:.2f} ms" for k, t in data["high"]["top"][:8]))


# ----------------------------------------------------------------------------- main


RUNNERS: dict[str, Callable[[Sizes, Path, Fragment, argparse.Namespace], None]] = {
    "prepare": step_prepare,
    "env": step_env,
    "cudnn": step_cudnn,
    "lstm_fp32": step_lstm(MODES["fp32"]),
    "lstm_tf32": step_lstm(MODES["tf32"]),
    "lstm_bf16": step_lstm(MODES["bf16"]),
    "host_syncs": step_host_syncs,
    "samplernn": step_samplernn,
    "generation": step_generation,
    "ddp": step_ddp,
    "launcher": step_launcher,
    "curves_fp32": step_curves(MODES["fp32"]),
    "curves_bf16": step_curves(MODES["bf16"]),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("step", choices=sorted(RUNNERS))
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--fragment", type=Path, required=True)
    ap.add_argument("--seconds", type=float, default=0.0, help="curves: training seconds")
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args(argv)
    s = DRY if args.dry_run else GPU
    if s.cuda and not torch.cuda.is_available():
        print("error: no CUDA device (use --dry-run)", file=sys.stderr)
        return 2
    frag = Fragment(args.step, TITLES[args.step])
    t0 = time.perf_counter()
    code = 0
    try:
        RUNNERS[args.step](s, args.work, frag, args)
    except Exception as e:  # noqa: BLE001 - the fragment says what failed, the log the rest
        traceback.print_exc()
        frag.status = "failed"
        frag.headline = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        frag.markdown = f"Failed: `{type(e).__name__}: {e}`"
        code = 1
    frag.seconds = time.perf_counter() - t0
    from dataclasses import asdict

    from audiolstm.atomic import write_json

    args.fragment.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.fragment, asdict(frag))
    return code


if __name__ == "__main__":
    sys.exit(main())
