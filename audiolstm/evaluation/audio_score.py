"""Generated audio judged as audio: a score against held-out real recordings, no weights.

Loss and likelihood say how well a model predicts; they do not say how its free-running
output sounds (the seeds' white noise; SampleRNN users' "the lowest-loss checkpoint is not
the best-sounding one"). This module compares a generated clip with real audio of the
same data set and needs nothing downloaded:

- **A Fréchet distance (FD)** between Gaussian fits of log-mel frames: the FAD recipe
  with log-mel frames in place of a pretrained network's embeddings.
- **Fitted within clips.** Each Gaussian is fitted to a clip's frames *minus the clip's
  own mean spectrum*, and the reference's is the pooled covariance of every clip-length
  window of the reference, each centred on its own mean. So the FD compares how the
  spectrum *moves* inside a clip (dynamics, onsets, how the bands move together), not
  which average spectrum the clip has. Measured on the orchestral corpus (held-out
  tracks, bench/RESULTS.md): against one Gaussian of the whole reference, shaped noise
  was *closer* than held-out real music (a new piece has another average spectrum than
  the reference's mix of pieces; noise shaped to that mix has exactly its average, and
  the whole-reference covariance is mostly the spread *between* passages), so that
  score could not tell music from noise. The mean part is still reported, as
  `timbre_db` (RMS over bands of the clip's mean log-mel minus the reference's).
- **Calibrated per data set.** An FD in dB² means nothing across data sets, and a short
  clip's covariance is a noisy estimate, so the reference measures its own *floor*
  (the median FD of up to `FLOOR_CLIPS` real windows of the clip's length, each against
  the pooled windows that do not overlap it) and *ceiling* (the median FD of
  `CEILING_DRAWS` Gaussian noises of that length shaped to the reference's long-term
  power spectrum). The score is `(ceiling - FD) / (ceiling - floor)`: 1 ≈ as real as
  real audio, 0 ≈ as good as shaped noise, < 0 worse (silence, a frozen tone). On the
  FD's own (linear) scale: of linear, square-root and log scales, linear put the most
  spreads of held-out real scores between real audio and noise on 7 of the 8 data sets
  x clip lengths measured (orchestral corpus, 20 s: 1.56 vs 1.20 (sqrt) vs 0.93 (log);
  built-in data, speech likewise; on 4 s clips of one orchestral recording no scale
  separates); how proportionally each scale follows real audio mixed with noise differs
  by data set, so that did not decide. bench/RESULTS.md, "Audio score: calibration".
- **Flags beside it**, each a boolean with the number it is decided on: spectral
  flatness against the reference's (noise-like), silent seconds, the RMS of every second
  relative to the reference's median second (loudness), a DC offset, a stuck loop
  (the autocorrelation of the log-mel envelope's 64 ms changes at lags of `loop_min_lag`
  seconds and more), and no sustained partials (`no_partials`: spectral peaks that hold
  through three disjoint 64 ms windows, per frame, against the reference's rate). The
  last is there because the others can all pass while the audio has no note in it:
  SampleRNN on the orchestral corpus made low rumble with clicks whose loudness,
  flatness and score all read like music (README, "A music recipe").

Analysis: Hann frames of `n_fft = 2**round(log2(0.064 * sample_rate))` samples (64 ms;
1024 at 16 kHz), hop `n_fft // 4`, `N_MELS = 40` triangular HTK-mel bands from 0 Hz to
Nyquist, power in dB floored `MEL_FLOOR_DB` below the band power of white noise as loud
as the reference (digital silence is a finite, reference-relative -80 dB, as
librosa's top_db=80). 40 bands, not 64 or 128: a 4 s training sample has ~250 frames,
a 20 s clip ~1250, and a covariance of d bands has d(d+1)/2 entries to estimate (820 at
40); the lowest band stays wider than 3 FFT bins down to 4 kHz audio. No shrinkage: the
matrix square root goes through symmetric eigen-decompositions (eigenvalues clipped at
0), stable for singular covariances (a sine, silence), and the floor is measured at the
clip's own length, which calibrates the small-sample bias away. numpy only.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

import numpy as np

from audiolstm.errors import UserError
from audiolstm.evaluation.metrics import stft_power_blocks

#: mel bands of the log-mel frames (see the module docstring for why 40)
N_MELS = 40
#: analysis window in seconds (rounded to a power-of-two FFT size)
WINDOW_SECONDS = 0.064
#: dB below the band power of white noise as loud as the reference: the log-mel floor
MEL_FLOOR_DB = -80.0
#: real windows of the reference measured for the floor (median of their FDs)
FLOOR_CLIPS = 8
#: shaped-noise draws for the ceiling (median of their FDs)
CEILING_DRAWS = 4
#: shortest clip the score is defined for (per-second RMS, long-lag loop check)
MIN_CLIP_SECONDS = 1.0
#: how far a clip's length may differ from the length the reference was calibrated for
LENGTH_TOLERANCE = 0.1


# ----------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class ScoreSettings:
    """Thresholds of the flags (the score itself has none). Defaults: bench/RESULTS.md."""

    #: a second is silent when its RMS is this many dB below the reference's median second
    silence_db: float = -40.0
    #: the loudness flag: some second's RMS outside [rms_low, rms_high] x the reference's
    rms_low: float = 0.3
    rms_high: float = 3.0
    #: the noise flag: the clip's median flatness above the reference's by more (dB)
    flatness_tolerance_db: float = 6.0
    #: the DC flag: |clip mean - reference mean| above this fraction of the reference's std
    dc_threshold: float = 0.2
    #: the loop flag: envelope-change autocorrelation above this at a lag >= loop_min_lag
    loop_threshold: float = 0.8
    #: the no-partials flag: the clip's sustained partials per frame below this fraction
    #: of the reference's (a held note's harmonics; rumble, hiss and clicks have none)
    partials_fraction: float = 0.1
    #: shortest lag (seconds) the loop check looks at
    loop_min_lag: float = 0.5

    def validate(self, prefix: str = "score") -> ScoreSettings:
        """One `UserError` naming `prefix.field` for the first value out of range."""
        rules = {
            "silence_db": (lambda v: -120.0 <= v < 0.0, "must be in [-120, 0) dB"),
            "rms_low": (lambda v: 0.0 < v < 1.0, "must be in (0, 1)"),
            "rms_high": (lambda v: 1.0 < v < math.inf, "must be > 1"),
            "flatness_tolerance_db": (lambda v: 0.0 < v < math.inf, "must be > 0 dB"),
            "dc_threshold": (lambda v: 0.0 < v < math.inf, "must be > 0"),
            "loop_threshold": (lambda v: 0.0 < v <= 1.0, "must be in (0, 1]"),
            "loop_min_lag": (lambda v: 0.0 < v < math.inf, "must be > 0 seconds"),
            "partials_fraction": (lambda v: 0.0 < v < 1.0, "must be in (0, 1)"),
        }
        for name, (ok, rule) in rules.items():
            value = getattr(self, name)
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not number or not ok(value):
                raise UserError(f"{prefix}.{name}={value!r} {rule}")
        return self

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None,
                     prefix: str = "score") -> ScoreSettings:
        """Settings from a config node; an unknown key is an error, never ignored."""
        values = dict(values or {})
        known = [f.name for f in fields(cls)]
        for key in values:
            if key not in known:
                raise UserError(f"{prefix}.{key} is not a score setting "
                                f"(known: {', '.join(known)})")
        return cls(**values).validate(prefix)


#: a config's `score` switch: auto (score where the reference allows), true (required), false
SCORE_MODES = ("auto", "true", "false")


def parse_score_config(mode: Any, settings: Mapping[str, Any] | None, key: str,
                       settings_key: str) -> tuple[str, ScoreSettings]:
    """A config's score switch and thresholds, checked: (mode as text, settings).
    With the score off, a threshold changed from its default is an error (it would be
    ignored)."""
    text = str(mode).lower() if isinstance(mode, (bool, str)) else None
    if text not in SCORE_MODES:
        raise UserError(f"{key}={mode!r} is not one of {', '.join(SCORE_MODES)}")
    parsed = ScoreSettings.from_mapping(settings, prefix=settings_key)
    default = ScoreSettings()
    if text == "false" and parsed != default:
        changed = next(f.name for f in fields(ScoreSettings)
                       if getattr(parsed, f.name) != getattr(default, f.name))
        raise UserError(f"{settings_key}.{changed}={getattr(parsed, changed)!r} has no effect "
                        f"with {key}=false")
    return text, parsed


# ------------------------------------------------------------------------------- pieces


def hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    """HTK mel scale: 2595 log10(1 + f / 700)."""
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m: np.ndarray | float) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int = N_MELS,
                   fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
    """Triangular filters `[n_mels, n_fft // 2 + 1]` with unit peaks, equally spaced in mel.

    Filter m rises from edge m to edge m+1 and falls to edge m+2 (n_mels + 2 edges from
    fmin to fmax): neighbours share edges, so between the first and the last centre the
    weights of every FFT bin sum to exactly 1. Raises ValueError when a filter catches no
    bin (too many bands for the FFT's resolution).
    """
    fmax = sample_rate / 2 if fmax is None else fmax
    if not 0.0 <= fmin < fmax <= sample_rate / 2:
        raise ValueError(f"mel_filterbank: need 0 <= fmin < fmax <= {sample_rate / 2}, "
                         f"got {fmin}, {fmax}")
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    freqs = np.arange(n_fft // 2 + 1) * (sample_rate / n_fft)
    lo, centre, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs[None, :] - lo) / (centre - lo)
    falling = (hi - freqs[None, :]) / (hi - centre)
    fb = np.clip(np.minimum(rising, falling), 0.0, None)
    empty = np.flatnonzero(fb.max(axis=1) <= 0.0)
    if empty.size:
        raise ValueError(f"mel_filterbank: band {int(empty[0])} of {n_mels} catches no FFT "
                         f"bin at n_fft={n_fft}, sample_rate={sample_rate}")
    return fb


def analysis_sizes(sample_rate: int) -> tuple[int, int]:
    """(n_fft, hop): a ~64 ms power-of-two window (at least 64 samples), a quarter of it."""
    n_fft = max(64, int(2 ** round(math.log2(WINDOW_SECONDS * sample_rate))))
    return n_fft, n_fft // 4


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray,
                     cov2: np.ndarray) -> float:
    """|mu1 - mu2|² + tr(C1) + tr(C2) - 2 tr sqrt(C1 C2): the squared 2-Wasserstein distance.

    tr sqrt(C1 C2) = sum of sqrt(eigenvalues of S C2 S) with S = sqrt(C1) (symmetric, PSD;
    both square roots by `eigh`, negative rounding clipped to 0), so singular covariances
    need no inverse and no regulariser.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    c1, c2 = np.asarray(cov1, np.float64), np.asarray(cov2, np.float64)
    w, v = np.linalg.eigh((c1 + c1.T) / 2)
    s = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    m = s @ c2 @ s
    cross = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0.0, None)).sum()
    d = mu1 - mu2
    return max(float(d @ d + np.trace(c1) + np.trace(c2) - 2.0 * cross), 0.0)


