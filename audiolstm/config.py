"""Structured-config schemas and semantic validation.

Hydra type-checks every override against these dataclasses (so
`data.x_len=abc` fails at composition); `validate_*` then checks meaning
(positive sizes, ratios summing to one, known scheme names) and raises a
one-line `UserError` naming the field *before* any data is read or any model
is built.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from audiolstm.data.representation import Representation
from audiolstm.data.settings import (
    DataConfig,
    NormConfig,
    ReprConfig,
    validate_data,
    validate_norm,
    validate_repr,
)
from audiolstm.errors import UserError, one_of, positive_int
from audiolstm.evaluation.audio_score import ScoreSettings, parse_score_config
from audiolstm.evaluation.baselines import RIDGE_MAX_DIM
from audiolstm.models.base import DEFAULT_OPTIMIZER
from audiolstm.models.frame_rnn import CELLS, HEADS, LOSSES
from audiolstm.models.linear_ar import FROM_RIDGE, check_linear_ar
from audiolstm.models.quantize import KINDS as QUANTIZATIONS
from audiolstm.models.registry import ARCHS, samplernn_tiers, unused_settings
from audiolstm.models.samplernn import check_data, check_frame_sizes


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
    # frame_rnn only: a linear map of the input frame added to the head's location,
    # null | zero | ridge | ridge_fixed (its start, learnt or not; models/linear_ar.py)
    linear_ar: str | None = None
    # samplernn only (arch=samplernn): tiers' frame sizes top to bottom, softmax levels
    frame_sizes: list[int] = field(default_factory=lambda: [16])
    q_levels: int = 256
    quantization: str = "mu_law"
    mlp_hidden: int = 256
    embed_dim: int = 64
    optimizer: Any = field(default_factory=lambda: dict(DEFAULT_OPTIMIZER))
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
    # its penalty: null = chosen on the validation split (evaluation/baselines.py), or fixed
    ridge_alpha: float | None = None
    optimized_metric: str = "val/loss"
    # CUDA runs: highest (full float32) | high (TF32 matmuls and cuDNN RNNs) | medium
    float32_matmul_precision: str = "high"


def register_configs() -> None:
    """Put the schemas in Hydra's ConfigStore (idempotent)."""
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(group="data", name="schema", node=DataConfig)
    cs.store(group="norm", name="schema", node=NormConfig)
    cs.store(group="repr", name="schema", node=ReprConfig)
    cs.store(group="model", name="schema", node=ModelConfig)


def _schema_defaults() -> dict[str, Any]:
    return {f.name: (f.default_factory() if f.default_factory is not MISSING else f.default)
            for f in fields(ModelConfig)}


def check_unused_settings(model: DictConfig | ModelConfig, key: str = "model") -> None:
    """A setting the chosen architecture (or head, or loss) does not read must keep its
    schema default: `model=samplernn_2tier model.dropout=0.3` is an error, not a run
    without dropout."""
    values = to_container(model) if OmegaConf.is_config(model) else vars(model)
    defaults = _schema_defaults()
    for name, why in unused_settings(values).items():
        if name in defaults and values.get(name) != defaults[name]:
            raise UserError(f"{key}.{name}={values[name]!r} has no effect: {why} "
                            f"(remove it, or leave it at {defaults[name]!r})")


