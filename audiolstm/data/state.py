"""`DataState`: everything a trained model needs to know about its data, as one typed value.

The datamodule produces it after fitting, the model carries it, the checkpoint stores it
(as plain containers, `to_dict`, so checkpoints load with `weights_only=True`), and
generation reads it back. Layers ask it questions (`step`, `normalizer()`,
`representation()`) instead of reaching into nested dicts and recomputing defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from audiolstm.data.normalize import Normalizer
from audiolstm.data.representation import Representation


@dataclass(frozen=True)
class DataState:
    """Data settings plus the fitted normaliser and representation of one training run.

    `data`, `norm` and `repr` are the resolved config nodes; `normalizer_state` and
    `representation_state` the fitted statistics; `meta` what the source recorded
    (sample rate, file boundaries, ...).
    """

    data: Mapping[str, Any]
    norm: Mapping[str, Any] = field(default_factory=dict)
    repr: Mapping[str, Any] = field(default_factory=dict)  # noqa: A003 - the config group
    normalizer_state: Mapping[str, Any] | None = None
    representation_state: Mapping[str, Any] | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ settings
    @property
    def sample_rate(self) -> int:
        return int(self.data["sample_rate"])

    @property
    def x_len(self) -> int:
        return int(self.data["x_len"])

    @property
    def step(self) -> int:
        """Samples between consecutive frames (`data.hop`, default `x_len`)."""
        return int(self.data.get("hop") or self.x_len)

    @property
    def overlapping(self) -> bool:
        return self.step < self.x_len

    @property
    def repr_kind(self) -> str:
        return str(self.repr.get("kind", "time"))

    @property
    def standardized(self) -> bool:
        return bool(self.repr.get("standardize", False))

    # ------------------------------------------------------------------ fitted objects
    def normalizer(self) -> Normalizer:
        if self.normalizer_state is None:
            raise ValueError("data state has no fitted normaliser (not set up yet)")
        return Normalizer.from_state_dict(self.normalizer_state)

    def representation(self) -> Representation:
        if self.representation_state is not None:
            return Representation.from_state_dict(dict(self.representation_state))
        return Representation(self.repr_kind, self.x_len, self.standardized)

    # ------------------------------------------------------------------ checkpoints
    def to_dict(self) -> dict[str, Any]:
        """Plain containers, in the layout checkpoints have always used."""
        return {
            "data": dict(self.data), "norm": dict(self.norm), "repr": dict(self.repr),
            "normalizer": None if self.normalizer_state is None else dict(self.normalizer_state),
            "representation": (None if self.representation_state is None
                               else dict(self.representation_state)),
            "meta": dict(self.meta),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DataState:
        return cls(data=dict(d.get("data") or {}), norm=dict(d.get("norm") or {}),
                   repr=dict(d.get("repr") or {}), normalizer_state=d.get("normalizer"),
                   representation_state=d.get("representation"),
                   meta=dict(d.get("meta") or {}))
