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

    def frame(self, model: AudioRNN, out: Tensor) -> Tensor:
        return model.next_frame(out, self.temperature)

    def feed(self, frame: Tensor) -> Tensor:
        if self.feedback_noise <= 0:
            return frame
        noise = torch.randn(frame.shape, generator=self.generator, device=frame.device,
                            dtype=frame.dtype)
        return frame + self.feedback_noise * noise


GREEDY = Sampling()


@torch.inference_mode()
def generate_stateful(model: AudioRNN, seed: Tensor, n_frames: int, progress: ProgressFn | None = None,
                      sampling: Sampling = GREEDY) -> Tensor:
    """(S, D) seed -> (n_frames, D) continuation; O(1) work per generated frame."""
    x = _step_inputs(seed)
    frames = torch.empty(n_frames, seed.shape[1], dtype=seed.dtype, device=seed.device)
    out, state = model(x)  # warm the state on the whole seed in one pass
    nxt = sampling.frame(model, out[:, -1:])
    # eval mode: one fused matmul per layer on preallocated buffers (models/frame_step.py);
    # greedy mse feedback folds the head into the first layer (`feedback_step`)
    stepper = model.stepper(state) if not model.training else None
    step = None if stepper is None else stepper.step
    fold = (stepper is not None and stepper.can_fold() and model.hparams.head == "mse"
            and sampling.feedback_noise <= 0)
    with cpu_backend(single_step=seed.device.type == "cpu"):
        for i in range(n_frames):
            frames[i] = nxt[0, 0]
            if i + 1 < n_frames:
                if fold:
                    out = stepper.feedback_step()
                elif step is not None:
                    out = step(sampling.feed(nxt))
                else:
                    out, state = model(sampling.feed(nxt), state)
                nxt = sampling.frame(model, out)
            if progress:
                progress(i + 1, n_frames)
    return frames


@torch.inference_mode()
def generate_refeed(model: AudioRNN, seed: Tensor, n_frames: int, window: int | None = None,
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


def generate_frames(model: AudioRNN, seed: Tensor, n_frames: int, strategy: str = "stateful",
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
    raise UserError(f"strategy={strategy!r} is not one of {', '.join(STRATEGIES)}")
