"""Audio quality and collapse metrics for generated audio, plus regression baselines.

The seeds judged generated audio by ear and by eyeballing waveforms: a "tick" at every
frame boundary, amplitudes that collapse (or, better, match the seed), and audio that
"sounds homogenous". Each of those gets a number here so that runs can be compared
without listening. Everything except `baseline_mse` is pure numpy, computed in float64
so that results do not depend on the dtype the caller happens to hold.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from audiolstm.errors import positive_int

if TYPE_CHECKING:
    import torch

#: Windows (seconds into the generated audio) at which `generation_metrics` reports the
#: RMS ratio: amplitude collapse shows up as a ratio that decays over these.
DEFAULT_RMS_CHECKPOINTS: tuple[float, ...] = (2.0, 5.0, 10.0)

#: Frames per block when accumulating STFT power: bounds memory for hour-long signals.
_STFT_BLOCK_FRAMES = 2048


def _as_1d(x: Any, name: str = "audio") -> np.ndarray:
    """float64 1-D view/copy of `x`; a clear error instead of silently flattening."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (mono samples), got shape {arr.shape}")
    return arr


# --------------------------------------------------------------------------- ticking


def tick_score(audio: np.ndarray, frame_len: int, start: int = 0) -> float:
    """Mean |Δx| across frame boundaries ÷ mean |Δx| everywhere else, over `audio[start:]`.

    Boundaries sit at `start + k*frame_len` for k ≥ 1 (the seed/generated seam at `start`
    itself is excluded); the jump across a boundary `b` is `x[b] - x[b-1]`. Natural audio
    has no preferred phase, so the score is ≈ 1; a model that starts every frame afresh
    ("ticking") makes it large. Returns nan when there is no boundary, no non-boundary
    difference, or the non-boundary mean is 0 (e.g. silence).
    """
    frame_len = positive_int(frame_len, "frame_len", error=ValueError)
    if start < 0:
        raise ValueError(f"start must be >= 0, got {start}")
    x = _as_1d(audio)[start:]
    diffs = np.abs(np.diff(x))  # diffs[i] = |x[i+1] - x[i]|, i.e. the step *into* i+1
    # Boundary at local position b (b = k*frame_len, 1 <= b < len(x)) is diffs[b-1].
    idx = np.arange(frame_len, x.size, frame_len) - 1
    if idx.size == 0:
        return math.nan
    mask = np.zeros(diffs.size, dtype=bool)
    mask[idx] = True
    others = diffs[~mask]
    if others.size == 0:
        return math.nan
    denom = float(others.mean())
    if not denom > 0.0:  # also catches nan
        return math.nan
    return float(diffs[mask].mean()) / denom


# ------------------------------------------------------------------------------ RMS


def rms(x: np.ndarray) -> float:
    """Root mean square (nan for an empty signal)."""
    arr = _as_1d(x, "x")
    if arr.size == 0:
        return math.nan
    return float(np.sqrt(np.mean(arr * arr)))


def rms_ratio(generated: np.ndarray, seed: np.ndarray) -> float:
    """Generated RMS ÷ seed RMS: ≈ 1 when amplitudes match the seed, → 0 on collapse.

    nan when the seed is silent or empty (no reference loudness).
    """
    ref = rms(seed)
    if not ref > 0.0:
        return math.nan
    return rms(generated) / ref


