"""Flink's ``DataGeneratorSource``: records made by a function of their index, optionally paced.

``generator_function(index)`` is called for every index ``0 .. count - 1`` (``count=None`` is
unbounded). How indices are shared between ``p`` readers:

* bounded ``count``: contiguous ranges, as Flink does it (the same split as
  :class:`NumberSequenceSource` over ``0 .. count - 1``), so reader ``i`` emits its range in
  order;
* ``count=None``: reader ``i`` emits ``i, i + p, i + 2p, ...``, so that the indices in flight
  stay small and dense (Flink would hand reader 1 of 2 the indices from 2**62 on).

With a :class:`RateLimiterStrategy` each reader emits at ``rate / p`` per second: ``poll`` returns
only the records that are due and ``next_wakeup`` says when the next one is, so the mailbox loop
never sleeps inside the source.

Replay: a reader's remaining work is a list of :class:`GeneratorSplit`
``(next_index, stop, step, rate_share)``: the indices ``next_index, next_index + step, ...``
below ``stop`` (``None``: endless), plus the share of the source's rate that goes with them.
A reader restored with several splits (from a job of higher parallelism) emits the smallest
pending index of all its splits first, so at parallelism 1 the indices come out in order, and
its rate limit is the source's rate times the sum of its splits' shares, so rescaling keeps the
source's total rate. A reader of an unbounded source restored without splits stays idle.

Example::

    >>> src = DataGeneratorSource(lambda i: f"event-{i}", 5)
    >>> reader = src.create_reader(0, 2)
    >>> reader.open()
    >>> reader.poll(2), reader.snapshot_state(1)
    (['event-0', 'event-1'], [GeneratorSplit(next_index=2, stop=3, step=1, rate_share=0.5)])
    >>> reader.poll(10), reader.poll(10), reader.snapshot_state(2)
    (['event-2'], None, [])
    >>> endless = DataGeneratorSource(lambda i: i, None)
    >>> splits = [GeneratorSplit(4, None, 2, 0.5), GeneratorSplit(1, None, 2, 0.5)]
    >>> endless.restore_reader(0, 1, splits).poll(6)  # merged: smallest index first
    [1, 3, 4, 5, 6, 7]
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import chain
from typing import Any, NamedTuple

from flowrun.core.connectors.base import Source, SourceReader, as_split
from flowrun.core.connectors.number_seq import split_range
from flowrun.core.connectors.rate_limiter import RateLimiter, RateLimiterStrategy

__all__ = ["DataGeneratorReader", "DataGeneratorSource", "GeneratorSplit", "RateLimiterStrategy"]


class GeneratorSplit(NamedTuple):
    """Indices ``next_index, next_index + step, ...`` below ``stop`` (``None``: no end).

    ``rate_share`` is the fraction of the source's rate that belongs to this work: ``1 / p``
    for the split of a reader created at parallelism ``p``.
    """

    next_index: int
    stop: int | None
    step: int
    rate_share: float


class DataGeneratorSource(Source):
    """Records ``generator_function(i)`` for ``i`` in ``0 .. count - 1`` (or forever)."""

    def __init__(
        self,
        generator_function: Callable[[int], Any],
        count: int | None,
        rate_limiter_strategy: RateLimiterStrategy | None = None,
        type_info: Any = None,
    ) -> None:
        if count is not None and count < 0:
            raise ValueError(f"count must be >= 0 or None (unbounded), got {count}")
        self.generator_function = generator_function
        self.count = count
        self.rate_limiter_strategy = rate_limiter_strategy or RateLimiterStrategy.no_op()
        self.type_info = type_info

    def reader_indices(self, subtask_index: int, parallelism: int) -> range | tuple[int, int]:
        """Reader's indices: a ``range`` when bounded, else ``(first, step)`` of an endless run."""
        if self.count is None:
            if not 0 <= subtask_index < parallelism:
                raise ValueError(f"subtask {subtask_index} outside 0..{parallelism - 1}")
            return (subtask_index, parallelism)
        return split_range(0, self.count, parallelism, subtask_index)

    def create_reader(self, subtask_index: int, parallelism: int) -> DataGeneratorReader:
        indices = self.reader_indices(subtask_index, parallelism)
        if isinstance(indices, range):
            first, step, stop = indices.start, 1, indices.stop
        else:
            (first, step), stop = indices, None
        split = GeneratorSplit(first, stop, step, 1.0 / parallelism)
        limiter = self.rate_limiter_strategy.create_rate_limiter(parallelism)
        return DataGeneratorReader(self.generator_function, [split], limiter, stop is not None)

    def restore_reader(
        self, subtask_index: int, parallelism: int, splits: list[Any]
    ) -> DataGeneratorReader:
        """Emit exactly the indices ``splits`` still hold; rate: the sum of their shares."""
        if not 0 <= subtask_index < parallelism:
            raise ValueError(f"subtask {subtask_index} outside 0..{parallelism - 1}")
        restored = [self._checked(split) for split in splits]
        share = sum(split.rate_share for split in restored)
        limiter = self.rate_limiter_strategy.create_rate_limiter_for_share(min(share, 1.0))
        bounded = self.count is not None
        return DataGeneratorReader(self.generator_function, restored, limiter, bounded)

    def _checked(self, split: Any) -> GeneratorSplit:
        s = as_split(GeneratorSplit, split, "data generator source")
        problem = None
        if not (isinstance(s.next_index, int) and isinstance(s.step, int) and s.step >= 1):
            problem = "next_index and step must be ints, step >= 1"
        elif s.stop is not None and not isinstance(s.stop, int):
            problem = "stop must be an int or None"
        elif not (isinstance(s.rate_share, (int, float)) and 0 < s.rate_share <= 1):
            problem = "rate_share must be within (0, 1]"
        elif (s.stop is None) != (self.count is None):
            kind = "an unbounded" if s.stop is None else "a bounded"
            problem = f"it was recorded by {kind} generator, but this one has count={self.count}"
        if problem:
            raise ValueError(f"data generator source cannot restore split {s}: {problem}")
        return s

    def is_bounded(self) -> bool:
        return self.count is not None

    def max_parallelism(self) -> int | None:
        return None

    def produces_arrow(self) -> bool:
        return False

    def get_produced_type(self) -> Any:
        """The ``type_info`` given at construction (``None``: pickled Python objects)."""
        return self.type_info

    def __repr__(self) -> str:
        return f"DataGeneratorSource(count={self.count}, {self.rate_limiter_strategy!r})"


