"""The continuation pipeline: a seed at the original scale -> a model -> audio -> files.

`continue_streams` dispatches on the model's type (`functools.singledispatch`): a frame
model (`AudioRNN`) is fed normalised, encoded frames through a strategy and its frames
are rebuilt into audio; a sample model (`SampleRNN`) continues the normalised samples
with its own `generate`. Both come back at the original scale, with the generation
metrics, one `Continuation` per stream (`streams` continuations of one seed drawn as a
batch: the candidates of generation/candidates.py); `continue_audio` is one stream.
`run` is the `generate.py` job.
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
from audiolstm.errors import UserError, check_temperature, one_of
from audiolstm.evaluation.metrics import generation_metrics
from audiolstm.evaluation.plots import plot_generation
from audiolstm.generation.candidates import Controls, check_controls, rank_order
from audiolstm.generation.reconstruction import CROSSFADE, frame_signal, frames_to_audio
from audiolstm.generation.scoring import (
    generation_reference,
    score_metrics,
    score_request,
    summary_line,
)
from audiolstm.generation.settings import FRAME_ONLY, applied_settings
from audiolstm.generation.strategies import (
    GREEDY,
    FrameLikelihood,
    Sampling,
    generate_frames,
)
from audiolstm.models.base import AudioModel, ProgressFn
from audiolstm.models.checkpoints import model_from_checkpoint
from audiolstm.models.frame_rnn import AudioRNN
from audiolstm.models.samplernn import SampleRNN


@dataclass
class Continuation:
    audio: np.ndarray  # seed + generated, original scale
    seed_len: int
    sample_rate: int
    wall_seconds: float  # of the whole batch of streams it was drawn in
    metrics: dict[str, Any] = field(default_factory=dict)
    #: mean log-probability per generated sample under the model's own distribution
    #: (nats; generation/candidates.py), when asked for
    log_likelihood: float | None = None
    #: the generation settings that applied, resolved (generation/settings.py)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def generated(self) -> np.ndarray:
        return self.audio[self.seed_len :]


def continue_audio(model: AudioModel, state: DataState, seed_audio: np.ndarray, split: str,
                   seconds: float, strategy: str = "stateful", window: int | None = None,
                   deticking: str = "auto", crossfade: int | None = None,
                   progress: ProgressFn | None = None,
                   sampling: Sampling = GREEDY) -> Continuation:
    """Continue `seed_audio` (original scale) by `seconds` with the model.

    `state` is what the checkpoint carries: sample rate, frame settings, the normaliser
    (its `split` affine map is used) and the representation. `strategy`, `window`,
    `deticking`, `crossfade` and `sampling.feedback_noise` apply to frame models only
    (`generation.settings.applied_settings`: a value a model does not read is refused);
    `Continuation.settings` records those that applied.
    """
    return continue_streams(model, state, seed_audio, split, seconds, strategy, window,
                            deticking, crossfade, progress, sampling)[0]


@functools.singledispatch
def continue_streams(model: AudioModel, state: DataState, seed_audio: np.ndarray, split: str,
                     seconds: float, strategy: str = "stateful", window: int | None = None,
                     deticking: str = "auto", crossfade: int | None = None,
                     progress: ProgressFn | None = None, sampling: Sampling = GREEDY,
                     streams: int = 1, likelihood: bool = False) -> list[Continuation]:
    """`continue_audio` for `streams` continuations of one seed, drawn as one batch
    (independent draws from `sampling.generator`); `likelihood`: each with its
    `log_likelihood` (models with a distribution only)."""
    raise TypeError(f"no generation path for {type(model).__name__}")


@continue_streams.register
def _continue_frames(model: AudioRNN, state: DataState, seed_audio: np.ndarray, split: str,
                     seconds: float, strategy: str = "stateful", window: int | None = None,
                     deticking: str = "auto", crossfade: int | None = None,
                     progress: ProgressFn | None = None, sampling: Sampling = GREEDY,
                     streams: int = 1, likelihood: bool = False) -> list[Continuation]:
    """Frames: normalise + encode the seed's frames, run a strategy, decode, rebuild audio."""
    sr, x_len, hop = state.sample_rate, state.x_len, state.step
    applied = applied_settings(True, hop, x_len, strategy=strategy, window=window,
                               deticking=deticking, crossfade=crossfade,
                               feedback_noise=sampling.feedback_noise)
    norm, rep = state.normalizer(), state.representation()
    mode = applied["deticking"]
    seed_frames = frame_signal(np.asarray(seed_audio, dtype=np.float32), x_len, hop)
    if len(seed_frames) == 0:
        raise UserError(f"seed.seconds: the seed ({len(seed_audio) / sr:.3f} s) is shorter than "
                        f"one frame (data.x_len={x_len} samples = {x_len / sr:.3f} s)")
    n_new = max(1, int(np.ceil(seconds * sr / hop)))
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    feats = rep.encode(torch.as_tensor(norm.transform(seed_frames, split), dtype=torch.float32))
    meter = FrameLikelihood(model) if likelihood else None
    t0 = time.perf_counter()
    gen = generate_frames(model, feats.to(device=device, dtype=dtype).expand(streams, -1, -1),
                          n_new, strategy, applied.get("window"), progress, sampling, meter)
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    conts = []
    for b in range(streams):
        gen_time = norm.inverse(rep.decode(gen[b].float().cpu()).numpy(), split)
        audio, seed_len = frames_to_audio(seed_frames, np.asarray(gen_time, np.float32), hop,
                                          mode, applied.get("crossfade", CROSSFADE))
        audio = audio[: seed_len + int(round(seconds * sr))]
        cont = Continuation(audio=audio, seed_len=seed_len, sample_rate=sr, wall_seconds=wall,
                            settings=applied | {"head": model.hparams.head})
        cont.metrics = generation_metrics(audio[:seed_len], cont.generated, sr, hop, wall)
        conts.append(cont)
    if meter is not None:
        _set_likelihood(conts, meter.mean())
    return conts


