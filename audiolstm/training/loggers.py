"""Logger factories: W&B that never prompts or blocks.

`wandb.init` with no credentials asks for an API key on a terminal and, with
credentials but no network, waits on retries. We decide the mode before
touching wandb: explicit `mode`/`WANDB_MODE` wins; otherwise no API key
(env or ~/.netrc) or an unreachable server means offline. Offline runs are
kept under the run directory and can be pushed later with `wandb sync`.
"""

from __future__ import annotations

import logging
import netrc
import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

log = logging.getLogger(__name__)

DEFAULT_HOST = "https://api.wandb.ai"


def _has_credentials(host: str) -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        hostname = urlparse(host).hostname or ""
        return netrc.netrc().authenticators(hostname) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def _reachable(host: str, timeout: float = 2.0) -> bool:
    url = urlparse(host)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_wandb_mode(mode: str = "auto") -> str:
    """online | offline | disabled, decided without ever prompting or hanging."""
    if os.environ.get("WANDB_MODE") == "":  # set but empty: wandb itself rejects it
        del os.environ["WANDB_MODE"]
    if mode != "auto":
        return mode
    env = os.environ.get("WANDB_MODE")
    if env in ("online", "offline", "disabled", "dryrun"):
        return "offline" if env == "dryrun" else env
    host = os.environ.get("WANDB_BASE_URL", DEFAULT_HOST)
    if not _has_credentials(host):
        log.info("W&B: no credentials found, logging offline (sync later with `wandb sync`)")
        return "offline"
    if not _reachable(host):
        log.info("W&B: %s unreachable, logging offline", host)
        return "offline"
    return "online"


def wandb_logger(
    project: str = "audiolstm",
    entity: str | None = None,
    name: str | None = None,
    group: str | None = None,
    tags: list[str] | None = None,
    notes: str | None = None,
    mode: str = "auto",
    save_dir: str | Path = ".",
    log_model: bool = False,
    id: str | None = None,  # noqa: A002 - W&B's name for the run id
    **kwargs: Any,
):
    """A Lightning WandbLogger whose mode is decided up front (see module docstring)."""
    from pytorch_lightning.loggers import WandbLogger

    resolved = resolve_wandb_mode(mode)
    os.environ.setdefault("WANDB_SILENT", "true")
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    return WandbLogger(
        project=project,
        entity=entity,
        name=name,
        group=group,
        tags=list(tags or []),
        notes=notes,
        mode=resolved,
        save_dir=str(save_dir),
        log_model=log_model,
        id=id,
        resume="allow" if id else None,
        settings={"init_timeout": 30, "silent": True} if resolved != "disabled" else None,
        **kwargs,
    )