def flatness_db(power: np.ndarray) -> np.ndarray:
    """Spectral flatness per frame in dB: geometric ÷ arithmetic mean of the power.

    Over bins 2 to Nyquist - 1: a DC offset does not make audio tonal, and the periodic
    Hann window's spectrum is non-zero at 0 and ±1 bins only, so DC reaches bins 0 and 1
    and no other. Each bin is floored 100 dB below its frame's mean power, so a pure tone reads about
    -100 dB instead of log(0). A frame with no power (digital silence) is nan. White
    Gaussian noise reads 10 log10(exp(-γ)) = -2.51 dB (each bin's power is exponential).
    """
    p = np.asarray(power, np.float64)[..., 2:-1]
    mean = p.mean(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        floored = np.maximum(p, mean[..., None] * 1e-10)
        out = 10.0 * np.log10(np.exp(np.log(floored).mean(axis=-1)) / mean)
    out[~(mean > 0)] = np.nan
    return out


def second_rms(x: np.ndarray, sample_rate: int) -> np.ndarray:
    """RMS of every whole second of `x` (a trailing partial second is dropped)."""
    n = len(x) // sample_rate
    blocks = np.asarray(x[: n * sample_rate], np.float64).reshape(n, sample_rate)
    return np.sqrt(np.mean(blocks * blocks, axis=1))


def loop_correlation(envelope: np.ndarray, frame_rate: float, min_lag: float
                     ) -> tuple[float, float]:
    """(peak, lag in seconds) of an envelope's autocorrelation at lags >= `min_lag` s.

    `envelope` is `[frames, bands]`; at lag L the correlation is Pearson's between frames
    `[0, n-L)` and `[L, n)` (every band together, each part centred per band on its own
    mean). A stuck loop repeats its frames, so some lag of at least `min_lag` (a shorter
    loop repeats at a multiple of its period inside the range) reads ≈ 1. Lags go up to
    half the clip, so every value rests on half the clip or more. (nan, nan) when the
    clip is too short for one lag or the envelope is constant. All lags at once: the
    lagged products by FFT, the parts' sums and sums of squares by cumulative sums.
    """
    x = np.asarray(envelope, np.float64)
    n = x.shape[0]
    lo, hi = max(1, int(math.ceil(min_lag * frame_rate))), n // 2
    if n == 0 or hi < lo:
        return math.nan, math.nan
    x = x - x.mean(axis=0)  # exact either way; keeps the subtractions below well scaled
    size = 1 << int(2 * n - 1).bit_length()
    spec = np.fft.rfft(x, size, axis=0)
    prod = np.fft.irfft((spec * spec.conj()).real, size, axis=0)[: n].sum(axis=1)
    cs = np.concatenate([np.zeros((1, x.shape[1])), np.cumsum(x, axis=0)])
    cq = np.concatenate([[0.0], np.cumsum((x * x).sum(axis=1))])
    lags = np.arange(lo, hi + 1)
    m = (n - lags).astype(np.float64)
    sum_a, sum_b = cs[n - lags], cs[n] - cs[lags]
    cov = prod[lags] - (sum_a * sum_b).sum(axis=1) / m
    var_a = cq[n - lags] - (sum_a * sum_a).sum(axis=1) / m
    var_b = cq[n] - cq[lags] - (sum_b * sum_b).sum(axis=1) / m
    scale = float(cq[n]) * 1e-12  # below this a part is constant: rounding, not signal
    ok = (var_a > scale) & (var_b > scale)
    if not ok.any():
        return math.nan, math.nan
    r = np.full(len(lags), -np.inf)
    r[ok] = cov[ok] / np.sqrt(var_a[ok] * var_b[ok])
    best = int(np.argmax(r))
    return float(min(r[best], 1.0)), float(lags[best] / frame_rate)


#: a spectral peak stands this many dB above the mean log power on each side of it
PEAK_PROMINENCE_DB = 10.0
#: each side: the bins from PEAK_GAP to PEAK_REACH away (the Hann main lobe spans ±2)
PEAK_GAP, PEAK_REACH = 3, 8


def spectral_peaks(power: np.ndarray) -> np.ndarray:
    """Prominent peaks of power frames `[T, K]`: a boolean `[T, K]`.

    A bin is a peak when it is a local maximum of its frame and its power in dB stands
    `PEAK_PROMINENCE_DB` above the mean dB of the bins `PEAK_GAP` to `PEAK_REACH` away
    on *each* side (a partial stands out on both sides; the edge of a band of noise, or
    of a low-pass, on one side only). Bins closer than `PEAK_GAP` to bin 0 or to Nyquist
    are never peaks. In white Gaussian noise a bin's power is exponential and its dB has
    a mean 2.51 dB below the dB of its mean power, so one bin passes 10 dB above a side's
    mean dB with probability exp(-10^0.749) = 0.4 %; a sine's Hann main lobe stands tens
    of dB above both sides.
    """
    p = np.asarray(power, np.float64)
    floor = np.maximum(p.mean(axis=-1, keepdims=True) * 1e-10, np.finfo(np.float64).tiny)
    db = 10.0 * np.log10(np.maximum(p, floor))
    k = db.shape[-1]
    cs = np.concatenate([np.zeros(db.shape[:-1] + (1,)), np.cumsum(db, axis=-1)], axis=-1)

    def side_mean(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:  # bins [lo, hi)
        lo, hi = np.clip(lo, 0, k), np.clip(hi, 0, k)
        with np.errstate(invalid="ignore", divide="ignore"):
            return (cs[..., hi] - cs[..., lo]) / (hi - lo)

    idx = np.arange(k)
    left = side_mean(idx - PEAK_REACH, idx - PEAK_GAP + 1)
    right = side_mean(idx + PEAK_GAP, idx + PEAK_REACH + 1)
    peaks = np.zeros(db.shape, dtype=bool)
    s = slice(PEAK_GAP, k - PEAK_GAP)
    inner = db[..., s]
    peaks[..., s] = ((inner > db[..., PEAK_GAP - 1 : k - PEAK_GAP - 1])
                     & (inner >= db[..., PEAK_GAP + 1 : k - PEAK_GAP + 1])
                     & (inner - left[..., s] >= PEAK_PROMINENCE_DB)
                     & (inner - right[..., s] >= PEAK_PROMINENCE_DB))
    return peaks


def sustained_partials(peaks: np.ndarray, lag: int) -> np.ndarray:
    """Per frame t (of those with t + 2 lag inside): the peaks of frame t that have a peak
    within one bin in frames t + lag and t + 2 lag. With `lag` the frames between two
    windows that do not overlap, a partial counted here lasts through three disjoint
    windows (192 ms at 64 ms): a held note's harmonics do, noise's chance peaks almost
    never (each of the two matches about 3 x 0.4 %)."""
    pk = np.asarray(peaks, bool)
    n = pk.shape[0] - 2 * lag
    if lag < 1 or n <= 0:
        return np.zeros(0)
    near = pk.copy()  # a peak within one bin
    near[:, 1:] |= pk[:, :-1]
    near[:, :-1] |= pk[:, 1:]
    held = pk[:n] & near[lag : lag + n] & near[2 * lag : 2 * lag + n]
    return held.sum(axis=1).astype(np.float64)


class PartialCounter:
    """`sustained_partials` over a signal that arrives in blocks of power frames: the
    last `2 lag` frames' peaks carry over, so the counts equal those of the whole signal
    at once, in bounded memory."""

    def __init__(self, lag: int) -> None:
        self.lag = lag
        self.tail: np.ndarray | None = None
        self.total = 0.0
        self.frames = 0

    def add(self, power: np.ndarray) -> None:
        peaks = spectral_peaks(power)
        both = peaks if self.tail is None else np.concatenate([self.tail, peaks])
        counts = sustained_partials(both, self.lag)
        self.total += float(counts.sum())
        self.frames += len(counts)
        self.tail = both[-2 * self.lag :] if len(both) > 2 * self.lag else both

    @property
    def mean(self) -> float:
        """Sustained partials per frame (nan before a frame has both later windows)."""
        return self.total / self.frames if self.frames else math.nan


def shaped_noise(power_spectrum: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Stationary Gaussian noise of `n` samples, unit variance, whose power spectrum
    follows `power_spectrum` (bins equally spaced from 0 Hz to Nyquist)."""
    k = n // 2 + 1
    spec = rng.standard_normal(k) + 1j * rng.standard_normal(k)
    grid = np.linspace(0.0, 1.0, len(power_spectrum))
    spec *= np.sqrt(np.interp(np.linspace(0.0, 1.0, k), grid, power_spectrum))
    x = np.fft.irfft(spec, n)
    sd = x.std()
    return x / sd if sd > 0 else x


# ----------------------------------------------------------------------------- analysis


@dataclass(frozen=True)
class MelAnalysis:
    """The log-mel front end of one sample rate, with its floor fixed by a reference."""

    sample_rate: int
    n_fft: int
    hop: int
    filterbank: np.ndarray = field(repr=False)
    #: absolute mel power where log-mel values are floored
    floor_power: float = 0.0

    @classmethod
    def for_reference(cls, sample_rate: int, level_std: float) -> MelAnalysis:
        """Floor `MEL_FLOOR_DB` below a mel band of white noise of std `level_std`
        (E|X_k|² = σ² Σ w² per bin, times the band's summed weights, averaged)."""
        n_fft, hop = analysis_sizes(sample_rate)
        fb = mel_filterbank(sample_rate, n_fft)
        window = np.hanning(n_fft + 1)[:-1]
        band = level_std**2 * float((window**2).sum()) * float(fb.sum(axis=1).mean())
        return cls(sample_rate, n_fft, hop, fb, band * 10.0 ** (MEL_FLOOR_DB / 10.0))

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop

    @property
    def delta_frames(self) -> int:
        """Frames between two windows that do not overlap (the envelope-change lag)."""
        return self.n_fft // self.hop

    def frames(self, n_samples: int) -> int:
        """Frames of a signal of n_samples (whole windows only)."""
        return 0 if n_samples < self.n_fft else (n_samples - self.n_fft) // self.hop + 1

    def blocks(self, x: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(power `[T, n_fft/2+1]`, log-mel `[T, N_MELS]`) for blocks of whole frames."""
        x = np.asarray(x, np.float64)
        if len(x) < self.n_fft:
            return
        for power in stft_power_blocks(x, self.n_fft, self.hop):
            mel = power @ self.filterbank.T
            yield power, 10.0 * np.log10(np.maximum(mel, self.floor_power))

    def log_mel(self, x: np.ndarray) -> np.ndarray:
        parts = [lm for _, lm in self.blocks(x)]
        return np.concatenate(parts) if parts else np.zeros((0, N_MELS))


def centred_cov(frames: np.ndarray) -> np.ndarray:
    """Covariance of frames about their own mean (n - 1 in the denominator)."""
    f = np.asarray(frames, np.float64)
    c = f - f.mean(axis=0)
    return (c.T @ c) / max(len(f) - 1, 1)


def _fd(cov: np.ndarray, ref_cov: np.ndarray) -> float:
    """FD of two centred Gaussians (the Bures distance of their covariances)."""
    zero = np.zeros(len(cov))
    return frechet_distance(zero, cov, zero, ref_cov)


def _calibrated(fd: float, floor: float, ceiling: float) -> float:
    if not ceiling > floor:  # the reference is indistinguishable from shaped noise
        return math.nan
    return (ceiling - fd) / (ceiling - floor)


def _timbre_db(mean: np.ndarray, ref_mean: np.ndarray) -> float:
    d = np.asarray(mean) - np.asarray(ref_mean)
    return float(np.sqrt(np.mean(d * d)))


def _envelope_change(log_mel: np.ndarray, lag: int) -> np.ndarray:
    return log_mel[lag:] - log_mel[:-lag] if len(log_mel) > lag else log_mel[:0]


# ---------------------------------------------------------------------------- reference


@dataclass(frozen=True)
class AudioReference:
    """Everything a clip is compared with, measured once per data set and clip length."""

    sample_rate: int
    clip_seconds: float
    settings: ScoreSettings
    analysis: MelAnalysis = field(repr=False)
    cov: np.ndarray = field(repr=False)  # pooled within-window log-mel covariance
    mean: np.ndarray = field(repr=False)  # mean log-mel of the whole reference
    seconds: float  # audio in the reference
    windows: int  # clip-length windows pooled
    fd_floor: float
    fd_ceiling: float
    fd_floor_clips: tuple[float, ...]
    fd_ceiling_draws: tuple[float, ...]
    timbre_db: float  # median timbre distance of the floor windows to the rest
    flatness_db: float  # median over the reference's frames
    rms_median: float  # of its whole seconds
    level_mean: float  # sample mean and std (the DC check)
    level_std: float
    loop_corr: float  # median loop value of the floor windows (real audio's own repetition)
    partials: float  # sustained partials per frame over the whole reference

    @property
    def clip_samples(self) -> int:
        return int(round(self.clip_seconds * self.sample_rate))

    def to_dict(self) -> dict[str, float | int]:
        """The reference's own numbers, flat, keys prefixed "audio_ref_"."""
        return {"audio_ref_seconds": self.seconds, "audio_ref_clip_seconds": self.clip_seconds,
                "audio_ref_windows": self.windows, "audio_ref_fd_floor": self.fd_floor,
                "audio_ref_fd_ceiling": self.fd_ceiling,
                "audio_ref_timbre_db": self.timbre_db,
                "audio_ref_flatness_db": self.flatness_db,
                "audio_ref_loop_corr": self.loop_corr,
                "audio_ref_partials": self.partials}


def _pieces(real_audio: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    if isinstance(real_audio, np.ndarray):
        if real_audio.ndim != 1:
            raise ValueError(f"reference audio must be 1-D, got shape {real_audio.shape}")
        pieces = [real_audio]
    else:
        pieces = list(real_audio)
    return [np.asarray(p, np.float64) for p in pieces if len(p)]


@dataclass
class _Window:
    piece: int
    index: int  # in its piece
    start_frame: int
    cov: np.ndarray
    mean: np.ndarray


def build_reference(real_audio: np.ndarray | Sequence[np.ndarray], sample_rate: int,
                    clip_seconds: float, seed: int = 0,
                    settings: ScoreSettings | None = None,
                    name: str = "reference") -> AudioReference:
    """Measure the reference once for clips of `clip_seconds`: pooled covariance, floor,
    ceiling, and its own flatness, loudness, level and loop values.

    `real_audio` is 1-D audio at the original scale, or several pieces (a corpus split's
    files; no window spans two). Windows of the clip's length (to a frame) start every
    half clip. Refused with a `UserError` that names `name`: a clip shorter than
    `MIN_CLIP_SECONDS`, a reference that is silent, one with no piece of two clips'
    length (a floor window must leave a window of real audio that does not overlap it),
    or one whose own clips are no closer to it than shaped noise (floor >= ceiling: the
    score would have no scale).
    """
    settings = (settings or ScoreSettings()).validate()
    sr = int(sample_rate)
    if not clip_seconds >= MIN_CLIP_SECONDS:
        raise UserError(f"{name}: the audio score needs clips of at least "
                        f"{MIN_CLIP_SECONDS:g} s (got {clip_seconds:g} s)")
    pieces = _pieces(real_audio)
    total = sum(len(p) for p in pieces)
    clip = int(round(clip_seconds * sr))
    longest = max((len(p) for p in pieces), default=0)
    if longest < 2 * clip:
        raise UserError(f"{name}: the reference ({total / sr:.2f} s, longest piece "
                        f"{longest / sr:.2f} s) is shorter than two {clip_seconds:g} s clips; "
                        "the score compares one clip of it with the rest")
    level_mean = sum(float(p.sum()) for p in pieces) / total
    level_std = math.sqrt(sum(float(((p - level_mean) ** 2).sum()) for p in pieces) / total)
    rms = np.concatenate([second_rms(p, sr) for p in pieces])
    rms_median = float(np.median(rms)) if rms.size else 0.0
    if not level_std > 0.0 or not rms_median > 0.0:
        raise UserError(f"{name}: the reference is silent (std {level_std:.3g}, median "
                        f"second RMS {rms_median:.3g}); the score needs real audio")

    an = MelAnalysis.for_reference(sr, level_std)
    seg = max(1, an.frames(clip) // 2)  # a window is two segments: windows every half clip
    spectrum = np.zeros(an.n_fft // 2 + 1)
    flat, windows = [], []
    n_frames, mel_sum = 0, np.zeros(N_MELS)
    partial_total, partial_frames = 0.0, 0
    for i, p in enumerate(pieces):
        partials = PartialCounter(an.delta_frames)  # none spans two pieces
        last: np.ndarray | None = None  # the previous segment: the next window's first half
        pending = np.zeros((0, N_MELS))
        k = 0
        for power, lm in an.blocks(p):
            spectrum += power.sum(axis=0)
            flat.append(flatness_db(power))
            partials.add(power)
            n_frames += len(lm)
            mel_sum += lm.sum(axis=0)
            pending = np.concatenate([pending, lm])
            while len(pending) >= seg:
                this, pending = pending[:seg], pending[seg:]
                if last is not None:
                    both = np.concatenate([last, this])
                    windows.append(_Window(i, k, k * seg, centred_cov(both), both.mean(axis=0)))
                    k += 1
                last = this
        partial_total += partials.total
        partial_frames += partials.frames
    spectrum /= n_frames
    ref_mean = mel_sum / n_frames
    flat_all = np.concatenate(flat)
    ref_flatness = float(np.nanmedian(flat_all)) if np.isfinite(flat_all).any() else math.nan
    pooled_sum = np.sum([w.cov for w in windows], axis=0)
    pooled = pooled_sum / len(windows)

    floors, timbres, loops = [], [], []
    picks = sorted({int(k) for k in np.floor((np.arange(FLOOR_CLIPS) + 0.5)
                                             * len(windows) / FLOOR_CLIPS)})
    for k in picks:
        w = windows[k]
        near = [v for v in windows if v.piece == w.piece and abs(v.index - w.index) <= 1]
        if len(windows) == len(near):
            continue  # nothing of the reference left that does not overlap this window
        rest = (pooled_sum - np.sum([v.cov for v in near], axis=0)) / (len(windows) - len(near))
        floors.append(_fd(w.cov, rest))
        rest_mean = (ref_mean * n_frames - w.mean * 2 * seg) / (n_frames - 2 * seg)
        timbres.append(_timbre_db(w.mean, rest_mean))
        start = w.start_frame * an.hop
        frames = an.log_mel(pieces[w.piece][start : start + (2 * seg - 1) * an.hop + an.n_fft])
        loops.append(loop_correlation(_envelope_change(frames, an.delta_frames),
                                      an.frame_rate, settings.loop_min_lag)[0])

    rng = np.random.default_rng(seed)
    ceilings = [_fd(centred_cov(an.log_mel(shaped_noise(spectrum, clip, rng) * level_std)),
                    pooled) for _ in range(CEILING_DRAWS)]
    floor, ceiling = float(np.median(floors)), float(np.median(ceilings))
    if not ceiling > floor:
        raise UserError(f"{name}: the reference's own {clip_seconds:g} s clips are as far from "
                        f"it as noise shaped like it (FD floor {floor:.0f} >= ceiling "
                        f"{ceiling:.0f}), so the score has no scale; score longer clips or "
                        "give a longer reference")
    finite_loops = [v for v in loops if np.isfinite(v)]
    return AudioReference(
        sample_rate=sr, clip_seconds=float(clip_seconds), settings=settings, analysis=an,
        cov=pooled, mean=ref_mean, seconds=total / sr, windows=len(windows),
        fd_floor=floor, fd_ceiling=ceiling,
        fd_floor_clips=tuple(floors), fd_ceiling_draws=tuple(ceilings),
        timbre_db=float(np.median(timbres)), flatness_db=ref_flatness,
        rms_median=rms_median, level_mean=level_mean, level_std=level_std,
        loop_corr=float(np.median(finite_loops)) if finite_loops else math.nan,
        partials=partial_total / partial_frames if partial_frames else math.nan)


# -------------------------------------------------------------------------------- score


@dataclass(frozen=True)
class AudioScore:
    """One clip against one reference: the calibrated score and every flag with its number."""

    score: float  # 1 ≈ real, 0 ≈ shaped noise, < 0 worse
    fd: float
    fd_floor: float
    fd_ceiling: float
    timbre_db: float  # RMS over bands of the clip's mean log-mel - the reference's
    flatness_db: float  # median over the clip's frames
    flatness_ref_db: float
    noise_like: bool  # flatness_db - flatness_ref_db > flatness_tolerance_db
    silent_seconds: int
    silent: bool  # any silent second
    rms_per_second: tuple[float, ...]  # each second's RMS ÷ the reference's median second
    loudness_off: bool  # some second outside [rms_low, rms_high]
    dc_offset: float  # |clip mean - reference mean| ÷ reference std
    dc: bool
    loop_corr: float  # peak envelope-change autocorrelation at lags >= loop_min_lag
    loop_lag_seconds: float
    loop: bool
    partials: float  # sustained partials per frame (held for 3 disjoint windows)
    partials_ref: float
    no_partials: bool  # partials < partials_fraction x partials_ref

    @property
    def rms_min(self) -> float:
        return min(self.rms_per_second, default=math.nan)

    @property
    def rms_max(self) -> float:
        return max(self.rms_per_second, default=math.nan)

    #: the flags, each a boolean field
    FLAG_NAMES: ClassVar[tuple[str, ...]] = ("silent", "noise_like", "loudness_off", "dc",
                                             "loop", "no_partials")

    @property
    def flags(self) -> dict[str, bool]:
        return {name: getattr(self, name) for name in self.FLAG_NAMES}

    @property
    def flag_count(self) -> int:
        return sum(self.flags.values())

    @property
    def noise_excess_db(self) -> float:
        """How far a noise-like clip's flatness lies above the reference's (dB); 0 when the
        clip is not flagged `noise_like` (so among unflagged clips it never decides)."""
        return self.flatness_db - self.flatness_ref_db if self.noise_like else 0.0

    @property
    def rank_key(self) -> tuple[int, float, float]:
        """What "better-sounding" means when clips are compared (best-audio.ckpt,
        `rank=score`): fewer flags first, then the less noise-like, then the higher score.
        Why: the FD compares how the spectrum moves, not what it holds, so broadband noise
        with music's dynamics can score like real audio (measured on the orchestral
        corpus: a SampleRNN sample at flatness -9 dB against the music's -27 scored 1.06);
        the flags are what catch it, and a flagged clip must never win over a clean one.
        Between clips flagged alike the score stays blind in the same way (a -8 dB sample
        outscored a -19 dB one, 1.18 to 1.07, and was kept), so how far the flatness lies
        over the reference's comes before it."""
        score = self.score if math.isfinite(self.score) else -math.inf
        return (-self.flag_count, -self.noise_excess_db, score)

    def to_dict(self) -> dict[str, float | int | bool | list[float]]:
        """Flat, JSON/W&B-ready, keys prefixed "audio_" (nan where undefined)."""
        out: dict[str, Any] = {}
        for k, v in asdict(self).items():
            out[f"audio_{k}"] = list(v) if isinstance(v, tuple) else v
        out["audio_rms_min"] = self.rms_min
        out["audio_rms_max"] = self.rms_max
        out["audio_flag_count"] = self.flag_count
        out["audio_noise_excess_db"] = self.noise_excess_db
        return out


def score_clip(clip: np.ndarray, ref: AudioReference) -> AudioScore:
    """Score one generated clip (1-D, original scale, the length `ref` was built for)."""
    x = np.asarray(clip, np.float64)
    if x.ndim != 1:
        raise ValueError(f"score_clip: the clip must be 1-D, got shape {x.shape}")
    want = ref.clip_samples
    if abs(len(x) - want) > LENGTH_TOLERANCE * want:
        raise ValueError(f"score_clip: the reference is calibrated for {ref.clip_seconds:g} s "
                         f"clips, this one lasts {len(x) / ref.sample_rate:.3g} s; build a "
                         "reference for its length")
    s, an = ref.settings, ref.analysis
    flat_parts, lm_parts = [], []
    partials = PartialCounter(an.delta_frames)
    for power, lm in an.blocks(x):
        flat_parts.append(flatness_db(power))
        lm_parts.append(lm)
        partials.add(power)
    log_mel = np.concatenate(lm_parts)
    flat = np.concatenate(flat_parts)
    fd = _fd(centred_cov(log_mel), ref.cov)
    flatness = float(np.nanmedian(flat)) if np.isfinite(flat).any() else math.nan
    ratios = second_rms(x, ref.sample_rate) / ref.rms_median
    with np.errstate(divide="ignore"):
        silent = int(np.sum(20.0 * np.log10(ratios) < s.silence_db))
    dc = abs(float(x.mean()) - ref.level_mean) / ref.level_std
    loop, lag = loop_correlation(_envelope_change(log_mel, an.delta_frames), an.frame_rate,
                                 s.loop_min_lag)
    return AudioScore(
        score=_calibrated(fd, ref.fd_floor, ref.fd_ceiling), fd=fd,
        fd_floor=ref.fd_floor, fd_ceiling=ref.fd_ceiling,
        timbre_db=_timbre_db(log_mel.mean(axis=0), ref.mean),
        flatness_db=flatness, flatness_ref_db=ref.flatness_db,
        noise_like=bool(flatness - ref.flatness_db > s.flatness_tolerance_db),
        silent_seconds=silent, silent=silent > 0,
        rms_per_second=tuple(float(r) for r in ratios),
        loudness_off=bool(np.any((ratios < s.rms_low) | (ratios > s.rms_high))),
        dc_offset=dc, dc=dc > s.dc_threshold,
        loop_corr=loop, loop_lag_seconds=lag, loop=bool(loop > s.loop_threshold),
        partials=partials.mean, partials_ref=ref.partials,
        no_partials=bool(partials.mean < s.partials_fraction * ref.partials))
