"""Loading our checkpoints safely and with clear errors.

`torch.load(weights_only=True)` refuses arbitrary pickled objects, so a
checkpoint from an untrusted source cannot execute code. Everything we put
in a checkpoint (hyper-parameters, normaliser, representation, data
settings) is plain containers and tensors for that reason.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from audiolstm.errors import UserError, existing_file


def load_checkpoint(path: str | Path, key: str = "ckpt_path") -> dict[str, Any]:
    """Read a checkpoint written by this project; UserError naming `key` otherwise."""
    p = Path(path).expanduser()
    existing_file(p, f"{key}={path}", "a .ckpt checkpoint")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{key}={path}: not a readable PyTorch checkpoint ({first[:160]})") from e
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "audiolstm" not in ckpt:
        raise UserError(f"{key}={path}: not an audiolstm checkpoint (no model/data state inside)")
    if not (ckpt["audiolstm"] or {}).get("data_state"):
        raise UserError(f"{key}={path}: checkpoint lacks the data state (normaliser, settings)")
    return ckpt


def model_from_checkpoint(path: str | Path, key: str = "ckpt_path", map_location: str = "cpu"):
    """The model stored in a checkpoint, in eval mode, with its data state attached."""
    from audiolstm.models.registry import class_of_checkpoint

    ckpt = load_checkpoint(path, key)
    model = class_of_checkpoint(ckpt)(**ckpt["hyper_parameters"])
    model.load_state_dict(ckpt["state_dict"])
    model.on_load_checkpoint(ckpt)
    return model.to(map_location).eval()
