"""The study's knobs: `conf/explore.yaml`'s top-level keys as a validated, frozen record."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from audiolstm.errors import UserError


@dataclass(frozen=True)
class ExploreOptions:
    """The top-level knobs of `conf/explore.yaml`, validated (one UserError line per field)."""

    envelope_hz: float = 20.0
    spectrogram_seconds: float = 20.0
    pulse_min_seconds: float = 1.0
    pulse_max_seconds: float = 20.0
    pulse_peak_fraction: float = 0.5
    region_seconds: float = 60.0
    splits: tuple[float, float, float] = (0.8, 0.1, 0.1)
    max_panel_samples: int = 20000
    silence_window_ms: float = 10.0
    silence_threshold: float = 0.01
    fade_window_seconds: float = 3.0

    def __post_init__(self) -> None:
        for name in ("envelope_hz", "spectrogram_seconds", "pulse_min_seconds",
                     "pulse_max_seconds", "region_seconds", "silence_window_ms",
                     "fade_window_seconds"):
            value = getattr(self, name)
            if not _is_number(value) or not value > 0:
                raise UserError(f"{name}={value!r} must be a positive number")
        if self.pulse_max_seconds <= self.pulse_min_seconds:
            raise UserError(f"pulse_max_seconds={self.pulse_max_seconds!r} must be greater than "
                            f"pulse_min_seconds={self.pulse_min_seconds!r}")
        for name in ("pulse_peak_fraction", "silence_threshold"):
            value = getattr(self, name)
            if not _is_number(value) or not 0 < value <= 1:
                raise UserError(f"{name}={value!r} must be in (0, 1]")
        if (not isinstance(self.max_panel_samples, int) or isinstance(self.max_panel_samples, bool)
                or self.max_panel_samples < 100):
            raise UserError(f"max_panel_samples={self.max_panel_samples!r} must be an integer "
                            ">= 100")
        splits = list(self.splits)
        if len(splits) != 3 or not all(_is_number(r) and r > 0 for r in splits):
            raise UserError(f"splits={splits!r} must be three positive ratios (train, val, test)")
        if not math.isclose(sum(splits), 1.0, abs_tol=1e-6):
            raise UserError(f"splits={splits!r} must sum to 1 (they sum to {sum(splits):g})")

    @classmethod
    def from_cfg(cls, cfg: DictConfig | Mapping[str, Any]) -> ExploreOptions:
        """Read the known keys (missing ones keep their defaults)."""
        kwargs: dict[str, Any] = {}
        for name in cls.__dataclass_fields__:
            if name in cfg:
                value = cfg[name]
                if OmegaConf.is_config(value):
                    value = OmegaConf.to_container(value, resolve=True)
                kwargs[name] = tuple(value) if name == "splits" else value
        return cls(**kwargs)

    def silence_window(self, sample_rate: int) -> int:
        """`silence_window_ms` in samples (at least one)."""
        return max(1, round(self.silence_window_ms * sample_rate / 1000.0))


def _is_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))
