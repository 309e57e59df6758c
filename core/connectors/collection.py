"""The source behind ``env.from_collection``: a bounded list of elements, read by one subtask.

Flink runs collection sources with parallelism 1 (the elements travel inside the job, there is
nothing to split), and so do we: :meth:`CollectionSource.max_parallelism` is 1.

Replay: the reader's one split is :class:`CollectionSplit` ``(index)``, the index of the next
element to emit; the elements themselves are not in the checkpoint, they come with the job.

Example::

    >>> source = CollectionSource(["a", "b", "c"])
    >>> reader = source.create_reader(0, 1)
    >>> reader.open()
    >>> reader.poll(2), reader.snapshot_state(1)
    (['a', 'b'], [CollectionSplit(index=2)])
    >>> restored = source.restore_reader(0, 1, [CollectionSplit(2)])
    >>> restored.poll(2), restored.poll(2), restored.snapshot_state(2)
    (['c'], None, [])
"""

from __future__ import annotations

from typing import Any, NamedTuple

from flowrun.core.connectors.base import Source, SourceReader, as_split

__all__ = ["CollectionReader", "CollectionSource", "CollectionSplit"]


class CollectionSplit(NamedTuple):
    """The elements of the collection from ``index`` on are still to be emitted."""

    index: int


def _check_single_subtask(subtask_index: int, parallelism: int) -> None:
    if parallelism != 1 or subtask_index != 0:
        raise ValueError(
            f"a collection source runs with parallelism 1, got subtask "
            f"{subtask_index} of {parallelism}"
        )


class CollectionSource(Source):
    """A bounded source of the given items, in order, at parallelism 1."""

    def __init__(self, items: list[Any]) -> None:
        self.items = list(items)

    def create_reader(self, subtask_index: int, parallelism: int) -> CollectionReader:
        _check_single_subtask(subtask_index, parallelism)
        return CollectionReader(self.items)

    def restore_reader(
        self, subtask_index: int, parallelism: int, splits: list[Any]
    ) -> CollectionReader:
        """Resume at the recorded index; no split means the collection was fully emitted."""
        _check_single_subtask(subtask_index, parallelism)
        restored = [as_split(CollectionSplit, s, "collection source") for s in splits]
        if len(restored) > 1:
            raise ValueError(
                f"collection source cannot restore {len(restored)} splits: it has one reader, "
                f"which records one split"
            )
        for split in restored:
            if not isinstance(split.index, int) or split.index < 0:
                raise ValueError(f"collection source cannot restore split {split}: bad index")
        start = restored[0].index if restored else len(self.items)
        return CollectionReader(self.items, start)

    def is_bounded(self) -> bool:
        return True

    def max_parallelism(self) -> int | None:
        return 1

    def produces_arrow(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"CollectionSource(<{len(self.items)} items>)"


class CollectionReader(SourceReader):
    """Hands out slices of the list, from ``start_index`` on."""

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

    def snapshot_state(self, checkpoint_id: int) -> list[CollectionSplit]:
        if self._index >= len(self._items):
            return []
        return [CollectionSplit(self._index)]
