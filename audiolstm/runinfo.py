"""Reading and writing what a run leaves in its directory.

A run directory holds `.hydra/config.yaml` (resolved config), `metrics.csv`
(Lightning's CSVLogger: one row per logging event, columns per metric),
`summary.json`, `checkpoints/` and `samples/`. Train writes these; report and
generate read them.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any


def read_json(path: str | Path) -> dict[str, Any]:
    with open(path) as f:
        return json.load(f)


def read_metrics(path: str | Path) -> dict[str, list[tuple[int, float]]]:
    """metrics.csv -> {metric: [(epoch, value), ...]} keeping the rows that carry the metric."""
    series: dict[str, list[tuple[int, float]]] = {}
    path = Path(path)
    if not path.exists():
        return series
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            epoch = row.get("epoch")
            if epoch in (None, ""):
                continue
            for key, value in row.items():
                if key in ("epoch", "step") or value in (None, ""):
                    continue
                series.setdefault(key, []).append((int(float(epoch)), float(value)))
    return series


def epoch_curves(path: str | Path) -> dict[str, tuple[list[float], list[float]]]:
    """Per-epoch train and val loss curves (x = epoch number starting at 1)."""
    metrics = read_metrics(path)
    curves = {}
    for name, key in (("train/loss", "train/loss_epoch"), ("val/loss", "val/loss")):
        points = metrics.get(key, [])
        if points:
            curves[name] = ([e + 1 for e, _ in points], [v for _, v in points])
    return curves
