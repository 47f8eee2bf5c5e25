"""The study's figures: the seed post's waveform panels, spectrogram, envelope, periods, files.

Which panels a signal has (`select_panels`: first second ... first 2 minutes, the 2nd,
3rd, 5th, 10th, 35th and 100th minute, the 5th and 20th minute from the end, the last
minute; those that fit), each drawn min/max-decimated (`minmax_decimate`) by
`evaluation.plots`, the same drawing code as every other figure of the project. Each
figure is freed once saved (`figures_freed`), so memory stays bounded however many are
drawn; every PNG is written atomically (by `plots`).
"""

from __future__ import annotations

import contextlib
import gc
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.ticker import FuncFormatter, MaxNLocator

from audiolstm.analysis.explore.corpus import FileStats
from audiolstm.analysis.explore.formatting import clock, dbfs, num
from audiolstm.analysis.explore.options import ExploreOptions
from audiolstm.analysis.explore.periods import PeriodEstimate, autocorrelation
from audiolstm.analysis.explore.statistics import CHUNK
from audiolstm.data.splits import SPLITS
from audiolstm.evaluation import plots

# (slug, label, anchor, start, stop): seconds from the start ("head") or the end ("tail").
PANEL_SPECS: tuple[tuple[str, str, str, float, float], ...] = (
    ("first_1s", "first second", "head", 0, 1),
    ("first_5s", "first 5 seconds", "head", 0, 5),
    ("first_10s", "first 10 seconds", "head", 0, 10),
    ("first_30s", "first 30 seconds", "head", 0, 30),
    ("first_1min", "first minute", "head", 0, 60),
    ("first_2min", "first 2 minutes", "head", 0, 120),
    ("minute_2", "2nd minute", "head", 60, 120),
    ("minute_3", "3rd minute", "head", 120, 180),
    ("minute_5", "5th minute", "head", 240, 300),
    ("minute_10", "10th minute", "head", 540, 600),
    ("minute_35", "35th minute", "head", 2040, 2100),
    ("minute_100", "100th minute", "head", 5940, 6000),
    ("minute_5_from_end", "5th minute from the end", "tail", 300, 240),
    ("minute_20_from_end", "20th minute from the end", "tail", 1200, 1140),
    ("last_minute", "last minute", "tail", 60, 0),
)


@dataclass(frozen=True)
class Panel:
    """One waveform excerpt: samples [start, stop) of the signal."""

    index: int
    slug: str
    label: str
    start: int
    stop: int
    sample_rate: int

    @property
    def title(self) -> str:
        sr = self.sample_rate
        return f"{self.label} ({clock(self.start / sr)}–{clock(self.stop / sr)})"

    @property
    def filename(self) -> str:
        return f"{self.index:02d}_{self.slug}.png"


def select_panels(num_samples: int, sample_rate: int) -> tuple[list[Panel], list[dict[str, Any]]]:
    """The seed post's panels that fit in a signal of `num_samples`; the others with a reason.

    "The 5th minute from the end" is [end - 5 min, end - 4 min). A panel is kept only if
    its whole range lies inside the signal; a signal shorter than every panel gets one
    "whole file" panel (index 0) so there is always something to look at.
    """
    sr = int(sample_rate)
    kept: list[Panel] = []
    skipped: list[dict[str, Any]] = []
    for i, (slug, label, anchor, a, b) in enumerate(PANEL_SPECS, start=1):
        if anchor == "head":
            start, stop = round(a * sr), round(b * sr)
        else:
            start, stop = num_samples - round(a * sr), num_samples - round(b * sr)
        if 0 <= start < stop <= num_samples:
            kept.append(Panel(i, slug, label, start, stop, sr))
        else:
            need = max(a, b)
            skipped.append({"index": i, "slug": slug, "label": label,
                            "reason": f"needs {clock(need)} of audio, the file has "
                                      f"{clock(num_samples / sr)}"})
    if not kept and num_samples > 0:
        kept.append(Panel(0, "whole_file", "whole file", 0, num_samples, sr))
    return kept, skipped

