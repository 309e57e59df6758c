"""The one exception type of the CLI's commands (kept import-light: ``flowrun run`` loads it).

A :class:`CliError`'s message is the single line the user sees as ``flowrun: error: ...``;
``flowrun`` exits with its ``code``: 1 when the command failed (unknown job, no such
savepoint), 2 when the command line itself is wrong.

>>> error = CliError("no running job with id 42")
>>> str(error), error.code
('no running job with id 42', 1)
"""

from __future__ import annotations

__all__ = ["CliError"]


class CliError(Exception):
    """A command failed; the message is the one line the user sees, ``code`` the exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code
