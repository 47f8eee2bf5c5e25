"""Pure helpers shared by the sweeper and the in-training pruning callback.

Kept apart from the Sweeper class so that a training job (which may run in another
process or on another machine) can rebuild the same pruner and open the same storage
without importing Hydra's plugin machinery. optuna is imported inside the functions:
Hydra imports this package at every start-up.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

SQLITE = "sqlite:///"


def absolute_storage(url: str | None) -> str | None:
    """A relative SQLite path made absolute, so jobs started elsewhere find the same file."""
    if url is None or not url.startswith(SQLITE) or url.startswith(SQLITE + "/"):
        return url
    if url[len(SQLITE):].startswith(":memory:"):
        return url
    return SQLITE + str(Path(url[len(SQLITE):]).expanduser().resolve())


def open_storage(url: str | None) -> Any:
    """An Optuna storage for `url` (None: in memory); creates a SQLite file's folder.

    SQLite gets a generous lock timeout: parallel jobs report epochs to the same file.
    """
    import optuna

    if url is None:
        return None
    if url.startswith(SQLITE):
        Path(url[len(SQLITE):]).expanduser().parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
    return optuna.storages.RDBStorage(url)


def make_sampler(spec: Mapping[str, Any], n_existing: int = 0) -> Any:
    """The sampler; a seeded one resuming a study of `n_existing` trials gets seed + n.

    Without the shift, a resumed search would draw the very same random start-up points
    again (same seed, fresh sampler) and waste its first trials on repeats.
    """
    import optuna

    name = spec.get("name", "tpe")
    seed = spec.get("seed")
    seed = None if seed is None else int(seed) + n_existing
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed,
                                          n_startup_trials=int(spec.get("n_startup_trials", 10)))
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(f"hydra.sweeper.sampler.name={name!r} is not one of tpe, random")


def make_pruner(spec: Mapping[str, Any] | None) -> Any:
    """The study's pruner; the job rebuilds it from the same spec (storages don't keep it)."""
    import optuna

    spec = spec or {"name": "none"}
    name = spec.get("name", "median")
    if name == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=int(spec.get("n_startup_trials", 5)),
            n_warmup_steps=int(spec.get("n_warmup_steps", 0)),
            interval_steps=int(spec.get("interval_steps", 1)),
        )
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"hydra.sweeper.pruner.name={name!r} is not one of median, none")


def format_value(value: Any) -> str:
    """A Python value as Hydra override text (strings quoted, so URLs and spaces survive)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return "'" + value.replace("'", "\\'") + "'"  # Hydra escapes only the quote
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{format_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, Iterable):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as a Hydra override")


def short_float(x: float, digits: int = 4) -> float:
    """Round to `digits` significant digits: run-directory names stay short and readable."""
    return x if x == 0 or not math.isfinite(x) else float(f"{x:.{digits}g}")


class SearchSpace:
    """Hydra sweep syntax -> Optuna distributions, and trial params -> override strings.

    choice(a,b) / a,b -> categorical (lists such as [300,300] allowed: kept as text);
    range(lo,hi[,step]) -> int (or float with a float step), hi excluded as in Hydra;
    interval(lo,hi) -> float; tag(log, interval(lo,hi)) -> log-uniform float.
    Anything that is not a sweep is a fixed override applied to every trial.
    """

    def __init__(self, overrides: Iterable[Any]) -> None:
        from hydra.core.override_parser.types import Transformer
        from optuna.distributions import (
            CategoricalDistribution,
            FloatDistribution,
            IntDistribution,
        )

        self.distributions: dict[str, Any] = {}
        self.fixed: list[str] = []
        self._as_text: dict[str, dict[Any, str]] = {}
        for o in overrides:
            key = o.get_key_element()
            if not o.is_sweep_override():
                self.fixed.append(f"{key}={o.get_value_element_as_str()}")
                continue
            v = o.value()
            if o.is_interval_sweep():
                self.distributions[key] = FloatDistribution(v.start, v.end, log="log" in v.tags)
            elif o.is_range_sweep() and not v.shuffle:
                n = max(math.ceil((v.stop - v.start) / v.step - 1e-9), 1)  # values in range
                last = v.start + v.step * (n - 1)
                if all(isinstance(x, int) for x in (v.start, v.stop, v.step)):
                    self.distributions[key] = IntDistribution(v.start, last, step=v.step)
                else:
                    self.distributions[key] = FloatDistribution(v.start, last, step=v.step)
            elif o.is_choice_sweep() or o.is_range_sweep():
                values = list(o.sweep_iterator(transformer=Transformer.encode))
                texts = list(o.sweep_string_iterator())
                self._as_text[key] = dict(zip(values, texts, strict=True))
                self.distributions[key] = CategoricalDistribution(values)
            else:
                raise ValueError(f"{key}: sweep {o.input_line!r} has no Optuna equivalent")

    def to_overrides(self, params: Mapping[str, Any]) -> list[str]:
        out = []
        for key, value in params.items():
            if key in self._as_text:
                text = self._as_text[key][value]
            elif isinstance(value, float):
                text = repr(short_float(value))
            else:
                text = str(value)
            out.append(f"{key}={text}")
        return out