def validate_model(model: DictConfig | ModelConfig, key: str = "model") -> None:
    one_of(model.arch, ARCHS, f"{key}.arch")
    check_unused_settings(model, key)
    one_of(model.quantization, QUANTIZATIONS, f"{key}.quantization")
    one_of(model.cell, CELLS, f"{key}.cell")
    one_of(model.head, HEADS, f"{key}.head")
    one_of(model.loss, LOSSES, f"{key}.loss")
    if model.loss != "mse" and model.head != "mse":
        raise UserError(f"{key}.loss={model.loss} needs {key}.head=mse (the other heads are "
                        "trained by likelihood)")
    check_linear_ar(model.linear_ar, f"{key}.linear_ar")
    if not 0.0 <= model.scheduled_sampling <= 1.0:
        raise UserError(f"{key}.scheduled_sampling={model.scheduled_sampling!r} must be in [0, 1]")
    positive_int(model.mixture_components, f"{key}.mixture_components")
    positive_int(model.mixture_bins, f"{key}.mixture_bins", minimum=2)
    sizes = list(model.hidden_sizes)
    if not sizes or any(not isinstance(h, int) or h <= 0 for h in sizes):
        raise UserError(f"{key}.hidden_sizes={sizes!r} must be a non-empty list of positive ints")
    for name in ("dropout", "input_dropout"):
        p = getattr(model, name)
        if not 0.0 <= p < 1.0:
            raise UserError(f"{key}.{name}={p!r} must be in [0, 1)")
    if model.input_noise < 0:
        raise UserError(f"{key}.input_noise={model.input_noise!r} must be >= 0")
    positive_int(model.tbptt_steps, f"{key}.tbptt_steps", allow_none=True)
    if model.grad_clip is not None and model.grad_clip <= 0:
        raise UserError(f"{key}.grad_clip={model.grad_clip!r} must be > 0 or null")
    opt = model.optimizer
    if not isinstance(opt, (dict, DictConfig)) or "_target_" not in opt:
        raise UserError(f"{key}.optimizer must be a node with _target_ (e.g. torch.optim.Adam)")
    if model.arch == "samplernn":
        check_frame_sizes(list(model.frame_sizes))
        samplernn_tiers(list(model.hidden_sizes))
        for name in ("mlp_hidden", "embed_dim"):
            positive_int(getattr(model, name), f"{key}.{name}")
        positive_int(model.q_levels, f"{key}.q_levels", minimum=2)


def validate_likelihood(cfg: DictConfig) -> None:
    """Every head x norm x repr combination that trains either has a meaningful likelihood
    on the canonical grid (evaluation/likelihood.py) or is refused here, in one line.

    Every normalisation works with every model (all are affine: the canonical grid maps
    through them exactly; SampleRNN quantises the original-scale audio). What cannot be a
    likelihood of the audio's samples is a density over *features*: the gaussian and
    logistic_mixture heads over DFT coefficients (repr=fft|rfft) or over per-dimension
    standardised values (repr.standardize=true) would need the feature transform's
    Jacobian and a per-sample marginal the heads do not have. The mse head is scored as a
    Gaussian-equivalent in the time domain after decoding, so it works with any repr.
    """
    model, rep = cfg.model, cfg.repr
    features = rep.kind != "time" or rep.standardize
    what = f"repr={rep.kind}" + (" repr.standardize=true" if rep.standardize else "")
    if model.arch == "frame_rnn" and model.head != "mse" and features:
        raise UserError(
            f"model.head={model.head} with {what}: the head would be a density over "
            f"{'DFT coefficients' if rep.kind != 'time' else 'standardised features'}, not "
            "over the audio's samples, so its bits/sample would not be a likelihood of the "
            "audio; use repr=time repr.standardize=false (or model.head=mse)")
    if model.arch == "samplernn":
        x_len = cfg.data.x_len
        check_data(rep.kind, rep.standardize, cfg.data.hop, x_len)
        top = model.frame_sizes[0]
        if (cfg.data.seq_len + 1) * x_len <= top:
            raise UserError(
                f"data.seq_len={cfg.data.seq_len}, data.x_len={x_len}: an example of "
                f"{(cfg.data.seq_len + 1) * x_len} samples has no target after SampleRNN's "
                f"first frame of model.frame_sizes[0]={top}; make examples longer")


#: the config node of the training-time sample callback (conf/callbacks/default.yaml)
SAMPLE_KEY = "callbacks.sample_generation"


def check_sample_settings(node: Any, key: str = SAMPLE_KEY) -> tuple[str, ScoreSettings]:
    """The sample callback's audio score settings: mode, thresholds, keep_best_audio,
    keep_sampled."""
    mode, settings = parse_score_config(node.get("score", "auto"), node.get("score_settings"),
                                        f"{key}.score", f"{key}.score_settings")
    if node.get("keep_best_audio"):
        if mode == "false":
            raise UserError(f"{key}.keep_best_audio=true needs the audio score "
                            f"({key}.score=false)")
        if not node.get("every_n_epochs"):
            raise UserError(f"{key}.keep_best_audio=true needs samples during training "
                            f"({key}.every_n_epochs={node.get('every_n_epochs')!r})")
    if node.get("keep_sampled") and not node.get("every_n_epochs"):
        raise UserError(f"{key}.keep_sampled=true needs samples during training "
                        f"({key}.every_n_epochs={node.get('every_n_epochs')!r})")
    return mode, settings


