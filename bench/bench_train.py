"""Training throughput: Lightning Trainer vs a bare PyTorch loop on the same batches.

Reports seconds per optimiser step, audio-seconds per second, achieved GFLOP/s
against the measured float32 matmul peak, and the framework overhead.
FLOPs = 3 (forward + 2x backward) x 2 x B*T x (sum over layers 4H(I+H) + H*D).

    python bench/bench_train.py [--steps 5] [--write]
"""

from __future__ import annotations

import argparse
import time

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from _common import machine, matmul_peak_gflops, write_section
from torch.utils.data import DataLoader, Dataset

from audiolstm.data.windows import identity_collate
from audiolstm.models.frame_rnn import AudioRNN

CASES = [  # name, hidden sizes, x_len, seq_len, batch
    ("lstm_300x3 @ x_len 2000", [300, 300, 300], 2000, 40, 100),
    ("lstm_600 @ x_len 8000", [600], 8000, 25, 100),
    ("lstm_1000 @ x_len 8000", [1000], 8000, 25, 100),
]


def flops_per_step(sizes: list[int], d: int, b: int, t: int) -> float:
    dims = [d, *sizes]
    rnn = sum(4 * h * (i + h) for i, h in zip(dims[:-1], dims[1:], strict=True))
    return 3 * 2 * b * t * (rnn + sizes[-1] * d)


class Batches(Dataset):
    def __init__(self, n: int, b: int, t: int, d: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.data = [torch.randn(b, t + 1, d, generator=g) for _ in range(n)]

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.data[i]


def bare_loop(model: AudioRNN, batches: Batches, warmup: int) -> list[float]:
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    times = []
    for i, batch in enumerate(batches.data):
        t0 = time.perf_counter()
        pred, _ = model(batch[:, :-1])
        loss = F.mse_loss(pred, batch[:, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


class StepTimer(pl.Callback):
    def __init__(self, warmup: int) -> None:
        self.warmup, self.times, self._t0 = warmup, [], 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx >= self.warmup:
            self.times.append(time.perf_counter() - self._t0)


def lightning_loop(model: AudioRNN, batches: Batches, warmup: int) -> tuple[list[float], float]:
    timer = StepTimer(warmup)
    loader = DataLoader(batches, batch_size=None, collate_fn=identity_collate)
    trainer = pl.Trainer(accelerator="cpu", max_epochs=1, logger=False, callbacks=[timer],
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0)
    t0 = time.perf_counter()
    trainer.fit(model, loader)
    wall = time.perf_counter() - t0
    return timer.times, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=5, help="measured steps per case")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--write", action="store_true", help="record in bench/RESULTS.md")
    args = ap.parse_args()
    peak = matmul_peak_gflops()
    rows = []
    for name, sizes, d, t, b in CASES:
        batches = Batches(args.warmup + args.steps, b, t, d)
        torch.manual_seed(0)
        bare = bare_loop(AudioRNN(d, hidden_sizes=sizes), batches, args.warmup)
        torch.manual_seed(0)
        light, wall = lightning_loop(AudioRNN(d, hidden_sizes=sizes), batches, args.warmup)
        tb, tl = min(bare), min(light)
        mb, ml = sum(bare) / len(bare), sum(light) / len(light)
        flops = flops_per_step(sizes, d, b, t)
        audio_s = b * t * d / 16000
        rows.append(f"| {name} | {b}x{t} | {mb:.3f} | {ml:.3f} | {100 * (ml - mb) / mb:+.1f} % "
                    f"| {audio_s / ml:.0f} | {flops / ml / 1e9:.0f} | {100 * flops / ml / 1e9 / peak:.0f} % "
                    f"| {100 * flops / mb / 1e9 / peak:.0f} % |")
        print(rows[-1], f"(best {tb:.3f}/{tl:.3f} s)", flush=True)
    table = (
        "| case | batch x seq | bare s/step | Lightning s/step | overhead | audio-s/s "
        "| GFLOP/s | % of matmul peak | bare % of peak |\n|---|---|---|---|---|---|---|---|---|\n"
        + "\n".join(rows)
    )
    body = (f"Machine: {machine()}. Float32 `torch.mm` peak (2048^2): {peak:.0f} GFLOP/s.\n"
            f"Mean of {args.steps} steps after {args.warmup} warm-up steps; the Lightning "
            "column times `training_step` (manual optimisation, grad clipping) from batch start "
            "to batch end inside `Trainer.fit`.\n\n" + table)
    print(body)
    if args.write:
        write_section("Training throughput (CPU)", body)


if __name__ == "__main__":
    main()
