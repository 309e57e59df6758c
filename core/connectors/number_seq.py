"""PyFlink's ``NumberSequenceSource``: the integers ``start..end`` (inclusive), split by reader.

The range is cut into ``parallelism`` contiguous sub-ranges the way Flink's
``NumberSequenceIterator.split`` does it: every reader gets ``n // p`` numbers and the first
``n % p`` readers one more. Each reader emits its sub-range in ascending order, so the output is
globally ordered only at parallelism 1. Records are plain ``int`` lists built with
``list(range(...))``, which costs a few nanoseconds per number.

Example::

    >>> [NumberSequenceSource(1, 10).reader_range(i, 3) for i in range(3)]
    [range(1, 5), range(5, 8), range(8, 11)]
    >>> reader = NumberSequenceSource(1, 10).create_reader(2, 3)
    >>> reader.open()
    >>> reader.poll(2), reader.poll(5), reader.poll(5)
    ([8, 9], [10], None)
"""

from __future__ import annotations

from flowrun.core.connectors.base import Source, SourceReader

__all__ = ["NumberSequenceSource", "NumberSequenceReader", "split_range"]


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
        return NumberSequenceReader(self.reader_range(subtask_index, parallelism))

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
    """Emits one contiguous range; ``position()`` is the next number and the range end."""

    def __init__(self, numbers: range) -> None:
        self._next = numbers.start
        self._stop = numbers.stop

    def poll(self, max_records: int) -> list[int] | None:
        if self._next >= self._stop:
            return None
        hi = min(self._stop, self._next + max(1, max_records))
        out = list(range(self._next, hi))
        self._next = hi
        return out

    def position(self) -> dict[str, int]:
        return {"next": self._next, "stop": self._stop}
