"""The one way this project writes a file: nobody ever reads half of it.

Every writer (the data cache, WAVs, summary.json, reports, figures) goes through
`atomic_write`: a unique temp sibling (pid + random token, so concurrent writers such as
DDP ranks or two reports never share one), flush + fsync, rename over the target, then
fsync of the folder so the rename survives a crash. A failed write leaves no temp file.
"""

from __future__ import annotations

import json
import math
import os
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any


def temp_sibling(target: Path) -> Path:
    """A unique hidden temp name next to `target` (same filesystem, so rename is atomic)."""
    return target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(6)}.tmp")


def fsync_dir(directory: Path) -> None:
    """Make a rename durable; best effort where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> Path:
    """Write via `write(binary file)` to a temp sibling, fsync, rename over `path`."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(target)
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(target.parent)
    return target


def write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


def json_safe(x: Any) -> Any:
    """Plain JSON values: NaN/inf -> null, tuples -> lists, 0-d arrays/tensors -> numbers."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, Mapping):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    if hasattr(x, "item") and getattr(x, "ndim", 1) == 0:
        return json_safe(x.item())
    if hasattr(x, "tolist"):
        return json_safe(x.tolist())
    return x


def write_json(path: str | Path, data: Any) -> Path:
    """Atomic, sorted, indented JSON; non-finite floats become null."""
    text = json.dumps(json_safe(data), indent=2, sort_keys=True) + "\n"
    return write_text(path, text)
