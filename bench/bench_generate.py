"""Generation speed: frame models (stateful vs sliding vs refeed) and SampleRNN.

Frame models: generates `seconds` of audio at 16 kHz with lstm_300x3 at x_len 2000
(random weights: the speed does not depend on what was learned) and reports wall
time, real-time factor and the stateful/refeed speed-up; then one stateful step on
`nn.LSTM` (the path before issue 14) against the fused stepper (models/frame_step.py),
with 1 and 2 threads and oneDNN on and off.

SampleRNN (samplernn_2tier: frame 16, H = mlp_hidden = 256, and H = 1024, the paper's
size): samples/s for 1 and 16 streams, before (the per-sample loop of nn modules and
`torch.multinomial`, kept here as `reference_generate`) and after (models/samplernn_step.py:
the TorchScript loop, and the C kernel of models/samplernn_kernel.c that runs by default
where a compiler builds it), and the per-sample time budget of each: every part of the
loop timed alone on the same tensors, the rest being Python and the loop itself.

The machine is shared: every number is the best of `--repeats` runs, and the load
average is printed with the results.

Generation controls (issue 22, `--only controls`): SampleRNN's µs per sample step with
nucleus sampling and with the candidates' log-likelihood, in the C kernel and in the
fallback loop, interleaved; the logistic mixture head's nucleus sampling per frame; and
how long the kernel and the fallback draw the same codes from the same seed.

    python bench/bench_generate.py [--write] [--only frame|samplernn|controls]
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torch.nn.functional as F
from _common import machine, write_section
from torch import Tensor

from audiolstm.generation.strategies import generate_frames
from audiolstm.models import draw, samplernn_kernel, samplernn_step
from audiolstm.models.base import cpu_backend
from audiolstm.models.frame_rnn import AudioRNN
from audiolstm.models.heads import LogisticMixtureHead
from audiolstm.models.samplernn import SampleRNN
from audiolstm.models.samplernn_step import SampleLoop, torch_threads

SR, X_LEN = 16000, 2000


#: the clock: wall time, or (`--clock cpu`, one thread) this process's CPU time, which on
#: a machine shared with other jobs leaves out the time their processes take
CLOCK = time.perf_counter


def timed(fn) -> float:
    t0 = CLOCK()
    fn()
    return CLOCK() - t0


def load() -> str:
    return "load average " + " / ".join(f"{v:.2f}" for v in os.getloadavg())


def best_per_call(fn, n: int, repeats: int) -> float:
    """Seconds per call of fn: best of `repeats` loops of n calls (after a warm-up loop)."""
    for _ in range(min(n, 20)):
        fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = CLOCK()
        for _ in range(n):
            fn()
        best = min(best, (CLOCK() - t0) / n)
    return best


def step_table(model: AudioRNN, repeats: int) -> str:
    """One stateful step: nn.LSTM (before) vs the fused stepper, threads x oneDNN."""
    x1 = torch.randn(1, 1, X_LEN)
    rows = []
    with torch.inference_mode():
        _, state = model(torch.randn(1, 40, X_LEN))
        for threads in ((1,) if CLOCK is time.process_time else (1, 2)):
            for enabled in (True, False):
                with torch_threads(threads), torch.backends.mkldnn.flags(enabled=enabled):
                    module = best_per_call(lambda: model(x1, state), 100, repeats)
                    stepper = model.stepper(state)
                    fused = best_per_call(lambda s=stepper: s.step(x1), 100, repeats)
                    folded = best_per_call(lambda s=stepper: s.feedback_step(), 100, repeats)
                rows.append(f"| {threads} | {'on' if enabled else 'off'} | {1e3 * module:.3f} | "
                            f"{1e3 * fused:.3f} | {1e3 * folded:.3f} | "
                            f"{X_LEN / SR / folded:.0f}x |")
                print(rows[-1], flush=True)
    return ("| threads | oneDNN | nn.LSTM step (ms) | fused step (ms) | fused + folded head "
            "(greedy feedback, ms) | folded: real time |\n"
            "|---|---|---|---|---|---|\n" + "\n".join(rows))


def frame_section(args: argparse.Namespace) -> str:
    torch.manual_seed(0)
    model = AudioRNN(X_LEN, hidden_sizes=[300, 300, 300]).eval()
    seed = torch.randn(args.seed_frames, X_LEN)
    rows, speedups = [], []
    for seconds in args.seconds:
        n = int(seconds * SR / X_LEN)
        walls = {}
        for strategy in ("stateful", "sliding", "refeed"):
            repeats = 1 if strategy == "refeed" else args.repeats
            walls[strategy] = min(timed(lambda s=strategy, n=n: generate_frames(
                model, seed, n, s, window=args.window)) for _ in range(repeats))
            rows.append(f"| {seconds:g} s ({n} frames) | {strategy} | {walls[strategy]:.2f} | "
                        f"{seconds / walls[strategy]:.1f}x |")
            print(rows[-1], flush=True)
        speedups.append(f"{seconds:g} s: {walls['refeed'] / walls['stateful']:.1f}x")
    at = load()
    return (
        f"Machine: {machine()}; {at} when the runs started; clock: {CLOCK.__name__}. "
        f"lstm_300x3, x_len {X_LEN} "
        f"(1/8 s frames), seed of {args.seed_frames} frames, sliding window {args.window}.\n\n"
        f"Best of {args.repeats} runs for stateful and sliding, one run for refeed. "
        "`stateful` steps with the fused stepper (`AudioRNN.stepper`, models/frame_step.py: "
        "one addmm over [x, h] per layer, gates in place; greedy mse feedback also folds the "
        "head into the first layer), oneDNN off, "
        f"{torch.get_num_threads()} torch thread(s).\n\n"
        f"| audio | strategy | time (s, {CLOCK.__name__}) | real-time factor |\n"
        "|---|---|---|---|\n"
        + "\n".join(rows)
        + f"\n\nstateful / refeed speed-up: {', '.join(speedups)}.\n\n"
        "One stateful step, before (`nn.LSTM` layers on a length-1 sequence) and after "
        f"(best of {args.repeats} loops of 100 steps):\n\n"
        + step_table(model, args.repeats)
    )


# ----------------------------------------------------------------------------- SampleRNN


@torch.inference_mode()
def reference_generate(model: SampleRNN, seed: Tensor, n: int, temperature: float = 1.0,
                       generator: torch.Generator | None = None) -> Tensor:
    """The per-sample loop before issue 14 (nn modules per sample, softmax + multinomial)."""
    top, fb = model.lookback, model.frame_sizes[-1]
    b, s = seed.shape[0], seed.shape[1] // top * top
    buf = torch.empty(b, s + n, dtype=torch.long)
    buf[:, :s] = model.quantize(seed[:, -s:])
    _, state = model.conditioning(buf[:, :s])
    conds: list[Tensor] = [torch.empty(0)] * len(model.tiers)
    w_in = model.mlp_in.weight.reshape(model.mlp_in.out_channels, -1)
    with cpu_backend(single_step=True):
        for t in range(s, s + n):
            for k, tier in enumerate(model.tiers):
                fs = tier.frame_size
                if t % fs:
                    continue
                above = None
                if k:
                    j = (t % model.frame_sizes[k - 1]) // fs
                    above = conds[k - 1][:, j : j + 1]
                frame = model._level(buf[:, t - fs : t])[:, None]
                conds[k], state[k] = tier(frame, above, state[k])
            emb = model.embedding(buf[:, t - fb : t]).transpose(1, 2).reshape(b, -1)
            h = F.linear(emb, w_in, model.mlp_in.bias) + conds[-1][:, t % fb]
            logits = model.mlp(h)
            z = (logits - logits.amax(dim=-1, keepdim=True)) / temperature
            buf[:, t] = torch.multinomial(torch.softmax(z, dim=-1), 1, generator=generator)[:, 0]
    return buf[:, s:]


def budget_before(model: SampleRNN, b: int, repeats: int) -> dict[str, float]:
    """µs per sample of each part of the reference loop, timed alone."""
    fb, q = model.frame_sizes[-1], model.q_levels
    codes = torch.randint(q, (b, 64))
    w_in = model.mlp_in.weight.reshape(model.mlp_in.out_channels, -1)
    cond = torch.randn(b, fb, w_in.shape[0])
    tier = model.tiers[-1]
    _, st = tier(torch.randn(b, 1, fb), None)
    logits = torch.randn(b, q)
    parts = {
        "embedding + mlp_in (linear) + conditioning": lambda: F.linear(
            model.embedding(codes[:, 10 : 10 + fb]).transpose(1, 2).reshape(b, -1), w_in,
            model.mlp_in.bias) + cond[:, 3],
        "3 × (ReLU, Linear)": lambda: model.mlp(cond[:, 3]),
        "draw: softmax + multinomial": lambda: torch.multinomial(torch.softmax(
            (logits - logits.amax(dim=-1, keepdim=True)) / 1.0, dim=-1), 1)[:, 0],
        "store the code": lambda: codes.__setitem__((slice(None), 40), codes[:, 41]),
        f"frame tier (nn.LSTM step, 1/{fb} of it)": lambda: tier(
            model._level(codes[:, 10 : 10 + fb])[:, None], None, st),
    }
    out = {}
    with torch.inference_mode(), cpu_backend(single_step=True):
        for name, fn in parts.items():
            per = best_per_call(fn, 300, repeats)
            out[name] = per / fb if name.startswith("frame tier") else per
    return out


def budget_kernel(model: SampleRNN, b: int, repeats: int) -> dict[str, float]:
    """µs per sample of each part of SampleLoop.run with the C kernel, timed alone: the
    kernel on a whole frame (one group of streams per thread), with the argmax and with
    the inverse CDF, the uniforms, and the frame tier."""
    loop = SampleLoop(model, b)
    assert loop.kernel is not None, "the C kernel did not build"
    loop.set_state([None] * len(model.tiers))
    fb = loop.fb
    buf = torch.randint(loop.q, (b, 64))
    uniform = torch.rand(fb, b, 1)
    loop._bind(buf, 1.0, 1.0, None)
    block = max(fb, samplernn_step.NOISE_BLOCK // b // fb * fb)
    parts = {
        "kernel: first layer, 3 layers, argmax (a frame / 16)": lambda: loop._kernel_frame(
            16, fb, None, 0, 0),
        "kernel: inverse-CDF draw (a frame / 16, minus the argmax run)": lambda: loop._kernel_frame(
            16, fb, uniform, 0, 0),
        f"uniforms, drawn {block} samples at a time": lambda: torch.rand(
            block, b, 1).neg_().add_(1.0),
        f"frame tier (one fused LSTM step + up-projection, 1/{fb} of it)": lambda: loop.tiers[
            -1].step(buf[:, 10 : 10 + fb], None, out=loop.cond),
    }
    out = {}
    with torch.inference_mode(), cpu_backend(single_step=True):
        for name, fn in parts.items():
            per = best_per_call(fn, 300 if "at a time" not in name else 5, repeats)
            out[name] = per / block if "at a time" in name else per / fb
    first, draw = list(out)[:2]
    out[draw] -= out[first]
    return out


def budget_after(model: SampleRNN, b: int, repeats: int) -> dict[str, float]:
    """µs per sample of each part of SampleLoop.run's TorchScript loop, timed alone (its
    draw is the kernel's: the inverse CDF from one uniform per stream and sample)."""
    loop = SampleLoop(model, b, kernel=False)
    loop.set_state([None] * len(model.tiers))
    fb, q = loop.fb, loop.q
    buf = torch.randint(q, (b, 64))
    x = torch.randn(b, loop.table.shape[1])
    logits = torch.randn(b, q)
    uniform = torch.rand(b, 1)
    tier = loop.tiers[-1]
    (b1, w1), (b2, w2), (b3, w3) = loop.mlp

    def first() -> None:
        torch.add(buf[:, 10 : 10 + fb], loop.offsets, out=loop.codes[3])
        loop.table.index_select(0, loop.rows[3]).view(b, fb + 1, -1).sum(1)

    o1, o2, o3 = loop.out

    def mlp() -> None:
        y = torch.addmm(b1, x.relu(), w1, out=o1)
        y = torch.addmm(b2, y.relu_(), w2, out=o2)
        torch.addmm(b3, y.relu_(), w3, out=o3)

    def inverse_cdf() -> None:
        buf[:, 40] = draw.inverse_cdf(torch.softmax(logits, dim=1), uniform)[:, 0]

    block = max(fb, samplernn_step.NOISE_BLOCK // b // fb * fb)
    parts = {  # (timed eagerly: under TorchScript each costs less, the rest shrinks)
        "first layer: gather F code rows + 1 conditioning row, sum": first,
        "3 × (ReLU, addmm into a buffer), weights (in, out) contiguous": mlp,
        "draw: softmax, cumsum, searchsorted (inverse CDF)": inverse_cdf,
        f"uniforms, drawn {block} samples at a time": lambda: torch.rand(
            block, b, 1).neg_().add_(1.0),
        f"frame tier (one fused LSTM step + up-projection, 1/{fb} of it)": lambda: tier.step(
            buf[:, 10 : 10 + fb], None, out=loop.cond),
    }
    out = {}
    with torch.inference_mode(), cpu_backend(single_step=True):
        for name, fn in parts.items():
            threads = torch.get_num_threads() if name.startswith("frame tier") else 1
            with torch_threads(threads):
                per = best_per_call(fn, 300 if "at a time" not in name else 5, repeats)
            out[name] = per / block if "at a time" in name else (
                per / fb if name.startswith("frame tier") else per)
    return out


def samplernn_section(args: argparse.Namespace) -> str:
    lines = []
    summary = ["| H | streams | before: samples/s (× real time) | TorchScript loop: "
               "samples/s (× real time) | C kernel: samples/s (× real time) | speed-up |",
               "|---|---|---|---|---|---|"]
    budgets = []
    at = load()
    for hidden in (256, 1024):
        torch.manual_seed(0)
        model = SampleRNN(frame_sizes=[16], hidden=hidden, mlp_hidden=hidden).eval()
        for b in (1, 16):
            seed = torch.rand(b, 1600) * 2 - 1
            n = args.samples // (4 if hidden == 1024 else 1) // (1 if b == 1 else 4)
            # per step: (time for k samples − time for none) / k; the warm-up pass on the
            # seed and the per-call set-up are the time for none
            def per_step(fn, k: int) -> float:
                t0 = min(timed(lambda: fn(0)) for _ in range(args.repeats))
                return (min(timed(lambda: fn(k)) for _ in range(args.repeats)) - t0) / k

            def generate(k: int, m: SampleRNN = model, s: Tensor = seed) -> None:
                m.generate(s, k, generator=torch.Generator().manual_seed(0))

            before = per_step(lambda k, m=model, s=seed: reference_generate(
                m, s, k, generator=torch.Generator().manual_seed(0)), n // 4)
            generate(64)
            samplernn_kernel.ENABLED = False
            script = per_step(generate, n)
            samplernn_kernel.ENABLED = True
            kernel = per_step(generate, n)
            summary.append(f"| {hidden} | {b} | {b / before:,.0f} ({b / before / SR:.2f}×) | "
                           f"{b / script:,.0f} ({b / script / SR:.2f}×) | "
                           f"{b / kernel:,.0f} ({b / kernel / SR:.2f}×) | "
                           f"{before / kernel:.1f}× |")
            print(summary[-1], flush=True)
            for label, total, parts in (
                    ("before", before, budget_before(model, b, args.repeats)),
                    ("after, TorchScript loop", script, budget_after(model, b, args.repeats)),
                    ("after, C kernel", kernel, budget_kernel(model, b, args.repeats))):
                rest = total - sum(parts.values())
                rows = [f"| {k} | {1e6 * v:.1f} |" for k, v in parts.items()]
                rows.append(f"| Python, loop and the rest (total − parts) | {1e6 * rest:.1f} |")
                rows.append(f"| **total per step** (measured, generate) | **{1e6 * total:.1f}** |")
                budgets.append(f"**H = {hidden}, {b} stream{'s' if b > 1 else ''}, {label}** "
                               f"(µs per sample step, all streams together)\n\n"
                               "| part | µs |\n|---|---|\n" + "\n".join(rows))
                print(budgets[-1], flush=True)
    lines.append(
        f"Machine: {machine()}; {at} when the runs started; clock: {CLOCK.__name__}. "
        "Random weights, "
        "samplernn_2tier (frame tier of 16 samples, one LSTM layer, embed 64, 256 mu-law "
        f"levels), hidden = mlp_hidden = H; seed of 1600 samples, temperature 1. Best of "
        f"{args.repeats} runs; per step = (time for n samples − time for none) / n, so the "
        "warm-up pass on the seed and the set-up (folded table) are left out. Real time = "
        f"16,000 samples/s per stream. C kernel built with `{samplernn_kernel.load().flags}`."
        "\n\n"
        + "\n".join(summary) + "\n\nPer-sample time budget (each part timed alone, "
        f"best of {args.repeats} loops; parts per frame divided by 16):\n\n"
        + "\n\n".join(budgets))
    return "\n".join(lines)


def controls_section(args: argparse.Namespace) -> str:
    """Nucleus sampling and the log-likelihood: their cost in both SampleRNN loops and in
    the mixture head, and the kernel/fallback agreement (first differing code)."""
    at = load()
    torch.manual_seed(0)
    model = SampleRNN(frame_sizes=[16]).eval()
    variants = {  # name: (kernel, generate's keyword arguments)
        "kernel": (True, {}),
        "kernel, top_p = 0.9": (True, {"top_p": 0.9}),
        "kernel, log-likelihood": (True, {"return_log_likelihood": True}),
        "fallback": (False, {}),
        "fallback, top_p = 0.9": (False, {"top_p": 0.9}),
        "fallback, log-likelihood": (False, {"return_log_likelihood": True}),
    }
    rows = ["| streams | loop | µs per step (best) | median | × real time (best) |",
            "|---|---|---|---|---|"]
    for b in (1, 16):
        seed = torch.rand(b, 1600) * 2 - 1
        n = args.samples // (1 if b == 1 else 4)

        def generate(k: int, kernel: bool, kw: dict, seed: Tensor = seed) -> None:
            samplernn_kernel.ENABLED = kernel
            try:
                model.generate(seed, k, generator=torch.Generator().manual_seed(0), **kw)
            finally:
                samplernn_kernel.ENABLED = True

        times: dict[str, list[float]] = {name: [] for name in variants}
        for kernel, kw in variants.values():
            generate(64, kernel, kw)
        for _ in range(args.repeats):  # interleaved: the machine's load hits all alike
            for name, (kernel, kw) in variants.items():
                none = timed(lambda kernel=kernel, kw=kw: generate(0, kernel, kw))
                full = timed(lambda kernel=kernel, kw=kw, n=n: generate(n, kernel, kw))
                times[name].append((full - none) / n)
        for name, ts in times.items():
            ts.sort()
            rows.append(f"| {b} | {name} | {1e6 * ts[0]:.1f} | {1e6 * ts[len(ts) // 2]:.1f} | "
                        f"{b / ts[0] / SR:.2f}× |")
            print(rows[-1], flush=True)

    head = LogisticMixtureHead(hidden=8, dim=X_LEN, components=5, bins=256)
    params = head(torch.randn(1, 1, 8))
    mix = ["| mixture head (D = 2000, 5 components, 256 cells), one frame | ms (best) |",
           "|---|---|"]
    with torch.inference_mode():
        for label, top_p in (("plain sampling", 1.0), ("top_p = 0.9", 0.9)):
            per = best_per_call(lambda t=top_p: head.sample(params, 1.0, None, top_p=t), 5,
                                args.repeats)
            mix.append(f"| {label} | {1e3 * per:.2f} ({X_LEN / SR / per:.0f}× real time) |")
            print(mix[-1], flush=True)

    agree = ["| logits (weights × gain) | top_p | draws compared | streams that parted | "
             "first differing sample |", "|---|---|---|---|---|"]
    n, b = args.agree_samples, 8
    for gain in (1.0, 3.0):
        torch.manual_seed(0)
        lively = SampleRNN(frame_sizes=[16]).eval()
        with torch.no_grad():
            for p in lively.parameters():
                p.mul_(gain)
        seed = torch.rand(b, 1600) * 2 - 1
        for top_p in (1.0, 0.9):
            codes = []
            for kernel in (True, False):
                samplernn_kernel.ENABLED = kernel
                codes.append(lively.quantize(lively.generate(
                    seed, n, generator=torch.Generator().manual_seed(1), top_p=top_p)))
            samplernn_kernel.ENABLED = True
            firsts = [int(d[0]) for d in ((codes[0][i] != codes[1][i]).nonzero()[:, 0]
                                          for i in range(b)) if len(d)]
            agree.append(f"| × {gain:g} | {top_p:g} | {b} × {n:,} | {len(firsts)} | "
                         f"{', '.join(f'{f:,}' for f in sorted(firsts)) or '–'} |")
            print(agree[-1], flush=True)
    return (f"Machine: {machine()}; {at} when the runs started; clock: {CLOCK.__name__}. "
            "samplernn_2tier defaults (H = 256, 256 levels), random weights, temperature 1; "
            f"per step = (time for n samples − time for none) / n, the variants interleaved, "
            f"{args.repeats} rounds. C kernel built with `{samplernn_kernel.load().flags}`."
            "\n\n" + "\n".join(rows) + "\n\n" + "\n".join(mix)
            + "\n\nThe C kernel and the fallback loop from the same seed (8 streams): the "
            "first sample where their codes differ, per stream that parted.\n\n"
            + "\n".join(agree))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, nargs="+", default=[10.0, 60.0])
    ap.add_argument("--seed-frames", type=int, default=40)
    ap.add_argument("--window", type=int, default=40)
    ap.add_argument("--samples", type=int, default=16000, help="SampleRNN samples per run")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--only", choices=["frame", "samplernn", "controls"])
    ap.add_argument("--agree-samples", type=int, default=20000,
                    help="samples per stream for the kernel/fallback agreement")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="cpu: process CPU time with one torch thread (a shared machine)")
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    if args.clock == "cpu":
        global CLOCK
        CLOCK = time.process_time
        torch.set_num_threads(1)
    if args.only in (None, "frame"):
        body = frame_section(args)
        print(body)
        if args.write:
            write_section("Generation speed (CPU)", body)
    if args.only in (None, "samplernn"):
        body = samplernn_section(args)
        print(body)
        if args.write:
            write_section("SampleRNN generation speed (CPU)", body)
    if args.only in (None, "controls"):
        body = controls_section(args)
        print(body)
        if args.write:
            write_section("Generation controls: top_p, candidates' likelihood (CPU)", body)


if __name__ == "__main__":
    main()
