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

Example::

    >>> src = DataGeneratorSource(lambda i: f"event-{i}", 5)
    >>> reader = src.create_reader(0, 2)
    >>> reader.open()
    >>> reader.poll(10), reader.poll(10)
    (['event-0', 'event-1', 'event-2'], None)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flowrun.core.connectors.base import Source, SourceReader
from flowrun.core.connectors.number_seq import split_range
from flowrun.core.connectors.rate_limiter import RateLimiter, RateLimiterStrategy

__all__ = ["DataGeneratorSource", "DataGeneratorReader", "RateLimiterStrategy"]


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
        limiter = self.rate_limiter_strategy.create_rate_limiter(parallelism)
        return DataGeneratorReader(self.generator_function, first, step, stop, limiter)

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
    """Emits ``fn(first), fn(first + step), ...`` below ``stop``, as fast as the limiter allows."""

    def __init__(
        self,
        generator_function: Callable[[int], Any],
        first: int,
        step: int,
        stop: int | None,
        rate_limiter: RateLimiter,
    ) -> None:
        self._fn = generator_function
        self._next = first
        self._step = step
        self._stop = stop
        self._limiter = rate_limiter

    def _remaining(self) -> int | None:
        if self._stop is None:
            return None
        return max(0, -(-(self._stop - self._next) // self._step))

    def poll(self, max_records: int) -> list[Any] | None:
        wanted = max(1, max_records)
        remaining = self._remaining()
        if remaining is not None:
            if remaining == 0:
                return None
            wanted = min(wanted, remaining)
        granted = self._limiter.acquire(wanted)
        if granted == 0:
            return []
        end = self._next + granted * self._step
        out = list(map(self._fn, range(self._next, end, self._step)))
        self._next = end
        return out

    def next_wakeup(self) -> float | None:
        if self._remaining() == 0:
            return None
        return self._limiter.next_available()

    def position(self) -> dict[str, int]:
        return {"next_index": self._next}
