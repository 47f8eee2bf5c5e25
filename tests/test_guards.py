"""Every head x norm x repr either trains with a canonical likelihood or is refused before
compute in one line; no model setting is silently ignored; SampleRNN works as typed."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest

from audiolstm.config import validate_train
from audiolstm.errors import UserError
from audiolstm.evaluation.likelihood import GRID_NAME
from audiolstm.training.callbacks import check_sample_generation
from audiolstm.training.run import run
from tests.conftest import SMOKE, compose_cfg, run_script

HEADS = ("mse", "gaussian", "logistic_mixture")
NORMS = ("minmax", "minmax_union", "minmax01", "std", "none")
REPRS = (("time", False), ("time", True), ("fft", False), ("fft", True), ("rfft", False))

#: (overrides, fragments the one-line error must contain)
REFUSED = [
    (["model.head=gaussian", "repr=fft"], ["model.head=gaussian", "repr=fft"]),
    (["model.head=gaussian", "repr=rfft"], ["model.head=gaussian", "repr=rfft"]),
    (["model.head=logistic_mixture", "repr.standardize=true"],
     ["model.head=logistic_mixture", "repr.standardize=true"]),
    (["model=samplernn_2tier", "repr=fft"], ["model.arch=samplernn", "repr=fft"]),
    (["model=samplernn_2tier", "data.hop=1000"], ["data.hop=1000", "model.arch=samplernn"]),
    (["model=samplernn_2tier", "model.dropout=0.3"], ["model.dropout=0.3", "model.arch=samplernn"]),
    (["model=samplernn_3tier", "model.input_noise=0.1"],
     ["model.input_noise=0.1", "model.arch=samplernn"]),
    (["model=samplernn_2tier", "model.head=gaussian"],
     ["model.head='gaussian'", "model.arch=samplernn"]),
    (["model.frame_sizes=[32]"], ["model.frame_sizes=[32]", "model.arch=frame_rnn"]),
    (["model.q_levels=16"], ["model.q_levels=16", "model.arch=frame_rnn"]),
    (["model.head=gaussian", "model.mixture_bins=1024"],
     ["model.mixture_bins=1024", "model.head=logistic_mixture"]),
    (["model.stft_weight=0.5"], ["model.stft_weight=0.5", "model.loss=mse+stft"]),
    # issue 20: random crops draw every start, so the windows' spacing would not apply
    (["data.train_examples_per_epoch=64", "data.window_shift=4000"],
     ["data.window_shift=4000 has no effect", "data.eval_window_shift"]),
    (["data.train_examples_per_epoch=64", "data.offsets=[0,1000]"],
     ["data.offsets=[0, 1000] has no effect", "leave data.offsets at [0]"]),
    # frames with gaps cannot be joined back into audio
    (["data.hop=2500"], ["data.hop=2500 > data.x_len=2000"]),
    # SampleRNN's samples during training: frame settings it does not read (checked by
    # training.callbacks.check_sample_generation, which sits above config's layer)
    (["model=samplernn_2tier", "callbacks.sample_generation.strategy=refeed"],
     ["callbacks.sample_generation.strategy=refeed has no effect on SampleRNN"]),
    (["model=samplernn_2tier", "callbacks.sample_generation.feedback_noise=0.1"],
     ["callbacks.sample_generation.feedback_noise=0.1 has no effect on SampleRNN"]),
    (["callbacks.sample_generation.deticking=ola"],
     ["deticking=ola needs overlapping frames"]),
    (["callbacks.sample_generation.temperature=-1"],
     ["callbacks.sample_generation.temperature=-1 must be a finite number >= 0"]),
    # nucleus sampling in the training-time samples: range, and only where it is read
    (["model=samplernn_2tier", "callbacks.sample_generation.top_p=0"],
     ["callbacks.sample_generation.top_p=0 must be in (0, 1]"]),
    (["callbacks.sample_generation.top_p=0.9"],
     ["callbacks.sample_generation.top_p=0.9 needs a discrete head", "model.head=mse"]),
    (["model=samplernn_2tier", "callbacks.sample_generation.top_p=0.9",
      "callbacks.sample_generation.temperature=0"],
     ["callbacks.sample_generation.top_p=0.9 does nothing at "
      "callbacks.sample_generation.temperature=0"]),
]


def _refusal(overrides: list[str]) -> str | None:
    """What training refuses before reading any data (train.py's first checks)."""
    try:
        cfg = compose_cfg(overrides)
        validate_train(cfg)
        check_sample_generation(cfg)
    except UserError as e:
        return str(e)
    return None


@pytest.mark.parametrize("overrides,fragments", REFUSED, ids=lambda v: " ".join(v))
def test_refused_with_one_line_naming_the_fields(overrides: list[str],
                                                 fragments: list[str]) -> None:
    """Mutants caught by the issue-20 entries (each tried): `validate_data` without the
    random-crop check (window_shift/offsets silently unused for training) or without
    `hop <= x_len`, and training without the sample callback's check (SampleRNN would
    fail, or ignore the setting, only after its first epoch)."""
    msg = _refusal(overrides)
    assert msg is not None, f"{overrides} was not refused"
    assert "\n" not in msg
    for fragment in fragments:
        assert fragment in msg, msg


@pytest.mark.parametrize("overrides", [REFUSED[0][0], REFUSED[5][0], REFUSED[10][0]],
                         ids=lambda v: " ".join(v))
def test_cli_refuses_before_writing_anything(overrides: list[str], tmp_path: Path) -> None:
    res = run_script("train.py", *overrides, f"hydra.run.dir={tmp_path / 'r'}")
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "Traceback" not in res.stderr
    for name in ("checkpoints", "summary.json", "metrics.csv", "config.yaml"):
        assert not (tmp_path / "r" / name).exists(), name


@pytest.mark.slow  # ~15-30 s on 2 cores: runs in CI (make test-slow)
def test_the_head_norm_repr_matrix() -> None:
    """Refused exactly where a head is a density over features, with one line naming the
    head and the representation; every normalisation is accepted with every head."""
    for head, norm, (kind, std) in itertools.product(HEADS, NORMS, REPRS):
        overrides = [f"model.head={head}", f"norm={norm}", f"repr={kind}",
                     f"repr.standardize={str(std).lower()}"]
        msg = _refusal(overrides)
        features = kind != "time" or std
        if head != "mse" and features:
            assert msg is not None and f"model.head={head}" in msg and f"repr={kind}" in msg, \
                overrides
        else:
            assert msg is None, (overrides, msg)
    for norm in NORMS:  # SampleRNN quantises the original-scale audio: every norm
        assert _refusal(["model=samplernn_2tier", f"norm={norm}"]) is None
        assert _refusal(["model=samplernn_3tier", f"norm={norm}"]) is None


TINY = [*SMOKE, "model.hidden_sizes=[8]", "data.x_len=64", "data.seq_len=4",
        "~callbacks.sample_generation",
        "callbacks.progress_bar._target_=audiolstm.training.callbacks.PlainProgressBar"]
TINY_SAMPLERNN = [*SMOKE, "data.x_len=160", "data.seq_len=3", "data.batch_size=4",
                  "model.hidden_sizes=[16]", "model.mlp_hidden=16", "model.embed_dim=8",
                  "model.tbptt_steps=4", "~callbacks.sample_generation",
                  "callbacks.progress_bar._target_=audiolstm.training.callbacks.PlainProgressBar"]


def _bits(overrides: list[str], out: Path) -> dict:
    run(compose_cfg(overrides, out))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["bits_grid"] == GRID_NAME
    bits = summary["test_bits_per_sample"]
    assert bits is not None and math.isfinite(bits) and 0 < bits < 16, summary
    return summary


ALLOWED_FAST = [
    ["model.head=logistic_mixture", "norm=std"],
    ["model.head=gaussian", "norm=minmax01"],
    ["model.head=mse", "repr=fft", "repr.standardize=true"],
    ["model.head=mse", "norm=minmax_union", "data.hop=32"],
]


@pytest.mark.parametrize("overrides", ALLOWED_FAST, ids=lambda v: " ".join(v))
def test_allowed_combinations_train_with_canonical_bits(overrides: list[str],
                                                        tmp_path: Path) -> None:
    summary = _bits([*TINY, *overrides], tmp_path / "run")
    if "model.head=mse" in overrides:  # Gaussian-equivalent, on val too
        assert math.isfinite(summary["val"]["val/bits_per_sample"])
    for name in ("zero", "persistence", "ridge"):  # the baselines: Gaussian-equivalent
        assert math.isfinite(summary[f"test_bits_per_sample_{name}"]), name


@pytest.mark.slow
@pytest.mark.parametrize("head,norm,rep", [
    (h, n, r) for h, n, r in itertools.product(HEADS, NORMS, REPRS)
    if h == "mse" or r == ("time", False)])
def test_every_allowed_combination_trains_with_canonical_bits(head: str, norm: str, rep,
                                                              tmp_path: Path) -> None:
    kind, std = rep
    _bits([*TINY, f"model.head={head}", f"norm={norm}", f"repr={kind}",
           f"repr.standardize={str(std).lower()}"], tmp_path / "run")


@pytest.mark.parametrize("model", ["samplernn_2tier", "samplernn_3tier"])
def test_samplernn_trains_with_the_default_norm(model: str, tmp_path: Path) -> None:
    """norm=std (the default) and an x_len that is no multiple of the top frame (3-tier:
    64): it quantises the original-scale audio and cuts examples to whole top frames."""
    summary = _bits([f"model={model}", *TINY_SAMPLERNN], tmp_path / "run")
    val = summary["val"]
    assert math.isfinite(val["val/bits_per_sample_mulaw256"])
    assert val["val/bits_per_sample_mulaw256"] != val["val/bits_per_sample"]


@pytest.mark.slow
@pytest.mark.parametrize("model", ["samplernn_2tier", "samplernn_3tier"])
def test_samplernn_smoke_as_typed(model: str, tmp_path: Path) -> None:
    res = run_script("train.py", f"model={model}", "debug=smoke",
                     f"hydra.run.dir={tmp_path / 'r'}", timeout=1800)
    assert res.returncode == 0, res.stderr[-2000:]
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert math.isfinite(summary["test_bits_per_sample"])
