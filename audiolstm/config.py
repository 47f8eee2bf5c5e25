"""Structured-config schemas and semantic validation.

Hydra type-checks every override against these dataclasses (so
`data.x_len=abc` fails at composition); `validate_*` then checks meaning
(positive sizes, ratios summing to one, known scheme names) and raises a
one-line `UserError` naming the field *before* any data is read or any model
is built.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from audiolstm.errors import UserError

SOURCES = ("synthetic", "wav", "folder")
NORM_SCHEMES = ("minmax", "minmax_union", "minmax01", "std", "none")
REPR_KINDS = ("time", "fft", "rfft")
CELLS = ("lstm", "gru")
HEADS = ("mse", "gaussian", "logistic_mixture")
LOSSES = ("mse", "stft", "mse+stft")
SPLITS = ("train", "val", "test")
STRATEGIES = ("stateful", "refeed", "sliding")
DETICKING = ("none", "crossfade", "ola")


@dataclass
class DataConfig:
    """Where the audio comes from and how it is cut into examples (DESIGN.md, Data semantics)."""

    source: str = "synthetic"
    path: str | None = None
    sample_rate: int = 16000
    synth_seconds: float = 600.0
    synth_seed: int = 0
    splits: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])
    x_len: int = 2000
    seq_len: int = 40
    hop: int | None = None
    window_shift: int = 8000
    offsets: list[int] = field(default_factory=lambda: [0])
    eval_window_shift: int | None = None
    batch_size: int = 100
    num_workers: int = 0
    pin_memory: bool | None = None
    cache_dir: str = ".cache/audiolstm"


@dataclass
class NormConfig:
    scheme: str = "std"


@dataclass
class ReprConfig:
    kind: str = "time"
    standardize: bool = False


@dataclass
class ModelConfig:
    """AudioRNN hyper-parameters; `optimizer`/`scheduler` are `_partial_` Hydra nodes."""

    arch: str = "frame_rnn"
    cell: str = "lstm"
    hidden_sizes: list[int] = field(default_factory=lambda: [300, 300, 300])
    dropout: float = 0.0
    input_dropout: float = 0.0
    input_noise: float = 0.0
    forget_bias: float | None = 1.0
    tbptt_steps: int | None = None
    grad_clip: float | None = 1.0
    head: str = "mse"
    loss: str = "mse"
    stft_weight: float = 1.0
    mixture_components: int = 5
    mixture_bins: int = 256
    scheduled_sampling: float = 0.0
    # samplernn only (arch=samplernn): tiers' frame sizes top to bottom, softmax levels
    frame_sizes: list[int] = field(default_factory=lambda: [16])
    q_levels: int = 256
    quantization: str = "mu_law"
    mlp_hidden: int = 256
    embed_dim: int = 64
    optimizer: Any = field(
        default_factory=lambda: {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3}
    )
    scheduler: Any = None


@dataclass
class TrainConfig:
    """Top level of `conf/train.yaml`."""

    task_name: str = "train"
    seed: int = 1234
    sweep_name: str | None = None
    optuna: Any = None
    data: DataConfig = field(default_factory=DataConfig)
    norm: NormConfig = field(default_factory=NormConfig)
    repr: ReprConfig = field(default_factory=ReprConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    trainer: Any = None
    logger: Any = None
    callbacks: Any = None
    paths: Any = None
    ckpt_path: str | None = None
    init_from: str | None = None
    test: bool = True
    ridge_baseline: bool = True
    optimized_metric: str = "val/loss"


def register_configs() -> None:
    """Put the schemas in Hydra's ConfigStore (idempotent)."""
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(group="data", name="schema", node=DataConfig)
    cs.store(group="norm", name="schema", node=NormConfig)
    cs.store(group="repr", name="schema", node=ReprConfig)
    cs.store(group="model", name="schema", node=ModelConfig)


def _one_of(value: Any, allowed: tuple[str, ...], key: str) -> None:
    if value not in allowed:
        raise UserError(f"{key}={value!r} is not one of {', '.join(allowed)}")