@continue_streams.register
def _continue_samples(model: SampleRNN, state: DataState, seed_audio: np.ndarray, split: str,
                      seconds: float, strategy: str = "stateful", window: int | None = None,
                      deticking: str = "auto", crossfade: int | None = None,
                      progress: ProgressFn | None = None, sampling: Sampling = GREEDY,
                      streams: int = 1, likelihood: bool = False) -> list[Continuation]:
    """Samples: warm the tiers on the seed, then sample by sample (see samplernn.py)."""
    applied_settings(False, state.step, state.x_len, strategy=strategy, window=window,
                     deticking=deticking, crossfade=crossfade,
                     feedback_noise=sampling.feedback_noise)  # frame settings: refused
    sr = state.sample_rate
    device = next(model.parameters()).device
    # SampleRNN models the original-scale audio and undoes its own *train* map itself
    # (`quantize`/`dequantize`), so the seed goes in, and the output comes back, by that
    # map, whatever split the seed is from (they differ under norm=minmax_union only).
    shift, scale = model.affine("train")
    seed = torch.as_tensor((np.asarray(seed_audio, np.float64) - shift) / scale,
                           dtype=torch.float32, device=device)[None].expand(streams, -1)
    n = max(1, int(round(seconds * sr)))
    t0 = time.perf_counter()
    gen = model.generate(seed, n, temperature=sampling.temperature,
                         generator=sampling.generator, progress=progress,
                         top_p=sampling.top_p, return_log_likelihood=likelihood)
    gen, loglik = gen if likelihood else (gen, None)
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    conts = []
    for b in range(streams):
        generated = np.asarray(gen[b].double().cpu().numpy() * scale + shift, np.float32)
        audio = np.concatenate([np.asarray(seed_audio, np.float32), generated])
        cont = Continuation(audio=audio, seed_len=len(seed_audio), sample_rate=sr,
                            wall_seconds=wall)
        cont.metrics = generation_metrics(audio[: len(seed_audio)], generated, sr,
                                          model.lookback, wall)
        conts.append(cont)
    if loglik is not None:
        _set_likelihood(conts, loglik)
    return conts


