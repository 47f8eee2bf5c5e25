"""User-facing errors.

Anything the *user* can fix (a bad file, a bad config value) raises
`UserError` with one line that names the file or the config field. Entry
points print that line and exit non-zero without a traceback; programming
errors keep their tracebacks.
"""

from __future__ import annotations

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


def positive_int(value: Any, key: str, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise UserError(f"{key}={value!r} must be a positive integer")
