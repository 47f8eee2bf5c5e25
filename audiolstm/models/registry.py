"""Which network a config or a checkpoint means.

`model.arch` picks the class: `frame_rnn` (AudioRNN, next-frame prediction;
the seeds' models) or `samplernn` (SampleRNN, sample-level softmax). Both
share one config schema; each class takes the fields it understands.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytorch_lightning as pl

from audiolstm.errors import UserError

ARCHS = ("frame_rnn", "samplernn")


def model_class(arch: str) -> type[pl.LightningModule]:
    if arch == "frame_rnn":
        from audiolstm.models.frame_rnn import AudioRNN

        return AudioRNN
    if arch == "samplernn":
        from audiolstm.models.samplernn import SampleRNN

        return SampleRNN
    raise UserError(f"model.arch={arch!r} is not one of {', '.join(ARCHS)}")


def build_model(input_dim: int, model_cfg: dict[str, Any]) -> pl.LightningModule:
    """Instantiate the configured network with the arguments its class takes."""
    cfg = dict(model_cfg)
    arch = cfg.pop("arch", "frame_rnn")
    cls = model_class(arch)
    if arch == "samplernn":  # frame tiers: hidden_sizes = [hidden] * rnn_layers
        sizes = cfg.get("hidden_sizes") or [256]
        if len(set(sizes)) != 1:
            raise UserError(f"model.hidden_sizes={sizes}: SampleRNN tiers use one size "
                            "(hidden_sizes: [H] * layers)")
        cfg["hidden"], cfg["rnn_layers"] = sizes[0], len(sizes)
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    return cls(input_dim=input_dim, **{k: v for k, v in cfg.items() if k in accepted})


def class_of_checkpoint(ckpt: dict[str, Any]) -> type[pl.LightningModule]:
    name = (ckpt.get("audiolstm") or {}).get("model_class", "AudioRNN")
    return model_class("samplernn" if name == "SampleRNN" else "frame_rnn")
