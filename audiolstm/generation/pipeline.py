"""The continuation pipeline: a seed at the original scale -> a model -> audio -> files.

`continue_audio` dispatches on the model's type (`functools.singledispatch`): a frame
model (`AudioRNN`) is fed normalised, encoded frames through a strategy and its frames
are rebuilt into audio; a sample model (`SampleRNN`) continues the normalised samples
with its own `generate`. Both come back at the original scale, with the generation
metrics. `run` is the `generate.py` job.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from audiolstm.atomic import write_json
from audiolstm.data.audio import load_audio, write_wav
from audiolstm.data.datamodule import AudioDataModule
from audiolstm.data.splits import SPLITS
from audiolstm.data.state import DataState
from audiolstm.errors import UserError
from audiolstm.evaluation.metrics import generation_metrics
from audiolstm.evaluation.plots import plot_generation
from audiolstm.generation.reconstruction import frame_signal, frames_to_audio, resolve_deticking
from audiolstm.generation.scoring import (
    generation_reference,
    score_metrics,
    score_request,
    summary_line,
)
from audiolstm.generation.strategies import GREEDY, STRATEGIES, Sampling, generate_frames
from audiolstm.models.base import AudioModel, ProgressFn
from audiolstm.models.checkpoints import model_from_checkpoint
from audiolstm.models.frame_rnn import AudioRNN
from audiolstm.models.samplernn import SampleRNN


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


@functools.singledispatch
def continue_audio(model: AudioModel, state: DataState, seed_audio: np.ndarray, split: str,
                   seconds: float, strategy: str = "stateful", window: int | None = None,
                   deticking: str = "auto", crossfade: int = 64,
                   progress: ProgressFn | None = None,
                   sampling: Sampling = GREEDY) -> Continuation:
    """Continue `seed_audio` (original scale) by `seconds` with the model.

    `state` is what the checkpoint carries: sample rate, frame settings, the normaliser
    (its `split` affine map is used) and the representation. `strategy`, `window`,
    `deticking` and `crossfade` apply to frame models only.
    """
    raise TypeError(f"no generation path for {type(model).__name__}")


@continue_audio.register
def _continue_frames(model: AudioRNN, state: DataState, seed_audio: np.ndarray, split: str,
                     seconds: float, strategy: str = "stateful", window: int | None = None,
                     deticking: str = "auto", crossfade: int = 64,
                     progress: ProgressFn | None = None,
                     sampling: Sampling = GREEDY) -> Continuation:
    """Frames: normalise + encode the seed's frames, run a strategy, decode, rebuild audio."""
    sr, x_len, hop = state.sample_rate, state.x_len, state.step
    norm, rep = state.normalizer(), state.representation()
    mode = resolve_deticking(deticking, hop, x_len)
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


