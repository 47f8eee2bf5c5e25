"""The data layer's settings: schemas Hydra type-checks, and their semantic validation.

`DataConfig`, `NormConfig` and `ReprConfig` are the `data`, `norm` and `repr` config
groups (registered by `audiolstm.config`); `validate_data` checks meaning (positive sizes,
ratios summing to one) and raises one `UserError` line naming the field, before any
audio is read. The lists of choices live with the code that implements them
(`SOURCES` here, `normalize.SCHEMES`, `representation.KINDS`, `splits.SPLITS`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

from audiolstm.data.normalize import SCHEMES
from audiolstm.data.representation import KINDS
from audiolstm.data.sources import BAD_FILE_POLICIES, SOURCES
from audiolstm.data.splits import SPLIT_BY, SPLITS
from audiolstm.errors import UserError, one_of, positive_int


@dataclass
class DataConfig:
    """Where the audio comes from and how it is cut into examples (README, "Data semantics")."""

    source: str = "synthetic"
    path: str | None = None
    # data=folder: search subfolders too
    recursive: bool = False
    sample_rate: int = 16000
    synth_seconds: float = 600.0
    synth_seed: int = 0
    splits: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])
    # time: every file cut contiguously by `splits`; file: whole files to splits (held out)
    split_by: str = "time"
    # split_by=file: the seed of the assignment (independent of the training seed)
    split_seed: int = 0
    # split_by=file: files listed per split, e.g. data.file_splits.test=[a.wav,b.wav]
    # data.file_splits.val=[c.wav]; the files not listed go to train
    file_splits: dict[str, list[str]] = field(
        default_factory=lambda: {"train": [], "val": [], "test": []})
    # a file that does not decode: error (one line, exit 2) or skip (warn, record)
    on_bad_file: str = "error"
    # processes decoding a corpus (null: min(4, CPU count))
    decode_workers: int | None = None
    x_len: int = 2000
    seq_len: int = 40
    hop: int | None = None
    window_shift: int = 8000
    offsets: list[int] = field(default_factory=lambda: [0])
    eval_window_shift: int | None = None
    # random-crop epochs: each training epoch is this many examples drawn uniformly from
    # every valid start (any sample, never across a file boundary); null: the windows
    train_examples_per_epoch: int | None = None
    # silence-aware data (audiolstm/data/silence.py; off unless both are set): training
    # examples with more than max_silent_fraction (0..1) of their samples in silent 50 ms
    # blocks, whose RMS is below silence_db dBFS (< 0; 0 dBFS = full scale, e.g. -60),
    # are never drawn
    silence_db: float | None = None
    max_silent_fraction: float | None = None
    # true: validation and test leave those examples out too (default: every window)
    silence_eval: bool = False
    batch_size: int = 100
    num_workers: int = 0
    pin_memory: bool | None = None
    cache_dir: str = ".cache/audiolstm"


@dataclass
class NormConfig:
    scheme: str = "std"


@dataclass
class ReprConfig:
    kind: str = "time"
    standardize: bool = False


def validate_data(data: Any, key: str = "data") -> None:
    """Semantic checks of the data node; raises UserError naming the field."""
    one_of(data.source, SOURCES, f"{key}.source")
    if data.source in ("wav", "folder", "manifest") and not data.path:
        what = {"wav": "an audio file", "folder": "a folder of audio files",
                "manifest": "a list of audio files, one per line, or a CSV path[,split]"}
        raise UserError(f"{key}.path is required with {key}.source={data.source} "
                        f"({what[data.source]})")
    one_of(data.split_by, SPLIT_BY, f"{key}.split_by")
    one_of(data.on_bad_file, BAD_FILE_POLICIES, f"{key}.on_bad_file")
    positive_int(data.decode_workers, f"{key}.decode_workers", allow_none=True)
    positive_int(data.train_examples_per_epoch, f"{key}.train_examples_per_epoch",
                 allow_none=True)
    if data.file_splits and any(data.file_splits.values()):
        if data.split_by != "file":
            raise UserError(f"{key}.file_splits lists files per split: it needs "
                            f"{key}.split_by=file (it is {data.split_by})")
        for name, files in dict(data.file_splits).items():
            if name not in SPLITS:
                raise UserError(f"{key}.file_splits.{name}: not a split "
                                f"({', '.join(SPLITS)})")
            if isinstance(files, str) or not all(isinstance(f, str) for f in files):
                raise UserError(f"{key}.file_splits.{name} must be a list of file names")
    for name in ("sample_rate", "x_len", "seq_len", "window_shift", "batch_size"):
        positive_int(getattr(data, name), f"{key}.{name}")
    positive_int(data.hop, f"{key}.hop", allow_none=True)
    if data.hop is not None and data.hop > data.x_len:
        raise UserError(f"{key}.hop={data.hop} > {key}.x_len={data.x_len}: frames with gaps "
                        "between them cannot be joined back into audio (generation would "
                        f"play them end to end); use {key}.hop <= {key}.x_len")
    positive_int(data.eval_window_shift, f"{key}.eval_window_shift", allow_none=True)
    if data.train_examples_per_epoch is not None:
        _check_random_crops(data, key)
    if data.synth_seconds <= 0:
        raise UserError(f"{key}.synth_seconds={data.synth_seconds!r} must be > 0")
    if data.num_workers < 0:
        raise UserError(f"{key}.num_workers={data.num_workers!r} must be >= 0")
    offsets = list(data.offsets)
    if not offsets or any(o < 0 for o in offsets):
        raise UserError(f"{key}.offsets={offsets!r} must be a non-empty list of offsets >= 0")
    splits = list(data.splits)
    if len(splits) != 3 or any(r <= 0 for r in splits):
        raise UserError(f"{key}.splits={splits!r} must be three positive ratios (train, val, test)")
    if not math.isclose(sum(splits), 1.0, abs_tol=1e-6):
        raise UserError(f"{key}.splits={splits!r} must sum to 1 (they sum to {sum(splits):g})")
    validate_silence(data, key)


def validate_silence(data: Any, key: str = "data") -> None:
    """silence_db and max_silent_fraction: in range, and set together (one is read only with
    the other); silence_eval only with them."""
    db, frac = data.silence_db, data.max_silent_fraction
    if db is not None and not (_number(db) and db < 0):
        raise UserError(f"{key}.silence_db={db!r} must be a negative level in dBFS (0 dBFS is "
                        "full scale; e.g. -60)")
    if frac is not None and not (_number(frac) and 0 <= frac <= 1):
        raise UserError(f"{key}.max_silent_fraction={frac!r} must be a share in [0, 1] (the "
                        "largest share of an example's samples that may be silent; e.g. 0.5)")
    if frac is not None and db is None:
        raise UserError(f"{key}.max_silent_fraction={frac!r} needs {key}.silence_db (the level "
                        "in dBFS below which a 50 ms block is silent; e.g. -60)")
    if db is not None and frac is None:
        raise UserError(f"{key}.silence_db={db!r} is read only with {key}.max_silent_fraction "
                        "(the largest silent share an example may have; e.g. 0.5)")
    if data.silence_eval and frac is None:
        raise UserError(f"{key}.silence_eval=true is read only with {key}.silence_db and "
                        f"{key}.max_silent_fraction")


def _number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _check_random_crops(data: Any, key: str) -> None:
    """Random-crop epochs draw every start: `window_shift` and `offsets` would not apply.

    They would still space the validation/test windows, a second name for
    `eval_window_shift`; so a non-default value is refused rather than half-used.
    """
    default = DataConfig()
    for name in ("window_shift", "offsets"):
        value, base = getattr(data, name), getattr(default, name)
        if (list(value) if name == "offsets" else value) != base:
            raise UserError(
                f"{key}.{name}={list(value) if name == 'offsets' else value} has no effect with "
                f"random-crop epochs ({key}.train_examples_per_epoch="
                f"{data.train_examples_per_epoch}: training draws from every start); space "
                f"the validation/test windows with {key}.eval_window_shift, and leave "
                f"{key}.{name} at {base}")


def data_config(values: Any, key: str = "data") -> DataConfig:
    """A typed `DataConfig` from a mapping (a checkpoint's, a test's); unknown keys refused."""
    known = {f.name for f in fields(DataConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserError(f"{key}.{unknown[0]}: unknown data setting (known: {', '.join(sorted(known))})")
    cfg = DataConfig(**dict(values))
    validate_data(cfg, key)
    return cfg


def validate_norm(norm: Any, key: str = "norm") -> None:
    one_of(norm.scheme, SCHEMES, f"{key}.scheme")


def validate_repr(rep: Any, key: str = "repr") -> None:
    one_of(rep.kind, KINDS, f"{key}.kind")
