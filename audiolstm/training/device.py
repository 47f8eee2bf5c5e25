"""The device a run trains on: one clear line when CUDA is asked for and absent, GPU defaults.

`trainer=gpu` on a machine without CUDA would otherwise end in a Lightning traceback
deep inside Trainer construction; `check_device` says it in one line before any data
is read. `configure_cuda` applies the float32 matmul precision on CUDA runs: "high"
(the default) lets cuBLAS matmuls (the heads, the MLPs) and cuDNN's RNN kernels use TF32
tensor cores on Ampere and newer GPUs; "highest" keeps every float32 product in full
float32 (for comparisons against CPU runs).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from omegaconf import DictConfig

from audiolstm.errors import UserError, one_of

#: torch.set_float32_matmul_precision's choices (fastest last)
MATMUL_PRECISIONS = ("highest", "high", "medium")
#: the value TrainConfig ships with (a CPU run may keep it: it means nothing there)
DEFAULT_MATMUL_PRECISION = "high"
#: Lightning accelerator names that mean CUDA
CUDA_ACCELERATORS = ("gpu", "cuda")


def uses_cuda(trainer: Any) -> bool:
    """True when the Lightning Trainer config will train on CUDA devices."""
    accelerator = (trainer or {}).get("accelerator")
    if accelerator in CUDA_ACCELERATORS:
        return True
    return accelerator == "auto" and torch.cuda.is_available()


def _why_no_cuda() -> str:
    if torch.version.cuda is None:
        return f"this torch ({torch.__version__}) is a CPU-only build"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return f"CUDA_VISIBLE_DEVICES={visible!r} leaves no usable device"
    return "no CUDA device or driver was found"


def check_device(cfg: DictConfig) -> None:
    """One line for a CUDA trainer without CUDA, too many devices, or settings that clash."""
    trainer = cfg.get("trainer") or {}
    accelerator = trainer.get("accelerator")
    precision = cfg.get("float32_matmul_precision", DEFAULT_MATMUL_PRECISION)
    one_of(precision, MATMUL_PRECISIONS, "float32_matmul_precision")
    if accelerator in CUDA_ACCELERATORS:
        if not torch.cuda.is_available():
            raise UserError(f"trainer.accelerator={accelerator}: no CUDA device is available "
                            f"here ({_why_no_cuda()}); use trainer=cpu")
        devices, count = trainer.get("devices"), torch.cuda.device_count()
        if isinstance(devices, int) and not isinstance(devices, bool) and devices > count:
            raise UserError(f"trainer.devices={devices} but only {count} CUDA device(s) are "
                            f"visible (CUDA_VISIBLE_DEVICES="
                            f"{os.environ.get('CUDA_VISIBLE_DEVICES')!r})")
    if trainer.get("deterministic") is True and trainer.get("benchmark"):
        raise UserError("trainer.deterministic=true with trainer.benchmark=true: cuDNN may "
                        "then pick different kernels run to run; add trainer.benchmark=false")
    if precision != DEFAULT_MATMUL_PRECISION and not uses_cuda(trainer):
        raise UserError(f"float32_matmul_precision={precision} applies to CUDA runs only "
                        f"(trainer.accelerator={accelerator})")


def configure_cuda(precision: str, on_cuda: bool) -> None:
    """TF32 (or not) for float32 matmuls and cuDNN RNNs; nothing on CPU runs.

    torch's `set_float32_matmul_precision` governs cuBLAS only; cuDNN's RNN kernels follow
    `torch.backends.cudnn.allow_tf32` (on by default), so both are set from one value.
    """
    if not on_cuda:
        return
    torch.set_float32_matmul_precision(precision)
    torch.backends.cudnn.allow_tf32 = precision != "highest"
