"""Rate limits for generator sources (Flink's ``RateLimiterStrategy``), without ever sleeping.

A reader cannot sleep in the mailbox loop, so a :class:`RateLimiter` answers two questions
instead: how many records may go out *now* (:meth:`RateLimiter.acquire`), and when the next one
is due (:meth:`RateLimiter.next_available`, the reader's ``next_wakeup``). Permit ``k`` is due
at ``t0 + k / rate``; when a reader falls behind (a busy or back-pressured loop), at most one
second's worth of records is released at once and the rest of the debt is forgiven, as Guava's
bursty limiter that Flink uses does.

The strategy's rate is for the whole source: each of ``p`` readers gets ``rate / p``.

Example (with a hand-driven clock)::

    >>> now = [0.0]
    >>> limiter = RateLimiterStrategy.per_second(20, clock=lambda: now[0]).create_rate_limiter(2)
    >>> limiter.acquire(100)        # 10/s per reader: the first record is due at once
    1
    >>> limiter.next_available()
    0.1
    >>> now[0] = 0.35
    >>> limiter.acquire(100)        # records 1, 2 and 3 were due at 0.1, 0.2, 0.3
    3
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

__all__ = ["BurstyRateLimiter", "NoOpRateLimiter", "RateLimiter", "RateLimiterStrategy"]

_EPSILON = 1e-9  # tolerance for float error in ``elapsed * rate`` at exact due times


class RateLimiter:
    """Decides how many records may go out now; never blocks."""

    def acquire(self, max_permits: int) -> int:
        """Take up to ``max_permits`` permits that are due now; return how many were taken."""
        raise NotImplementedError

    def next_available(self) -> float | None:
        """Clock time at which the next permit is due, or ``None`` when there is no limit."""
        raise NotImplementedError


class BurstyRateLimiter(RateLimiter):
    """Grants permits at a fixed rate; after a stall releases at most one burst at once."""

    def __init__(
        self,
        permits_per_second: float,
        clock: Callable[[], float] = time.monotonic,
        max_burst_seconds: float = 1.0,
    ) -> None:
        if not permits_per_second > 0:
            raise ValueError(f"rate must be positive, got {permits_per_second}")
        self.rate = float(permits_per_second)
        self._clock = clock
        self._max_burst = max(1, math.floor(self.rate * max_burst_seconds))
        self._t0: float | None = None  # anchor: permit k is due at t0 + k / rate
        self._granted = 0  # permits granted since t0

    def acquire(self, max_permits: int) -> int:
        now = self._clock()
        if self._t0 is None:
            self._t0 = now
        due = math.floor((now - self._t0) * self.rate + _EPSILON) + 1
        available = due - self._granted
        if available > self._max_burst:  # fell behind: release one burst, forgive the rest
            self._t0 = now - (self._max_burst - 1) / self.rate
            self._granted = 0
            available = self._max_burst
        granted = max(0, min(max_permits, available))
        self._granted += granted
        return granted

    def next_available(self) -> float | None:
        if self._t0 is None:
            return None
        return self._t0 + self._granted / self.rate


class NoOpRateLimiter(RateLimiter):
    """Grants everything at once."""

    def acquire(self, max_permits: int) -> int:
        return max_permits

    def next_available(self) -> float | None:
        return None


class RateLimiterStrategy:
    """Makes one :class:`RateLimiter` per reader, sharing a source-wide rate between readers."""

    def __init__(
        self,
        records_per_second: float | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if records_per_second is not None and not records_per_second > 0:
            raise ValueError(f"records_per_second must be positive, got {records_per_second}")
        self.records_per_second = records_per_second
        self.clock = clock

    def create_rate_limiter(self, parallelism: int) -> RateLimiter:
        """The limiter of one of ``parallelism`` readers (rate / parallelism each)."""
        if self.records_per_second is None:
            return NoOpRateLimiter()
        return BurstyRateLimiter(self.records_per_second / parallelism, clock=self.clock)

    def create_rate_limiter_for_share(self, share: float) -> RateLimiter:
        """The limiter of a reader that carries ``share`` (0..1) of the source's work.

        A reader restored at another parallelism may hold the work of several old readers (or
        none), so its fair rate is the source's rate times the share of the work it holds,
        not ``rate / parallelism``; this keeps the source's total rate what the user asked.

        >>> strategy = RateLimiterStrategy.per_second(30)
        >>> strategy.create_rate_limiter_for_share(2 / 3).rate
        20.0
        """
        if not 0.0 <= share <= 1.0 + 1e-9:
            raise ValueError(f"a reader's share of the rate must be within 0..1, got {share}")
        if self.records_per_second is None or share <= 0.0:
            return NoOpRateLimiter()
        return BurstyRateLimiter(self.records_per_second * min(share, 1.0), clock=self.clock)

    @staticmethod
    def per_second(
        records_per_second: float, *, clock: Callable[[], float] = time.monotonic
    ) -> RateLimiterStrategy:
        """At most ``records_per_second`` records per second across all readers.

        ``clock`` is a monotonic seconds clock; tests pass a fake one.
        """
        return RateLimiterStrategy(records_per_second, clock)

    @staticmethod
    def no_op() -> RateLimiterStrategy:
        """No limit."""
        return RateLimiterStrategy(None)

    def __repr__(self) -> str:
        if self.records_per_second is None:
            return "RateLimiterStrategy.no_op()"
        return f"RateLimiterStrategy.per_second({self.records_per_second})"
