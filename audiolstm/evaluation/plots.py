"""Matplotlib figures shared by explore, the training callbacks, generate and report.

Figures are built as `matplotlib.figure.Figure` objects drawn by the Agg canvas, never
through `pyplot`: importing or calling this module does not touch global pyplot state or
need a display, so it is safe in dataloader workers, DDP ranks and headless jobs. Every
PNG is written atomically (temporary file + `os.replace`), so a crash or a concurrent
reader never sees a half-written image.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from audiolstm.atomic import atomic_write
from audiolstm.evaluation.metrics import stft_power

#: Resolution of every saved PNG.
DPI = 110
#: Above this many samples a waveform is drawn as a min/max envelope (fast, same look).
ENVELOPE_THRESHOLD = 200_000
#: Number of min/max buckets in an envelope (a few per horizontal pixel).
ENVELOPE_BUCKETS = 2_000
#: Spectrograms are computed with at most this many STFT frames (hop grows for long audio).
MAX_SPECTROGRAM_FRAMES = 1_500
#: Dynamic range shown in spectrograms, dB below the loudest bin.
SPECTROGRAM_RANGE_DB = 80.0

SEED_COLOR = "tab:blue"
GENERATED_COLOR = "tab:orange"
BOUNDARY_COLOR = "black"


# --------------------------------------------------------------------------- saving


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)  # attaches itself as fig.canvas
    return fig


def _save(fig: Figure, path: str | os.PathLike[str]) -> Path:
    """Write `fig` as PNG at `path` atomically, creating parent directories."""
    try:
        return atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=DPI))
    finally:
        fig.clear()


# -------------------------------------------------------------------------- drawing


def _samples(x: np.ndarray, name: str = "audio") -> np.ndarray:
    """1-D float64 samples with non-finite values as nan (drawn as gaps, not as ±inf)."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty: nothing to plot")
    if not np.isfinite(arr).all():
        arr = np.where(np.isfinite(arr), arr, np.nan)
    return arr


def _draw_wave(
    ax: Axes,
    x: np.ndarray,
    sample_rate: float,
    start_seconds: float = 0.0,
    color: str = SEED_COLOR,
    label: str | None = None,
) -> None:
    """Waveform on a seconds axis; long signals as a min/max envelope so plotting stays fast."""
    n = x.size
    if n == 0:
        return
    if n <= ENVELOPE_THRESHOLD:
        t = start_seconds + np.arange(n) / sample_rate
        ax.plot(t, x, color=color, linewidth=0.6, label=label)
        return
    bucket = math.ceil(n / ENVELOPE_BUCKETS)
    n_full = n // bucket
    blocks = x[: n_full * bucket].reshape(n_full, bucket)
    # fmin/fmax skip nan unless a whole bucket is nan (then that bucket is a gap).
    lo = np.fmin.reduce(blocks, axis=1)
    hi = np.fmax.reduce(blocks, axis=1)
    starts = np.arange(n_full) * bucket
    if n_full * bucket < n:  # the tail bucket
        tail = x[n_full * bucket :]
        lo = np.append(lo, np.fmin.reduce(tail))
        hi = np.append(hi, np.fmax.reduce(tail))
        starts = np.append(starts, n_full * bucket)
    t = start_seconds + starts / sample_rate
    ax.fill_between(t, lo, hi, color=color, linewidth=0.0, step="post", label=label)