class DataGeneratorReader(SourceReader):
    """Emits ``fn(i)`` for the indices of its splits, smallest first, as the limiter allows."""

    def __init__(
        self,
        generator_function: Callable[[int], Any],
        splits: list[GeneratorSplit],
        rate_limiter: RateLimiter,
        bounded: bool = True,
    ) -> None:
        self._fn = generator_function
        # Mutable [next, stop, step, share] per split that still has work.
        self._splits = [list(s) for s in splits if _count(s.next_index, s.stop, s.step) != 0]
        self._limiter = rate_limiter
        self._bounded = bounded

    def _remaining(self) -> int | None:
        """Indices left in all splits; ``None`` when endless."""
        total = 0
        for first, stop, step, _ in self._splits:
            if stop is None:
                return None
            total += _count(first, stop, step)
        return total

    def poll(self, max_records: int) -> list[Any] | None:
        if not self._splits:
            return None if self._bounded else []  # an unbounded reader without work idles
        wanted = max(1, max_records)
        remaining = self._remaining()
        if remaining is not None:
            wanted = min(wanted, remaining)
        granted = self._limiter.acquire(wanted)
        if granted == 0:
            return []
        out = list(map(self._fn, self._take(granted)))
        if any(_count(s[0], s[1], s[2]) == 0 for s in self._splits):
            self._splits = [s for s in self._splits if _count(s[0], s[1], s[2]) != 0]
        return out

    def _take(self, wanted: int) -> range | list[int]:
        """The ``wanted`` smallest pending indices over all splits, advancing the splits."""
        splits = self._splits
        if len(splits) == 1:  # the common case: no search, no merge
            split = splits[0]
            first, stop, step = split[0], split[1], split[2]
            end = first + wanted * step
            if stop is not None:
                end = min(end, stop)
            split[0] = first + _count(first, end, step) * step
            return range(first, end, step)
        # Smallest exclusive bound below which the splits hold ``wanted`` indices.
        low = min(s[0] for s in splits)
        high = max(s[0] + wanted * s[2] for s in splits)
        while low < high:
            middle = (low + high) // 2
            if sum(_count(s[0], _min_stop(middle, s[1]), s[2]) for s in splits) >= wanted:
                high = middle
            else:
                low = middle + 1
        parts = []
        left = wanted
        for split in splits:
            first, stop, step = split[0], split[1], split[2]
            taken = min(left, _count(first, _min_stop(low, stop), step))
            if taken:
                parts.append(range(first, first + taken * step, step))
                split[0] = first + taken * step
                left -= taken
        if len(parts) == 1:
            return parts[0]
        return sorted(chain.from_iterable(parts))

    def next_wakeup(self) -> float | None:
        if not self._splits:
            return None
        return self._limiter.next_available()

    def snapshot_state(self, checkpoint_id: int) -> list[GeneratorSplit]:
        return [GeneratorSplit(*split) for split in self._splits]


def _count(first: int, stop: int | None, step: int) -> int | None:
    """How many of ``first, first + step, ...`` lie below ``stop`` (``None``: endless)."""
    if stop is None:
        return None
    return max(0, -((first - stop) // step))


def _min_stop(bound: int, stop: int | None) -> int:
    return bound if stop is None else min(bound, stop)
