"""User-facing errors.

Anything the *user* can fix (a bad file, a bad config value) raises
`UserError` with one line that names the file or the config field. Entry
points print that line and exit non-zero without a traceback; programming
errors keep their tracebacks.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input: printed as one line, no traceback."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        # One line, always: callers may interpolate file contents or reprs.
        super().__init__(" ".join(str(message).split()))
