"""PyFlink's ``NumberSequenceSource``: the integers ``start..end`` (inclusive), split by reader.

The range is cut into ``parallelism`` contiguous sub-ranges the way Flink's
``NumberSequenceIterator.split`` does it: every reader gets ``n // p`` numbers and the first
``n % p`` readers one more. Each reader emits its sub-range in ascending order, so the output is
globally ordered only at parallelism 1. Records are plain ``int`` lists built with
``list(range(...))``, which costs a few nanoseconds per number.

Replay: a reader's remaining work is one :class:`NumberSequenceSplit` ``(next, stop)``, the
numbers ``next .. stop - 1``. A restored reader emits its splits one after another, each in
ascending order.

Example::

    >>> [NumberSequenceSource(1, 10).reader_range(i, 3) for i in range(3)]
    [range(1, 5), range(5, 8), range(8, 11)]
    >>> reader = NumberSequenceSource(1, 10).create_reader(2, 3)
    >>> reader.open()
    >>> reader.poll(2), reader.snapshot_state(1)
    ([8, 9], [NumberSequenceSplit(next=10, stop=11)])
    >>> reader.poll(5), reader.poll(5), reader.snapshot_state(2)
    ([10], None, [])
"""

from __future__ import annotations

from typing import Any, NamedTuple

from flowrun.core.connectors.base import Source, SourceReader, as_split

__all__ = ["NumberSequenceReader", "NumberSequenceSource", "NumberSequenceSplit", "split_range"]


class NumberSequenceSplit(NamedTuple):
    """The numbers ``next, next + 1, ..., stop - 1`` are still to be emitted."""

    next: int
    stop: int


def split_range(start: int, stop: int, parallelism: int, index: int) -> range:
    """Sub-range ``index`` of ``parallelism`` contiguous parts of ``range(start, stop)``.

    The first ``n % parallelism`` parts are one longer than the rest (Flink's rule).
    """
    if not 0 <= index < parallelism:
        raise ValueError(f"index {index} outside 0..{parallelism - 1}")
    count = max(0, stop - start)
    base, extra = divmod(count, parallelism)
    lo = start + index * base + min(index, extra)
    hi = lo + base + (1 if index < extra else 0)
    return range(lo, hi)


class NumberSequenceSource(Source):
    """A bounded source of the ints ``start, start + 1, ..., end`` (``end`` included)."""

    def __init__(self, start: int, end: int) -> None:
        if start > end:
            raise ValueError(f"'start' must be <= 'end', got start={start}, end={end}")
        self.start = int(start)
        self.end = int(end)

    def reader_range(self, subtask_index: int, parallelism: int) -> range:
        """The numbers reader ``subtask_index`` of ``parallelism`` emits."""
        return split_range(self.start, self.end + 1, parallelism, subtask_index)

    def create_reader(self, subtask_index: int, parallelism: int) -> NumberSequenceReader:
        numbers = self.reader_range(subtask_index, parallelism)
        return NumberSequenceReader([NumberSequenceSplit(numbers.start, numbers.stop)])

    def restore_reader(
        self, subtask_index: int, parallelism: int, splits: list[Any]
    ) -> NumberSequenceReader:
        """Emit exactly the remaining numbers of ``splits``, one split after another."""
        if not 0 <= subtask_index < parallelism:
            raise ValueError(f"subtask {subtask_index} outside 0..{parallelism - 1}")
        restored = []
        for split in splits:
            split = as_split(NumberSequenceSplit, split, "number sequence source")
            if not (isinstance(split.next, int) and isinstance(split.stop, int)):
                raise ValueError(f"number sequence source cannot restore {split}: not ints")
            restored.append(split)
        return NumberSequenceReader(restored)

    def is_bounded(self) -> bool:
        return True

    def max_parallelism(self) -> int | None:
        return None

    def produces_arrow(self) -> bool:
        return False

    def get_from(self) -> int:
        """First number of the sequence (Java's ``getFrom``)."""
        return self.start

    def get_to(self) -> int:
        """Last number of the sequence, inclusive (Java's ``getTo``)."""
        return self.end

    def __repr__(self) -> str:
        return f"NumberSequenceSource({self.start}, {self.end})"


class NumberSequenceReader(SourceReader):
    """Emits its splits' ranges one after another, each in ascending order."""

    def __init__(self, splits: list[NumberSequenceSplit] | range) -> None:
        if isinstance(splits, range):  # one contiguous range, as before splits existed
            splits = [NumberSequenceSplit(splits.start, splits.stop)]
        self._splits = [s for s in splits if s.next < s.stop]
        self._split_index = 0
        self._next, self._stop = self._splits[0] if self._splits else (0, 0)

    def poll(self, max_records: int) -> list[int] | None:
        if self._next >= self._stop:
            self._split_index += 1
            if self._split_index >= len(self._splits):
                return None
            self._next, self._stop = self._splits[self._split_index]
        hi = min(self._stop, self._next + max(1, max_records))
        out = list(range(self._next, hi))
        self._next = hi
        return out

    def snapshot_state(self, checkpoint_id: int) -> list[NumberSequenceSplit]:
        rest = self._splits[self._split_index + 1 :]
        if self._next < self._stop:
            return [NumberSequenceSplit(self._next, self._stop), *rest]
        return list(rest)