def rms_ratio_at(
    generated: np.ndarray,
    seed: np.ndarray,
    sample_rate: int,
    seconds: Sequence[float] = DEFAULT_RMS_CHECKPOINTS,
) -> dict[str, float]:
    """RMS of the generated window `[t-1 s, t)` ÷ the seed's overall RMS, for each `t`.

    Tracks amplitude over time: seed 000's collapse is a ratio that starts near 1 and
    decays. Keys are `rms_ratio_{t:g}s` ("rms_ratio_2s", "rms_ratio_2.5s"); a value is
    nan when the generated audio is shorter than `t` or the seed is silent.
    """
    gen = _as_1d(generated, "generated")
    sample_rate = positive_int(sample_rate, "sample_rate", error=ValueError)
    ref = rms(seed)
    out: dict[str, float] = {}
    for t in seconds:
        if t < 1:
            raise ValueError(f"rms_ratio_at needs t >= 1 s (window [t-1, t)), got {t}")
        lo, hi = round((t - 1) * sample_rate), round(t * sample_rate)
        key = f"rms_ratio_{t:g}s"
        if hi > gen.size or hi <= lo or not ref > 0.0:
            out[key] = math.nan
        else:
            out[key] = rms(gen[lo:hi]) / ref
    return out


# ------------------------------------------------------------------------- spectra


def _stft_blocks(x: np.ndarray, n_fft: int, hop: int):
    """Yield |STFT|² of Hann-windowed frames, `_STFT_BLOCK_FRAMES` frames at a time.

    Signals shorter than `n_fft` are zero-padded to one frame; the tail that does not fill
    a whole frame is dropped (at most `hop - 1` samples).
    """
    n_fft = positive_int(n_fft, "n_fft", error=ValueError)
    hop = positive_int(hop, "hop", error=ValueError)
    if x.size < n_fft:
        x = np.pad(x, (0, n_fft - x.size))
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop]  # a view, no copy
    window = np.hanning(n_fft + 1)[:-1]  # periodic Hann: exact overlap-add at hop n_fft/4
    for i in range(0, frames.shape[0], _STFT_BLOCK_FRAMES):
        spec = np.fft.rfft(frames[i : i + _STFT_BLOCK_FRAMES] * window, axis=1)
        yield spec.real**2 + spec.imag**2


def stft_power_blocks(x: np.ndarray, n_fft: int = 1024, hop: int = 256):
    """`stft_power` in blocks of frames, memory bounded for hour-long signals."""
    return _stft_blocks(_as_1d(x, "x"), n_fft, hop)


def stft_power(x: np.ndarray, n_fft: int = 1024, hop: int = 256) -> np.ndarray:
    """Power spectrogram `[n_frames, n_fft // 2 + 1]` of Hann-windowed frames (float64).

    Shared by `log_spectral_distance` and the spectrogram plots so both see the same STFT.
    """
    arr = _as_1d(x, "x")
    return np.concatenate(list(_stft_blocks(arr, n_fft, hop)), axis=0)


