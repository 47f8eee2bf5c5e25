"""Generation: continue a seed with a trained model, frame by frame.

Strategies (seed 001's discussion):
- `stateful`: warm the recurrent state on the seed, then feed each predicted
  frame back carrying the state. This is the "full history" approach in O(1)
  per step: the state summarises everything seen so far.
- `refeed`: re-run the whole history from a zero state at every step, O(n^2).
  Numerically the same as `stateful` (the reference the tests compare with).
- `sliding`: Melvin's approach, re-run only the last `window` frames from a
  zero state at every step; forgets everything older than the window.

Audio is rebuilt from frames (feature space -> time -> original scale):
- frames overlap (hop < x_len): `ola` overlap-adds the frames with a Hann
  window (normalised by the summed window, so consistent frames reconstruct
  exactly); `none` keeps only each frame's last `hop` new samples.
- hop == x_len: `crossfade` removes the jump at each boundary by ramping the
  offset between the previous frame's end and the new frame's start to zero
  over `crossfade` samples; `none` concatenates raw frames (you hear the tick).
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from audiolstm.errors import UserError
from audiolstm.metrics import generation_metrics

ProgressFn = Callable[[int, int], None]


@contextlib.contextmanager
def cpu_backend(single_step: bool) -> Iterator[None]:
    """oneDNN speeds whole CPU sequences up but makes single-frame LSTM steps slower.

    Measured in bench/bench_generate.py; `single_step=True` turns it off for the
    per-frame loop of `stateful`, whole-sequence passes keep the default.
    """
    if single_step:
        with warnings.catch_warnings():  # flags() also resets oneDNN TF32, which warns on CPU
            warnings.simplefilter("ignore", UserWarning)
            with torch.backends.mkldnn.flags(enabled=False):
                yield
    else:
        yield


def _step_inputs(seed: Tensor) -> Tensor:
    if seed.dim() != 2:
        raise ValueError(f"seed frames must be (S, D), got {tuple(seed.shape)}")
    if seed.shape[0] < 1:
        raise UserError("seed: needs at least one frame (seed.seconds too short for data.x_len)")
    return seed[None]


@dataclass
class Sampling:
    """How a head output becomes the next frame, and what is fed back.

    temperature: 0 feeds back the mean (the only choice for the mse head), > 0
    samples the probabilistic heads. feedback_noise: sigma of Gaussian noise added
    to the fed-back frame only (the seeds' input-noise idea applied where the
    model meets its own outputs); the generated audio stays clean.
    """

    temperature: float = 0.0
    feedback_noise: float = 0.0
    generator: torch.Generator | None = None

    def frame(self, model, out: Tensor) -> Tensor:
        if hasattr(model, "next_frame"):
            return model.next_frame(out, self.temperature)
        return out

    def feed(self, frame: Tensor) -> Tensor:
        if self.feedback_noise <= 0:
            return frame
        noise = torch.randn(frame.shape, generator=self.generator, device=frame.device,
                            dtype=frame.dtype)
        return frame + self.feedback_noise * noise


GREEDY = Sampling()


@torch.inference_mode()
def generate_stateful(model, seed: Tensor, n_frames: int, progress: ProgressFn | None = None,
                      sampling: Sampling = GREEDY) -> Tensor:
    """(S, D) seed -> (n_frames, D) continuation; O(1) work per generated frame."""
    x = _step_inputs(seed)
    frames = torch.empty(n_frames, seed.shape[1], dtype=seed.dtype, device=seed.device)
    out, state = model(x)  # warm the state on the whole seed in one pass
    nxt = sampling.frame(model, out[:, -1:])
    with cpu_backend(single_step=seed.device.type == "cpu"):
        for i in range(n_frames):
            frames[i] = nxt[0, 0]
            if i + 1 < n_frames:
                out, state = model(sampling.feed(nxt), state)
                nxt = sampling.frame(model, out)
            if progress:
                progress(i + 1, n_frames)
    return frames


@torch.inference_mode()
def generate_refeed(model, seed: Tensor, n_frames: int, window: int | None = None,
                    progress: ProgressFn | None = None, sampling: Sampling = GREEDY) -> Tensor:
    """Re-run the history (all of it, or the last `window` frames) from zero state per frame."""
    history = torch.cat([seed, seed.new_empty(n_frames, seed.shape[1])])
    frames = seed.new_empty(n_frames, seed.shape[1])
    s = seed.shape[0]
    for i in range(n_frames):
        end = s + i
        start = 0 if window is None else max(0, end - window)
        out, _ = model(history[None, start:end])
        frames[i] = sampling.frame(model, out[:, -1:])[0, 0]
        history[end] = sampling.feed(frames[i])
        if progress:
            progress(i + 1, n_frames)
    return frames


def generate_frames(model, seed: Tensor, n_frames: int, strategy: str = "stateful",
                    window: int | None = None, progress: ProgressFn | None = None,
                    sampling: Sampling = GREEDY) -> Tensor:
    if strategy == "stateful":
        return generate_stateful(model, seed, n_frames, progress, sampling)
    if strategy == "refeed":
        return generate_refeed(model, seed, n_frames, None, progress, sampling)
    if strategy == "sliding":
        if not window or window < 1:
            raise UserError(f"window={window!r} must be a positive number of frames for sliding")
        return generate_refeed(model, seed, n_frames, window, progress, sampling)
    raise UserError(f"strategy={strategy!r} is not one of stateful, refeed, sliding")


# ---------------------------------------------------------------------- audio <-> frames
def frame_signal(x: np.ndarray, x_len: int, hop: int) -> np.ndarray:
    """Frames x[k*hop : k*hop + x_len] for every whole frame (a copy, small: seeds only)."""
    n = (len(x) - x_len) // hop + 1
    if n < 1:
        return np.empty((0, x_len), dtype=np.float32)
    idx = np.arange(n)[:, None] * hop + np.arange(x_len)[None, :]
    return x[idx].astype(np.float32)


def overlap_add(frames: np.ndarray, hop: int) -> np.ndarray:
    """Hann-weighted overlap-add normalised by the summed weights.

    Consistent frames (cut from one signal) come back exactly; inconsistent
    ones (predictions) are blended smoothly where they overlap. A small floor
    on the window keeps every sample covered, including the first and last.
    """
    n, x_len = frames.shape
    w = np.hanning(x_len + 2)[1:-1] + 1e-3
    length = (n - 1) * hop + x_len
    acc = np.zeros(length)
    norm = np.zeros(length)
    for k in range(n):
        acc[k * hop : k * hop + x_len] += w * frames[k]
        norm[k * hop : k * hop + x_len] += w
    return (acc / norm).astype(np.float32)


def crossfade_boundaries(frames: np.ndarray, tail: tuple[float, float], length: int
                         ) -> np.ndarray:
    """Concatenate non-overlapping frames, ramping each boundary jump away over `length`.

    The jump is measured against the linear continuation of the previous frame's last
    two samples (`tail` = the two samples before the first frame), so the boundary
    step becomes the local slope, not zero: a natural step, tick score near 1.
    """
    out = frames.astype(np.float32).copy()
    length = max(1, min(length, out.shape[1]))
    ramp = (1.0 - np.arange(length) / length).astype(np.float32)
    before, last = tail
    for k in range(out.shape[0]):
        jump = out[k, 0] - (2 * last - before)
        out[k, :length] -= jump * ramp
        before, last = out[k, -2], out[k, -1]
    return out.reshape(-1)


def frames_to_audio(seed_frames: np.ndarray, gen_frames: np.ndarray, hop: int,
                    deticking: str, crossfade: int = 64) -> tuple[np.ndarray, int]:
    """(seed, generated) time-domain frames -> audio and the sample where generation starts."""
    x_len = seed_frames.shape[1]
    seed_audio = overlap_add(seed_frames, hop) if hop < x_len else seed_frames.reshape(-1)
    if hop < x_len:
        if deticking == "ola":
            audio = overlap_add(np.concatenate([seed_frames, gen_frames]), hop)
            return audio, len(seed_audio)
        new = gen_frames[:, x_len - hop :].reshape(-1)
        return np.concatenate([seed_audio, new]), len(seed_audio)
    if deticking == "crossfade":
        gen = crossfade_boundaries(gen_frames, (float(seed_audio[-2]), float(seed_audio[-1])),
                                   crossfade)
    else:
        gen = gen_frames.reshape(-1)
    return np.concatenate([seed_audio, gen]), len(seed_audio)


def resolve_deticking(deticking: str, hop: int, x_len: int) -> str:
    """`auto`: overlap-add when frames overlap, no change otherwise."""
    valid = ("auto", "none", "ola", "crossfade")
    if deticking not in valid:
        raise UserError(f"deticking={deticking!r} is not one of {', '.join(valid)}")
    if deticking == "auto":
        return "ola" if hop < x_len else "none"
    if deticking == "ola" and hop >= x_len:
        raise UserError(f"deticking=ola needs overlapping frames (data.hop={hop} < x_len={x_len})")
    if deticking == "crossfade" and hop < x_len:
        raise UserError("deticking=crossfade is for hop == x_len; with overlap use ola")
    return deticking


# ---------------------------------------------------------------------- the pipeline
@dataclass
class Continuation:
    audio: np.ndarray  # seed + generated, original scale
    seed_len: int
    sample_rate: int
    wall_seconds: float
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def generated(self) -> np.ndarray:
        return self.audio[self.seed_len :]


def continue_audio(model, data_state: dict[str, Any], seed_audio: np.ndarray, split: str,
                   seconds: float, strategy: str = "stateful", window: int | None = None,
                   deticking: str = "auto", crossfade: int = 64,
                   progress: ProgressFn | None = None,
                   sampling: Sampling = GREEDY) -> Continuation:
    """Continue `seed_audio` (original scale) by `seconds` with the model.

    `data_state` is what checkpoints carry (AudioDataModule.state_dict()):
    sample rate, x_len, hop, the normaliser (its `split` affine map is used)
    and the representation.
    """
    from audiolstm.features import Representation
    from audiolstm.normalize import Normalizer

    d = data_state["data"]
    sr, x_len = int(d["sample_rate"]), int(d["x_len"])
    hop = int(d.get("hop") or x_len)
    norm = Normalizer.from_state_dict(data_state["normalizer"])
    if hasattr(model, "lookback"):  # a sample-level model (SampleRNN): no frames to rebuild
        return _continue_samples(model, norm, split, seed_audio, seconds, sr, sampling,
                                 progress)
    mode = resolve_deticking(deticking, hop, x_len)
    rep = Representation(data_state["repr"].get("kind", "time"), x_len,
                         bool(data_state["repr"].get("standardize")))
    rep.load_state_dict(data_state["representation"])

    seed_frames = frame_signal(np.asarray(seed_audio, dtype=np.float32), x_len, hop)
    if len(seed_frames) == 0:
        raise UserError(f"seed.seconds: the seed ({len(seed_audio) / sr:.3f} s) is shorter than "
                        f"one frame (data.x_len={x_len} samples = {x_len / sr:.3f} s)")
    n_new = max(1, int(np.ceil(seconds * sr / hop)))
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    feats = rep.encode(torch.as_tensor(norm.transform(seed_frames, split), dtype=torch.float32))
    t0 = time.perf_counter()
    gen = generate_frames(model, feats.to(device=device, dtype=dtype), n_new, strategy, window,
                          progress, sampling)
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    gen_time = norm.inverse(rep.decode(gen.float().cpu()).numpy(), split)
    audio, seed_len = frames_to_audio(seed_frames, np.asarray(gen_time, np.float32), hop, mode,
                                      crossfade)
    audio = audio[: seed_len + int(round(seconds * sr))]
    cont = Continuation(audio=audio, seed_len=seed_len, sample_rate=sr, wall_seconds=wall)
    cont.metrics = generation_metrics(audio[:seed_len], cont.generated, sr, hop, wall)
    return cont


def _continue_samples(model, norm, split: str, seed_audio: np.ndarray, seconds: float,
                      sr: int, sampling: Sampling, progress: ProgressFn | None) -> Continuation:
    """SampleRNN: warm the tiers on the seed, then sample by sample (see samplernn.py)."""
    device = next(model.parameters()).device
    seed = torch.as_tensor(norm.transform(np.asarray(seed_audio, np.float32), split),
                           dtype=torch.float32, device=device)[None]
    n = max(1, int(round(seconds * sr)))
    t0 = time.perf_counter()
    gen = model.generate(seed, n, temperature=sampling.temperature,
                         generator=sampling.generator, progress=progress)
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    generated = np.asarray(norm.inverse(gen[0].float().cpu().numpy(), split), np.float32)
    audio = np.concatenate([np.asarray(seed_audio, np.float32), generated])
    cont = Continuation(audio=audio, seed_len=len(seed_audio), sample_rate=sr, wall_seconds=wall)
    cont.metrics = generation_metrics(audio[: len(seed_audio)], generated, sr, model.lookback,
                                      wall)
    return cont


def pick_seed(signal: np.ndarray, sample_rate: int, seconds: float, start_seconds: float | None,
              rng_seed: int, what: str) -> tuple[np.ndarray, float]:
    """A `seconds` long excerpt of `signal` at `start_seconds` (random, seeded, if None)."""
    n = int(round(seconds * sample_rate))
    if n <= 0:
        raise UserError(f"seed.seconds={seconds!r} must be > 0")
    if n > len(signal):
        raise UserError(f"seed.seconds={seconds}: {what} holds only "
                        f"{len(signal) / sample_rate:.2f} s")
    if start_seconds is None:
        start = int(np.random.default_rng(rng_seed).integers(0, len(signal) - n + 1))
    else:
        start = int(round(start_seconds * sample_rate))
        if start < 0 or start + n > len(signal):
            raise UserError(f"seed.start_seconds={start_seconds}: {what} holds "
                            f"{len(signal) / sample_rate:.2f} s, the seed would end past it")
    return np.asarray(signal[start : start + n], dtype=np.float32), start / sample_rate


def write_outputs(cont: Continuation, out_dir, stem: str, settings: dict[str, Any]) -> dict:
    """<stem>.wav (original rate and scale), <stem>.png (waveform + spectrogram), <stem>.json."""
    from pathlib import Path

    from audiolstm.audio import write_wav
    from audiolstm.plots import plot_generation
    from audiolstm.runinfo import write_json

    out = Path(out_dir)
    write_wav(out / f"{stem}.wav", cont.audio, cont.sample_rate)
    plot_generation(out / f"{stem}.png", cont.audio, cont.sample_rate, cont.seed_len,
                    title=f"{settings.get('strategy', '')}: seed | generated "
                          f"(tick {cont.metrics.get('tick_score', float('nan')):.2f}, "
                          f"RMS ratio {cont.metrics.get('rms_ratio', float('nan')):.2f})")
    record = {"settings": settings, "metrics": cont.metrics,
              "files": {"wav": f"{stem}.wav", "png": f"{stem}.png"}}
    write_json(out / f"{stem}.json", record)
    return record


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise UserError(f"device={name!r} is not a torch device") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device={name}: CUDA is not available on this machine")
    return dev


def run(cfg) -> dict[str, Any]:
    """`python generate.py ckpt_path=PATH ...` (conf/generate.yaml)."""
    from pathlib import Path

    from audiolstm.audio import load_audio
    from audiolstm.checkpoints import model_from_checkpoint
    from audiolstm.config import SPLITS
    from audiolstm.datamodule import AudioDataModule

    if not cfg.ckpt_path:
        raise UserError("ckpt_path is required: python generate.py ckpt_path=PATH/TO/last.ckpt")
    if cfg.strategy not in ("stateful", "refeed", "sliding"):
        raise UserError(f"strategy={cfg.strategy!r} is not one of stateful, refeed, sliding")
    if cfg.seconds <= 0:
        raise UserError(f"seconds={cfg.seconds!r} must be > 0")
    device = _device(cfg.device)
    model = model_from_checkpoint(cfg.ckpt_path, "ckpt_path", map_location=str(device))
    state = model.data_state
    sr = int(state["data"]["sample_rate"])
    s = cfg.seed
    if s.path:
        seed_signal, source, split = load_audio(s.path, sr), str(s.path), "test"
    else:
        if s.split not in SPLITS:
            raise UserError(f"seed.split={s.split!r} is not one of {', '.join(SPLITS)}")
        dm = AudioDataModule.from_state_dict(state, cache_dir=cfg.paths.cache_dir)
        dm.setup()
        seed_signal, source, split = dm.splits[s.split], f"{s.split} split", s.split
    seed_audio, start = pick_seed(seed_signal, sr, s.seconds, s.start_seconds, s.seed, source)

    if cfg.temperature < 0 or cfg.feedback_noise < 0:
        raise UserError("temperature and feedback_noise must be >= 0")
    sampling = Sampling(cfg.temperature, cfg.feedback_noise,
                        torch.Generator(device=device).manual_seed(int(s.seed)))
    torch.manual_seed(int(s.seed))  # the heads' sampling draws from the global generator
    bar = _progress_bar(cfg.progress)
    with bar as update:
        cont = continue_audio(model, state, seed_audio, split, cfg.seconds, cfg.strategy,
                              cfg.window, cfg.deticking, cfg.crossfade, update, sampling)
    settings = {
        "ckpt_path": str(cfg.ckpt_path), "strategy": cfg.strategy, "window": cfg.window,
        "deticking": resolve_deticking(cfg.deticking, int(state["data"].get("hop") or
                                                          state["data"]["x_len"]),
                                       int(state["data"]["x_len"])),
        "seconds": cfg.seconds, "seed_source": source, "seed_start_seconds": start,
        "seed_seconds": s.seconds, "device": str(device), "sample_rate": sr,
        "temperature": cfg.temperature, "feedback_noise": cfg.feedback_noise,
        "head": model.hparams.get("head", "mse"),
    }
    out_dir = Path(cfg.paths.output_dir)
    record = write_outputs(cont, out_dir, "generated", settings)
    m = cont.metrics
    print(f"generated {cfg.seconds:g} s ({cfg.strategy}) in {cont.wall_seconds:.2f} s "
          f"= {m['real_time_factor']:.1f}x real time; tick score {m['tick_score']:.3f}, "
          f"RMS ratio {m['rms_ratio']:.3f}\noutputs: {out_dir}", flush=True)
    return record


@contextlib.contextmanager
def _progress_bar(enabled: bool) -> Iterator[ProgressFn | None]:
    """A rich progress bar over generated frames (only on a terminal, or when forced)."""
    import sys

    if not enabled or (enabled == "auto" and not sys.stdout.isatty()):
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress("generating", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()) as p:
        task = p.add_task("frames", total=None)

        def update(done: int, total: int) -> None:
            if done % 16 == 0 or done == total:
                p.update(task, completed=done, total=total)

        yield update