def _set_likelihood(conts: list[Continuation], mean: torch.Tensor) -> None:
    """Each stream's mean log-likelihood (nats per sample), on it and in its metrics."""
    for cont, value in zip(conts, mean.tolist(), strict=True):
        cont.log_likelihood = float(value)
        cont.metrics["log_likelihood"] = float(value)


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


def write_outputs(cont: Continuation, out_dir, stem: str, settings: dict[str, Any],
                  extra: dict[str, Any] | None = None) -> dict:
    """<stem>.wav (original rate and scale), <stem>.png (waveform + spectrogram), <stem>.json
    (`extra`: more top-level entries of the JSON)."""
    out = Path(out_dir)
    write_wav(out / f"{stem}.wav", cont.audio, cont.sample_rate)
    plot_generation(out / f"{stem}.png", cont.audio, cont.sample_rate, cont.seed_len,
                    title=f"{settings.get('strategy', '')}: seed | generated "
                          f"(tick {cont.metrics.get('tick_score', float('nan')):.2f}, "
                          f"RMS ratio {cont.metrics.get('rms_ratio', float('nan')):.2f})")
    record = {"settings": settings, "metrics": cont.metrics,
              "files": {"wav": f"{stem}.wav", "png": f"{stem}.png"}} | (extra or {})
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
    if cfg.seconds <= 0:
        raise UserError(f"seconds={cfg.seconds!r} must be > 0")
    score_req = score_request(cfg.score, cfg.score_settings, "score", "score_settings")
    if cfg.reference and not score_req.enabled:
        raise UserError(f"reference={cfg.reference} has no effect with score=false")
    reference_split = cfg.get("reference_split", "test")
    one_of(reference_split, ("test", "val", "train"), "reference_split")
    if reference_split != "test" and (cfg.reference or not score_req.enabled):
        why = f"reference={cfg.reference} is a file" if cfg.reference else "score=false"
        raise UserError(f"reference_split={reference_split} has no effect: {why}")
    rank_split = cfg.get("rank_reference_split", "val")
    if rank_split is not None:
        one_of(rank_split, ("val", "test", "train"), "rank_reference_split")
    device = _device(cfg.device)
    model = model_from_checkpoint(cfg.ckpt_path, "ckpt_path", map_location=str(device))
    check_temperature(cfg.temperature, "temperature", UserError)
    if not cfg.feedback_noise >= 0:
        raise UserError(f"feedback_noise={cfg.feedback_noise!r} must be >= 0")
    controls = check_controls(cfg.top_p, cfg.candidates, cfg.keep, cfg.rank, cfg.temperature,
                              cfg.feedback_noise, model)
    ranks_by_score = controls.rank == "score" and controls.candidates > 1
    if rank_split != "val" and not ranks_by_score:
        shown = "null" if rank_split is None else rank_split
        raise UserError(f"rank_reference_split={shown} has no effect: it is what "
                        "rank=score ranks candidates against (candidates > 1)")
    state = model.data_state
    frame_settings = {k: cfg[k] for k in FRAME_ONLY}
    # before any audio is read: a setting this model does not read is refused
    applied_settings(isinstance(model, AudioRNN), state.step, state.x_len, **frame_settings)
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
        score_req, cfg.reference, state, cfg.seconds, datamodule, reference_split)
    rank_reference, rank_source = None, None
    if ranks_by_score:
        rank_reference, rank_skipped, rank_source = (
            (reference, score_skipped, reference_source)
            if rank_split is None or (rank_split == reference_split and not cfg.reference)
            else generation_reference(score_req, None, state, cfg.seconds, datamodule,
                                      rank_split))
        if rank_reference is None:
            raise UserError(f"rank=score needs the audio score, which is off here: "
                            f"{rank_skipped}")

    sampling = Sampling(cfg.temperature, cfg.feedback_noise,
                        torch.Generator(device=device).manual_seed(int(s.seed)), controls.top_p)
    bar = _progress_bar(cfg.progress)
    with bar as update:
        conts = continue_streams(model, state, seed_audio, split, cfg.seconds, cfg.strategy,
                                 cfg.window, cfg.deticking, cfg.crossfade, update, sampling,
                                 controls.candidates,
                                 controls.candidates > 1 and controls.rank == "likelihood")
    scores = []
    for c in conts:  # every candidate scored against the one reference (when there is one)
        score, numbers = score_metrics(c.generated, reference, score_skipped)
        c.metrics |= numbers
        scores.append(score)
        if rank_reference is not None:  # and, to rank it, against the rank's reference
            ranked = (numbers if rank_reference is reference
                      else score_metrics(c.generated, rank_reference, None)[1])
            c.metrics |= {f"rank_{k}": ranked[k]
                          for k in ("audio_score", "audio_flag_count", "audio_flags",
                                    "audio_noise_excess_db")}
    order = _rank(conts, controls)
    cont, score = conts[order[0]], scores[order[0]]
    settings = {
        "ckpt_path": str(cfg.ckpt_path),
        "seconds": cfg.seconds, "seed_source": source, "seed_start_seconds": start,
        "seed_seconds": s.seconds, "device": str(device), "sample_rate": sr,
        "temperature": cfg.temperature, **cont.settings,
        "reference": reference_source, "score": score_req.mode,
        "score_settings": asdict(score_req.settings),
    }
    settings |= controls.settings()
    if rank_source is not None:
        settings["rank_reference"] = rank_source
    out_dir = Path(cfg.paths.output_dir)
    record = _write_kept(conts, order, controls, out_dir, settings)
    m = cont.metrics
    how = settings.get("strategy", "samples")
    print(f"generated {cfg.seconds:g} s ({how}) in {cont.wall_seconds:.2f} s "
          f"= {m['real_time_factor']:.1f}x real time; tick score {m['tick_score']:.3f}, "
          f"RMS ratio {m['rms_ratio']:.3f}", flush=True)
    print(summary_line(score) if score else f"audio score skipped: {score_skipped}", flush=True)
    print(f"outputs: {out_dir}", flush=True)
    return record


