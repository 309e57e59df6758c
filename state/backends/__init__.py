"""Keyed state backends: where the keyed state of an operator subtask lives.

* :class:`HashMapStateBackend`: Python objects in memory, per key group (fastest; state must
  fit in memory).
* :class:`EmbeddedLmdbStateBackend`: an embedded LMDB environment per operator subtask, on
  disk (state may be larger than memory; the default of ``flowrun run``).

Both snapshot to the same Arrow format (:mod:`flowrun.state.snapshot`), so a snapshot of one
restores into the other, at any parallelism.

Example::

    >>> from flowrun.core.typeinfo import Types
    >>> from flowrun.state import ValueStateDescriptor
    >>> from flowrun.state.key_groups import KeyGroupRange
    >>> backend = HashMapStateBackend().create_keyed_backend("op", KeyGroupRange(0, 127), 128)
    >>> count = backend.get_state(ValueStateDescriptor("count", Types.LONG()))
    >>> backend.set_current_key("a")
    >>> count.update((count.value() or 0) + 1)
    >>> count.value()
    1
"""

from __future__ import annotations

from typing import Any

from .base import (
    KeyedStateBackend,
    SnapshotHandle,
    StateBackend,
    StateBackendError,
    StateMigrationError,
)
from .hashmap import HashMapKeyedStateBackend, HashMapStateBackend
from .lmdb import EmbeddedLmdbStateBackend, LmdbKeyedStateBackend

__all__ = [
    "EmbeddedLmdbStateBackend",
    "HashMapKeyedStateBackend",
    "HashMapStateBackend",
    "KeyedStateBackend",
    "LmdbKeyedStateBackend",
    "SnapshotHandle",
    "StateBackend",
    "StateBackendError",
    "StateMigrationError",
    "state_backend_from_name",
]


def state_backend_from_name(name: str, **options: Any) -> StateBackend:
    """The backend a ``state.backend`` config value names: ``lmdb`` or ``hashmap``."""
    normalized = name.strip().lower()
    if normalized in ("lmdb", "embeddedlmdb", "embedded_lmdb"):
        return EmbeddedLmdbStateBackend(**options)
    if normalized in ("hashmap", "heap", "memory"):
        return HashMapStateBackend(**options)
    raise ValueError(f"unknown state backend {name!r}: expected lmdb or hashmap")
