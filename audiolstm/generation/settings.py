"""Which generation settings a model reads, and what generated.json records of them.

A frame model (`AudioRNN`) reads a strategy (`window` with `sliding` only), a
de-ticking mode (`crossfade` with `crossfade` only) and `feedback_noise`. SampleRNN
reads none of them: it draws sample by sample with its state carried (stateful by
construction), with no frames to re-feed or de-tick and no fed-back frame to add noise
to. A setting a model does not read is refused in one line unless it is left at the
value that asks for nothing (`FRAME_ONLY`), and only what applied is recorded: no
setting is written down as if it had been used.
"""

from __future__ import annotations

from typing import Any

from audiolstm.errors import UserError
from audiolstm.generation.reconstruction import CROSSFADE, resolve_deticking
from audiolstm.generation.strategies import SLIDING_WINDOW, STRATEGIES

#: frame-model settings, at the values that ask for nothing (conf/generate.yaml's defaults)
FRAME_ONLY: dict[str, Any] = {"strategy": "stateful", "window": None, "deticking": "auto",
                              "crossfade": None, "feedback_noise": 0.0}


def _show(v: Any) -> str:
    return "null" if v is None else str(v)


def applied_settings(frames: bool, step: int, x_len: int, key: str = "",
                     **given: Any) -> dict[str, Any]:
    """The settings among `FRAME_ONLY`'s keys that apply, resolved (as recorded).

    `frames`: a frame model (else SampleRNN); `step`, `x_len`: its data's hop and frame
    length. A value that would not apply is refused, naming `{key}{name}`.
    """
    unknown = sorted(set(given) - set(FRAME_ONLY))
    if unknown:
        raise TypeError(f"not a generation setting: {unknown[0]}")
    s = FRAME_ONLY | given
    if not frames:
        for name, unused in FRAME_ONLY.items():
            if s[name] != unused:
                raise UserError(
                    f"{key}{name}={_show(s[name])} has no effect on SampleRNN (it generates "
                    "sample by sample with its state carried: no frames to re-feed or "
                    f"de-tick, nothing fed back to add noise to); leave it at {_show(unused)}")
        return {}
    strategy = s["strategy"]
    if strategy not in STRATEGIES:
        raise UserError(f"{key}strategy={strategy!r} is not one of {', '.join(STRATEGIES)}")
    if s["window"] is not None and strategy != "sliding":
        raise UserError(f"{key}window={s['window']} is read by strategy=sliding only "
                        f"({key}strategy={strategy})")
    mode = resolve_deticking(s["deticking"], step, x_len)
    if s["crossfade"] is not None and mode != "crossfade":
        raise UserError(f"{key}crossfade={s['crossfade']} is read by deticking=crossfade only "
                        f"({key}deticking={s['deticking']} means {mode} here)")
    out: dict[str, Any] = {"strategy": strategy}
    if strategy == "sliding":
        out["window"] = SLIDING_WINDOW if s["window"] is None else s["window"]
    out["deticking"] = mode
    if mode == "crossfade":
        out["crossfade"] = CROSSFADE if s["crossfade"] is None else s["crossfade"]
    out["feedback_noise"] = s["feedback_noise"]
    return out
