"""Where a SampleRNN training step's time goes: the per-op budget behind bench/RESULTS.md.

Runs the bare training step (`SampleRNN.train_batch`, the chunk loop `training_step`
runs, with a plain PyTorch update: finite check, zero_grad, backward, clipping, the
optimiser's step) at one of two configurations:

- `peer`: the configuration matched with samplernn-pytorch (bench_samplernn_peer.py):
  2 tiers, frame 16, GRU 256, MLP 256, 256 levels, embeddings 256, chunks of 1024;
- `experiment`: the project's `experiment=samplernn` (LSTM 256, embeddings 64, chunks
  of 128 samples = 8 top frames, B = 16).

`--plain` turns the folded `mlp_in` off and `--plain-adam` the fused optimiser (the code
before issue 21). Two ways to count:

- `torch.profiler` (default): self time per op, in ms per chunk. It times wall clock
  per op, so on a machine shared with other jobs a descheduled op absorbs the wait:
  trust it on a quiet machine only.
- `--perf SECONDS`: Linux `perf` samples this process's *CPU clock* (descheduled time
  is not sampled) for SECONDS of steady training after a warm-up, and the samples are
  grouped by where they land (MKL GEMM, oneDNN's JIT code, PyTorch kernels by name,
  Python, the kernel and libc). Needs `perf` and `perf_event_paranoid` <= 2.

    python bench/profile_samplernn.py [--config peer|experiment] [--batch 16] [--plain]
        [--plain-adam] [--threads N] [--perf 20]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _common import bare_update  # noqa: E402

from audiolstm.models.samplernn import SampleRNN  # noqa: E402

CONFIGS = {  # SampleRNN kwargs, chunk (samples), x_len of a batch's frames
    "peer": (dict(frame_sizes=[16], hidden=256, cell="gru", mlp_hidden=256, q_levels=256,
                  embed_dim=256, quantization="linear", tbptt_steps=64), 1024),
    "experiment": (dict(frame_sizes=[16], hidden=256, cell="lstm", mlp_hidden=256,
                        q_levels=256, embed_dim=64, tbptt_steps=8), 128),
}

#: perf symbols -> budget lines (first match wins)
GROUPS = [
    ("matmul (MKL sgemm)", r"mkl_blas|sgemm"),
    ("oneDNN JIT code (LSTM; the plain path's convolution)", r"^\[JIT\]|dnnl|jit_"),
    ("table gradient (index_add_/scatter)", r"scatter|index_add"),
    ("table gather (embedding_bag)", r"embedding_bag|EmbeddingSpMDM|fbgemm"),
    ("optimiser (Adam)", r"adam"),
    ("log_softmax / nll", r"log_softmax|nll_loss"),
    ("ReLU and its gradient", r"threshold|clamp_min"),
    ("copies and fills", r"copy|fill|memset|memmove|memcpy|cat_"),
    ("sums and norms (bias grads, clipping)", r"reduce|sum|norm"),
    ("other elementwise", r"add_kernel|mul_kernel|sigmoid|tanh|VectorizedLoop|binary|unary"),
    ("Python", r"^_?Py|python|^PyObject"),
    ("Linux kernel (page faults, scheduling)", r"^\[k\]"),
    ("malloc/free (libc)", r"malloc|free|_int_|unlink_chunk"),
]


def build(args: argparse.Namespace) -> tuple[SampleRNN, torch.Tensor, int, object]:
    kwargs, chunk = CONFIGS[args.config]
    torch.manual_seed(0)
    model = SampleRNN(**kwargs)
    model.fold_mlp_in = not args.plain
    model.train()
    node = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3}
    if args.plain_adam:
        node["fused"] = None  # the per-tensor loop, as before issue 21
    model.hparams.optimizer = node
    opt = model.configure_optimizers()
    g = torch.Generator().manual_seed(0)
    samples = torch.rand(args.batch, 1, 16 + args.chunks * chunk, generator=g) * 2 - 1
    return model, samples, chunk, opt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", choices=list(CONFIGS), default="peer")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--chunks", type=int, default=4, help="chunks (optimiser steps) a batch")
    ap.add_argument("--plain", action="store_true", help="mlp_in by the plain convolution")
    ap.add_argument("--plain-adam", action="store_true", help="Adam's per-tensor loop")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batches", type=int, default=3, help="profiled batches (torch.profiler)")
    ap.add_argument("--perf", type=float, metavar="SECONDS",
                    help="sample the CPU clock with Linux perf for SECONDS instead")
    ap.add_argument("--rows", type=int, default=25)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, samples, chunk, opt = build(args)
    update = bare_update(opt, list(model.parameters()), 1.0)

    for _ in range(2):  # warm-up: allocator, oneDNN primitives
        model.train_batch(samples, update)
    what = (f"config={args.config} B={args.batch} chunk={chunk} "
            f"mlp_in={'plain' if args.plain else 'folded'} "
            f"adam={'per-tensor' if args.plain_adam else 'fused'} threads={args.threads}")
    if args.perf:
        perf_budget(model, samples, update, args, what)
        return
    from torch.profiler import profile

    t0 = time.process_time()
    with profile() as prof:
        for _ in range(args.batches):
            model.train_batch(samples, update)
    chunks = args.batches * args.chunks
    print(f"{what}: {1e3 * (time.process_time() - t0) / chunks:.1f} CPU ms per chunk "
          "under the profiler")
    rows = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in rows)
    print(f"{'op':60s} {'ms/chunk':>9s} {'%':>6s} {'calls/chunk':>11s}")
    for e in rows[: args.rows]:
        print(f"{e.key[:60]:60s} {e.self_cpu_time_total / 1e3 / chunks:9.2f} "
              f"{100 * e.self_cpu_time_total / total:6.1f} {e.count / chunks:11.1f}")


def perf_budget(model: SampleRNN, samples: torch.Tensor, update, args: argparse.Namespace,
                what: str) -> None:
    out = Path(tempfile.mkdtemp(prefix="profile_srnn_")) / "perf.data"
    perf = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-F", "2000", "-p",
                             str(os.getpid()), "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)  # perf attaches
    t0, n = time.process_time(), 0
    while time.process_time() - t0 < args.perf:
        model.train_batch(samples, update)
        n += 1
    cpu = time.process_time() - t0
    perf.send_signal(signal.SIGINT)
    _, err = perf.communicate()
    if perf.returncode not in (0, -signal.SIGINT) or not out.exists():
        sys.exit(f"perf record failed: {err.decode()[-500:]}")
    report = subprocess.run(["perf", "report", "-i", str(out), "--no-children", "--sort",
                             "dso,symbol", "--stdio", "-g", "none"],
                            capture_output=True, text=True).stdout
    per_chunk = 1e3 * cpu / (n * args.chunks)
    groups: dict[str, float] = defaultdict(float)
    for line in report.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(\S+(?: tid \d+)?)\s+\[(.)\]\s+(.*)$", line)
        if not m:
            continue
        share, dso, kind, sym = float(m[1]), m[2], m[3], m[4].strip()
        key = ("[k] " if kind == "k" else "") + ("[JIT] " if "JIT" in dso else "") + sym
        if "libpython" in dso:
            key = "Py " + key
        name = next((g for g, pat in GROUPS if re.search(pat, key, re.I)), "other (dispatch, autograd, …)")
        groups[name] += share
    listed = sum(groups.values())  # perf leaves out symbols under 0.01 %
    print(f"{what}: {per_chunk:.1f} CPU ms per chunk ({n} batches of {args.chunks} chunks; "
          f"perf cpu-clock samples, shares of the {listed:.0f} % it lists by symbol)")
    print(f"{'where':55s} {'%':>6s} {'ms/chunk':>9s}")
    for name, share in sorted(groups.items(), key=lambda kv: -kv[1]):
        share *= 100 / listed
        print(f"{name:55s} {share:6.1f} {share / 100 * per_chunk:9.2f}")


if __name__ == "__main__":
    main()
