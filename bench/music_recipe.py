"""Judge a music checkpoint as issue 22 asks: 20 s continuations from held-out seeds.

    python bench/music_recipe.py CKPT [CKPT ...] [--split test] [--seeds 4]
                                 [--temperature 1.0] [--top-p 1.0] [--candidates 1]
                                 [--rank likelihood] [--out DIR] [--write]

Runs `generate.py` once per seed (`seed.split`, a random start drawn by `seed.seed` = 0 ..
seeds - 1; the score's reference is the same split: `reference_split`) and prints one row
per continuation against the recipe's four targets:

- no silent second (`audio_silent_seconds` = 0),
- every second's RMS within 0.3-3 x the reference's median second (`audio_rms_per_second`),
- median spectral flatness within 6 dB of the reference's (`audio_flatness_db`),
- the normalised score >= 0.5 (`audio_score`: 1 = as real as held-out audio, 0 = shaped noise).

Given several checkpoints (`checkpoints/sampled/*.ckpt` of a run with
`callbacks.sample_generation.keep_sampled=true`, as `experiment=music` does), it judges each
on the same seeds and ranks them: most seeds meeting all four targets, then fewer flags
per seed, then less noise excess, then the median score (`AudioScore.rank_key` over 4 seeds
instead of the training-time check's one sample). Choose with `--split val`, then judge
the chosen one alone with `--split test`.

Why a script and not a sweep: the generation settings (temperature, top_p, candidates) are
chosen on *validation* seeds (`--split val`) and only then reported on test seeds, so the
test tracks judge the recipe without having chosen it. Each continuation's wav/png/json stay
in `--out` (the README's spectrograms come from there).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import RESULTS, load, machine  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
#: the recipe's targets (issue 22, item 5)
RMS_LOW, RMS_HIGH, FLATNESS_DB, MIN_SCORE = 0.3, 3.0, 6.0, 0.5
#: what `--rank score` ranks candidates against: never the split that judges them
RANK_SPLIT = {"val": "train", "test": "val"}


def generate(ckpt: Path, out: Path, split: str, seed: int, args: argparse.Namespace) -> dict:
    """One `generate.py` run; its generated.json."""
    run_dir = out / f"{split}_seed{seed}"
    cmd = [sys.executable, "generate.py", f"ckpt_path={ckpt}", f"seconds={args.seconds}",
           f"seed.split={split}", f"seed.seed={seed}", f"seed.seconds={args.seed_seconds}",
           f"temperature={args.temperature}", f"top_p={args.top_p}",
           f"candidates={args.candidates}", "progress=false", "score=true",
           f"reference_split={split}",
           f"hydra.run.dir={run_dir}"]
    if args.candidates > 1:
        cmd.append(f"rank={args.rank}")
    if args.candidates > 1 and args.rank == "score":  # never ranked by the split judged
        cmd.append(f"rank_reference_split={RANK_SPLIT[split]}")
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:]
        raise SystemExit(f"generate.py failed for seed {seed}: {' '.join(tail)}")
    return json.loads((run_dir / "generated.json").read_text())


def row(seed: int, metrics: dict) -> tuple[str, bool]:
    """A markdown row and whether all four targets are met."""
    rms = metrics["audio_rms_per_second"]
    silent = metrics["audio_silent_seconds"]
    flat, ref = metrics["audio_flatness_db"], metrics["audio_flatness_ref_db"]
    score = metrics["audio_score"]
    ok = (silent == 0 and all(RMS_LOW <= r <= RMS_HIGH for r in rms)
          and abs(flat - ref) <= FLATNESS_DB and score >= MIN_SCORE)
    partials = (f"{metrics.get('audio_partials', float('nan')):.2f} "
                f"({metrics.get('audio_partials_ref', float('nan')):.2f})")
    return (f"| {seed} | {score:.2f} | {flat:.1f} ({ref:.1f}) | {silent} | "
            f"{min(rms):.2f}-{max(rms):.2f} | {metrics.get('audio_dc_offset', float('nan')):.2f} | "
            f"{partials} | "
            f"{metrics['audio_flags'] or 'none'} | {'yes' if ok else 'no'} |"), ok


def judge(ckpt: Path, args: argparse.Namespace) -> tuple[list[str], tuple]:
    """One checkpoint on `args.seeds` seeds: its table's lines and its rank key (higher
    is better: seeds meeting all four, fewer flags, less noise excess, median score)."""
    ranked = f"_{args.rank}" if args.candidates > 1 else ""
    out = args.out / f"T{args.temperature}_p{args.top_p}_k{args.candidates}{ranked}"
    if len(args.ckpt) > 1:  # one folder per checkpoint
        out = out / ckpt.stem
    lines = [f"`{ckpt}`, {args.split} seeds 0-{args.seeds - 1}, {args.seconds:g} s each, "
             f"temperature {args.temperature}, top_p {args.top_p}, candidates "
             f"{args.candidates}{ranked.replace('_', ' ranked by ')}; {machine()}; {load()}",
             "",
             "| seed | score | flatness dB (reference) | silent s | RMS per s / median | "
             "DC / std | partials / frame (reference) | flags | all four met |",
             "|---|---|---|---|---|---|---|---|---|"]
    scores, flags, excess, met = [], [], [], 0
    for seed in range(args.seeds):
        metrics = generate(ckpt.resolve(), out, args.split, seed, args)["metrics"]
        text, ok = row(seed, metrics)
        lines.append(text)
        scores.append(metrics["audio_score"])
        flags.append(metrics["audio_flag_count"])
        excess.append(metrics.get("audio_noise_excess_db", 0.0))
        met += ok
        print(text, flush=True)
    median = statistics.median(scores)
    lines += ["", f"median score {median:.2f}; all four targets met by "
              f"{met} of {args.seeds}; files in {out}"]
    print("\n".join(lines), flush=True)
    return lines, (met, -statistics.mean(flags), -statistics.mean(excess), median)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("ckpt", type=Path, nargs="+",
                   help="one checkpoint, or several to rank on the same seeds")
    p.add_argument("--split", default="test", choices=["val", "test"])
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--seed-seconds", type=float, default=2.0)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--candidates", type=int, default=1)
    p.add_argument("--rank", default="likelihood", choices=["likelihood", "score"],
                   help="how candidates are ranked; score: against the train split for "
                        "--split val, the val split for --split test")
    p.add_argument("--out", type=Path, default=ROOT / "outputs" / "music_recipe")
    p.add_argument("--write", action="store_true", help="append the table to bench/RESULTS.md")
    args = p.parse_args()
    for ckpt in args.ckpt:
        if not ckpt.is_file():
            raise SystemExit(f"{ckpt}: no such checkpoint")
    lines, keys = [], {}
    for ckpt in args.ckpt:
        table, keys[ckpt] = judge(ckpt, args)
        lines += [*table, ""]
    if len(args.ckpt) > 1:
        order = sorted(args.ckpt, key=lambda c: keys[c], reverse=True)
        lines += ["| checkpoint | seeds meeting all four | flags per seed | noise excess dB "
                  "| median score |", "|---|---|---|---|---|"]
        lines += [f"| `{c.name}` | {keys[c][0]} of {args.seeds} | {-keys[c][1]:.2f} | "
                  f"{-keys[c][2]:.1f} | {keys[c][3]:.2f} |" for c in order]
        lines += ["", f"chosen on {args.split}: `{order[0]}`"]
        print("\n".join(lines[-len(order) - 4:]))
    if args.write:
        with RESULTS.open("a") as f:
            f.write("\n#### music_recipe.py\n\n" + "\n".join(lines).rstrip() + "\n")


if __name__ == "__main__":
    main()
