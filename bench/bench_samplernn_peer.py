"""SampleRNN side by side with deepsound-project/samplernn-pytorch (2017), the most-used
PyTorch port: training and generation speed at one matched configuration.

    git clone https://github.com/deepsound-project/samplernn-pytorch /tmp/samplernn-pytorch
    python bench/bench_samplernn_peer.py /tmp/samplernn-pytorch [--write]

The peer's code is never vendored: its `model.py`, `nn.py`, `utils.py`, `optim.py` and
`trainer/` are imported from PATH, and its training runs through its own `Trainer`, its
own `gradient_clipping(Adam)` wrapper and loss (`sequence_nll_loss_bits`), its generation
through its own `Generator` (under `torch.no_grad()`: its `volatile=True` meant that in
the torch 0.2 it was written for, and is ignored now).

The matched configuration (both sides): 2 tiers, frame 16, one GRU layer of 256, MLP
width 256, 256 linear levels, 256-wide embeddings of the previous 16 samples, truncated
BPTT over 1024-sample chunks, Adam (lr 1e-3), the same batch of codes. Ours is the
project's `model=samplernn_2tier` with `model.cell=gru model.embed_dim=256
model.quantization=linear` (its optimiser as configured there), trained by
`SampleRNN.train_batch` (the chunk loop `training_step` runs) with a plain PyTorch update
(norm clipping at `model.grad_clip`); the peer clamps each gradient to [-1, 1], its own
rule. The peer is built without weight normalisation and without a learned initial
state (`--peer-weight-norm`/`--peer-learn-h0` turn them on): ours has neither, and both
only slow the peer down. What differs by design: our sample MLP has one more 256 × 256
layer (three after `mlp_in`, the peer two), so ours does more arithmetic per sample.

Timing: one training *batch* is `--chunks` TBPTT chunks (one optimiser step each) of
B sequences; the two models' batches alternate (ours first on even rounds, the peer's
on odd ones) for `--rounds` rounds after one warm-up batch each; samples/s count
predicted samples (B × chunks × 1024) at the best and the median batch. Generation:
`--gen-samples` samples for 1 and 16 streams, alternating likewise. `--clock cpu` times
process CPU time with one torch thread (on a machine shared with other jobs);
otherwise wall time with `--threads` (default: torch's) for both.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from _common import load, machine, write_section

ROOT = Path(__file__).resolve().parents[1]
FRAME, DIM, Q, CHUNK = 16, 256, 256, 1024
PEER_MODULES = ("model", "nn", "utils", "optim", "trainer")

CLOCK: Callable[[], float] = time.perf_counter


# ----------------------------------------------------------------------------- the peer
def import_peer(path: Path) -> dict[str, ModuleType]:
    """The peer's modules, imported from its checkout and then taken off sys.modules
    (their names, `nn`, `utils`, `model`, are too generic to leave behind)."""
    if not (path / "model.py").is_file():
        sys.exit(f"{path}: not a samplernn-pytorch checkout (no model.py); clone "
                 "https://github.com/deepsound-project/samplernn-pytorch and pass its path")
    saved = {k: sys.modules.pop(k) for k in PEER_MODULES if k in sys.modules}
    sys.path.insert(0, str(path))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return {k: importlib.import_module(k) for k in PEER_MODULES}
    except ImportError as e:
        sys.exit(f"{path}: the peer's modules do not import ({e}); the bench needs only "
                 "its model.py, nn.py, utils.py, optim.py and trainer/")
    finally:
        sys.path.remove(str(path))
        for k in PEER_MODULES:
            sys.modules.pop(k, None)
        sys.modules.update(saved)


class Peer:
    """The peer's model, trainer and generator at the matched configuration."""

    def __init__(self, mods: dict[str, ModuleType], weight_norm: bool, learn_h0: bool) -> None:
        self.mods = mods
        with warnings.catch_warnings():  # its init calls are deprecated aliases now
            warnings.simplefilter("ignore")
            self.model = mods["model"].SampleRNN(
                frame_sizes=[FRAME], n_rnn=1, dim=DIM, learn_h0=learn_h0, q_levels=Q,
                weight_norm=weight_norm)
        self.predictor = mods["model"].Predictor(self.model)
        # as its train.py builds them
        self.optimizer = mods["optim"].gradient_clipping(
            torch.optim.Adam(self.predictor.parameters()))
        self.trainer = mods["trainer"].Trainer(
            self.predictor, mods["nn"].sequence_nll_loss_bits, self.optimizer, [])

    def train_batch(self, codes: torch.Tensor) -> None:
        """codes (B, FRAME + chunks·CHUNK): its data loader's chunks, its trainer's loop."""
        n = codes.shape[1] - FRAME
        self.trainer.dataset = [
            (codes[:, s : s + FRAME + CHUNK - 1], s == 0,
             codes[:, s + FRAME : s + FRAME + CHUNK].contiguous())
            for s in range(0, n, CHUNK)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.trainer.train()

    def generate(self, streams: int, samples: int) -> None:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.mods["model"].Generator(self.model, cuda=False)(streams, samples)


# ----------------------------------------------------------------------------- ours
def build_ours() -> Any:
    """The project's samplernn_2tier, composed as train.py composes it, at the matched
    configuration."""
    from hydra import compose, initialize_config_dir

    from audiolstm.config import register_configs, to_container
    from audiolstm.models.registry import build_model

    register_configs()
    overrides = ["model=samplernn_2tier", "model.cell=gru", "model.hidden_sizes=[256]",
                 "model.mlp_hidden=256", "model.embed_dim=256", "model.q_levels=256",
                 "model.quantization=linear", f"model.frame_sizes=[{FRAME}]",
                 f"model.tbptt_steps={CHUNK // FRAME}", "repr=time",
                 f"paths.root_dir={ROOT}", "paths.output_dir=."]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        cfg = compose(config_name="train", overrides=overrides)
    model = build_model(1, to_container(cfg.model))
    model.train()
    return model


class Ours:
    def __init__(self) -> None:
        self.model = build_ours()
        opt = self.model.configure_optimizers()
        self.optimizer = opt["optimizer"] if isinstance(opt, dict) else opt
        self.params = list(self.model.parameters())
        self.clip = self.model.hparams.grad_clip

    def update(self, loss: torch.Tensor) -> None:
        """`AudioModel.optimizer_update` without Lightning."""
        if not torch.isfinite(loss):
            raise RuntimeError("non-finite loss")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.clip:
            torch.nn.utils.clip_grad_norm_(self.params, self.clip)
        self.optimizer.step()

    def train_batch(self, samples: torch.Tensor) -> None:
        """samples (B, 1, FRAME + chunks·CHUNK): one example per row, as the data module
        hands them over (no data state: the identity normaliser)."""
        self.model.train_batch(samples, self.update)

    def generate(self, streams: int, samples: int) -> None:
        self.model.generate(torch.zeros(streams, FRAME), samples)


# ----------------------------------------------------------------------------- timing
def timed(fn: Callable[[], None]) -> float:
    t0 = CLOCK()
    fn()
    return CLOCK() - t0


def alternate(fns: dict[str, Callable[[], None]], rounds: int) -> dict[str, list[float]]:
    """One warm-up call each, then `rounds` rounds, the order flipped every round."""
    names = list(fns)
    for name in names:
        fns[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            times[name].append(timed(fns[name]))
    return times


def row(task: str, size: str, samples: int, times: dict[str, list[float]]) -> str:
    ours, peer = times["ours"], times["peer"]
    return (f"| {task} | {size} | {samples / min(ours):,.0f} / {samples / statistics.median(ours):,.0f} "
            f"| {samples / min(peer):,.0f} / {samples / statistics.median(peer):,.0f} "
            f"| **{min(peer) / min(ours):.2f}x** / {statistics.median(peer) / statistics.median(ours):.2f}x |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("path", type=Path, help="a checkout of deepsound-project/samplernn-pytorch")
    ap.add_argument("--batch", type=int, nargs="+", default=[16, 128])
    ap.add_argument("--chunks", type=int, default=2, help="TBPTT chunks per training batch")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--streams", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--gen-samples", type=int, default=4096, help="samples per generation call")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="cpu: process CPU time with one torch thread (a shared machine)")
    ap.add_argument("--peer-weight-norm", action="store_true")
    ap.add_argument("--peer-learn-h0", action="store_true")
    ap.add_argument("--only", choices=["train", "generate"])
    ap.add_argument("--write", action="store_true", help="record in bench/RESULTS.md")
    args = ap.parse_args()
    global CLOCK
    if args.clock == "cpu":
        CLOCK = time.process_time
        torch.set_num_threads(1)
    elif args.threads:
        torch.set_num_threads(args.threads)
    sys.path.insert(0, str(ROOT))
    mods = import_peer(args.path.resolve())
    started = load()
    torch.manual_seed(0)
    ours, peer = Ours(), Peer(mods, args.peer_weight_norm, args.peer_learn_h0)
    n_ours = sum(p.numel() for p in ours.model.parameters())
    n_peer = sum(p.numel() for p in peer.predictor.parameters())
    rows = []
    if args.only != "generate":
        for b in args.batch:
            g = torch.Generator().manual_seed(b)
            codes = torch.randint(0, Q, (b, FRAME + args.chunks * CHUNK), generator=g)
            samples = ours.model.dequantize(codes).unsqueeze(1)  # the same codes, as audio
            assert torch.equal(ours.model.quantize(samples.squeeze(1)), codes)
            times = alternate({"ours": lambda s=samples: ours.train_batch(s),
                               "peer": lambda c=codes: peer.train_batch(c)}, args.rounds)
            rows.append(row("training", f"B = {b}", b * args.chunks * CHUNK, times))
            print(rows[-1], flush=True)
    if args.only != "train":
        ours.model.eval()
        for s in args.streams:
            times = alternate({"ours": lambda s=s: ours.generate(s, args.gen_samples),
                               "peer": lambda s=s: peer.generate(s, args.gen_samples)},
                              args.rounds)
            rows.append(row("generation", f"{s} stream{'s' if s > 1 else ''}",
                            s * args.gen_samples, times))
            print(rows[-1], flush=True)
    clock = ("process CPU time, one torch thread" if args.clock == "cpu"
             else f"wall clock, {torch.get_num_threads()} torch thread(s)")
    body = (
        f"Machine: {machine()}; {started} at the start, {load()} at the end. Clock: {clock}. "
        f"Peer: {args.path.name} (weight norm {'on' if args.peer_weight_norm else 'off'}, "
        f"learned h0 {'on' if args.peer_learn_h0 else 'off'}), {n_peer:,} parameters; "
        f"ours {n_ours:,}. Training batches of {args.chunks} chunks x {CHUNK} samples, "
        f"generation calls of {args.gen_samples} samples; {args.rounds} alternating rounds "
        "after a warm-up call each.\n\n"
        f"    python bench/bench_samplernn_peer.py PATH "
        f"{' '.join(a for a in sys.argv[1:] if a != str(args.path))}\n\n"
        "| task | size | ours samples/s (best / median) | peer samples/s (best / median) "
        "| ours / peer (best / median) |\n|---|---|---|---|---|\n" + "\n".join(rows))
    print(body)
    if args.write:
        write_section(f"SampleRNN vs samplernn-pytorch ({'CPU time' if args.clock == 'cpu' else 'wall'})",
                      body)


if __name__ == "__main__":
    main()
