"""Resuming a run (`ckpt_path=PATH` or `ckpt_path=last`): the checkpoint's data stays.

A resume continues one run exactly, so it keeps what the checkpoint records: the data
settings and their fitted statistics (`DataState`: the split plan, the normaliser, the
representation) and the model's hyper-parameters. A resumed config that differs from
them in any `data`, `norm`, `repr` or `model` setting is refused in one line naming the
field (`init_from=PATH` starts a new run from the weights instead). `MAY_CHANGE` is the
one list of recorded settings that may differ, each with why. Settings the checkpoint
does not record (`trainer`, `logger`, `callbacks`, `paths`, `seed`, ...) are not
compared: `trainer.max_epochs` is how a run is continued.

The datamodule gets the checkpoint's data state *before* `setup()`, so its files keep
their splits (`data.planning.plan_splits(recorded=)`) and the normaliser is not
re-fitted; `AdoptDataModuleState` then gives the model the datamodule's record again
after Lightning's restore, so a checkpoint holds one plan.

`ckpt_path=last` is the newest `last.ckpt` under `paths.log_dir/<task>` whose recorded
settings equal this config's (`differences` is empty): a sweep job or another
configuration is never resumed by accident, and the path taken is logged.
"""

from __future__ import annotations

import inspect
import logging
import pickle
import zipfile
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig

from audiolstm.config import to_container
from audiolstm.data.settings import DataConfig, NormConfig, ReprConfig, data_config
from audiolstm.data.state import DataState
from audiolstm.errors import UserError
from audiolstm.models.registry import ARCHS, model_class, model_kwargs

log = logging.getLogger(__name__)

#: recorded settings a resumed run may change, and why that keeps the run the same
MAY_CHANGE: dict[str, str] = {
    "data.num_workers": "loader processes: the examples and their order do not depend on "
                        "them (resume is exact with 0 and 2 workers, tested)",
    "data.pin_memory": "how batches are copied to a GPU",
    "data.decode_workers": "processes decoding a corpus: the decoded audio is the same",
    "data.cache_dir": "where decoded audio is kept: the checkpoint's files and their "
                      "lengths are checked against the corpus instead",
}

#: constructor arguments named differently in the config (SampleRNN's tiers)
_CONFIG_NAME = {"hidden": "hidden_sizes", "rnn_layers": "hidden_sizes"}


def _defaults(schema: type) -> dict[str, Any]:
    return {f.name: (f.default_factory() if f.default_factory is not MISSING else f.default)
            for f in fields(schema)}


def _plain(v: Any) -> Any:
    """Tuples as lists, all the way down: a checkpoint may hold either."""
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


def _same_path(now: Any, then: Any, origin: Any) -> bool:
    """data.path as typed, or resolved to the folder/file the checkpoint read."""
    if now == then:
        return True
    if now is None or origin is None:
        return False
    try:
        return str(Path(str(now)).expanduser().resolve()) == str(origin)
    except (OSError, RuntimeError):
        return False


