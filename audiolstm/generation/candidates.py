"""Generation controls for the likelihood models (issue 22): `top_p`, and candidates
(`candidates=K keep=M rank=...`): K continuations drawn as one batch, ranked, the best M
written.

Why candidates: one draw of a sampled model can fall silent, turn to noise or get stuck
where another draw of the same model does not, and its users pick by listening (SaShiMi
filters its samples by likelihood). Drawn as one batch, K continuations cost far less
than K runs (SampleRNN's kernel: 16 streams run at ~10× real time together, one at ~2.5×).

Ranks (`rank=`), higher first:

- `likelihood`: each candidate's mean log-probability per generated sample of what was
  drawn, in nats, under the model's **own** distribution (temperature 1, no nucleus),
  at every step conditioned on the candidate's own past: the quantity the model was
  trained on, so a candidate's value does not move with the sampling knobs, and
  candidates drawn at any `temperature`/`top_p` compare on one scale. (Under the
  tempered or truncated distribution it would measure how typical a draw was of that
  distortion instead; and with a nucleus, levels outside it would be impossible.) It
  favours predictable audio, which is not always the liveliest: `rank=score` judges
  the audio itself. Models with a likelihood: SampleRNN (its softmax over its levels),
  frame models with `head=gaussian` (a density of the normalised values) or
  `head=logistic_mixture` (the probability of each value's cell).
- `score`: `audiolstm.evaluation.audio_score.score_clip` of the generated audio against
  held-out real audio: 1 ≈ as real as real audio, 0 ≈ shaped noise. Ranked against
  `rank_reference_split` (the checkpoint's val split by default), reported against the
  test split (or `reference=PATH`): a clip chosen by the very score it reports would
  report that score biased upwards, as a model chosen on its test loss does. Every
  candidate is scored whenever the score runs (`score=auto|true`), and `rank=score`
  refuses to start when it cannot.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from audiolstm.errors import UserError, one_of, positive_int
from audiolstm.models.base import AudioModel
from audiolstm.models.draw import check_top_p
from audiolstm.models.samplernn import SampleRNN

RANKS = ("likelihood", "score")


@dataclass(frozen=True)
class Controls:
    """The checked generation controls: nucleus and candidates (generate.yaml)."""

    top_p: float = 1.0
    candidates: int = 1
    keep: int = 1
    rank: str = "likelihood"

    def settings(self) -> dict[str, Any]:
        """What generated.json records: each control only where it applied."""
        out: dict[str, Any] = {}
        if self.top_p < 1.0:
            out["top_p"] = self.top_p
        if self.candidates > 1:
            out |= {"candidates": self.candidates, "keep": self.keep, "rank": self.rank}
        return out


def head_of(model: AudioModel) -> str:
    """The model's kind of output: "softmax" (SampleRNN) or its head (frame models)."""
    return "softmax" if isinstance(model, SampleRNN) else str(model.hparams.get("head", "mse"))


def check_top_p_use(top_p: Any, head: str, temperature: float, key: str = "top_p",
                    temperature_key: str = "temperature") -> float:
    """`top_p` in (0, 1], and below 1 only where it is read: a discrete head (`head_of`:
    "softmax" or "logistic_mixture") drawn at temperature > 0. Shared by generate.py and
    the training-time sample callback."""
    try:
        top_p = check_top_p(top_p)
    except (TypeError, ValueError):
        raise UserError(f"{key}={top_p!r} must be in (0, 1] (1: off)") from None
    if top_p < 1.0:
        if head not in ("softmax", "logistic_mixture"):
            raise UserError(f"{key}={top_p} needs a discrete head (SampleRNN, or a frame "
                            f"model with model.head=logistic_mixture); this "
                            f"model's model.head={head}")
        if temperature == 0:
            raise UserError(f"{key}={top_p} does nothing at {temperature_key}=0 (the argmax "
                            f"path): set {temperature_key} > 0, or leave {key}=1")
    return top_p


def check_controls(top_p: Any, candidates: Any, keep: Any, rank: Any, temperature: float,
                   feedback_noise: float, model: AudioModel) -> Controls:
    """One line naming the field for every value out of range, or that the model or the
    other settings would ignore (a setting is honoured or refused)."""
    head = head_of(model)
    top_p = check_top_p_use(top_p, head, temperature)
    positive_int(candidates, "candidates")
    positive_int(keep, "keep")
    one_of(rank, RANKS, "rank")
    if keep > candidates:
        raise UserError(f"keep={keep} must be <= candidates={candidates}")
    if candidates == 1 and rank != RANKS[0]:
        raise UserError(f"rank={rank} ranks candidates: set candidates > 1, or leave "
                        f"rank={RANKS[0]}")
    if candidates > 1:
        sampled = temperature > 0 and head != "mse"
        noisy = feedback_noise > 0 and head != "softmax"
        if not (sampled or noisy):
            why = ("head=mse predicts its mean" if head == "mse" else "temperature=0")
            raise UserError(f"candidates={candidates} would be {candidates} identical "
                            f"continuations ({why}): draw them with temperature > 0 and a "
                            "sampled head, or feedback_noise > 0")
        if rank == "likelihood" and head == "mse":
            raise UserError("rank=likelihood needs a model with a likelihood (SampleRNN, or "
                            "model.head=gaussian|logistic_mixture); this checkpoint's "
                            "model.head=mse: use rank=score")
    return Controls(top_p, candidates, keep, rank)


def rank_order(values: Sequence[float],
               demerits: Sequence[tuple[float, ...]] | None = None) -> list[int]:
    """Indices of `values`, the highest first; ties keep the order drawn, NaN last. With
    `demerits` (per value, the audio score's raised-flag count and noise excess), the
    lower demerits rank first whatever the values (`AudioScore.rank_key`)."""
    def key(i: int) -> tuple[tuple[float, ...], bool, float, int]:
        v = float(values[i])
        return (() if demerits is None else tuple(demerits[i]), math.isnan(v),
                -v if not math.isnan(v) else 0.0, i)

    return sorted(range(len(values)), key=key)
