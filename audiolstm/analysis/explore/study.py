"""The study as one call: `explore_signal` on a signal, `run(cfg)` for `python explore.py`.

Statistics (one streamed pass per split), the envelope and pulsation periods, lead-in
and fade-out, what each normalisation scheme makes of each split, the figures and the
reports, in that order, each step timed (`timings_seconds`). With several files (a
corpus) each file is described first (`corpus.file_table`), then the same study runs on
the whole.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from audiolstm.analysis.explore.corpus import SILENT_SHARE_DEFINITION, file_table
from audiolstm.analysis.explore.formatting import clock
from audiolstm.analysis.explore.options import ExploreOptions
from audiolstm.analysis.explore.panels import (
    envelope_figures,
    figures_freed,
    files_figure,
    freed,
    spectrogram_figure,
    waveform_figures,
)
from audiolstm.analysis.explore.periods import (
    PERIOD_DEFINITION,
    fade_out,
    pulsation_period,
    regional_periods,
    silence_extent,
)
from audiolstm.analysis.explore.render import write_reports
from audiolstm.analysis.explore.statistics import (
    Moments,
    SplitRanges,
    contiguous_ranges,
    merged,
    normalization_table,
    rms_envelope,
    split_statistics,
)
from audiolstm.atomic import atomic_write
from audiolstm.data.normalize import SCHEMES as NORM_SCHEMES
from audiolstm.data.planning import plan_splits
from audiolstm.data.settings import data_config, validate_data
from audiolstm.data.silence import SilenceSettings, silence_index
from audiolstm.data.sources import corpus_from_config
from audiolstm.data.splits import SPLITS, SplitPlan

log = logging.getLogger(__name__)

#: How the splits of a corpus are drawn today (what training does with `data=folder`).
SPLIT_RULES = {
    "time": "every file is split contiguously by data.splits (data.split_by=time)",
    "file": "whole files go to train/val/test (data.split_by=file)",
}
#: `data` keys that choose which files make a corpus (passed on to the source if present).
#: Split boundaries marked on the envelope at most (more would hide it: see files.png).
MAX_SPLIT_MARKS = 6


def split_marks(ranges: SplitRanges, sample_rate: int) -> dict[str, float]:
    """Where one split gives way to another, "train|val" -> seconds (for the envelope plot).

    Empty when there are more than MAX_SPLIT_MARKS such places (splits cut inside every
    file of a corpus): the per-file table and figure show those.
    """
    spans = sorted((a, b, name) for name, rs in ranges.items() for a, b in rs)
    changes = [(f"{left}|{right}", end) for (_, end, left), (_, _, right)
               in zip(spans, spans[1:], strict=False) if left != right]
    if len(changes) > MAX_SPLIT_MARKS:
        return {}
    marks: dict[str, float] = {}
    for label, end in changes:
        k = sum(1 for m in marks if m.split(" ")[0] == label)
        marks[label if k == 0 else f"{label} ({k + 1})"] = end / sample_rate
    return marks


def _split_rows(ranges: SplitRanges, stats: Mapping[str, Moments],
                sr: int) -> dict[str, dict[str, Any]]:
    """Each split's place (first start, last end; every range if several) and statistics."""
    rows = {}
    for name in SPLITS:
        rs = list(ranges.get(name, ()))
        row: dict[str, Any] = {}
        if rs:
            row = {"start_seconds": rs[0][0] / sr, "end_seconds": rs[-1][1] / sr}
            if len(rs) > 1:
                row["ranges_seconds"] = [[a / sr, b / sr] for a, b in rs]
        rows[name] = {**row, **stats[name].as_dict(sr)}
    return rows