def minmax_decimate(
    x: np.ndarray, max_points: int, chunk: int = CHUNK
) -> tuple[np.ndarray, int]:
    """(values, bucket): `x` itself if short, else interleaved (min, max) per bucket.

    Drawn as a line, the interleaved extremes look exactly like the full waveform at
    screen resolution while costing `max_points` values; read in chunks so a long panel
    of a memory-mapped file is never copied whole. `bucket` samples per (min, max) pair;
    1 means the values are the raw samples.
    """
    n = int(x.shape[0])
    if n <= max_points:
        return np.array(x, dtype=np.float32), 1
    bucket = math.ceil(n / max(1, max_points // 2))
    n_buckets = math.ceil(n / bucket)
    out = np.empty(2 * n_buckets, dtype=np.float32)
    step = bucket * max(1, chunk // bucket)
    k = 0
    for a in range(0, n, step):
        c = np.asarray(x[a:min(n, a + step)], dtype=np.float32)
        full = (c.shape[0] // bucket) * bucket
        if full:
            blocks = c[:full].reshape(-1, bucket)
            nb = blocks.shape[0]
            out[2 * k:2 * (k + nb):2] = blocks.min(axis=1)
            out[2 * k + 1:2 * (k + nb):2] = blocks.max(axis=1)
            k += nb
        if full < c.shape[0]:  # the last, partial bucket
            out[2 * k], out[2 * k + 1] = c[full:].min(), c[full:].max()
            k += 1
    return out[: 2 * k], bucket


def panel_rate(sample_rate: int, bucket: int) -> float:
    """Values per second of a (possibly decimated) panel, so its time axis stays true."""
    return float(sample_rate) if bucket == 1 else 2.0 * sample_rate / bucket


@contextlib.contextmanager
def figures_freed() -> Iterator[None]:
    """Free each figure as soon as it is saved: bounded memory however many are drawn.

    A matplotlib figure is a reference cycle holding its renderer (~30 MB while drawing):
    left to the cyclic collector, a dozen of them pile up. A full `gc.collect()` after
    each costs ~0.2 s with torch loaded; freezing the objects that existed before makes
    each collection scan only the new ones (~3 ms).
    """
    frozen = gc.get_freeze_count() == 0
    if frozen:
        gc.freeze()
    try:
        yield
    finally:
        gc.collect()
        if frozen:
            gc.unfreeze()


def freed(path: Path) -> Path:
    """Collect the figure that wrote `path` (see `figures_freed`)."""
    gc.collect()
    return path




def waveform_figures(
    signal: np.ndarray, sr: int, max_points: int, out: Path
) -> tuple[list[str], list[dict[str, Any]], list[dict[str, Any]]]:
    """The seed post's panels: one PNG each plus the grid; (files, panel rows, skipped)."""
    panels, skipped = select_panels(int(signal.shape[0]), sr)
    files: list[str] = []
    rows: list[dict[str, Any]] = []
    grid: list[tuple[str, np.ndarray, float, float]] = []
    for p in panels:
        values, bucket = minmax_decimate(signal[p.start:p.stop], max_points)
        rate = panel_rate(sr, bucket)
        grid.append((p.title, values, p.start / sr, rate))
        rel = f"waveforms/{p.filename}"
        freed(plots.plot_waveform(out / rel, values, rate, p.start / sr, p.title))
        files.append(rel)
        rows.append({"index": p.index, "slug": p.slug, "label": p.label, "title": p.title,
                     "start_seconds": p.start / sr, "end_seconds": p.stop / sr, "file": rel,
                     "points": int(values.shape[0]), "samples_per_minmax_pair": bucket})
    if grid:
        freed(plots.plot_waveform_grid(out / "waveforms.png", grid, sr))
        files.insert(0, "waveforms.png")
    return files, rows, skipped


def spectrogram_figure(
    signal: np.ndarray, sr: int, seconds: float, out: Path
) -> tuple[list[str], dict[str, float]]:
    """spectrogram.png of `seconds` from the middle of the file; (files, its span)."""
    n = int(signal.shape[0])
    spec_len = min(n, max(1, round(seconds * sr)))
    spec_start = max(0, (n - spec_len) // 2)
    span = {"start_seconds": spec_start / sr, "end_seconds": (spec_start + spec_len) / sr}
    if not n:
        return [], span
    text = f"{clock(spec_start / sr)}–{clock((spec_start + spec_len) / sr)}"
    freed(plots.plot_spectrogram(
        out / "spectrogram.png", np.array(signal[spec_start:spec_start + spec_len]), sr,
        title=f"spectrogram {text} (middle of the file; time axis from its start)"))
    return ["spectrogram.png"], span


def envelope_figures(
    env: np.ndarray,
    env_rate: float,
    env_window_seconds: float,
    marks: Mapping[str, float],
    overall: PeriodEstimate,
    regions: Sequence[Mapping[str, float]],
    opts: ExploreOptions,
    duration: float,
    out: Path,
) -> list[str]:
    """envelope.png (split boundaries marked), autocorrelation.png, pulsation.png."""
    files: list[str] = []
    if env.size:
        freed(plots.plot_envelope(
            out / "envelope.png", env, env_rate, marks,
            title=f"RMS envelope ({1000 * env_window_seconds:g} ms windows), "
                  f"splits {' / '.join(f'{r:g}' for r in opts.splits)}"
                  + ("" if marks or duration == 0 else " (inside each file: see files.png)")))
        files.append("envelope.png")
        lags = min(env.size - 1, math.ceil(2 * opts.pulse_max_seconds * env_rate))
        if lags > 1:
            ac = autocorrelation(env)[: lags + 1]
            freed(plots.plot_series(
                out / "autocorrelation.png", np.arange(lags + 1) / env_rate, ac, "lag (s)",
                "autocorrelation",
                title=f"envelope autocorrelation (overall period "
                      f"{num(overall.period_seconds)} s)"))
            files.append("autocorrelation.png")
    if regions:
        div, unit = (60.0, "min") if duration >= 600 else (1.0, "s")
        centres = [(r["start_seconds"] + r["end_seconds"]) / 2 / div for r in regions]
        freed(plots.plot_series(
            out / "pulsation.png", centres, [r["period_seconds"] for r in regions],
            f"region centre ({unit})", "pulsation period (s)",
            title=f"pulsation period per {opts.region_seconds:g} s region (overall "
                  f"{num(overall.period_seconds)} s, {num(overall.per_minute)} per minute)"))
        files.append("pulsation.png")
    return files


#: Colour of each split in the corpus figure.
SPLIT_COLORS = {"train": "tab:blue", "val": "tab:orange", "test": "tab:green"}
#: Above this many files the corpus figure stops naming each one on its axis.
MAX_LABELLED_FILES = 80
#: Lowest level drawn in the corpus figure, dBFS (silence is drawn there).
FLOOR_DBFS = -90.0


def files_figure(path: Path, rows: Sequence[FileStats], title: str = "") -> Path:
    """files.png: one row per file: duration coloured by split, RMS and peak, silence share.

    Files top to bottom in corpus order. Names are written up to MAX_LABELLED_FILES files;
    beyond that every k-th file's index is.
    """
    if not rows:
        raise ValueError("files_figure needs at least one file")
    n = len(rows)
    labelled = n <= MAX_LABELLED_FILES
    height = 1.8 + 0.2 * min(n, MAX_LABELLED_FILES)
    fig = plots._new_figure(13.0, height)
    ax_dur, ax_lvl, ax_sil = fig.subplots(
        1, 3, sharey=True, gridspec_kw={"width_ratios": [2.2, 1.6, 1.0]})
    y = np.arange(n)
    left = np.zeros(n)
    for split in SPLITS:
        secs = np.array([r.split_samples.get(split, 0) / r.sample_rate for r in rows])
        some = secs > 0  # no empty bars: a thousand files draw fast
        if some.any():
            ax_dur.barh(y[some], secs[some], left=left[some], height=0.8,
                        color=SPLIT_COLORS[split], label=split, linewidth=0)
        left += secs
    ax_dur.set_xlabel("duration (s)")
    ax_dur.set_xlim(0, 1.02 * float(left.max()) if left.max() > 0 else 1.0)
    ax_dur.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=3, fontsize="small",
                  frameon=False, borderaxespad=0.2)

    def level(v: float) -> float:
        db = dbfs(v)
        return FLOOR_DBFS if not db > FLOOR_DBFS else db

    rms = np.array([level(r.rms) for r in rows])
    peak = np.array([level(r.peak) for r in rows])
    ax_lvl.hlines(y, rms, peak, color="0.6", linewidth=1.0)
    small = 1.0 if labelled else 0.5
    ax_lvl.plot(rms, y, "o", color=plots.SEED_COLOR, markersize=3.5 * small, label="RMS")
    ax_lvl.plot(peak, y, "|", color="black", markersize=7 * small, label="peak")
    ax_lvl.set_xlim(max(FLOOR_DBFS, min(rms.min(), peak.min()) - 6), 3)
    ax_lvl.set_xlabel("level (dBFS)")
    ax_lvl.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=2, fontsize="small",
                  frameon=False, borderaxespad=0.2)
    share = np.nan_to_num(np.array([r.silence_share for r in rows]) * 100.0)
    if (share > 0).any():
        ax_sil.barh(y[share > 0], share[share > 0], height=0.8, color="0.45", linewidth=0)
    ax_sil.set_xlim(0, min(100.0, max(10.0, 1.15 * float(share.max()))))
    ax_sil.set_xlabel("silent (%)")
    for ax in (ax_dur, ax_lvl, ax_sil):
        ax.grid(True, axis="x", alpha=0.3)
    ax_dur.set_ylim(n - 0.5, -0.5)  # the first file on top
    if labelled:
        ax_dur.set_yticks(y, [_short(r.name) for r in rows], fontsize="small")
    else:  # file numbers (1-based) at round positions
        ax_dur.yaxis.set_major_locator(MaxNLocator(nbins=12, integer=True))
        ax_dur.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{int(v) + 1}"))
        ax_dur.set_ylabel("file #")
    fig.suptitle(title or f"{n} files")
    return plots._save(fig, path)


def _short(name: str, width: int = 32) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"
