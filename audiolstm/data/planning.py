"""Split planning: which pieces of which corpus files make train, val and test.

Torch-free, so `explore.py` draws the splits exactly as training does without
building a datamodule. `split_by=time` cuts every file by `data.splits`;
`split_by=file` sends whole files to splits (seeded by `data.split_seed`, or listed in a
manifest's split column or `data.file_splits`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from audiolstm.data.sources import Corpus
from audiolstm.data.splits import SPLITS, SplitPlan, assign_files, split_by_file, split_by_time
from audiolstm.errors import UserError

log = logging.getLogger(__name__)


def plan_splits(corpus: Corpus, d: Mapping[str, Any],
                recorded: Mapping[str, Any] | None = None) -> SplitPlan:
    """Which pieces of which files make each split (`data.split_by`, `data.splits`, ...).

    `recorded` is a checkpoint's corpus record: under `split_by=file` its files keep the
    splits they had in training, whatever the seed or the listing says now.
    """
    recorded = recorded or {}
    ratios = tuple(float(r) for r in d["splits"])
    bounds = [(f.start, f.end) for f in corpus.files]
    files = tuple((f.name, f.path, f.start, f.end, f.rate, f.channels) for f in corpus.files)
    skipped = tuple({"name": s.name, "path": s.path, "reason": s.reason}
                    for s in corpus.skipped)
    listed_column = any(s is not None for s in corpus.listed_splits)
    if d["split_by"] == "time":
        if listed_column:
            raise UserError(f"{corpus.origin}: the manifest assigns files to splits (its "
                            "split column); set data.split_by=file to use it")
        return SplitPlan("time", ratios, files, split_by_time(bounds, ratios),
                         skipped=skipped)
    n = len(corpus.files)
    if n < len(SPLITS):
        raise UserError(f"{corpus.origin}: data.split_by=file needs at least {len(SPLITS)} "
                        f"files (one per split: {', '.join(SPLITS)}); it has {n}")
    recorded = {r["name"]: r["split"] for r in recorded.get("files", [])
                if recorded.get("split_by") == "file"}
    if recorded:  # restored from a checkpoint: its files keep their splits
        assignment = [recorded.get(f.name, "train") for f in corpus.files]
        listed = bool(recorded.get("listed"))
        new = [f.name for f in corpus.files if f.name not in recorded]
        if new:
            log.warning("%d files were not in the checkpoint's corpus (first: %s); "
                        "they count as train", len(new), new[0])
    elif any((d.get("file_splits") or {}).values()):
        assignment, listed = _listed_assignment(corpus, d["file_splits"]), True
    elif listed_column:
        assignment, listed = [str(s) for s in corpus.listed_splits], True
    else:
        durations = [f.num_samples for f in corpus.files]
        assignment, listed = assign_files(durations, ratios, int(d["split_seed"])), False
    for s in SPLITS:
        if s not in assignment:
            raise UserError(f"{corpus.origin}: no file is assigned to the {s} split "
                            "(data.split_by=file with listed splits)")
    return SplitPlan("file", ratios, files, split_by_file(bounds, assignment),
                     seed=None if listed else int(d["split_seed"]), listed=listed,
                     skipped=skipped)

def _listed_assignment(corpus: Corpus, file_splits: Mapping[str, Any]) -> list[str]:
    """data.file_splits {split: [names]} -> a split per file (unlisted: train)."""
    index: dict[str, int] = {}
    for i, f in enumerate(corpus.files):
        for alias in (f.name, f.path, Path(f.name).name):
            index.setdefault(alias, i)
    out = ["train"] * len(corpus.files)
    seen: dict[int, str] = {}
    for split, names in file_splits.items():
        for name in names:
            i = index.get(str(name), index.get(str(Path(str(name)).expanduser().resolve())))
            if i is None:
                raise UserError(f"data.file_splits.{split}: {name} is not a file of "
                                f"{corpus.origin}")
            if i in seen and seen[i] != split:
                raise UserError(f"data.file_splits: {name} is listed in both {seen[i]} "
                                f"and {split}")
            seen[i] = split
            out[i] = split
    return out
