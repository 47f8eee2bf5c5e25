"""The audio score where audio is generated: which reference, when, and what is recorded.

`generate.py` scores its continuation against the checkpoint's test split (or a file),
the training-time sample callback against the validation split (the test split stays
unseen until the end). Both use the same three modes:

- `auto` (the default): score when the reference allows it (clips of at least
  `MIN_CLIP_SECONDS`, a reference of two clips); otherwise say once, in one line, why
  there is no score, and record that reason instead of numbers;
- `true`: the score is required; a reference that cannot give one is an error (exit 2);
- `false`: no score; then any non-default threshold is an error (it would be ignored).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from audiolstm.data.audio import load_audio
from audiolstm.data.datamodule import AudioDataModule
from audiolstm.data.state import DataState
from audiolstm.errors import UserError
from audiolstm.evaluation.audio_score import (
    MIN_CLIP_SECONDS,
    AudioReference,
    AudioScore,
    ScoreSettings,
    build_reference,
    parse_score_config,
    score_clip,
)

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class ScoreRequest:
    """A validated `score` / `score_settings` pair of a config."""

    mode: str  # one of SCORE_MODES
    settings: ScoreSettings
    key: str  # the config field of the mode, for messages

    @property
    def enabled(self) -> bool:
        return self.mode != "false"

    def reference(self, pieces: np.ndarray | Sequence[np.ndarray], sample_rate: int,
                  clip_seconds: float, source: str, clip_key: str, seed: int = 0,
                  required: bool = False) -> tuple[AudioReference | None, str | None]:
        """(reference, None), or (None, why not) under `auto` unless `required`; a
        reference that cannot score is an error under `true` or when `required` (the
        user named the reference)."""
        try:
            if clip_seconds < MIN_CLIP_SECONDS:
                raise UserError(f"{clip_key}={clip_seconds:g}: the audio score needs clips of "
                                f"at least {MIN_CLIP_SECONDS:g} s")
            return build_reference(pieces, sample_rate, clip_seconds, seed, self.settings,
                                   name=source), None
        except UserError as e:
            if self.mode == "true" or required:
                raise UserError(f"{e} (set {self.key}=false to go without the score)") from e
            return None, str(e)


def generation_reference(req: ScoreRequest, path: str | None, state: DataState,
                         seconds: float, datamodule: Callable[[], AudioDataModule],
                         split: str = "test") -> tuple[AudioReference | None, str | None, str]:
    """`generate.py`'s reference: the file at `path`, else every piece of the checkpoint's
    `split` (`datamodule()` gives it, set up). Returns (reference, skipped, source)."""
    source = (f"reference={path}" if path
              else f"reference=null (the checkpoint's {split} split)")
    if not req.enabled:
        return None, f"{req.key}=false", source
    audio = load_audio(path, state.sample_rate) if path else datamodule().pieces[split]
    ref, skipped = req.reference(audio, state.sample_rate, seconds, source, "seconds",
                                 required=bool(path))
    return ref, skipped, source


def score_request(mode: Any, settings: Mapping[str, Any] | None, key: str,
                  settings_key: str) -> ScoreRequest:
    """Validate a config's score mode and thresholds (before any data is read)."""
    return ScoreRequest(*parse_score_config(mode, settings, key, settings_key), key)


def score_metrics(clip: np.ndarray, ref: AudioReference | None,
                  skipped: str | None) -> tuple[AudioScore | None, dict[str, Any]]:
    """The score and the flat `audio_*` numbers of one clip (the reference's beside them),
    or `audio_score: None` with the reason it was skipped."""
    if ref is None:
        return None, {"audio_score": None, "audio_score_skipped": skipped}
    s = score_clip(clip, ref)
    return s, s.to_dict() | ref.to_dict() | {"audio_flags": flag_text(s)}


def flag_text(score: AudioScore) -> str:
    """The raised flags, comma-separated ("" when none): one column in the report."""
    return ",".join(k for k, v in score.flags.items() if v)


def summary_line(score: AudioScore) -> str:
    """One line for the console."""
    if np.isfinite(score.score):
        head = f"audio score {score.score:.2f} (1 = real audio, 0 = shaped noise)"
    else:
        head = ("audio score n/a (the reference's own clips are as far from it as shaped "
                "noise: a longer or steadier reference gives the score a scale)")
    return (f"{head}: FD {score.fd:.0f}, floor {score.fd_floor:.0f}, ceiling "
            f"{score.fd_ceiling:.0f}; flatness {score.flatness_db:.1f} dB (reference "
            f"{score.flatness_ref_db:.1f}); held partials {score.partials:.2f} per frame "
            f"(reference {score.partials_ref:.2f}); flags: {flag_text(score) or 'none'}")
