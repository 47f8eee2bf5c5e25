"""Helpers shared by the benchmarks: machine description, results file, matmul peak."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def machine() -> str:
    """CPU model, cores, RAM and library versions: benchmark numbers mean nothing without."""
    import numpy as np

    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        lscpu = ""
    info = dict(re.findall(r"^([^:\n]+):\s*(.*)$", lscpu, re.M))
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{info.get('Model name', platform.processor() or 'unknown CPU')}, "
            f"{info.get('CPU(s)', os.cpu_count())} CPU(s), {mem:.0f} GiB RAM, "
            f"{torch.get_num_threads()} torch threads; Python {platform.python_version()}, "
            f"torch {torch.__version__}, numpy {np.__version__}")


def load() -> str:
    """The load average: on a shared machine, what every timing was measured against."""
    return "load average " + " / ".join(f"{v:.2f}" for v in os.getloadavg())


def checkout_label(root: Path) -> str:
    """A checkout's commit (`abc1234`, `+dirty` with uncommitted changes), else its path."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True,
                              text=True).stdout.strip()
    try:
        sha = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except OSError:
        sha = dirty = ""
    if not sha or Path(git("rev-parse", "--show-toplevel") or "/").resolve() != root.resolve():
        return str(root)
    return sha + ("+dirty" if dirty else "")


def matmul_peak_gflops(n: int = 2048, repeats: int = 10) -> float:
    """Best sustained float32 `torch.mm` rate: the ceiling a CPU LSTM can approach."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(2):
        torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def write_section(title: str, body: str) -> None:
    """Replace (or append) the `## title` section of bench/RESULTS.md."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    block = f"## {title}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(block + "\n", text) if pattern.search(text) else \
        text.rstrip() + "\n\n" + block
    RESULTS.write_text(text)


def bare_update(opt: torch.optim.Optimizer, params: list[torch.Tensor],
                clip: float | None) -> Callable[[torch.Tensor], None]:
    """A plain PyTorch optimiser update for `SampleRNN.train_batch` (no Lightning): what
    the benchmarks compare the framework's manual optimisation with."""
    def update(loss: torch.Tensor) -> None:
        if not torch.isfinite(loss):
            raise RuntimeError("non-finite loss")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()

    return update