@continue_audio.register
def _continue_samples(model: SampleRNN, state: DataState, seed_audio: np.ndarray, split: str,
                      seconds: float, strategy: str = "stateful", window: int | None = None,
                      deticking: str = "auto", crossfade: int = 64,
                      progress: ProgressFn | None = None,
                      sampling: Sampling = GREEDY) -> Continuation:
    """Samples: warm the tiers on the seed, then sample by sample (see samplernn.py)."""
    sr = state.sample_rate
    device = next(model.parameters()).device
    # SampleRNN models the original-scale audio and undoes its own *train* map itself
    # (`quantize`/`dequantize`), so the seed goes in, and the output comes back, by that
    # map, whatever split the seed is from (they differ under norm=minmax_union only).
    shift, scale = model.affine("train")
    seed = torch.as_tensor((np.asarray(seed_audio, np.float64) - shift) / scale,
                           dtype=torch.float32, device=device)[None]
    n = max(1, int(round(seconds * sr)))
    t0 = time.perf_counter()
    gen = model.generate(seed, n, temperature=sampling.temperature,
                         generator=sampling.generator, progress=progress)
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    generated = np.asarray(gen[0].double().cpu().numpy() * scale + shift, np.float32)
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
    if not cfg.ckpt_path:
        raise UserError("ckpt_path is required: python generate.py ckpt_path=PATH/TO/last.ckpt")
    if cfg.strategy not in STRATEGIES:
        raise UserError(f"strategy={cfg.strategy!r} is not one of {', '.join(STRATEGIES)}")
    if cfg.seconds <= 0:
        raise UserError(f"seconds={cfg.seconds!r} must be > 0")
    score_req = score_request(cfg.score, cfg.score_settings, "score", "score_settings")
    if cfg.reference and not score_req.enabled:
        raise UserError(f"reference={cfg.reference} has no effect with score=false")
    device = _device(cfg.device)
    model = model_from_checkpoint(cfg.ckpt_path, "ckpt_path", map_location=str(device))
    state = model.data_state
    sr = state.sample_rate

    @functools.cache
    def datamodule() -> AudioDataModule:
        dm = AudioDataModule.from_data_state(state, cache_dir=cfg.paths.cache_dir)
        dm.setup()
        return dm

    s = cfg.seed
    if s.path:
        seed_signal, source, split = load_audio(s.path, sr), str(s.path), "test"
    else:
        if s.split not in SPLITS:
            raise UserError(f"seed.split={s.split!r} is not one of {', '.join(SPLITS)}")
        # one file's piece of the split (a corpus: its longest), never across a boundary
        seed_signal, seed_file = datamodule().seed_signal(s.split)
        source, split = f"{s.split} split ({seed_file})", s.split
    seed_audio, start = pick_seed(seed_signal, sr, s.seconds, s.start_seconds, s.seed, source)
    # before generating: a reference that cannot score stops the job now, not after it
    reference, score_skipped, reference_source = generation_reference(
        score_req, cfg.reference, state, cfg.seconds, datamodule)

    if cfg.temperature < 0 or cfg.feedback_noise < 0:
        raise UserError("temperature and feedback_noise must be >= 0")
    sampling = Sampling(cfg.temperature, cfg.feedback_noise,
                        torch.Generator(device=device).manual_seed(int(s.seed)))
    torch.manual_seed(int(s.seed))  # the heads' sampling draws from the global generator
    bar = _progress_bar(cfg.progress)
    with bar as update:
        cont = continue_audio(model, state, seed_audio, split, cfg.seconds, cfg.strategy,
                              cfg.window, cfg.deticking, cfg.crossfade, update, sampling)
    score, score_numbers = score_metrics(cont.generated, reference, score_skipped)
    cont.metrics |= score_numbers
    settings = {
        "ckpt_path": str(cfg.ckpt_path), "strategy": cfg.strategy, "window": cfg.window,
        "deticking": resolve_deticking(cfg.deticking, state.step, state.x_len),
        "seconds": cfg.seconds, "seed_source": source, "seed_start_seconds": start,
        "seed_seconds": s.seconds, "device": str(device), "sample_rate": sr,
        "temperature": cfg.temperature, "feedback_noise": cfg.feedback_noise,
        "head": model.hparams.get("head", "mse"),
        "reference": reference_source, "score": score_req.mode,
        "score_settings": asdict(score_req.settings),
    }
    out_dir = Path(cfg.paths.output_dir)
    record = write_outputs(cont, out_dir, "generated", settings)
    m = cont.metrics
    print(f"generated {cfg.seconds:g} s ({cfg.strategy}) in {cont.wall_seconds:.2f} s "
          f"= {m['real_time_factor']:.1f}x real time; tick score {m['tick_score']:.3f}, "
          f"RMS ratio {m['rms_ratio']:.3f}", flush=True)
    print(summary_line(score) if score else f"audio score skipped: {score_skipped}", flush=True)
    print(f"outputs: {out_dir}", flush=True)
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
