"""Generation speed: stateful vs sliding vs refeed, and the CPU backend per path.

Generates `seconds` of audio at 16 kHz with lstm_300x3 at x_len 2000 (random
weights: the speed does not depend on what was learned) and reports wall
time, real-time factor and the stateful/refeed speed-up. Also times one
single-frame step and one whole-sequence pass with oneDNN (mkldnn) on and off.

    python bench/bench_generate.py [--write]
"""

from __future__ import annotations

import argparse
import time

import torch
from _common import machine, write_section

from audiolstm.generation.strategies import generate_frames
from audiolstm.models.frame_rnn import AudioRNN

SR, X_LEN = 16000, 2000


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def backend_table(model: AudioRNN) -> str:
    x1 = torch.randn(1, 1, X_LEN)
    xs = torch.randn(1, 40, X_LEN)
    rows = []
    for enabled in (True, False):
        with torch.inference_mode(), torch.backends.mkldnn.flags(enabled=enabled):
            _, state = model(x1)
            for _ in range(20):
                model(x1, state)
            step = min(timed(lambda st=state: model(x1, st)) for _ in range(200))
            model(xs)
            seq = min(timed(lambda: model(xs)) for _ in range(10))
        rows.append(f"| oneDNN {'on' if enabled else 'off'} | {1e3 * step:.3f} | {1e3 * seq:.2f} |")
    return ("| backend | one frame step (ms) | 40-frame sequence (ms) |\n|---|---|---|\n"
            + "\n".join(rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, nargs="+", default=[10.0, 60.0])
    ap.add_argument("--seed-frames", type=int, default=40)
    ap.add_argument("--window", type=int, default=40)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    model = AudioRNN(X_LEN, hidden_sizes=[300, 300, 300]).eval()
    seed = torch.randn(args.seed_frames, X_LEN)
    rows, speedups = [], []
    for seconds in args.seconds:
        n = int(seconds * SR / X_LEN)
        walls = {}
        for strategy in ("stateful", "sliding", "refeed"):
            repeats = 1 if strategy == "refeed" else 3  # best of 3 for the fast ones
            walls[strategy] = min(timed(lambda s=strategy, n=n: generate_frames(
                model, seed, n, s, window=args.window)) for _ in range(repeats))
            rows.append(f"| {seconds:g} s ({n} frames) | {strategy} | {walls[strategy]:.2f} | "
                        f"{seconds / walls[strategy]:.1f}x |")
            print(rows[-1], flush=True)
        speedups.append(f"{seconds:g} s: {walls['refeed'] / walls['stateful']:.1f}x")
    body = (
        f"Machine: {machine()}. lstm_300x3, x_len {X_LEN} (1/8 s frames), seed of "
        f"{args.seed_frames} frames, sliding window {args.window}.\n\n"
        "Best of 3 runs for stateful and sliding, one run for refeed.\n\n"
        "| audio | strategy | wall (s) | real-time factor |\n|---|---|---|---|\n"
        + "\n".join(rows)
        + f"\n\nstateful / refeed speed-up: {', '.join(speedups)}.\n\n"
        "CPU backend per path (choice made in `audiolstm.models.base.cpu_backend`):\n\n"
        + backend_table(model)
    )
    print(body)
    if args.write:
        write_section("Generation speed (CPU)", body)


if __name__ == "__main__":
    main()
