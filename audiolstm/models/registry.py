"""Which network a config or a checkpoint means, and which model settings it reads.

`model.arch` picks the class: `frame_rnn` (AudioRNN, next-frame prediction; the seeds'
models) or `samplernn` (SampleRNN, sample-level softmax). Both are configured through one
`model` node (`config.ModelConfig`); `USES` lists the keys each architecture reads, and
`unused_settings` the ones it would ignore for a given configuration (also those only one
head or loss reads). `config.validate_model` refuses any of those set to anything but its
schema default, with one line naming the key and the architecture: no setting is ever
silently ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl

from audiolstm.errors import UserError

ARCHS = ("frame_rnn", "samplernn")

_COMMON = {"arch", "cell", "hidden_sizes", "tbptt_steps", "grad_clip", "optimizer", "scheduler"}
#: the `model` keys each architecture reads
USES: dict[str, frozenset[str]] = {
    "frame_rnn": frozenset(_COMMON | {
        "dropout", "input_dropout", "input_noise", "forget_bias", "head", "loss",
        "stft_weight", "mixture_components", "mixture_bins", "scheduled_sampling",
        "linear_ar"}),
    "samplernn": frozenset(_COMMON | {
        "frame_sizes", "q_levels", "quantization", "mlp_hidden", "embed_dim"}),
}


def unused_settings(model_cfg: Mapping[str, Any]) -> dict[str, str]:
    """{key: why} for the keys of `model_cfg` its architecture ignores as configured."""
    arch = model_cfg.get("arch", "frame_rnn")
    uses = USES.get(arch, frozenset())
    out = {k: f"model.arch={arch} does not use it" for k in model_cfg if k not in uses}
    if arch == "frame_rnn":
        head, loss = model_cfg.get("head", "mse"), model_cfg.get("loss", "mse")
        if head != "logistic_mixture":
            for k in ("mixture_components", "mixture_bins"):
                out[k] = f"only model.head=logistic_mixture reads it (model.head={head})"
        if loss != "mse+stft":
            out["stft_weight"] = f"only model.loss=mse+stft reads it (model.loss={loss})"
    return out


def model_class(arch: str) -> type[pl.LightningModule]:
    if arch == "frame_rnn":
        from audiolstm.models.frame_rnn import AudioRNN

        return AudioRNN
    if arch == "samplernn":
        from audiolstm.models.samplernn import SampleRNN

        return SampleRNN
    raise UserError(f"model.arch={arch!r} is not one of {', '.join(ARCHS)}")


def samplernn_tiers(sizes: list[int] | None) -> tuple[int, int]:
    """SampleRNN's (hidden, rnn_layers) from `model.hidden_sizes` = [hidden] * layers."""
    sizes = list(sizes or [256])
    if len(set(sizes)) != 1:
        raise UserError(f"model.hidden_sizes={sizes}: SampleRNN tiers use one size "
                        "(hidden_sizes: [H] * layers)")
    return sizes[0], len(sizes)


def model_kwargs(model_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The constructor arguments the configured network gets (its hyper-parameters, as a
    checkpoint records them), but `input_dim`.

    The settings its architecture does not read are dropped here; `config.validate_model`
    has already refused any of them that was set to something other than its default.
    """
    arch = model_cfg.get("arch", "frame_rnn")
    model_class(arch)  # an unknown arch: one line
    kwargs = {k: v for k, v in model_cfg.items() if k in USES[arch] and k != "arch"}
    if arch == "samplernn":  # frame tiers: hidden_sizes = [hidden] * rnn_layers
        kwargs["hidden"], kwargs["rnn_layers"] = samplernn_tiers(kwargs.pop("hidden_sizes", None))
    return kwargs


def build_model(input_dim: int, model_cfg: dict[str, Any]) -> pl.LightningModule:
    """Instantiate the configured network with the settings its architecture reads."""
    cls = model_class(model_cfg.get("arch", "frame_rnn"))
    return cls(input_dim=input_dim, **model_kwargs(model_cfg))


def class_of_checkpoint(ckpt: dict[str, Any]) -> type[pl.LightningModule]:
    name = (ckpt.get("audiolstm") or {}).get("model_class", "AudioRNN")
    return model_class("samplernn" if name == "SampleRNN" else "frame_rnn")
