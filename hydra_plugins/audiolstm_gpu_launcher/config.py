"""The launcher's structured config: `hydra/launcher=gpus` (conf/hydra/launcher/gpus.yaml).

Registered in Hydra's ConfigStore when Hydra's plugin discovery imports this module, so a
typo (`hydra.launcher.jobs_per_devise=2`) fails at composition.

No `from __future__ import annotations` here: Hydra's plugin scanner executes this module
before it is in `sys.modules`, and `dataclasses` cannot resolve string annotations then.
"""

from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore


@dataclass
class GpuLauncherConf:
    """Parallel sweep jobs, each pinned to its own CUDA device(s)."""

    _target_: str = "hydra_plugins.audiolstm_gpu_launcher.launcher.GpuLauncher"
    # device ids as torch numbers the devices this process sees (cuda:0, cuda:1, ...):
    # null = every visible GPU; a list [0,1,2,3], a string "0,1" or one int
    devices: Any = None
    # jobs sharing one device (or one group) at a time: packs small models onto a GPU
    jobs_per_device: int = 1
    # devices handed to each job (DDP inside a job: trainer=ddp trainer.devices=N)
    devices_per_job: int = 1
    # Ctrl-C / SIGTERM: seconds running jobs get to stop after SIGINT before SIGKILL
    stop_grace_s: float = 10.0


ConfigStore.instance().store(
    group="hydra/launcher",
    name="audiolstm_gpus",
    node=GpuLauncherConf,
    provider="audiolstm",
)