def explore_signal(
    signal: np.ndarray,
    sample_rate: int,
    meta: Mapping[str, Any],
    opts: ExploreOptions,
    out_dir: str | os.PathLike[str],
    ranges: SplitRanges | None = None,
    split_rule: str = SPLIT_RULES["time"],
    training_silence: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the whole study on a (memory-mapped) signal and write every output to `out_dir`.

    `meta["boundaries"]` ((file name, first sample) pairs) with more than one file makes
    it a corpus: a per-file table and figure come first. `ranges` is each split's sample
    ranges (default: `opts.splits` over the whole signal, as training splits it today)
    and `split_rule` says in words how they were drawn. `training_silence`
    (`training_silence()`) is what silence-aware data leaves out of training, per split
    and per file, when `data.max_silent_fraction` is set.
    """
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sr = int(sample_rate)
    n = int(signal.shape[0])
    timings: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        now = time.perf_counter()
        timings[name] = now - since
        return now

    # Statistics: one pass per split, merged for the whole file.
    if ranges is None:
        ranges = contiguous_ranges(n, opts.splits)
    stats = split_statistics(signal, ranges)
    whole = merged(stats)
    t = lap("statistics", t0)

    # A corpus: each file's duration, level, silence share and split.
    threshold = opts.silence_threshold * whole.rms if whole.n else math.nan
    sil_win = opts.silence_window(sr)
    boundaries = [(str(name), int(start)) for name, start in meta.get("boundaries", [])]
    files_table = None
    if len(boundaries) > 1:
        files_table = file_table(signal, sr, boundaries, ranges, threshold, sil_win)
        t = lap("corpus_files", t)

    # Envelope and pulsation.
    env_win = max(1, round(sr / opts.envelope_hz))
    env_rate = sr / env_win
    env = rms_envelope(signal, env_win)
    atomic_write(out / "envelope.npy", lambda f: np.save(f, env.astype(np.float32)))
    period_args = (opts.pulse_min_seconds, opts.pulse_max_seconds, opts.pulse_peak_fraction)
    overall = pulsation_period(env, env_rate, *period_args)
    regions = regional_periods(env, env_rate, opts.region_seconds, *period_args)
    t = lap("envelope_and_periods", t)

    # Lead-in, end of sound, fade-out.
    silence = silence_extent(signal, sr, threshold, sil_win)
    fade = fade_out(signal, sr, silence, overall, regions, opts.fade_window_seconds)
    t = lap("silence_and_fade", t)

    # Normalisation schemes fitted on train (from the statistics: no pass over the data).
    norm = normalization_table(NORM_SCHEMES, stats)
    t = lap("normalization", t)

    # Figures (each freed once saved, so memory stays bounded).
    with figures_freed():
        files, panel_rows, skipped = waveform_figures(signal, sr, opts.max_panel_samples, out)
        t = lap("waveform_plots", t)
        spec_files, spectrogram = spectrogram_figure(signal, sr, opts.spectrogram_seconds, out)
        files += spec_files
        files += envelope_figures(env, env_rate, env_win / sr, split_marks(ranges, sr),
                                  overall, regions, opts, n / sr, out)
        if files_table:
            freed(files_figure(
                out / "files.png", files_table,
                title=f"{len(files_table)} files, {clock(n / sr)} in all"))
            files.append("files.png")
    t = lap("other_plots", t)

    result: dict[str, Any] = {
        "source": {**{k: v for k, v in meta.items() if k != "boundaries"},
                   "boundaries": [list(b) for b in meta.get("boundaries", [])],
                   "sample_rate": sr, "num_samples": n, "duration_seconds": n / sr},
        "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(opts).items()},
        "panels": panel_rows,
        "skipped_panels": skipped,
        "spectrogram": spectrogram,
        "envelope": {"rate_hz": env_rate, "window_samples": env_win, "values": int(env.size),
                     "file": "envelope.npy"},
        "silence": silence,
        "fade_out": fade,
        "pulsation": {"definition": PERIOD_DEFINITION,
                      "overall": {"period_seconds": overall.period_seconds,
                                  "per_minute": overall.per_minute, "strength": overall.strength},
                      "regions": regions},
        "splits": _split_rows(ranges, stats, sr),
        "whole": whole.as_dict(sr),
        "normalization": norm,
    }
    if files_table is not None:
        result["corpus"] = {"files": [f.as_dict() for f in files_table], "figure": "files.png",
                            "silence_definition": SILENT_SHARE_DEFINITION,
                            "split_rule": split_rule}
    if training_silence is not None:
        result["training_silence"] = dict(training_silence)
    timings["total"] = time.perf_counter() - t0
    result["timings_seconds"] = timings
    files += ["envelope.npy", "explore.json", "explore.md", "explore.html"]
    result["files"] = files
    write_reports(result, out)
    return result


def load(data: DictConfig, opts: ExploreOptions
         ) -> tuple[np.ndarray, dict, SplitRanges, str, dict[str, Any] | None]:
    """The configured source as training sees it: (signal, meta, split ranges, split rule,
    what silence-aware data leaves out of training or None).

    The signal is the cached, memory-mapped one training reads; its meta lists the
    files' boundaries; the splits are drawn as training draws them.
    """
    settings = dict(vars(data_config(OmegaConf.to_container(data, resolve=True))))
    corpus = corpus_from_config(settings)
    plan = plan_splits(corpus, settings)
    ranges = {s: [(p.start, p.end) for p in plan.pieces[s]] for s in SPLITS}
    silence = training_silence(corpus.signal, plan, settings, [f.name for f in corpus.files])
    return corpus.signal, corpus.meta, ranges, SPLIT_RULES[plan.split_by], silence


def training_silence(signal: np.ndarray, plan: SplitPlan, settings: Mapping[str, Any],
                     names: list[str]) -> dict[str, Any] | None:
    """What `data.silence_db` / `data.max_silent_fraction` leave out of training, as the
    training run computes it (its splits.json "silence" record, and per file); None if off.
    """
    if SilenceSettings.from_config(settings) is None:
        return None
    # the datamodule owns how each split is cut into examples (sliding windows or
    # random crops); building one reads no audio (Lightning is imported only here)
    from audiolstm.data.datamodule import AudioDataModule

    spec_for = AudioDataModule(settings, {}, {}).spec_for
    index = silence_index(signal, plan, settings, spec_for)
    assert index is not None
    return {**index.record(),
            "files": [{"index": i + 1, "name": name, "splits": index.file_record(i)}
                      for i, name in enumerate(names)]}


def run(cfg: DictConfig) -> dict[str, Any]:
    """`python explore.py`: validate, load (cached, memory-mapped), study, write, say where."""
    opts = ExploreOptions.from_cfg(cfg)
    data = cfg.data
    validate_data(data)  # same checks and messages as training
    signal, meta, ranges, rule, silence = load(data, opts)
    out = Path(cfg.paths.output_dir)
    log.debug("exploring %d samples (%s) into %s", signal.shape[0], meta.get("path"), out)
    result = explore_signal(signal, int(data.sample_rate), meta, opts, out, ranges, rule,
                            silence)
    print(f"explore: {len(result['files'])} files in {out} (open {out / 'explore.html'})",
          flush=True)
    return result