def validate_ridge(cfg: DictConfig) -> None:
    """`ridge_alpha`: a penalty >= 0, read only when the run fits the ridge baseline."""
    alpha = cfg.get("ridge_alpha")
    if alpha is None:
        return
    if not math.isfinite(alpha) or alpha < 0:
        raise UserError(f"ridge_alpha={alpha!r} must be a finite penalty >= 0 (or null: "
                        "chosen on the validation split)")
    if not cfg.ridge_baseline:
        raise UserError(f"ridge_alpha={alpha!r} is read only with ridge_baseline=true")


def validate_linear_ar(cfg: DictConfig) -> None:
    """`model.linear_ar=ridge|ridge_fixed` starts from the ridge baseline's fit: the run
    must make it."""
    kind = cfg.model.linear_ar
    if cfg.model.arch != "frame_rnn" or kind not in FROM_RIDGE:
        return
    if not cfg.ridge_baseline:
        raise UserError(f"model.linear_ar={kind} starts from the ridge baseline's fit: it needs "
                        "ridge_baseline=true (or use model.linear_ar=zero)")
    dim = Representation(cfg.repr.kind, cfg.data.x_len).dim
    if dim > RIDGE_MAX_DIM:
        raise UserError(f"model.linear_ar={kind}: data.x_len={cfg.data.x_len} with "
                        f"repr={cfg.repr.kind} gives {dim} input features, above the ridge "
                        f"fit's limit of {RIDGE_MAX_DIM}; use model.linear_ar=zero or null "
                        "(or model=lstm_300x3, the plain model)")


#: the sections whose every key a schema names; the others (trainer, callbacks, logger,
#: paths, optuna) are handed whole to Lightning or Hydra, which refuse what they do not know
SCHEMA_SECTIONS = {"data": DataConfig, "norm": NormConfig, "repr": ReprConfig,
                   "model": ModelConfig}


def check_known_keys(cfg: DictConfig) -> None:
    """Refuse a setting no component reads. Hydra refuses `key=value` for an unknown key,
    but `+key=value` adds it to any section, where it would be ignored in silence
    (`+data.x_length=2000`, a typo for data.x_len, trained at the default)."""
    sections = {None: TrainConfig, **SCHEMA_SECTIONS}
    for section, schema in sections.items():
        node = cfg if section is None else cfg.get(section)
        if not isinstance(node, DictConfig):
            continue
        known = {f.name for f in fields(schema)}
        for key in node:
            if key not in known:
                name = key if section is None else f"{section}.{key}"
                raise UserError(f"{name}: no such setting (added with '+'?): nothing reads "
                                f"it; the {section or 'top-level'} settings are "
                                f"{', '.join(sorted(known))}")


def validate_train(cfg: DictConfig) -> None:
    """Everything `train.py` can check before touching data or building a model."""
    check_known_keys(cfg)
    validate_data(cfg.data)
    validate_norm(cfg.norm)
    validate_repr(cfg.repr)
    validate_model(cfg.model)
    validate_likelihood(cfg)
    validate_ridge(cfg)
    validate_linear_ar(cfg)
    if cfg.ckpt_path and cfg.init_from:
        raise UserError("ckpt_path and init_from are exclusive: resume OR warm-start, not both")
    samples = OmegaConf.select(cfg, SAMPLE_KEY)
    if samples:
        check_sample_settings(samples)  # the audio score's mode, thresholds, best-audio
    max_epochs = OmegaConf.select(cfg, "trainer.max_epochs")
    if max_epochs is not None and max_epochs != -1 and max_epochs < 1:
        raise UserError(f"trainer.max_epochs={max_epochs!r} must be >= 1 (or -1)")


def to_container(cfg: Any) -> Any:
    """Resolved plain dict/list (checkpoints must not pickle OmegaConf objects)."""
    if isinstance(cfg, DictConfig) or OmegaConf.is_config(cfg):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg
