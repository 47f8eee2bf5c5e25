"""SampleRNN training at `experiment=samplernn`: through Lightning as train.py runs it, the
bare step, and another checkout (before/after).

Each measurement runs in a fresh worker process that composes the project's own config
(`conf/train.yaml` + `experiment=samplernn`, as train.py does), builds the data module
and the model the way training/run.py does, and times `--batches` training batches
after `--warmup`:

- **Lightning**: `Trainer.fit` with the config's trainer, the CSV logger and the
  per-batch callbacks of `callbacks=default` (progress bar, LR monitor, the per-batch
  reseeding of train.py; the epoch-end ones, checkpoints and sample generation, are left
  out: they do not run per batch). A batch is timed from Lightning's
  `on_train_batch_start` to `on_train_batch_end`; "loop" is the fit's wall time per
  batch, data loading included.
- **bare** (this checkout's `SampleRNN.train_batch`): the same batches, the same chunk
  loop, with a plain PyTorch update (finite check, zero_grad, backward,
  `clip_grad_norm_`, the configured optimiser's step) instead of Lightning's manual
  optimisation. overhead = Lightning / bare − 1.

`--against DIR` (a checkout of another commit, e.g. `git worktree add /tmp/base <sha>`)
runs the Lightning measurement there too, with that checkout's own code and config;
the workers alternate (this, other, other, this, …) so a change in the machine's load
hits both alike. Samples/s count the batch's predicted samples (B × targets).

    python bench/bench_samplernn_train.py [--against DIR] [--rounds 3] [--batches 4]
        [--threads N | --clock cpu] [--precision bf16-mixed] [--write]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
ROOT = HERE.parents[1]


# ----------------------------------------------------------------------------- worker
def worker(args: argparse.Namespace) -> None:
    """Runs inside `args.root` (its package and conf/): prints one JSON line."""
    root = Path(args.root).resolve()
    sys.path.insert(0, str(root))
    import pytorch_lightning as pl
    import torch
    from _common import bare_update
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate
    from pytorch_lightning.loggers import CSVLogger

    from audiolstm.config import register_configs, to_container
    from audiolstm.data.datamodule import AudioDataModule
    from audiolstm.models.registry import build_model
    from audiolstm.training.run import build_callbacks

    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    if args.clock == "cpu":
        torch.set_num_threads(1)
    elif args.threads:
        torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench_srnn_"))
    overrides = [
        "experiment=samplernn", f"paths.root_dir={root}", f"paths.output_dir={tmp}",
        "~callbacks.model_checkpoint", "~callbacks.early_stopping",
        "~callbacks.sample_generation", f"trainer.precision={args.precision}",
        *args.override,
    ]
    register_configs()  # the schemas train.py registers (audiolstm/cli.py)
    with initialize_config_dir(config_dir=str(root / "conf"), version_base=None):
        cfg = compose(config_name="train", overrides=overrides)
    pl.seed_everything(cfg.seed, verbose=False)
    dm = AudioDataModule(to_container(cfg.data), to_container(cfg.norm),
                         to_container(cfg.repr), seed=cfg.seed)
    dm.prepare_data()
    dm.setup("fit")
    model = build_model(dm.input_dim, to_container(cfg.model))
    model.data_state = dm.data_state()
    init = {k: v.clone() for k, v in model.state_dict().items()}
    total = args.warmup + args.batches

    class Timer(pl.Callback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.t0 = 0.0

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            self.t0 = clock()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if batch_idx >= args.warmup:
                self.times.append(clock() - self.t0)

    timer = Timer()
    trainer = instantiate(cfg.trainer, callbacks=[*build_callbacks(cfg), timer],
                          logger=CSVLogger(tmp, name="", version=""), max_epochs=1,
                          limit_train_batches=total, limit_val_batches=0,
                          num_sanity_val_steps=0, enable_checkpointing=False)
    t0 = clock()
    trainer.fit(model, datamodule=dm)
    loop = (clock() - t0) / total
    first = next(iter(dm.train_dataloader()))
    per_batch = first.shape[0] * (first.shape[1] * first.shape[2] - model.lookback)
    out = {"root": str(root), "lightning": timer.times, "loop": loop,
           "samples_per_batch": per_batch, "threads": torch.get_num_threads()}

    if hasattr(model, "train_batch") and not args.no_bare:  # this checkout's bare step
        model = build_model(dm.input_dim, to_container(cfg.model))
        model.data_state = dm.data_state()
        model.load_state_dict(init)
        model.train()
        model.trainer = trainer  # the optimiser Lightning's run built (no fused one under
        opt = model.configure_optimizers()  # mixed precision: base.configure_optimizers)
        opt = opt["optimizer"] if isinstance(opt, dict) else opt
        model.trainer = None
        update = bare_update(opt, list(model.parameters()), model.hparams.grad_clip)

        autocast = torch.autocast("cpu", dtype=torch.bfloat16,
                                  enabled=args.precision.startswith("bf16"))
        bare = []
        for i, batch in enumerate(dm.train_dataloader()):
            if i == total:
                break
            t0 = clock()
            with autocast:
                model.train_batch(batch, update)
            if i >= args.warmup:
                bare.append(clock() - t0)
        out["bare"] = bare
    print("RESULT " + json.dumps(out), flush=True)


# ----------------------------------------------------------------------------- parent
def run_worker(root: Path, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, str(HERE), "--worker", "--root", str(root),
           "--batches", str(args.batches), "--warmup", str(args.warmup),
           "--clock", args.clock, "--threads", str(args.threads or 0),
           "--precision", args.precision, *(["--no-bare"] if args.no_bare else [])]
    for o in args.override:
        cmd += ["--override", o]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=root)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        sys.exit(f"worker in {root} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def rate(samples: int, times: list[float]) -> str:
    """samples/s at the best and the median batch time."""
    return f"{samples / min(times):,.0f} / {samples / statistics.median(times):,.0f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--against", type=Path, help="another checkout to compare with")
    ap.add_argument("--rounds", type=int, default=3, help="worker runs per checkout")
    ap.add_argument("--batches", type=int, default=4, help="timed batches per worker")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="cpu: process CPU time with one torch thread (a shared machine)")
    ap.add_argument("--precision", default="32-true", help="trainer.precision")
    ap.add_argument("--override", action="append", default=[],
                    help="an extra Hydra override for both checkouts (repeatable)")
    ap.add_argument("--no-bare", action="store_true", help="skip the bare measurement")
    ap.add_argument("--write", action="store_true", help="record in bench/RESULTS.md")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--root", default=str(ROOT), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return

    from _common import checkout_label, load, machine, write_section

    if args.against and not ((args.against / "conf" / "train.yaml").is_file()
                             and (args.against / "audiolstm").is_dir()):
        sys.exit(f"--against {args.against}: not a checkout of this project (no conf/train.yaml "
                 "or audiolstm/); e.g. git worktree add /tmp/base <commit>")
    roots = [ROOT] + ([args.against.resolve()] if args.against else [])
    runs: dict[Path, list[dict]] = {r: [] for r in roots}
    load_before = load()
    for r in range(args.rounds):
        for root in (roots if r % 2 == 0 else roots[::-1]):
            res = run_worker(root, args)
            runs[root].append(res)
            bare = f", bare {rate(res['samples_per_batch'], res['bare'])}" if "bare" in res else ""
            print(f"round {r + 1} {checkout_label(root)}: Lightning "
                  f"{rate(res['samples_per_batch'], res['lightning'])}{bare} samples/s "
                  f"(best / median batch)", flush=True)
    rows, lightning = [], {}
    for root in roots:
        res = runs[root]
        n = res[0]["samples_per_batch"]
        light = [t for x in res for t in x["lightning"]]
        lightning[root] = light
        loop = [x["loop"] for x in res]
        bare = [t for x in res for t in x.get("bare", [])]
        over = (f"{100 * (min(light) / min(bare) - 1):+.1f} % / "
                f"{100 * (statistics.median(light) / statistics.median(bare) - 1):+.1f} %"
                if bare else "–")
        rows.append(f"| {checkout_label(root)} | {rate(n, light)} | {rate(n, bare) if bare else '–'} | "
                    f"{over} | {n / min(loop):,.0f} |")
    table = ("| checkout | Lightning samples/s (best / median batch) | bare samples/s | "
             "framework overhead (best / median) | whole loop incl. data, best |\n"
             "|---|---|---|---|---|\n" + "\n".join(rows))
    ratio = ""
    if args.against:
        a, b = lightning[roots[0]], lightning[roots[1]]
        ratio = (f"\n\nThis checkout / {checkout_label(roots[1])}, through Lightning: "
                 f"{min(b) / min(a):.2f}x (best batch), "
                 f"{statistics.median(b) / statistics.median(a):.2f}x (median batch).")
    clock = ("process CPU time, one torch thread" if args.clock == "cpu"
             else f"wall clock, {runs[ROOT][0]['threads']} torch thread(s)")
    body = (f"Machine: {machine()}; {load_before} at the start, {load()} at the end. "
            f"Clock: {clock}. `experiment=samplernn`, trainer.precision={args.precision}"
            f"{', ' + ' '.join(args.override) if args.override else ''}; "
            f"{args.rounds} worker runs per checkout, alternating, each timing "
            f"{args.batches} batches after {args.warmup} warm-up.\n\n"
            f"    python bench/bench_samplernn_train.py {' '.join(sys.argv[1:])}\n\n"
            + table + ratio)
    print(body)
    if args.write:
        write_section(f"SampleRNN training, experiment=samplernn ({args.precision})", body)


if __name__ == "__main__":
    main()
