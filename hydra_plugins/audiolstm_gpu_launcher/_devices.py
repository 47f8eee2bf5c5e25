"""Which devices the sweep may use, and how they are cut into per-job slots.

Pure functions (plus one probe that runs torch in a child process), tested directly:
the launcher calls `plan_slots` in `setup`, so a bad `hydra.launcher.*` value stops the
sweep with one line before any job starts.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: Accelerators whose Lightning `devices` count must match the group a job is handed.
GPU_ACCELERATORS = ("gpu", "cuda")
#: On Linux, torch can see a GPU only if one of these exists: NVIDIA's driver, WSL2's
#: GPU bridge, AMD's ROCm driver (torch.cuda on ROCm builds).
GPU_DRIVER_PATHS = ("/proc/driver/nvidia", "/dev/dxg", "/dev/kfd")


class LauncherError(ValueError):
    """A bad `hydra.launcher.*` setting: printed as one line, exit code 2."""


@dataclass(frozen=True)
class Slot:
    """One place a job can run: a device group (its CUDA_VISIBLE_DEVICES) and a seat on it."""

    group: int
    seat: int
    cuda_visible_devices: str


def parse_devices(value: Any) -> list[int] | None:
    """`hydra.launcher.devices` as a list of ids: None, an int, "0,1" or [0, 1]."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise LauncherError(f"hydra.launcher.devices={value!r} must be device ids, e.g. [0,1]")
    if isinstance(value, int):
        items: Sequence[Any] = [value]
    elif isinstance(value, str):
        items = [p.strip() for p in value.split(",")]
    elif isinstance(value, Sequence) or hasattr(value, "__iter__"):
        items = list(value)
    else:
        raise LauncherError(f"hydra.launcher.devices={value!r} must be a list such as [0,1]")
    ids: list[int] = []
    for item in items:
        try:
            ok = not isinstance(item, bool) and int(item) == float(item) and int(item) >= 0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise LauncherError(f"hydra.launcher.devices={_show(value)}: {item!r} is not a "
                                "device id (a non-negative integer)")
        ids.append(int(item))
    if not ids:
        raise LauncherError(f"hydra.launcher.devices={_show(value)} names no device")
    dup = next((i for i in ids if ids.count(i) > 1), None)
    if dup is not None:
        raise LauncherError(f"hydra.launcher.devices={_show(value)} lists device {dup} twice")
    return ids


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    try:
        return "[" + ",".join(str(v) for v in value) + "]"
    except TypeError:
        return repr(value)


def probe_cuda_count(env: Mapping[str, str] | None = None, timeout: float = 120.0) -> int:
    """How many CUDA devices torch sees, asked in a child process.

    The launching process must not initialise CUDA (a CUDA context does not survive a
    fork, and it would hold memory on every device for the whole sweep), so torch is
    asked in a fresh interpreter with the same environment, which also honours an
    inherited CUDA_VISIBLE_DEVICES exactly as the jobs will. No torch or no CUDA: 0.
    """
    if sys.platform == "linux" and not any(os.path.exists(p) for p in GPU_DRIVER_PATHS):
        return 0  # no GPU driver loaded: nothing to ask torch (saves an import of torch)
    code = "import torch; print(torch.cuda.device_count())"
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=timeout, env=dict(os.environ if env is None else env),
                             check=True)
        return int(out.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return 0


def physical_ids(count: int, inherited: str | None) -> list[str]:
    """CUDA_VISIBLE_DEVICES entries for torch's device numbers 0..count-1.

    Under an inherited CUDA_VISIBLE_DEVICES (SLURM's `--gres=gpu:4` sets one) device
    number i is its i-th entry; a job's own CUDA_VISIBLE_DEVICES must name that entry,
    not i, because it replaces the inherited value.
    """
    if inherited is None or not inherited.strip():
        return [str(i) for i in range(count)]
    entries = [e.strip() for e in inherited.split(",")]
    return entries[:count]


def plan_slots(devices: Any, jobs_per_device: int, devices_per_job: int, cuda_count: int,
               inherited: str | None, accelerator: Any, trainer_devices: Any) -> list[Slot]:
    """Check the launcher settings against the machine; return the job slots.

    Slots are ordered seat-major (every group's first seat, then every group's second),
    so jobs spread over devices before they share one.
    """
    if not isinstance(jobs_per_device, int) or jobs_per_device < 1:
        raise LauncherError(f"hydra.launcher.jobs_per_device={jobs_per_device!r} must be >= 1")
    if not isinstance(devices_per_job, int) or devices_per_job < 1:
        raise LauncherError(f"hydra.launcher.devices_per_job={devices_per_job!r} must be >= 1")
    ids = parse_devices(devices)
    if cuda_count > 0:
        if ids is None:
            ids = list(range(cuda_count))
        missing = [i for i in ids if i >= cuda_count]
        if missing:
            raise LauncherError(
                f"hydra.launcher.devices={_show(ids)}: device {missing[0]} does not exist "
                f"(CUDA sees {cuda_count} device{'s' if cuda_count > 1 else ''}: "
                f"0..{cuda_count - 1})")
        names = physical_ids(cuda_count, inherited)
        visible = [names[i] for i in ids]
    else:
        if ids is None:
            raise LauncherError("hydra/launcher=gpus: no CUDA device is visible here; name "
                                "device ids (hydra.launcher.devices=[0,1]) only to simulate "
                                "them with trainer=cpu")
        if accelerator != "cpu":
            raise LauncherError(
                f"hydra.launcher.devices={_show(ids)}: no CUDA device is visible here, so "
                f"device ids can only be simulated with trainer=cpu "
                f"(trainer.accelerator={accelerator})")
        visible = [str(i) for i in ids]
    if len(visible) % devices_per_job:
        raise LauncherError(
            f"hydra.launcher.devices_per_job={devices_per_job} does not divide the "
            f"{len(visible)} devices {_show(ids)}")
    if (accelerator in GPU_ACCELERATORS and isinstance(trainer_devices, int)
            and not isinstance(trainer_devices, bool) and trainer_devices not in (-1,
                                                                                  devices_per_job)):
        raise LauncherError(
            f"trainer.devices={trainer_devices} but each job is handed "
            f"hydra.launcher.devices_per_job={devices_per_job} device(s): set both to the "
            f"same number (e.g. trainer=ddp trainer.devices=2 "
            f"hydra.launcher.devices_per_job=2)")
    groups = [",".join(visible[i:i + devices_per_job])
              for i in range(0, len(visible), devices_per_job)]
    return [Slot(g, seat, groups[g]) for seat in range(jobs_per_device)
            for g in range(len(groups))]
