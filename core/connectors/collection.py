"""The source behind ``env.from_collection``: a bounded list of elements, read by one subtask.

Flink runs collection sources with parallelism 1 (the elements travel inside the job, there is
nothing to split), and so do we: :meth:`CollectionSource.max_parallelism` is 1.

Example::

    >>> reader = CollectionSource(["a", "b", "c"]).create_reader(0, 1)
    >>> reader.open()
    >>> reader.poll(2), reader.position(), reader.poll(2), reader.poll(2)
    (['a', 'b'], {'index': 2}, ['c'], None)
"""

from __future__ import annotations

from typing import Any

from flowrun.core.connectors.base import Source, SourceReader

__all__ = ["CollectionSource", "CollectionReader"]


class CollectionSource(Source):
    """A bounded source of the given items, in order, at parallelism 1."""

    def __init__(self, items: list[Any]) -> None:
        self.items = list(items)

    def create_reader(self, subtask_index: int, parallelism: int) -> CollectionReader:
        if parallelism != 1 or subtask_index != 0:
            raise ValueError(
                f"a collection source runs with parallelism 1, got subtask "
                f"{subtask_index} of {parallelism}"
            )
        return CollectionReader(self.items)

    def is_bounded(self) -> bool:
        return True

    def max_parallelism(self) -> int | None:
        return 1

    def produces_arrow(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"CollectionSource(<{len(self.items)} items>)"


class CollectionReader(SourceReader):
    """Hands out slices of the list; ``position()`` is the index of the next item."""

    def __init__(self, items: list[Any], start_index: int = 0) -> None:
        self._items = items
        self._index = start_index

    def poll(self, max_records: int) -> list[Any] | None:
        if self._index >= len(self._items):
            return None
        end = self._index + max(1, max_records)
        out = self._items[self._index : end]
        self._index += len(out)
        return out

    def position(self) -> dict[str, int]:
        return {"index": self._index}
