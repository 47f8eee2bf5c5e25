"""User-facing errors, and the one home of the value checks every layer shares.

Anything the *user* can fix (a bad file, a bad config value) raises
`UserError` with one line that names the file or the config field. Entry
points print that line and exit non-zero without a traceback; programming
errors keep their tracebacks.

The checks below are used for config fields (`UserError`, the default) and for
arguments code passes (`error=ValueError`: a bug, with its traceback), so each fact
("a positive integer", "a temperature", "a file one can read") is written once.
"""

from __future__ import annotations

import math
import numbers
import os
from pathlib import Path
from typing import Any


class UserError(Exception):
    """A problem with the user's input: printed as one line, no traceback."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        # One line, always: callers may interpolate file contents or reprs.
        super().__init__(" ".join(str(message).split()))


def one_of(value: Any, allowed: tuple[str, ...], key: str) -> None:
    if value not in allowed:
        raise UserError(f"{key}={value!r} is not one of {', '.join(allowed)}")


def positive_int(value: Any, key: str, allow_none: bool = False, *, minimum: int = 1,
                 error: type[Exception] = UserError) -> Any:
    """`value` as an int >= `minimum` (numpy integers too; bools and floats refused), or
    None when allowed; otherwise one line naming `key`."""
    if value is None and allow_none:
        return None
    if (isinstance(value, bool) or not isinstance(value, numbers.Integral)
            or value < minimum):
        bound = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise error(f"{key}={value!r} must be {bound}")
    return int(value)


def check_temperature(value: Any, key: str = "temperature",
                error: type[Exception] = ValueError) -> float:
    """A sampling temperature: a finite number >= 0 (0: the mean, or the argmax)."""
    try:
        t = float(value)
    except (TypeError, ValueError):
        t = math.nan
    if isinstance(value, bool) or not math.isfinite(t) or t < 0:
        raise error(f"{key}={value!r} must be a finite number >= 0")
    return t


def existing_file(path: str | Path, label: str, expected: str) -> os.stat_result:
    """Stat a file the user named (`label`: the path, or `key=path`), each failure one
    line: missing, unreadable, a directory, or empty (`expected` says what it should be)."""
    p = Path(path).expanduser()
    try:
        st = p.stat()
    except FileNotFoundError:
        raise UserError(f"{label}: no such file") from None
    except OSError as e:
        raise UserError(f"{label}: cannot access ({e.strerror or e})") from None
    if p.is_dir():
        raise UserError(f"{label}: is a directory, expected {expected}")
    if st.st_size == 0:
        raise UserError(f"{label}: empty file (0 bytes), expected {expected}")
    return st