def mean_power_spectrum(x: np.ndarray, n_fft: int = 1024, hop: int = 256) -> np.ndarray:
    """Mean STFT power per frequency bin over time; memory bounded for long signals."""
    arr = _as_1d(x, "x")
    total = np.zeros(n_fft // 2 + 1, dtype=np.float64)
    count = 0
    for block in _stft_blocks(arr, n_fft, hop):
        total += block.sum(axis=0)
        count += block.shape[0]
    return total / count


def log_spectral_distance(
    a: np.ndarray, b: np.ndarray, n_fft: int = 1024, hop: int = 256, eps: float = 1e-8
) -> float:
    """RMS over frequency bins of the dB difference between two *long-term* spectra.

    Generated audio is not aligned in time with its seed, so frame-by-frame comparison
    is meaningless; comparing the average power spectra asks "does it have the seed's
    timbre?". 0 for identical signals, symmetric, and e.g. exactly 20·log10(c) dB for a
    copy scaled by c (while `eps` is negligible). nan if either signal is empty.
    """
    xa, xb = _as_1d(a, "a"), _as_1d(b, "b")
    if xa.size == 0 or xb.size == 0:
        return math.nan
    pa = mean_power_spectrum(xa, n_fft, hop)
    pb = mean_power_spectrum(xb, n_fft, hop)
    diff_db = 10.0 * np.log10((pa + eps) / (pb + eps))
    return float(np.sqrt(np.mean(diff_db * diff_db)))


# ------------------------------------------------------------------------ collapse


def frame_correlation(audio: np.ndarray, frame_len: int) -> float:
    """Mean Pearson correlation between consecutive non-overlapping frames.

    ≈ 0.1 for real music, → 1.0 for a collapsed loop repeating the same frame (the
    "homogenous" sound of seed 001). Frames are `audio[k*L:(k+1)*L]`; a trailing partial
    frame is dropped and pairs involving a constant frame (correlation undefined) are
    skipped. nan when no pair is left.
    """
    frame_len = positive_int(frame_len, "frame_len", error=ValueError)
    x = _as_1d(audio)
    n = x.size // frame_len
    if n < 2:
        return math.nan
    frames = x[: n * frame_len].reshape(n, frame_len)
    # Constant test on the raw samples: exact, unlike a std that rounding makes ~1e-17.
    varying = np.ptp(frames, axis=1) > 0
    centred = frames - frames.mean(axis=1, keepdims=True)
    norms = np.sqrt(np.sum(centred * centred, axis=1))
    ok = varying[:-1] & varying[1:]
    if not ok.any():
        return math.nan
    num = np.sum(centred[:-1][ok] * centred[1:][ok], axis=1)
    corr = num / (norms[:-1][ok] * norms[1:][ok])
    return float(np.mean(np.clip(corr, -1.0, 1.0)))


def frame_rate_energy_fraction(audio: np.ndarray, frame_len: int, sample_rate: int) -> float:
    """Fraction of spectral energy at multiples of the frame rate `sample_rate / frame_len`.

    A frame-periodic loop (or a tick every frame) puts its energy on the harmonics
    k·fs/frame_len (k ≥ 1). Method: the signal is truncated to a whole number of frames
    `m` (so every harmonic falls exactly on FFT bin k·m), the mean is removed, and the
    power spectrum's energy in bins k·m − 1 … k·m + 1 (± one bin around each harmonic,
    up to Nyquist) is divided by the energy in all bins except DC. An exactly periodic
    loop gives 1.0; white noise gives about 3/m (chance), real audio more when its energy
    is low-frequency and harmonics are dense. Pass the frame *period* (the hop when frames
    overlap). nan for fewer than 4 whole frames (the ± 1-bin bands would cover every bin)
    or a constant signal.
    """
    frame_len = positive_int(frame_len, "frame_len", error=ValueError)
    sample_rate = positive_int(sample_rate, "sample_rate", error=ValueError)  # validated; bins are exact
    x = _as_1d(audio)
    m = x.size // frame_len
    if m < 4:
        return math.nan
    x = x[: m * frame_len]
    spec = np.fft.rfft(x - x.mean())
    power = spec.real**2 + spec.imag**2
    power[0] = 0.0
    total = float(power.sum())
    if not total > 0.0:
        return math.nan
    centres = np.arange(m, power.size, m)  # harmonic k at bin k*m (k*fs/frame_len Hz)
    idx = (centres[:, None] + np.arange(-1, 2)[None, :]).ravel()
    idx = np.unique(idx[(idx > 0) & (idx < power.size)])
    return float(power[idx].sum()) / total


# --------------------------------------------------------------------------- speed


def real_time_factor(audio_seconds: float, wall_seconds: float) -> float:
    """Seconds of audio generated per wall-clock second (> 1: faster than real time)."""
    if wall_seconds == 0:
        return math.inf
    if not wall_seconds > 0:  # negative or nan: no meaningful timing
        return math.nan
    return float(audio_seconds) / float(wall_seconds)


# --------------------------------------------------------------------------- bundle


def generation_metrics(
    seed: np.ndarray,
    generated: np.ndarray,
    sample_rate: int,
    frame_len: int,
    wall_seconds: float | None,
) -> dict[str, float]:
    """All generation metrics in one flat dict of floats (nan where undefined).

    `generated` is the generated part only (without the seed), at the same scale as
    `seed`; `frame_len` is the frame period in samples (the hop when frames overlap).
    Each collapse metric is also computed on the seed ("…_seed") as the natural-audio
    reference: a tick score or frame correlation is only "high" relative to it.
    Non-finite values become null when written with `audiolstm.atomic.write_json`.
    """
    seed_a = _as_1d(seed, "seed")
    gen_a = _as_1d(generated, "generated")
    sample_rate = positive_int(sample_rate, "sample_rate", error=ValueError)
    gen_seconds = gen_a.size / sample_rate
    out: dict[str, float] = {
        "seed_seconds": seed_a.size / sample_rate,
        "generated_seconds": gen_seconds,
        "tick_score": tick_score(gen_a, frame_len),
        "tick_score_seed": tick_score(seed_a, frame_len),
        "rms_seed": rms(seed_a),
        "rms_generated": rms(gen_a),
        "rms_ratio": rms_ratio(gen_a, seed_a),
    }
    out.update(rms_ratio_at(gen_a, seed_a, sample_rate, DEFAULT_RMS_CHECKPOINTS))
    out["log_spectral_distance_db"] = log_spectral_distance(gen_a, seed_a)
    out["frame_correlation"] = frame_correlation(gen_a, frame_len)
    out["frame_correlation_seed"] = frame_correlation(seed_a, frame_len)
    out["frame_rate_energy_fraction"] = frame_rate_energy_fraction(gen_a, frame_len, sample_rate)
    out["frame_rate_energy_fraction_seed"] = frame_rate_energy_fraction(
        seed_a, frame_len, sample_rate
    )
    if wall_seconds is None:
        out["wall_seconds"] = math.nan
        out["real_time_factor"] = math.nan
    else:
        out["wall_seconds"] = float(wall_seconds)
        out["real_time_factor"] = real_time_factor(gen_seconds, wall_seconds)
    return {k: float(v) for k, v in out.items()}


def baseline_mse(inputs: torch.Tensor, targets: torch.Tensor,
                 mean: torch.Tensor | float = 0.0) -> dict[str, torch.Tensor]:
    """MSE of the two trivial predictors on a batch `[B, T, D]`, for relative losses.

    `mse_zero` predicts the training mean: `mean`, a frame `[D]` (or a number) in the
    batch's units, which is 0 only under the mean-centred normalisations (`std`,
    `minmax`, `minmax_union`); under `minmax01` 0 is the training *minimum* and under
    `none` the raw zero line, so the caller passes the normalised (and encoded) mean.
    `mse_persistence` predicts that the next frame repeats the current input frame
    (target t = input t). A model that does not beat persistence has learned nothing.
    Exact means over all elements, accumulated in float64 (float32 on MPS), returned as
    0-d tensors in the targets' dtype on their device.
    """
    import torch  # lazy: the numpy metrics stay importable without paying for torch

    if inputs.shape != targets.shape or inputs.dim() != 3:
        raise ValueError(
            f"baseline_mse needs inputs and targets of the same shape [B, T, D], "
            f"got {tuple(inputs.shape)} and {tuple(targets.shape)}"
        )
    # MPS has no float64; float32 there is the best available accumulator.
    acc = torch.float32 if targets.device.type == "mps" else torch.float64
    with torch.no_grad():
        x = inputs.detach().to(acc)
        y = targets.detach().to(acc)
        m = torch.as_tensor(mean, dtype=acc, device=y.device)
        if m.dim() > 1 or (m.dim() == 1 and m.shape[0] != y.shape[-1]):
            raise ValueError(f"baseline_mse: mean must be a number or a frame of "
                             f"{y.shape[-1]}, got shape {tuple(m.shape)}")
        out_dtype = targets.dtype if targets.is_floating_point() else acc
        return {
            "mse_zero": ((y - m) ** 2).mean().to(out_dtype),
            "mse_persistence": ((y - x) ** 2).mean().to(out_dtype),
        }
