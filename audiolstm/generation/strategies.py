"""Generation strategies for frame models (seed 001's discussion).

- `stateful`: warm the recurrent state on the seed, then feed each predicted frame back
  carrying the state: the "full history" approach in O(1) per step, since the state
  summarises everything seen so far.
- `refeed`: re-run the whole history from a zero state at every step, O(n^2).
  Numerically the same as `stateful` (the reference the tests compare with).
- `sliding`: Melvin's approach, re-run only the last `window` frames from a zero state
  at every step; forgets everything older than the window.

`Sampling` says how a head's output becomes the next frame and what is fed back.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from audiolstm.errors import UserError
from audiolstm.models.base import ProgressFn, cpu_backend
from audiolstm.models.frame_rnn import AudioRNN

STRATEGIES = ("stateful", "refeed", "sliding")
#: frames `sliding` re-runs per step when `window` is not given
SLIDING_WINDOW = 40


def _step_inputs(seed: Tensor) -> Tensor:
    """A seed of (S, D) frames, or (B, S, D) for B streams -> (B, S, D)."""
    if seed.dim() not in (2, 3):
        raise ValueError(f"seed frames must be (S, D) or (B, S, D), got {tuple(seed.shape)}")
    if seed.shape[-2] < 1:
        raise UserError("seed: needs at least one frame (seed.seconds too short for data.x_len)")
    return seed if seed.dim() == 3 else seed[None]


@dataclass
class Sampling:
    """How a head output becomes the next frame, and what is fed back.

    temperature: 0 feeds back the mean (the only choice for the mse head), > 0
    samples the probabilistic heads. feedback_noise: sigma of Gaussian noise added
    to the fed-back frame only (the seeds' input-noise idea applied where the
    model meets its own outputs); the generated audio stays clean. generator: the
    source of every random number (the heads' draws and the feedback noise), so that
    a seeded generator makes the whole continuation reproducible. top_p: nucleus
    sampling for the discrete heads (models/draw.py); 1 = off.
    """

    temperature: float = 0.0
    feedback_noise: float = 0.0
    generator: torch.Generator | None = None
    top_p: float = 1.0

    def frame(self, model: AudioRNN, out: Tensor) -> Tensor:
        return model.next_frame(out, self.temperature, self.generator, self.top_p)

    def feed(self, frame: Tensor) -> Tensor:
        if self.feedback_noise <= 0:
            return frame
        noise = torch.randn(frame.shape, generator=self.generator, device=frame.device,
                            dtype=frame.dtype)
        return frame + self.feedback_noise * noise


GREEDY = Sampling()


class FrameLikelihood:
    """Each stream's log-probability of the frames its head drew, under the model's own
    distribution (temperature 1, no truncation, whatever the sampling used), summed
    over every value of every frame drawn (with overlapping frames, the overlaps too):
    what ranks candidates (generation/candidates.py).

    `gaussian`: the density of the normalised values (nats; the units' constant is the
    same for every candidate of one model); `logistic_mixture`: the probability of the
    cell each value fell in. The mse head has no distribution.
    """

    def __init__(self, model: AudioRNN) -> None:
        if model.hparams.head == "mse":
            raise ValueError("head=mse predicts a mean, not a distribution: no likelihood")
        self.model = model
        self.total: Tensor | None = None
        self.count = 0

    def add(self, out: Tensor, frame: Tensor) -> None:
        """Head output (B, 1, ...) and the frame drawn from it (B, 1, D)."""
        head = self.model.head
        if self.model.hparams.head == "gaussian":
            logp = -head.nll(out, frame, reduction="none")
        else:
            logp = head.log_prob(out, frame)
        total = logp.double().sum((1, 2))
        self.total = total if self.total is None else self.total + total
        self.count += frame.shape[1] * frame.shape[2]

    def mean(self) -> Tensor:
        """(B,) float64: the mean log-probability per generated sample, in nats."""
        if self.total is None:
            raise ValueError("no frame was drawn")
        return self.total / self.count


@torch.inference_mode()
def generate_stateful(model: AudioRNN, seed: Tensor, n_frames: int, progress: ProgressFn | None = None,
                      sampling: Sampling = GREEDY,
                      likelihood: FrameLikelihood | None = None) -> Tensor:
    """(S, D) seed -> (n_frames, D) continuation; O(1) work per generated frame.

    (B, S, D) seeds -> (B, n_frames, D): B streams side by side, drawn independently.
    `likelihood` accumulates the log-probability of every frame drawn.
    """
    x = _step_inputs(seed)
    frames = x.new_empty(x.shape[0], n_frames, x.shape[2])
    out, state = model(x)  # warm the state on the whole seed in one pass
    nxt = sampling.frame(model, out[:, -1:])
    if likelihood is not None:
        likelihood.add(out[:, -1:], nxt)
    # eval mode: one fused matmul per layer on preallocated buffers (models/frame_step.py);
    # greedy mse feedback folds the head into the first layer (`feedback_step`)
    stepper = model.stepper(state, x.shape[0]) if not model.training else None
    step = None if stepper is None else stepper.step
    fold = (stepper is not None and stepper.can_fold() and model.hparams.head == "mse"
            and sampling.feedback_noise <= 0)
    with cpu_backend(single_step=seed.device.type == "cpu"):
        for i in range(n_frames):
            frames[:, i] = nxt[:, 0]
            if i + 1 < n_frames:
                if fold:
                    out = stepper.feedback_step()
                elif step is not None:
                    out = step(sampling.feed(nxt))
                else:
                    out, state = model(sampling.feed(nxt), state)
                nxt = sampling.frame(model, out)
                if likelihood is not None:
                    likelihood.add(out, nxt)
            if progress:
                progress(i + 1, n_frames)
    return frames if seed.dim() == 3 else frames[0]


@torch.inference_mode()
def generate_refeed(model: AudioRNN, seed: Tensor, n_frames: int, window: int | None = None,
                    progress: ProgressFn | None = None, sampling: Sampling = GREEDY,
                    likelihood: FrameLikelihood | None = None) -> Tensor:
    """Re-run the history (all of it, or the last `window` frames) from zero state per frame.

    Shapes as `generate_stateful`: (S, D) -> (n_frames, D), (B, S, D) -> (B, n_frames, D).
    """
    x = _step_inputs(seed)
    history = torch.cat([x, x.new_empty(x.shape[0], n_frames, x.shape[2])], dim=1)
    frames = x.new_empty(x.shape[0], n_frames, x.shape[2])
    s = x.shape[1]
    for i in range(n_frames):
        end = s + i
        start = 0 if window is None else max(0, end - window)
        out, _ = model(history[:, start:end])
        nxt = sampling.frame(model, out[:, -1:])
        if likelihood is not None:
            likelihood.add(out[:, -1:], nxt)
        frames[:, i] = nxt[:, 0]
        history[:, end] = sampling.feed(nxt)[:, 0]
        if progress:
            progress(i + 1, n_frames)
    return frames if seed.dim() == 3 else frames[0]


def generate_frames(model: AudioRNN, seed: Tensor, n_frames: int, strategy: str = "stateful",
                    window: int | None = None, progress: ProgressFn | None = None,
                    sampling: Sampling = GREEDY,
                    likelihood: FrameLikelihood | None = None) -> Tensor:
    if strategy == "stateful":
        return generate_stateful(model, seed, n_frames, progress, sampling, likelihood)
    if strategy == "refeed":
        return generate_refeed(model, seed, n_frames, None, progress, sampling, likelihood)
    if strategy == "sliding":
        if not window or window < 1:
            raise UserError(f"window={window!r} must be a positive number of frames for sliding")
        return generate_refeed(model, seed, n_frames, window, progress, sampling, likelihood)
    raise UserError(f"strategy={strategy!r} is not one of {', '.join(STRATEGIES)}")
