"""Split planning: which pieces of which corpus files make train, val and test.

Torch-free, so `explore.py` draws the splits exactly as training does without
building a datamodule. `split_by=time` cuts every file by `data.splits`;
`split_by=file` sends whole files to splits (seeded by `data.split_seed`, or listed in a
manifest's split column or `data.file_splits`).

A checkpoint's record (`recorded`, its `DataState.meta["corpus"]`) fixes the plan of a
resumed run or of generation: its files keep their splits whatever the seed or the file
order says now, so held-out files stay held out; a file it does not know joins train
(val and test stay exactly the checkpoint's), and a file it knows that is missing or
changed length is refused.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from audiolstm.data.sources import Corpus
from audiolstm.data.splits import (
    SPLITS,
    Piece,
    SplitPlan,
    assign_files,
    split_by_file,
    split_by_time,
)
from audiolstm.errors import UserError

log = logging.getLogger(__name__)


def plan_splits(corpus: Corpus, d: Mapping[str, Any],
                recorded: Mapping[str, Any] | None = None) -> SplitPlan:
    """Which pieces of which files make each split (`data.split_by`, `data.splits`, ...).

    `recorded` is a checkpoint's corpus record: its files keep the splits they had in
    training (see the module docstring).
    """
    recorded = recorded or {}
    ratios = tuple(float(r) for r in d["splits"])
    bounds = [(f.start, f.end) for f in corpus.files]
    files = tuple((f.name, f.path, f.start, f.end, f.rate, f.channels) for f in corpus.files)
    skipped = tuple({"name": s.name, "path": s.path, "reason": s.reason}
                    for s in corpus.skipped)
    listed_column = any(s is not None for s in corpus.listed_splits)
    new = _check_recorded(corpus, d, recorded) if recorded.get("files") else []
    if d["split_by"] == "time":
        if listed_column:
            raise UserError(f"{corpus.origin}: the manifest assigns files to splits (its "
                            "split column); set data.split_by=file to use it")
        pieces = split_by_time(bounds, ratios)
        if new:  # whole to train: val and test stay the checkpoint's
            fresh = set(new)
            pieces = {s: tuple(p for p in ps if p.file not in fresh) for s, ps in pieces.items()}
            pieces["train"] = tuple(sorted([*pieces["train"], *(Piece(i, *bounds[i])
                                                                for i in new)],
                                           key=lambda p: p.start))
        return SplitPlan("time", ratios, files, pieces, skipped=skipped)
    n = len(corpus.files)
    if n < len(SPLITS):
        raise UserError(f"{corpus.origin}: data.split_by=file needs at least {len(SPLITS)} "
                        f"files (one per split: {', '.join(SPLITS)}); it has {n}")
    if recorded.get("files"):  # restored from a checkpoint: its files keep their splits
        split_of = {r["name"]: r["split"] for r in recorded["files"]}
        assignment = [split_of.get(f.name, "train") for f in corpus.files]
        listed, seed = bool(recorded.get("listed")), recorded.get("seed")
    elif any((d.get("file_splits") or {}).values()):
        assignment, listed, seed = _listed_assignment(corpus, d["file_splits"]), True, None
    elif listed_column:
        assignment, listed, seed = [str(s) for s in corpus.listed_splits], True, None
    else:
        seed = int(d["split_seed"])
        assignment, listed = assign_files([f.num_samples for f in corpus.files], ratios,
                                          seed), False
    for s in SPLITS:
        if s not in assignment:
            raise UserError(f"{corpus.origin}: no file is assigned to the {s} split "
                            "(data.split_by=file with listed splits)")
    return SplitPlan("file", ratios, files, split_by_file(bounds, assignment),
                     seed=seed, listed=listed,
                     skipped=skipped)


def _check_recorded(corpus: Corpus, d: Mapping[str, Any],
                    recorded: Mapping[str, Any]) -> list[int]:
    """The checkpoint's files must all be here with their lengths; returns the new ones.

    A missing or changed file would silently change the splits the model was trained
    and validated on, so it is refused in one line; a new file joins train (warned).
    """
    if recorded.get("split_by", d["split_by"]) != d["split_by"]:
        raise UserError(f"data.split_by={d['split_by']}: the checkpoint's corpus was split "
                        f"by {recorded['split_by']}")
    sr = corpus.sample_rate
    here = {f.name: f for f in corpus.files}
    for r in recorded["files"]:
        f = here.get(r["name"])
        if f is None:
            raise UserError(f"{corpus.origin}: {r['name']} is in the checkpoint's corpus "
                            f"({r['split']} split) but not here; a resumed run keeps its data")
        if f.num_samples != r["end"] - r["start"]:
            raise UserError(f"{corpus.origin}: {r['name']} lasts {f.num_samples / sr:.3f} s, "
                            f"{(r['end'] - r['start']) / sr:.3f} s in the checkpoint's corpus; "
                            "a resumed run keeps its data")
    known = {r["name"] for r in recorded["files"]}
    new = [i for i, f in enumerate(corpus.files) if f.name not in known]
    if new:
        log.warning("%d file(s) were not in the checkpoint's corpus (first: %s); they join "
                    "the train split, val and test stay the checkpoint's", len(new),
                    corpus.files[new[0]].name)
    return new


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
