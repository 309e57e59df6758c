"""The one exception type of the CLI's commands (kept import-light: ``flowrun run`` loads it).

A :class:`CliError`'s message is the single line the user sees as ``flowrun: error: ...``,
and ``flowrun`` exits 1.

>>> str(CliError("no running job with id 42"))
'no running job with id 42'
"""

from __future__ import annotations

__all__ = ["CliError"]


class CliError(Exception):
    """A command failed; the message is the one line the user sees."""
