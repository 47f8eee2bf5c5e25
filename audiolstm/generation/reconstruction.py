"""Audio from frames: framing a seed, and rebuilding audio from predicted frames.

- frames overlap (hop < x_len): `ola` overlap-adds the frames with a Hann window
  (normalised by the summed window, so consistent frames reconstruct exactly); `none`
  keeps only each frame's last `hop` new samples.
- hop == x_len: `crossfade` removes the jump at each boundary by ramping the offset
  between the previous frame's end and the new frame's start to zero over `crossfade`
  samples; `none` concatenates raw frames (you hear the tick).
"""

from __future__ import annotations

import numpy as np

from audiolstm.errors import UserError

DETICKING = ("auto", "none", "ola", "crossfade")
#: samples over which `crossfade` ramps a boundary jump away when not given
CROSSFADE = 64


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


def seed_samples(seed_frames: np.ndarray, hop: int) -> np.ndarray:
    """The seed's samples back from its frames by copying, not arithmetic: bit-exact.

    Frame k starts at `k*hop`; with `hop <= x_len` the first frame and the last `hop`
    samples of every later frame tile the seed (`data.hop > data.x_len` is refused).
    """
    x_len = seed_frames.shape[1]
    if hop >= x_len:
        return seed_frames.reshape(-1).astype(np.float32)
    tails = seed_frames[1:, x_len - hop :].reshape(-1)
    return np.concatenate([seed_frames[0], tails]).astype(np.float32)


def frames_to_audio(seed_frames: np.ndarray, gen_frames: np.ndarray, hop: int,
                    deticking: str, crossfade: int = CROSSFADE) -> tuple[np.ndarray, int]:
    """(seed, generated) time-domain frames -> audio and the sample where generation starts.

    The seed part is the seed itself, untouched (`seed_samples`): with overlap-add the
    generated frames are blended among themselves only, the first one's overlap with the
    seed's last frame is dropped instead of being mixed into the seed; the crossfade ramps
    the generated frames towards the seed's last samples, never the other way round.
    """
    x_len = seed_frames.shape[1]
    seed_audio = seed_samples(seed_frames, hop)
    if hop < x_len:
        if deticking == "ola":
            # the first generated frame starts x_len - hop samples before the seed ends
            gen = overlap_add(np.asarray(gen_frames, np.float32), hop)[x_len - hop :]
            return np.concatenate([seed_audio, gen]), len(seed_audio)
        new = gen_frames[:, x_len - hop :].reshape(-1)
        return np.concatenate([seed_audio, new]).astype(np.float32), len(seed_audio)
    if deticking == "crossfade":
        gen = crossfade_boundaries(gen_frames, (float(seed_audio[-2]), float(seed_audio[-1])),
                                   crossfade)
    else:
        gen = gen_frames.reshape(-1)
    return np.concatenate([seed_audio, gen]).astype(np.float32), len(seed_audio)


def resolve_deticking(deticking: str, hop: int, x_len: int) -> str:
    """`auto`: overlap-add when frames overlap, no change otherwise."""
    if deticking not in DETICKING:
        raise UserError(f"deticking={deticking!r} is not one of {', '.join(DETICKING)}")
    if deticking == "auto":
        return "ola" if hop < x_len else "none"
    if deticking == "ola" and hop >= x_len:
        raise UserError(f"deticking=ola needs overlapping frames (data.hop={hop} < x_len={x_len})")
    if deticking == "crossfade" and hop < x_len:
        raise UserError("deticking=crossfade is for hop == x_len; with overlap use ola")
    return deticking
