"""Samples per second of the music recipe's bare SampleRNN step at other batch sizes and
widths: what a 30-minute budget buys if the recipe changes them (README "A music recipe").

3 tiers (frames of 64 and 16), embeddings 64, truncated BPTT over 512 samples (8 optimiser
steps per batch of B x 4,096 samples), bf16 autocast as `experiment=music` runs on a CPU
with native bf16, random input; each row is the mean of `--batches` batches after 2 of
warm-up, all rows in one process one after the other.

    python bench/samplernn_sizes.py [--threads 2] [--batches 6]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from audiolstm.models.samplernn import SampleRNN  # noqa: E402
from bench._common import bare_update, machine  # noqa: E402

#: (batch, hidden, mlp_hidden); the first row is the recipe
SIZES = [(16, 256, 256), (32, 256, 256), (64, 256, 256), (16, 512, 256), (16, 512, 512),
         (16, 1024, 512)]


def seconds_per_batch(batch: int, hidden: int, mlp: int, batches: int) -> float:
    torch.manual_seed(0)
    model = SampleRNN(frame_sizes=[64, 16], hidden=hidden, mlp_hidden=mlp, embed_dim=64,
                      tbptt_steps=8)
    model.hparams.optimizer = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3}
    model.train()
    update = bare_update(model.configure_optimizers(), list(model.parameters()), 1.0)
    x = torch.rand(batch, 1, 64 + 4096) * 2 - 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for _ in range(2):
            model.train_batch(x, update)
        t0 = time.perf_counter()
        for _ in range(batches):
            model.train_batch(x, update)
    return (time.perf_counter() - t0) / batches


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batches", type=int, default=6)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{machine()}; {args.threads} torch threads\n")
    print("| B, hidden, mlp_hidden | s per batch | samples/s |\n|---|---|---|")
    for batch, hidden, mlp in SIZES:
        dt = seconds_per_batch(batch, hidden, mlp, args.batches)
        print(f"| {batch}, {hidden}, {mlp} | {dt:.3f} | {batch * 4096 / dt:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