def _rank(conts: list[Continuation], controls: Controls) -> list[int]:
    """Candidate indices, best first, by `controls.rank` (generation/candidates.py): the
    audio score already in each candidate's metrics, or its mean log-likelihood."""
    if len(conts) == 1:
        return [0]
    if controls.rank == "score":  # fewer flags, then less noise-like, then the score
        # (AudioScore.rank_key), against the rank's reference (rank_reference_split), not
        # the one reported
        return rank_order([c.metrics["rank_audio_score"] for c in conts],
                          [(c.metrics["rank_audio_flag_count"],
                            c.metrics["rank_audio_noise_excess_db"]) for c in conts])
    return rank_order([c.log_likelihood for c in conts])


def _write_kept(conts: list[Continuation], order: list[int], controls: Controls,
                out_dir: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """The best `controls.keep` candidates: generated.* (the best), generated_2.*, … each
    JSON with the table of all candidates (drawn index, rank, value ranked by, file);
    one continuation: generated.* alone, as ever. Returns the best one's record."""
    if len(conts) == 1:
        return write_outputs(conts[0], out_dir, "generated", settings)
    keys = (["log_likelihood"] if controls.rank == "likelihood"
            else ["rank_audio_score", "rank_audio_flags", "rank_audio_noise_excess_db"])
    stems = {i: "generated" if r == 0 else f"generated_{r + 1}"
             for r, i in enumerate(order[: controls.keep])}
    table = [{"candidate": i, "rank": r + 1}
             | {k: conts[i].metrics.get(k) for k in [*keys, "audio_score"]}
             | {"wav": f"{stems[i]}.wav" if i in stems else None}
             for r, i in enumerate(order)]
    records = []
    for r, i in enumerate(order[: controls.keep]):
        conts[i].metrics |= {"candidate": i, "candidate_rank": r + 1}
        records.append(write_outputs(conts[i], out_dir, stems[i], settings,
                                     {"candidates": table}))
    return records[0]


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
