"""`trainer.precision`: which values are allowed, and what `auto` means on this machine.

Why (issue 15): on a CPU with native bfloat16 (AVX512_BF16 or AMX-BF16) Lightning's
`bf16-mixed` (autocast to bf16 around every training step) costs 1.2-2.1x less CPU time
per training step (bench/bench_precision.py); on a CPU without it the same setting is
emulated and slower. So `auto` is a choice made per machine:

- CPU with native bf16 -> `bf16-mixed`; any other CPU -> `32-true`;
- a CUDA GPU that supports bf16 (Ampere and later) -> `bf16-mixed`, else `32-true`.

The weights, the optimiser state and the checkpoints stay float32 under `bf16-mixed`;
validation, test and generation run in float32 (see `models.base.float32_eval`).

`check_precision` is the semantic check `config.validate_train` runs before anything is
built: a value Lightning does not know, or float16 on a CPU (Lightning would silently
swap `16-mixed` for `bf16-mixed` there), is one line naming the field and the choices.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from audiolstm.errors import UserError

log = logging.getLogger(__name__)

#: Every value Lightning's Trainer accepts (lightning_fabric's _PRECISION_INPUT), and ours.
LIGHTNING_PRECISIONS = ("32-true", "bf16-mixed", "bf16-true", "16-mixed", "16-true",
                        "64-true", "transformer-engine", "transformer-engine-float16")
#: Lightning's short aliases and what they mean.
ALIASES = {"32": "32-true", "64": "64-true", "16": "16-mixed", "bf16": "bf16-mixed"}
AUTO = "auto"
#: What a CPU can run (float16 autocast is GPU-only; Transformer Engine needs CUDA).
CPU_PRECISIONS = (AUTO, "32-true", "bf16-mixed", "bf16-true", "64-true")
#: CPU flags (as torch.cpu.get_capabilities() and /proc/cpuinfo name them) meaning native bf16.
NATIVE_BF16_FLAGS = {"avx512_bf16": "AVX512_BF16", "amx_bf16": "AMX-BF16"}


@dataclass(frozen=True)
class Precision:
    """The precision a run uses and, for `auto`, why."""

    value: str
    reason: str


def canonical(value: Any) -> str:
    """`trainer.precision` as Lightning's long form ("32" and 32 -> "32-true")."""
    text = str(value).strip()
    return ALIASES.get(text, text)


def _cpuinfo_flags(path: str = "/proc/cpuinfo") -> set[str]:
    try:
        text = Path(path).read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_bf16_flags(capabilities: Mapping[str, Any] | None = None,
                   cpuinfo_flags: set[str] | None = None) -> list[str]:
    """The native-bf16 features this CPU has (e.g. ["AVX512_BF16", "AMX-BF16"]); [] if none.

    Asks torch's cpuinfo (`torch.cpu.get_capabilities()`) first, /proc/cpuinfo's flags
    when that is unavailable. Arguments are for tests.
    """
    if capabilities is None and cpuinfo_flags is None:
        getter = getattr(torch.cpu, "get_capabilities", None)
        try:
            capabilities = getter() if getter else None
        except Exception:  # noqa: BLE001 - any failure: fall back to /proc/cpuinfo
            capabilities = None
        if not capabilities or not any(k in capabilities for k in NATIVE_BF16_FLAGS):
            capabilities = None
            cpuinfo_flags = _cpuinfo_flags()
    if capabilities is not None:
        return [name for key, name in NATIVE_BF16_FLAGS.items() if capabilities.get(key)]
    return [name for key, name in NATIVE_BF16_FLAGS.items() if key in (cpuinfo_flags or set())]


def runs_on_cpu(trainer_cfg: Mapping[str, Any]) -> bool:
    """Whether the Trainer this node builds runs on the CPU."""
    acc = str(trainer_cfg.get("accelerator") or "auto").lower()
    if acc == "cpu":
        return True
    if acc == "auto":
        mps = getattr(torch.backends, "mps", None)
        return not torch.cuda.is_available() and not (mps is not None and mps.is_available())
    return False


def check_precision(trainer_cfg: Mapping[str, Any] | None, key: str = "trainer.precision"
                    ) -> None:
    """One-line `UserError` for a value Lightning does not know, or float16 on a CPU."""
    if not trainer_cfg or "precision" not in trainer_cfg:
        return
    raw = trainer_cfg.get("precision")
    value = canonical(raw)
    on_cpu = runs_on_cpu(trainer_cfg)
    if value != AUTO and value not in LIGHTNING_PRECISIONS:
        choices = CPU_PRECISIONS if on_cpu else (AUTO, *LIGHTNING_PRECISIONS)
        raise UserError(f"{key}={raw!r} is not a precision Lightning knows: use one of "
                        f"{', '.join(choices)}")
    if on_cpu and value not in CPU_PRECISIONS:
        why = ("float16 autocast is not supported on CPU" if value.startswith("16")
               else "Transformer Engine needs a CUDA GPU")
        raise UserError(f"{key}={raw!r}: {why}; on CPU use one of {', '.join(CPU_PRECISIONS)} "
                        "(bf16-mixed is the fast one where the CPU has native bf16)")


def resolve_precision(trainer_cfg: Mapping[str, Any]) -> Precision:
    """The precision to give Lightning: `auto` decided for this machine, others as given."""
    value = canonical(trainer_cfg.get("precision", "32-true"))
    on_cpu = runs_on_cpu(trainer_cfg)
    if value != AUTO:
        if value in ("bf16-mixed", "bf16-true") and on_cpu and not cpu_bf16_flags():
            return Precision(value, "WARNING: this CPU has no native bf16 (no AVX512_BF16 "
                             "or AMX-BF16): bf16 is emulated and usually slower than 32-true")
        return Precision(value, "as configured")
    if on_cpu:
        flags = cpu_bf16_flags()
        if flags:
            return Precision("bf16-mixed", f"auto: this CPU has native bf16 ({', '.join(flags)})"
                             "; float32 weights, bf16 autocast in training steps, float32 "
                             "evaluation and generation")
        return Precision("32-true", "auto: this CPU has no native bf16 (no AVX512_BF16 or "
                         "AMX-BF16), where bf16 would be emulated and slower")
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return Precision("bf16-mixed", "auto: this GPU supports bf16")
    return Precision("32-true", "auto: no bf16 support on this accelerator")


def apply_precision(trainer_cfg: Any) -> Precision:
    """Resolve `trainer.precision` in place (a DictConfig node or a dict) and log the choice."""
    chosen = resolve_precision(trainer_cfg)
    trainer_cfg["precision"] = chosen.value
    level = logging.WARNING if chosen.reason.startswith("WARNING") else logging.INFO
    log.log(level, "trainer.precision=%s (%s)", chosen.value, chosen.reason)
    if chosen.value != "32-true":  # Lightning's summary only counts bytes in 32 bits: noise
        warnings.filterwarnings("ignore", message=r"Precision .* is not supported by the "
                                r"model summary")
    return chosen
