"""The cost of the frame RNN's linear AR path (`model.linear_ar`), and what a cheaper
low-rank path would keep of the ridge's gain.

1. **Parameters and memory**: exact counts for lstm_300x3 at x_len 2000 with and without
   the D x D path, and the optimiser state (Adam keeps two more copies).
2. **Training step** (bare loop: forward, backward, clipping, Adam; batch 100 x 40 frames):
   the default model without the path, with it (learnt), with it frozen (forward only:
   no weight gradient), and with a rank-r path `x A B + b` (r = 256) as the cheaper
   alternative. Interleaved rounds (one step of each case per round, after warm-up) so
   that a shared machine's load hits every case alike; best and median per case.
3. **Generation step**: the stateful stepper (batch 1) with and without the path (the
   path also turns the folded feedback step off: models/frame_step.py).
4. **Low rank, quality** (`--data`): the ridge fit on the built-in data's training split,
   truncated to rank r by SVD (the best rank-r approximation of W, not the best rank-r
   predictor), scored on the validation frames relative to the full fit.

    python bench/bench_linear_ar.py [--rounds 7] [--data] [--write]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F
from _common import machine, matmul_peak_gflops, write_section
from torch import nn

from audiolstm.models.frame_rnn import AudioRNN

D, B, T = 2000, 100, 40
RANK = 256


class LowRank(nn.Module):
    def __init__(self, dim: int, rank: int) -> None:
        super().__init__()
        self.down = nn.Linear(dim, rank, bias=False)
        self.up = nn.Linear(rank, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x))


def _cases() -> dict[str, tuple[AudioRNN, nn.Module | None]]:
    torch.manual_seed(0)
    off = AudioRNN(D)
    full = AudioRNN(D, linear_ar="zero")
    frozen = AudioRNN(D, linear_ar="zero")
    frozen.linear_ar.requires_grad_(False)
    low = AudioRNN(D)
    return {"off": (off, None), "full D x D": (full, None), "full, frozen": (frozen, None),
            f"rank {RANK}": (low, LowRank(D, RANK))}


def _step(model: AudioRNN, extra: nn.Module | None, opt: torch.optim.Optimizer,
          batch: torch.Tensor) -> float:
    t0 = time.perf_counter()
    x, y = batch[:, :-1], batch[:, 1:]
    out, _ = model(x)
    if extra is not None:
        out = out + extra(x)
    loss = F.mse_loss(out, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    params = [p for p in model.parameters() if p.requires_grad]
    if extra is not None:
        params += list(extra.parameters())
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    return time.perf_counter() - t0


def train_section(rounds: int) -> tuple[str, dict[str, float]]:
    cases = _cases()
    opts = {}
    for name, (m, extra) in cases.items():
        params = [p for p in m.parameters() if p.requires_grad]
        if extra is not None:
            params += list(extra.parameters())
        opts[name] = torch.optim.Adam(params, lr=1e-3)
    batch = torch.randn(B, T + 1, D, generator=torch.Generator().manual_seed(1))
    times: dict[str, list[float]] = {k: [] for k in cases}
    for r in range(rounds + 1):  # round 0: warm-up
        for name, (m, extra) in cases.items():
            t = _step(m, extra, opts[name], batch)
            if r > 0:
                times[name].append(t)
    best = {k: min(v) for k, v in times.items()}
    rows = []
    for name, (m, extra) in cases.items():
        n = sum(p.numel() for p in m.parameters()) + (
            sum(p.numel() for p in extra.parameters()) if extra is not None else 0)
        trainable = sum(p.numel() for p in m.parameters() if p.requires_grad) + (
            sum(p.numel() for p in extra.parameters()) if extra is not None else 0)
        adam_mb = 2 * trainable * 4 / 1e6
        rows.append(f"| {name} | {n:,} | {n * 4 / 1e6:.0f} MB | {adam_mb:.0f} MB | "
                    f"{best[name]:.3f} | {statistics.median(times[name]):.3f} | "
                    f"{best[name] / best['off']:.2f}x |")
    head = ("| case | parameters | weights | Adam state | best s/step | median s/step | "
            "best / off |\n|---|---:|---:|---:|---:|---:|---:|")
    return head + "\n" + "\n".join(rows), best


@torch.inference_mode()
def generation_section(steps: int = 200, rounds: int = 5) -> str:
    torch.manual_seed(0)
    models = {"off": AudioRNN(D).eval(), "full D x D": AudioRNN(D, linear_ar="zero").eval()}
    seed = torch.randn(1, 8, D)
    times: dict[str, list[float]] = {k: [] for k in models}
    for r in range(rounds + 1):
        for name, m in models.items():
            out, state = m(seed)
            step = m.stepper(state)
            frame = out[:, -1:]
            fold = step.can_fold()
            t0 = time.perf_counter()
            for _ in range(steps):
                frame = step.feedback_step() if fold else step.step(frame)
            if r > 0:
                times[name].append((time.perf_counter() - t0) / steps * 1e3)
    rows = [f"| {k} | {'folded feedback' if k == 'off' else 'step(frame)'} | "
            f"{min(v):.3f} | {statistics.median(v):.3f} | {D / 16000 / (min(v) / 1e3):.0f}x |"
            for k, v in times.items()]
    return ("| case | path | best ms/frame | median | real time (16 kHz, best) |\n"
            "|---|---|---:|---:|---:|\n" + "\n".join(rows))


def rank_section() -> str:
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from audiolstm import PROJECT_ROOT
    from audiolstm.config import register_configs, to_container
    from audiolstm.data.datamodule import AudioDataModule
    from audiolstm.evaluation.baselines import fit_ridge_baseline

    register_configs()
    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train")
    with open_dict(cfg):
        cfg.paths.root_dir = str(PROJECT_ROOT)
        cfg.paths.output_dir = "/tmp"
        cfg.paths.cache_dir = os.environ.get("AUDIOLSTM_CACHE_DIR",
                                             str(PROJECT_ROOT / ".cache/audiolstm"))
    dm = AudioDataModule(to_container(cfg.data), to_container(cfg.norm),
                         to_container(cfg.repr), seed=cfg.seed)
    dm.prepare_data()
    dm.setup("fit")
    fit = fit_ridge_baseline(dm.train_frame_pairs(), None, dm.val_frame_pairs())
    w, b = fit.w, fit.b
    x, y = [], []
    for batch in dm.val_dataloader():
        x.append(batch[:, :-1].reshape(-1, D))
        y.append(batch[:, 1:].reshape(-1, D))
    xv, yv = torch.cat(x), torch.cat(y)
    full = float((xv @ w + b - yv).square().mean())
    zero = float(yv.square().mean())
    u, s, vh = torch.linalg.svd(w.double())
    rows = []
    for r in (32, 64, 128, 256, 512, 1000):
        wr = ((u[:, :r] * s[:r]) @ vh[:r]).float()
        mse = float((xv @ wr + b - yv).square().mean())
        rows.append(f"| {r} | {2 * D * r + D:,} | {mse / full:.3f} | {mse / zero:.3f} |")
    rows.append(f"| {D} (full) | {D * D + D:,} | 1.000 | {full / zero:.3f} |")
    return (f"Built-in data (default config), {len(xv):,} validation frames; ridge (full) "
            f"validation MSE {full:.4f} = {full / zero:.3f} x zero. Singular values of W: "
            f"largest {float(s[0]):.1f}, 10th {float(s[9]):.1f}, 100th {float(s[99]):.2f}.\n\n"
            "| rank | parameters | val MSE / full ridge | val MSE / zero |\n|---:|---:|---:|---:|\n"
            + "\n".join(rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--data", action="store_true", help="also the low-rank quality section")
    ap.add_argument("--write", action="store_true", help="write bench/RESULTS.md")
    args = ap.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    load = os.getloadavg()[0]
    peak = matmul_peak_gflops()
    train, _ = train_section(args.rounds)
    gen = generation_section()
    body = (f"Machine: {machine()}; load average {load:.1f} at the start, "
            f"{os.getloadavg()[0]:.1f} at the end; float32 `torch.mm` peak {peak:.0f} GFLOP/s.\n\n"
            f"### Training step: lstm_300x3 @ x_len {D}, batch {B} x {T} frames\n\n"
            f"{args.rounds} interleaved rounds after one warm-up round.\n\n{train}\n\n"
            f"### Stateful generation step (batch 1)\n\n{gen}\n")
    if args.data:
        body += f"\n### Low rank: how much of the ridge fit a rank-r path keeps\n\n{rank_section()}\n"
    print(body)
    if args.write:
        write_section("Linear AR path: cost (CPU)", body)


if __name__ == "__main__":
    main()
