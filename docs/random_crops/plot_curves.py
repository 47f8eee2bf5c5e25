"""Learning curves by optimiser step (not by epoch: the two regimes' epochs differ in size).

    python docs/random_crops/plot_curves.py OUT.png LABEL=RUN_DIR [LABEL=RUN_DIR ...]

Reads each run's metrics.csv: train/loss_step (mean of 3 logged points, dashed) and
val/loss and val/bits_per_sample (solid, at every validation).
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def series(rows: list[dict[str, str]], key: str) -> tuple[list[int], list[float]]:
    pts = [(int(r["step"]), float(r[key])) for r in rows if r.get(key)]
    return [p[0] for p in pts], [p[1] for p in pts]


def main() -> None:
    if len(sys.argv) < 3 or any("=" not in a for a in sys.argv[2:]):
        sys.exit("usage: plot_curves.py OUT.png LABEL=RUN_DIR [LABEL=RUN_DIR ...]")
    out, runs = Path(sys.argv[1]), [a.rsplit("=", 1) for a in sys.argv[2:]]
    for _, run in runs:
        if not (Path(run) / "metrics.csv").is_file():
            sys.exit(f"error: {run}: no metrics.csv (not a training run directory)")
    fig, (ax_loss, ax_bits) = plt.subplots(1, 2, figsize=(11, 4))
    for (label, run), colour in zip(runs, ("C0", "C1", "C2", "C3"), strict=False):
        with open(Path(run) / "metrics.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        steps, loss = series(rows, "train/loss_step")
        k = 3  # logged every 10 steps
        smooth = [sum(loss[i : i + k]) / len(loss[i : i + k]) for i in range(0, len(loss), k)]
        ax_loss.plot(steps[::k], smooth, "--", color=colour, label=f"{label}: train (mean of {k})")
        ax_loss.plot(*series(rows, "val/loss"), "o-", color=colour, label=f"{label}: validation")
        ax_bits.plot(*series(rows, "val/bits_per_sample"), "o-", color=colour, label=label)
    ax_loss.set(xlabel="optimiser step", ylabel="MSE (normalised units)", title="loss")
    ax_bits.set(xlabel="optimiser step", ylabel="bits / sample (linear256[-1,1])",
                title="validation bits per sample")
    for ax in (ax_loss, ax_bits):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)


if __name__ == "__main__":
    main()