def _spectrogram_params(n: int, sample_rate: float) -> tuple[int, int]:
    """(n_fft, hop): ~32 ms frames, hop grown so at most MAX_SPECTROGRAM_FRAMES frames."""
    n_fft = int(2 ** round(math.log2(max(sample_rate * 0.032, 1.0))))
    n_fft = min(max(n_fft, 256), 4096)
    hop = max(n_fft // 4, math.ceil(max(n - n_fft, 0) / MAX_SPECTROGRAM_FRAMES))
    return n_fft, hop


def _draw_spectrogram(ax: Axes, x: np.ndarray, sample_rate: float, colorbar: bool = True):
    """Log-power spectrogram (dB re the loudest bin) on a seconds × Hz axis."""
    clean = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    n_fft, hop = _spectrogram_params(clean.size, sample_rate)
    power = stft_power(clean, n_fft=n_fft, hop=hop)
    ref = float(power.max())
    ref = ref if ref > 0 else 1.0
    db = 10.0 * np.log10(power / ref + 1e-12)
    span = ((power.shape[0] - 1) * hop + n_fft) / sample_rate
    im = ax.imshow(
        db.T,
        origin="lower",
        aspect="auto",
        extent=(0.0, span, 0.0, sample_rate / 2.0),
        cmap="magma",
        vmin=-SPECTROGRAM_RANGE_DB,
        vmax=0.0,
        interpolation="nearest",
    )
    ax.set_ylabel("frequency (Hz)")
    ax.set_xlabel("time (s)")
    if colorbar:
        # An inset colour bar takes no space from the axes, so stacked rows stay aligned.
        cax = ax.inset_axes((1.01, 0.0, 0.015, 1.0))
        ax.figure.colorbar(im, cax=cax, label="dB")
    return im


def _time_unit(duration_seconds: float) -> tuple[float, str]:
    """(divisor, label) so that hour-long axes read in minutes rather than 10⁴ s."""
    if duration_seconds >= 600:
        return 60.0, "time (min)"
    return 1.0, "time (s)"


# ------------------------------------------------------------------------- figures


def plot_generation(
    path: str | os.PathLike[str],
    audio: np.ndarray,
    sample_rate: int,
    seed_len: int,
    title: str = "",
) -> Path:
    """Seed + generated audio: waveform (two colours) over its spectrogram, seam marked.

    `audio` is the seed followed by the generated part; `seed_len` samples belong to the
    seed. Seed 001 judged models by exactly this picture: does the generated part keep
    the seed's amplitude and spectrum, or collapse?
    """
    x = _samples(audio)
    seed_len = min(max(int(seed_len), 0), x.size)
    seam = seed_len / sample_rate
    fig = _new_figure(10.0, 6.0)
    ax_wave, ax_spec = fig.subplots(2, 1, sharex=True)
    _draw_wave(ax_wave, x[:seed_len], sample_rate, 0.0, SEED_COLOR, "seed")
    _draw_wave(ax_wave, x[seed_len:], sample_rate, seam, GENERATED_COLOR, "generated")
    ax_wave.axvline(seam, color=BOUNDARY_COLOR, linestyle="--", linewidth=1.0)
    ax_wave.set_ylabel("amplitude")
    ax_wave.set_xlim(0.0, x.size / sample_rate)
    ax_wave.legend(loc="upper right", fontsize="small")
    _draw_spectrogram(ax_spec, x, sample_rate)
    ax_spec.axvline(seam, color="white", linestyle="--", linewidth=1.0)
    ax_spec.set_xlim(0.0, x.size / sample_rate)
    fig.suptitle(title or "generation")
    return _save(fig, path)


def _linestyle(series: str) -> str:
    split = series.split("/", 1)[0].lower()
    return {"train": "--", "val": "-", "valid": "-", "test": ":"}.get(split, "-.")


def plot_learning_curves(
    path: str | os.PathLike[str],
    curves: Mapping[str, Mapping[str, tuple[Sequence[float], Sequence[float]]]],
    title: str = "",
) -> Path:
    """Learning curves of one or many runs: `curves[run][series] = (epochs, values)`.

    One colour per run; "train/…" dashed, "val/…" solid, "test/…" dotted, others
    dash-dotted. The y axis is logarithmic when the positive values span more than 10×
    (early epochs otherwise flatten the part worth reading); with many runs the legend
    goes outside the axes.
    """
    n_runs = len(curves)
    n_entries = sum(len(s) for s in curves.values())
    outside = n_runs > 3 or n_entries > 8
    fig = _new_figure(11.0 if outside else 8.0, 5.0)
    ax = fig.subplots()
    colors = [f"C{i % 10}" for i in range(n_runs)]
    finite: list[np.ndarray] = []
    suffixes: set[str] = set()
    for color, (run, series_map) in zip(colors, curves.items(), strict=True):
        for series, (epochs, values) in series_map.items():
            xs = np.asarray(epochs, dtype=np.float64)
            ys = np.asarray(values, dtype=np.float64)
            if xs.shape != ys.shape:
                raise ValueError(f"curve {run!r}/{series!r}: {xs.size} epochs but {ys.size} values")
            label = series if n_runs == 1 else f"{run} · {series}"
            marker = "o" if xs.size <= 30 else None
            ax.plot(
                xs,
                ys,
                color=color,
                linestyle=_linestyle(series),
                marker=marker,
                markersize=3,
                linewidth=1.4,
                label=label,
            )
            finite.append(ys[np.isfinite(ys)])
            suffixes.add(series.rsplit("/", 1)[-1])
    vals = np.concatenate(finite) if finite else np.zeros(0)
    if vals.size and (vals > 0).all() and vals.max() > 10.0 * vals.min():
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel(suffixes.pop() if len(suffixes) == 1 else "value")
    ax.grid(True, which="both", alpha=0.3)
    if n_entries == 0:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    elif outside:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    else:
        ax.legend(fontsize="small")
    ax.set_title(title or "learning curves")
    return _save(fig, path)


def plot_waveform_grid(
    path: str | os.PathLike[str],
    panels: Sequence[tuple[str, np.ndarray, float] | tuple[str, np.ndarray, float, float]],
    sample_rate: float,
    ncols: int = 3,
) -> Path:
    """Grid of waveform excerpts, each `(title, samples, start_seconds)` on its own time axis.

    A panel may carry a fourth value, its own rate in values per second (a min/max
    decimated excerpt has fewer values per second than the audio); else `sample_rate`.
    """
    if not panels:
        raise ValueError("plot_waveform_grid needs at least one panel")
    if ncols < 1:
        raise ValueError(f"ncols must be >= 1, got {ncols}")
    ncols = min(ncols, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = _new_figure(4.2 * ncols, 2.4 * nrows + 0.4)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for i, (ax, panel) in enumerate(zip(axes, panels, strict=False)):
        name, samples, start = panel[:3]
        rate = panel[3] if len(panel) > 3 else sample_rate
        x = _samples(samples, f"panel {name!r}")
        _draw_wave(ax, x, rate, float(start), SEED_COLOR)
        ax.set_xlim(float(start), float(start) + x.size / rate)
        ax.set_title(name, fontsize="medium")
        if i + ncols >= len(panels):  # nothing below it: label its time axis
            ax.set_xlabel("time (s)")
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    return _save(fig, path)


def plot_waveform(
    path: str | os.PathLike[str],
    samples: np.ndarray,
    sample_rate: float,
    start_seconds: float = 0.0,
    title: str = "",
) -> Path:
    """One waveform on a seconds axis starting at `start_seconds`."""
    x = _samples(samples)
    fig = _new_figure(10.0, 3.2)
    ax = fig.subplots()
    _draw_wave(ax, x, sample_rate, float(start_seconds), SEED_COLOR)
    ax.set_xlim(float(start_seconds), float(start_seconds) + x.size / sample_rate)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("amplitude")
    ax.set_title(title or "waveform")
    return _save(fig, path)


def plot_envelope(
    path: str | os.PathLike[str],
    envelope: np.ndarray,
    envelope_rate: float,
    boundaries: Mapping[str, float] | None = None,
    title: str = "",
) -> Path:
    """RMS envelope over time (`envelope_rate` values per second), split boundaries marked.

    `boundaries` maps a label (e.g. "train|val") to a time in seconds. Long recordings
    (≥ 10 min) are drawn in minutes.
    """
    env = _samples(envelope, "envelope")
    if not envelope_rate > 0:
        raise ValueError(f"envelope_rate must be > 0, got {envelope_rate}")
    duration = env.size / envelope_rate
    div, xlabel = _time_unit(duration)
    fig = _new_figure(11.0, 3.6)
    ax = fig.subplots()
    t = (np.arange(env.size) + 0.5) / envelope_rate / div  # value i describes window i
    ax.plot(t, env, color=SEED_COLOR, linewidth=0.8)
    for i, (label, seconds) in enumerate((boundaries or {}).items()):
        pos = float(seconds) / div
        ax.axvline(pos, color=f"C{(i + 1) % 10}", linestyle="--", linewidth=1.2)
        ax.text(
            pos,
            0.98,
            f" {label}",
            transform=ax.get_xaxis_transform(),
            rotation=90,
            va="top",
            ha="left",
            fontsize="small",
            color=f"C{(i + 1) % 10}",
        )
    ax.set_xlim(0.0, duration / div)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("RMS")
    ax.set_title(title or "RMS envelope")
    return _save(fig, path)


def plot_series(
    path: str | os.PathLike[str],
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    xlabel: str,
    ylabel: str,
    title: str = "",
) -> Path:
    """A plain y-against-x line (e.g. pulsation period per minute), markers when sparse."""
    xs = np.asarray(x, dtype=np.float64)
    ys = np.asarray(y, dtype=np.float64)
    if xs.shape != ys.shape or xs.ndim != 1:
        raise ValueError(f"x and y must be 1-D of equal length, got {xs.shape} and {ys.shape}")
    fig = _new_figure(8.0, 4.0)
    ax = fig.subplots()
    ax.plot(xs, ys, color=SEED_COLOR, marker="o" if xs.size <= 200 else None, markersize=3)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.set_title(title)
    return _save(fig, path)


def plot_spectrogram(
    path: str | os.PathLike[str], audio: np.ndarray, sample_rate: int, title: str = ""
) -> Path:
    """Log-power spectrogram (~32 ms Hann frames, at most 1500 of them) in dB."""
    x = _samples(audio)
    fig = _new_figure(10.0, 4.0)
    ax = fig.subplots()
    _draw_spectrogram(ax, x, sample_rate)
    ax.set_xlim(0.0, x.size / sample_rate)
    ax.set_title(title or "spectrogram")
    return _save(fig, path)
