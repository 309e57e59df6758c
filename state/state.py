"""The state interfaces of ``pyflink.datastream.state``; backends implement them.

User functions only ever see these types: ``ctx.get_state(descriptor)`` returns a
:class:`ValueState`, ``get_list_state`` a :class:`ListState`, and so on. Keeping the
interfaces separate from the backends lets user code (and ``isinstance`` checks written for
PyFlink) work unchanged whichever backend holds the state: in memory or in LMDB.

Keyed state is scoped implicitly: every call reads or writes the value of the *current key*
(the key of the record being processed, or of the timer firing), and in windows also of the
current window. The hierarchy is PyFlink's::

    State -> AppendingState(get, add) -> MergingState -> ListState / ReducingState /
                                                          AggregatingState
    State -> ValueState;  State -> MapState;  State -> ReadOnlyBroadcastState -> BroadcastState

Example (inside a ``KeyedProcessFunction``)::

    def open(self, runtime_context):
        self.count = runtime_context.get_state(ValueStateDescriptor("count", Types.LONG()))

    def process_element(self, value, ctx):
        n = (self.count.value() or 0) + 1
        self.count.update(n)
        yield ctx.get_current_key(), n

Values returned by state may be shared with the backend's cache (the in-memory backend
returns the stored object itself): treat them as read-only and ``update`` a new value.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

__all__ = [
    "AggregatingState",
    "AppendingState",
    "BroadcastState",
    "ListState",
    "MapState",
    "MergingState",
    "ReadOnlyBroadcastState",
    "ReducingState",
    "State",
    "ValueState",
]

T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")
IN = TypeVar("IN")
OUT = TypeVar("OUT")


class State(ABC):
    """Base of all state: something stored per key that can be cleared."""

    @abstractmethod
    def clear(self) -> None:
        """Remove the value of the current key (the state then reads as empty)."""


class ValueState(State, Generic[T]):
    """One value per key.

    ``value()`` is None until the first ``update`` (and after ``clear``).
    """

    @abstractmethod
    def value(self) -> T | None:
        """The value of the current key, or None when there is none (or it expired)."""

    @abstractmethod
    def update(self, value: T | None) -> None:
        """Set the value of the current key; ``update(None)`` clears it, as in Flink."""


class AppendingState(State, Generic[IN, OUT]):
    """State that values are added to, and that can be read as a whole."""

    @abstractmethod
    def get(self) -> OUT:
        """The current contents for the current key (empty/None when nothing was added)."""

    @abstractmethod
    def add(self, value: IN) -> None:
        """Add ``value`` for the current key (append, reduce or aggregate it)."""


class MergingState(AppendingState[IN, OUT]):
    """Appending state whose contents for two namespaces (windows) can be merged.

    Merging is done by the runtime when session windows merge; there is no user method.
    """


class ListState(MergingState[T, Iterable[T]]):
    """A list of elements per key; with TTL each element expires on its own.

    ``get()`` returns the elements in insertion order (an empty iterable when there are
    none). None is not a valid element (``add(None)`` raises), as in Flink.
    """

    @abstractmethod
    def update(self, values: list[T]) -> None:
        """Replace the elements of the current key with ``values`` (empty clears)."""

    @abstractmethod
    def add_all(self, values: list[T]) -> None:
        """Append all of ``values`` for the current key."""

    def __iter__(self) -> Iterator[T]:
        return iter(self.get())


class ReducingState(MergingState[T, T]):
    """A value per key that every ``add`` folds in with the descriptor's reduce function.

    ``get()`` is None until the first ``add``.
    """


class AggregatingState(MergingState[IN, OUT]):
    """An accumulator per key fed by the descriptor's ``AggregateFunction``.

    ``add(value)`` calls ``add(value, accumulator)`` (starting from ``create_accumulator()``);
    ``get()`` returns ``get_result(accumulator)``, or None when nothing was added. The stored
    value is the accumulator, of the descriptor's ``state_type_info``.
    """


class MapState(State, Generic[K, V]):
    """A dict per key; with TTL each entry expires on its own.

    Map keys must be usable as storage keys: str, int, float, bool, bytes, None, tuples and
    Rows of these, or values of the declared key type. Values may be None.
    """

    @abstractmethod
    def get(self, key: K) -> V | None:
        """The value under ``key``, or None when there is no such entry."""

    @abstractmethod
    def put(self, key: K, value: V) -> None:
        """Set the value under ``key``."""

    @abstractmethod
    def put_all(self, dict_value: dict[K, V]) -> None:
        """Set every entry of ``dict_value``."""

    @abstractmethod
    def remove(self, key: K) -> None:
        """Delete the entry under ``key`` (no error when there is none)."""

    @abstractmethod
    def contains(self, key: K) -> bool:
        """Whether there is an entry under ``key``."""

    @abstractmethod
    def items(self) -> Iterable[tuple[K, V]]:
        """All ``(key, value)`` entries of the current key's map."""

    @abstractmethod
    def keys(self) -> Iterable[K]:
        """All keys of the current key's map."""

    @abstractmethod
    def values(self) -> Iterable[V]:
        """All values of the current key's map."""

    @abstractmethod
    def is_empty(self) -> bool:
        """Whether the current key's map has no entries."""

    def entries(self) -> Iterable[tuple[K, V]]:
        """Java's name for :meth:`items`."""
        return self.items()

    def __getitem__(self, key: K) -> V | None:
        return self.get(key)

    def __setitem__(self, key: K, value: V) -> None:
        self.put(key, value)

    def __delitem__(self, key: K) -> None:
        self.remove(key)

    def __contains__(self, key: K) -> bool:
        return self.contains(key)

    def __iter__(self) -> Iterator[K]:
        return iter(self.keys())


class ReadOnlyBroadcastState(State, Generic[K, V]):
    """The broadcast state as the keyed side of a broadcast connection sees it: read-only.

    Returned values are not copied; do not modify them.
    """

    @abstractmethod
    def get(self, key: K) -> V | None:
        """The value under ``key``, or None."""

    @abstractmethod
    def contains(self, key: K) -> bool:
        """Whether there is an entry under ``key``."""

    @abstractmethod
    def items(self) -> Iterable[tuple[K, V]]:
        """All ``(key, value)`` entries."""

    @abstractmethod
    def keys(self) -> Iterable[K]:
        """All keys."""

    @abstractmethod
    def values(self) -> Iterable[V]:
        """All values."""

    @abstractmethod
    def is_empty(self) -> bool:
        """Whether there are no entries."""

    def __getitem__(self, key: K) -> V | None:
        return self.get(key)

    def __contains__(self, key: K) -> bool:
        return self.contains(key)

    def __iter__(self) -> Iterator[K]:
        return iter(self.keys())


class BroadcastState(ReadOnlyBroadcastState[K, V]):
    """Operator state of a broadcast stream: the same map on every parallel instance.

    Only the broadcast side may write it, and every instance must make the same changes
    (it sees the same elements), because on restore or rescaling instances take over each
    other's copies.
    """

    @abstractmethod
    def put(self, key: K, value: V) -> None:
        """Set the value under ``key``."""

    @abstractmethod
    def put_all(self, dict_value: dict[K, V]) -> None:
        """Set every entry of ``dict_value``."""

    @abstractmethod
    def remove(self, key: K) -> None:
        """Delete the entry under ``key``."""

    def __setitem__(self, key: K, value: V) -> None:
        self.put(key, value)

    def __delitem__(self, key: K) -> None:
        self.remove(key)
