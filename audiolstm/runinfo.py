"""Reading and writing what a run leaves in its directory.

A run directory holds `.hydra/config.yaml` (resolved config), `metrics.csv`
(Lightning's CSVLogger: one row per logging event, columns per metric),
`summary.json`, `checkpoints/` and `samples/`. Train writes these; report and
generate read them.
"""

from __future__ import annotations

import csv
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any


def write_json(path: str | Path, data: Any) -> None:
    """Atomic JSON write (temp + rename): readers never see half a file. NaN/inf -> null."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(_json_safe(data), f, indent=2, sort_keys=True)
            f.write("\n")
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _json_safe(x: Any) -> Any:
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if hasattr(x, "item") and getattr(x, "ndim", 1) == 0:
        return _json_safe(x.item())
    return x


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
