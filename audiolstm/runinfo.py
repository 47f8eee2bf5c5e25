"""Reading and writing what a run leaves in its directory.

A run directory holds `.hydra/config.yaml` (resolved config), `metrics.csv`
(Lightning's CSVLogger: one row per logging event, columns per metric),
`summary.json`, `checkpoints/` and `samples/`. Train writes these; report and
generate read them.

`SUMMARY_FIELDS` is the one schema of summary.json's result fields: training copies
the logged metrics it names, the sample-generation callback the sample metrics it
names, and the report derives its table and CSV columns from it. A new metric is one
line here.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal


@dataclass(frozen=True)
class SummaryField:
    """One result key of summary.json: where its value comes from, how the report shows it."""

    key: str
    #: report table header; None keeps it out of the table (still in the CSV)
    header: str | None = None
    #: logged metric copied into the summary when training ends (e.g. "test/mse")
    metric: str | None = None
    #: taken from the last sample the SampleGeneration callback generated
    sample: bool = False
    #: "splits"/"split_durations": a {train, val, test} mapping of counts/seconds
    fmt: Literal["num", "int", "params", "duration", "text", "splits",
                 "split_durations"] = "num"
    #: a table column even when no run has a value
    always: bool = False
    #: "min" or "max": the report can rank runs by this field (`report.py --sort KEY`)
    better: Literal["min", "max"] | None = None


SUMMARY_FIELDS: tuple[SummaryField, ...] = (
    SummaryField("params", "params", fmt="params", always=True),
    SummaryField("best_val_loss", "best val loss", always=True, better="min"),
    SummaryField("test_loss", "test loss", metric="test/loss", always=True, better="min"),
    SummaryField("test_mse", "test MSE", metric="test/mse"),
    SummaryField("test_mse_zero", metric="test/mse_zero"),
    SummaryField("test_mse_persistence", metric="test/mse_persistence"),
    SummaryField("test_mse_ridge", metric="test/mse_ridge"),
    SummaryField("test_rel_zero", "test / zero", metric="test/rel_zero"),
    SummaryField("test_rel_persistence", "test / persistence", metric="test/rel_persistence"),
    SummaryField("test_rel_ridge", "test / ridge", metric="test/rel_ridge"),
    # −log2 P per sample of the original-scale audio on 256 linear levels over [-1, 1]
    # (evaluation/likelihood.py, GRID_NAME; MSE models: Gaussian-equivalent)
    SummaryField("test_bits_per_sample", "bits / sample (linear256[-1,1])",
                 metric="test/bits_per_sample", better="min"),
    # "likelihood" (the model's own) or "Gaussian-equivalent" (MSE models)
    SummaryField("bits_kind", "bits kind", fmt="text"),
    SummaryField("test_bits_per_sample_ridge", "ridge bits / sample",
                 metric="test/bits_per_sample_ridge"),
    SummaryField("test_bits_per_sample_zero", metric="test/bits_per_sample_zero"),
    SummaryField("test_bits_per_sample_persistence", metric="test/bits_per_sample_persistence"),
    # SampleRNN's default own grid (its loss in bits), beside the canonical number
    SummaryField("test_bits_per_sample_mulaw256", metric="test/bits_per_sample_mulaw256"),
    SummaryField("bits_grid", fmt="text"),
    SummaryField("tick_score", "tick score", sample=True),
    SummaryField("rms_ratio", "RMS ratio", sample=True),
    SummaryField("rms_ratio_2s", "RMS 2 s", sample=True),
    SummaryField("rms_ratio_5s", "RMS 5 s", sample=True),
    SummaryField("rms_ratio_10s", "RMS 10 s", sample=True),
    SummaryField("log_spectral_distance_db", "log-spectral dist. (dB)", sample=True),
    SummaryField("frame_correlation", "frame corr.", sample=True),
    SummaryField("frame_rate_energy_fraction", "energy at frame rate", sample=True),
    # the last sample against the val split (evaluation/audio_score.py): 1 = real audio,
    # 0 = noise shaped like it; its FD and the flags' numbers beside it
    SummaryField("audio_score", "audio score", sample=True, better="max"),
    SummaryField("audio_fd", sample=True),
    SummaryField("audio_flatness_db", "flatness dB", sample=True),
    SummaryField("audio_flatness_ref_db", "val flatness dB", sample=True),
    SummaryField("audio_silent_seconds", "silent s", sample=True, fmt="int"),
    SummaryField("audio_rms_min", "RMS/s min", sample=True),
    SummaryField("audio_rms_max", "RMS/s max", sample=True),
    SummaryField("audio_dc_offset", sample=True),
    SummaryField("audio_loop_corr", "loop corr.", sample=True),
    SummaryField("audio_partials", "held partials", sample=True),
    SummaryField("audio_flags", "audio flags", sample=True, fmt="text"),
    # the best-scoring sample of the run (callbacks.sample_generation.keep_best_audio=true
    # also keeps its weights: ckpt_best_audio, beside ckpt_best, the best val loss)
    SummaryField("best_audio_score", "best audio score", better="max"),
    SummaryField("best_audio_epoch", "best audio epoch", fmt="int"),
    SummaryField("ckpt_best", fmt="text"),
    SummaryField("ckpt_best_audio", fmt="text"),
    # the data per split (AudioDataModule.split_summary): examples, files, seconds
    SummaryField("examples", "examples train/val/test", fmt="splits"),
    SummaryField("files", "files train/val/test", fmt="splits"),
    SummaryField("seconds", "audio train/val/test", fmt="split_durations"),
    SummaryField("epochs", "epochs", fmt="int", always=True),
    SummaryField("train_seconds", "train time", fmt="duration", always=True),
    # the device(s) the run was given (hydra/launcher=gpus pins each job; SLURM sets it too)
    SummaryField("cuda_visible_devices", "GPU", fmt="text"),
    # wall-clock start and end (ISO 8601): which runs of a parallel sweep overlapped
    SummaryField("started_at", fmt="text"),
    SummaryField("finished_at", fmt="text"),
)

#: metric name -> summary key, for the fields copied from logged metrics
METRIC_FIELDS = {f.metric: f.key for f in SUMMARY_FIELDS if f.metric}
#: summary keys taken from the last generated sample
SAMPLE_FIELDS = tuple(f.key for f in SUMMARY_FIELDS if f.sample)
#: summary keys the report can rank by, and which way is better
RANKABLE = {f.key: f.better for f in SUMMARY_FIELDS if f.better}


def now_iso() -> str:
    """Local time with its UTC offset, to the millisecond: summary.json's timestamps."""
    return datetime.now().astimezone().isoformat(timespec="milliseconds")


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