def _positive_int(value: Any, key: str, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise UserError(f"{key}={value!r} must be a positive integer")


def validate_data(data: DictConfig | DataConfig, key: str = "data") -> None:
    """Semantic checks of the data node; raises UserError naming the field."""
    _one_of(data.source, SOURCES, f"{key}.source")
    if data.source in ("wav", "folder") and not data.path:
        what = "an audio file" if data.source == "wav" else "a folder of audio files"
        raise UserError(f"{key}.path is required with {key}.source={data.source} ({what})")
    for name in ("sample_rate", "x_len", "seq_len", "window_shift", "batch_size"):
        _positive_int(getattr(data, name), f"{key}.{name}")
    _positive_int(data.hop, f"{key}.hop", allow_none=True)
    _positive_int(data.eval_window_shift, f"{key}.eval_window_shift", allow_none=True)
    if data.synth_seconds <= 0:
        raise UserError(f"{key}.synth_seconds={data.synth_seconds!r} must be > 0")
    if data.num_workers < 0:
        raise UserError(f"{key}.num_workers={data.num_workers!r} must be >= 0")
    offsets = list(data.offsets)
    if not offsets or any(o < 0 for o in offsets):
        raise UserError(f"{key}.offsets={offsets!r} must be a non-empty list of offsets >= 0")
    splits = list(data.splits)
    if len(splits) != 3 or any(r <= 0 for r in splits):
        raise UserError(f"{key}.splits={splits!r} must be three positive ratios (train, val, test)")
    if not math.isclose(sum(splits), 1.0, abs_tol=1e-6):
        raise UserError(f"{key}.splits={splits!r} must sum to 1 (they sum to {sum(splits):g})")


def validate_model(model: DictConfig | ModelConfig, key: str = "model") -> None:
    _one_of(model.arch, ("frame_rnn", "samplernn"), f"{key}.arch")
    _one_of(model.quantization, ("mu_law", "linear"), f"{key}.quantization")
    _one_of(model.cell, CELLS, f"{key}.cell")
    _one_of(model.head, HEADS, f"{key}.head")
    _one_of(model.loss, LOSSES, f"{key}.loss")
    if model.loss != "mse" and model.head != "mse":
        raise UserError(f"{key}.loss={model.loss} needs {key}.head=mse (the other heads are "
                        "trained by likelihood)")
    if not 0.0 <= model.scheduled_sampling <= 1.0:
        raise UserError(f"{key}.scheduled_sampling={model.scheduled_sampling!r} must be in [0, 1]")
    _positive_int(model.mixture_components, f"{key}.mixture_components")
    if model.mixture_bins < 2:
        raise UserError(f"{key}.mixture_bins={model.mixture_bins!r} must be >= 2")
    sizes = list(model.hidden_sizes)
    if not sizes or any(not isinstance(h, int) or h <= 0 for h in sizes):
        raise UserError(f"{key}.hidden_sizes={sizes!r} must be a non-empty list of positive ints")
    for name in ("dropout", "input_dropout"):
        p = getattr(model, name)
        if not 0.0 <= p < 1.0:
            raise UserError(f"{key}.{name}={p!r} must be in [0, 1)")
    if model.input_noise < 0:
        raise UserError(f"{key}.input_noise={model.input_noise!r} must be >= 0")
    _positive_int(model.tbptt_steps, f"{key}.tbptt_steps", allow_none=True)
    if model.grad_clip is not None and model.grad_clip <= 0:
        raise UserError(f"{key}.grad_clip={model.grad_clip!r} must be > 0 or null")
    opt = model.optimizer
    if not isinstance(opt, (dict, DictConfig)) or "_target_" not in opt:
        raise UserError(f"{key}.optimizer must be a node with _target_ (e.g. torch.optim.Adam)")


def validate_train(cfg: DictConfig) -> None:
    """Everything `train.py` can check before touching data or building a model."""
    validate_data(cfg.data)
    _one_of(cfg.norm.scheme, NORM_SCHEMES, "norm.scheme")
    _one_of(cfg.repr.kind, REPR_KINDS, "repr.kind")
    validate_model(cfg.model)
    if cfg.model.arch == "samplernn":
        if cfg.norm.scheme not in ("minmax", "minmax_union"):
            raise UserError(f"model.arch=samplernn quantises samples in [-1, 1]: use norm=minmax "
                            f"(norm.scheme={cfg.norm.scheme} would clip them)")
        if cfg.data.x_len % cfg.model.frame_sizes[0]:
            raise UserError(f"data.x_len={cfg.data.x_len} must be a multiple of "
                            f"model.frame_sizes[0]={cfg.model.frame_sizes[0]} for SampleRNN")
    if cfg.ckpt_path and cfg.init_from:
        raise UserError("ckpt_path and init_from are exclusive: resume OR warm-start, not both")
    max_epochs = OmegaConf.select(cfg, "trainer.max_epochs")
    if max_epochs is not None and max_epochs != -1 and max_epochs < 1:
        raise UserError(f"trainer.max_epochs={max_epochs!r} must be >= 1 (or -1)")


def to_container(cfg: Any) -> Any:
    """Resolved plain dict/list (checkpoints must not pickle OmegaConf objects)."""
    if isinstance(cfg, DictConfig) or OmegaConf.is_config(cfg):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg
