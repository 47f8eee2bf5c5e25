"""Shared fixtures: an isolated cache, W&B offline, and Hydra composition helpers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from audiolstm import PROJECT_ROOT
from audiolstm.config import register_configs

ROOT = PROJECT_ROOT

# `make test` and `make test-slow` run one pytest-xdist worker per core: one torch thread
# each, so the workers do not oversubscribe the cores (most tests are single-threaded
# Python anyway). The scripts a test starts (train.py, DDP ranks, sweep jobs) inherit one
# thread too, unless the caller's environment sets its own: two workers' subprocesses each
# spinning two OpenMP threads on two cores made the slow suite's longest test 5 x slower.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")
CONF = str(PROJECT_ROOT / "conf")


@pytest.fixture(scope="session", autouse=True)
def _isolated_env(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tests never touch the user's cache, W&B account or network."""
    os.environ["AUDIOLSTM_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    os.environ["WANDB_MODE"] = "offline"
    os.environ["WANDB_SILENT"] = "true"
    os.environ.pop("WANDB_API_KEY", None)
    register_configs()


def compose_cfg(overrides: list[str], out: Path | None = None,
                config_name: str = "train") -> DictConfig:
    """Compose a config as the CLI would, with the run directory at `out`."""
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides)
    with open_dict(cfg):
        cfg.paths.root_dir = str(out or ROOT)
        cfg.paths.output_dir = str(out) if out else None
        cfg.paths.cache_dir = os.environ["AUDIOLSTM_CACHE_DIR"]
    return cfg


def run_script(script: str, *args: str, cwd: Path | None = None, timeout: int = 300,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run a root script (train.py, generate.py, ...) the way a user would."""
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        cwd=cwd or ROOT, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )


class FramesDataset(torch.utils.data.Dataset):
    """Hand-made frame batches with the data module's batch contract (`__getitems__`)."""

    def __init__(self, frames: torch.Tensor) -> None:
        self.frames = frames

    def __len__(self) -> int:
        return len(self.frames)

    def __getitems__(self, idx: list[int]) -> torch.Tensor:
        return self.frames[idx]


def quiet_trainer(**kw) -> pl.Trainer:
    """A CPU Trainer with no logger, checkpoints, progress bar or summary."""
    return pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, **kw)


SMOKE = ["debug=smoke", "data.synth_seconds=20", "callbacks.sample_generation.seconds=0.5",
         "callbacks.sample_generation.seed_seconds=0.5"]
