"""Short, safe reprs for error messages that name a user's record, key or value.

Example::

    >>> short_repr("x" * 500)[-5:]
    'xx...'
"""

from __future__ import annotations

from typing import Any

__all__ = ["short_repr", "REPR_LIMIT"]

REPR_LIMIT = 200


def short_repr(value: Any, limit: int = REPR_LIMIT) -> str:
    """``repr(value)`` cut to ``limit`` characters; a failing ``__repr__`` is described."""
    try:
        text = repr(value)
    except Exception as exc:  # a broken __repr__ must not hide the real error
        text = f"<unrepresentable {type(value).__qualname__}: {exc!r}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."