def differences(cfg: DictConfig, ckpt: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """`(field, value now, the checkpoint's)` for each recorded setting that differs.

    Settings a checkpoint lacks (written before the setting existed) count as their
    schema or constructor default.
    """
    extra = ckpt.get("audiolstm") or {}
    state = DataState.from_dict(extra.get("data_state") or {})
    out: list[tuple[str, Any, Any]] = []
    data_now = vars(data_config(to_container(cfg.data)))
    for name, default in _defaults(DataConfig).items():
        key, now, then = f"data.{name}", data_now[name], state.data.get(name, default)
        if key in MAY_CHANGE or (name == "path"
                                 and _same_path(now, then, state.meta.get("path"))):
            continue
        if _plain(now) != _plain(then):
            out.append((key, now, then))
    for group, schema, recorded in (("norm", NormConfig, state.norm),
                                    ("repr", ReprConfig, state.repr)):
        node = to_container(cfg[group])
        for name, default in _defaults(schema).items():
            now, then = node.get(name, default), recorded.get(name, default)
            if _plain(now) != _plain(then):
                out.append((f"{group}.{name}", now, then))
    model_cfg = to_container(cfg.model)
    cls = model_class(model_cfg.get("arch", "frame_rnn"))
    then_class = extra.get("model_class", "AudioRNN")
    if cls.checkpoint_class != then_class:
        arch_of = {model_class(a).checkpoint_class: a for a in ARCHS}
        out.append(("model.arch", model_cfg.get("arch"), arch_of.get(then_class, then_class)))
        return out
    hp = ckpt.get("hyper_parameters") or {}
    signature = inspect.signature(cls.__init__).parameters
    for name, now in model_kwargs(model_cfg).items():
        default = signature[name].default if name in signature else None
        then = hp.get(name, default)
        if _plain(now) != _plain(then):
            out.append((f"model.{_CONFIG_NAME.get(name, name)}", now, then))
    return out


def _show(v: Any) -> str:
    return v if isinstance(v, str) else repr(_plain(v))


def check_resumable(cfg: DictConfig, ckpt: dict[str, Any], path: str) -> DataState:
    """The checkpoint's data state, or one line naming the first setting that differs."""
    diffs = differences(cfg, ckpt)
    if diffs:
        key, now, then = diffs[0]
        more = f" (and {len(diffs) - 1} more)" if len(diffs) > 1 else ""
        raise UserError(
            f"ckpt_path={path}: {key}={_show(now)} differs from the checkpoint's "
            f"{_show(then)}{more}; a resumed run keeps the checkpoint's data, norm, repr "
            f"and model settings (to train with new ones from its weights: init_from={path})")
    return DataState.from_dict(ckpt["audiolstm"]["data_state"])


def _peek(path: Path) -> dict[str, Any] | None:
    """A checkpoint's records without reading its tensors (memory-mapped); None if unreadable."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, ValueError,
            OSError):
        return None
    return ckpt if isinstance(ckpt, dict) and (ckpt.get("audiolstm") or {}).get(
        "data_state") else None


def find_last_checkpoint(cfg: DictConfig, exclude: Path | None = None) -> Path:
    """`ckpt_path=last`: the newest last.ckpt under `paths.log_dir/<task_name>` of this
    configuration (its recorded data, norm, repr and model settings equal the config's)."""
    root = Path(cfg.paths.log_dir) / cfg.task_name
    found = sorted((p for p in root.glob("**/checkpoints/last.ckpt")
                    if exclude is None or exclude.resolve() not in p.resolve().parents),
                   key=lambda p: p.stat().st_mtime, reverse=True)
    if not found:
        raise UserError(f"ckpt_path=last: no earlier run with checkpoints/last.ckpt under {root}")
    newest: str | None = None  # why the newest one is not it
    for skipped, p in enumerate(found):
        ckpt = _peek(p)
        diffs = None if ckpt is None else differences(cfg, ckpt)
        if diffs == []:
            log.info("ckpt_path=last: resuming %s, the newest last.ckpt of this "
                     "configuration (%d newer one(s) of other configurations skipped)",
                     p, skipped)
            return p
        if newest is None:
            newest = (f"{p}: not a readable audiolstm checkpoint" if not diffs else
                      f"{p}: {diffs[0][0]}={_show(diffs[0][1])}, the checkpoint's "
                      f"{_show(diffs[0][2])}")
    raise UserError(f"ckpt_path=last: none of the {len(found)} last.ckpt under {root} has "
                    f"this configuration (the newest, {newest}); give ckpt_path=PATH")


class AdoptDataModuleState(pl.Callback):
    """After Lightning's restore, the model carries the datamodule's data state again.

    Lightning restores the checkpoint's record into the model, while the datamodule's may
    have grown a new training file (`plan_splits`); both go into every checkpoint, so
    they must be one plan.
    """

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        dm = trainer.datamodule
        if dm is not None and hasattr(dm, "data_state"):
            pl_module.data_state = dm.data_state()
