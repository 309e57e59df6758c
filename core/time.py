"""Time values of ``pyflink.common.time``: :class:`Time`, :class:`Duration`, :class:`Instant`.

``Time`` is the 1.x amount of time used by ``StateTtlConfig`` and window assigners; it lives
in :mod:`flowrun.state.ttl` (its first user) and is re-exported here so that
``from flowrun.core.time import Time`` works as ``from pyflink.common.time import Time`` does.
``Duration`` mirrors ``java.time.Duration`` (exact to the nanosecond; PyFlink wraps the Java
object, flowrun keeps an integer count of nanoseconds). ``Instant`` is a point on the UTC time
line as epoch seconds plus nanoseconds; it is the Python value of ``Types.INSTANT()``.

All three are immutable value objects: equal when their amounts are, hashable, picklable.

Example::

    >>> from flowrun.core.time import Duration, Instant, Time
    >>> Duration.of_minutes(2).to_milliseconds(), Time.seconds(3).to_milliseconds()
    (120000, 3000)
    >>> Instant.of_epoch_milli(-1)
    Instant<-1, 999000000>
    >>> Instant.of_epoch_milli(1_700_000_000_123).to_epoch_milli()
    1700000000123
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - resolved lazily by __getattr__ below
    from flowrun.state.ttl import Time

__all__ = ["Duration", "Instant", "Time"]

_NANOS_PER_MILLI = 1_000_000
_NANOS_PER_SECOND = 1_000_000_000


def __getattr__(name: str) -> Any:
    # ``Time`` is defined in flowrun.state.ttl, which imports Duration from here: resolving
    # it on first use (PEP 562) keeps the two modules free of an import cycle.
    if name == "Time":
        from flowrun.state.ttl import Time

        globals()["Time"] = Time
        return Time
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _whole(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, got {value!r}")
    return int(value)


class Duration:
    """An exact amount of time (``java.time.Duration``), built with the ``of_*`` factories.

    Example::

        >>> Duration.of_seconds(90) == Duration.of_millis(90_000)
        True
    """

    __slots__ = ("_nanos",)

    def __init__(self, nanos: int = 0) -> None:
        self._nanos = _whole(nanos, "nanos")

    @staticmethod
    def of_days(days: int) -> Duration:
        return Duration(_whole(days, "days") * 86_400 * _NANOS_PER_SECOND)

    @staticmethod
    def of_hours(hours: int) -> Duration:
        return Duration(_whole(hours, "hours") * 3_600 * _NANOS_PER_SECOND)

    @staticmethod
    def of_minutes(minutes: int) -> Duration:
        return Duration(_whole(minutes, "minutes") * 60 * _NANOS_PER_SECOND)

    @staticmethod
    def of_seconds(seconds: int) -> Duration:
        return Duration(_whole(seconds, "seconds") * _NANOS_PER_SECOND)

    @staticmethod
    def of_millis(millis: int) -> Duration:
        return Duration(_whole(millis, "millis") * _NANOS_PER_MILLI)

    @staticmethod
    def of_nanos(nanos: int) -> Duration:
        return Duration(nanos)

    def to_milliseconds(self) -> int:
        """Whole milliseconds (rounded down, like Java's ``toMillis`` for positive amounts)."""
        return self._nanos // _NANOS_PER_MILLI

    def to_nanos(self) -> int:
        return self._nanos

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Duration) and other._nanos == self._nanos

    def __hash__(self) -> int:
        return hash(("Duration", self._nanos))

    def __reduce__(self) -> tuple:
        return (Duration, (self._nanos,))

    def __repr__(self) -> str:
        if self._nanos % _NANOS_PER_MILLI == 0:
            return f"Duration.of_millis({self._nanos // _NANOS_PER_MILLI})"
        return f"Duration.of_nanos({self._nanos})"


class Instant:
    """A point in time: ``seconds`` since the epoch plus ``nanos`` (0..999,999,999).

    Out-of-range ``nanos`` are carried into ``seconds``, as Java's ``Instant.ofEpochSecond``
    does, so equal instants have equal fields.

    Example::

        >>> Instant(1, 1_500_000_000)
        Instant<2, 500000000>
    """

    __slots__ = ("seconds", "nanos")

    def __init__(self, seconds: int, nanos: int) -> None:
        carry, nanos = divmod(_whole(nanos, "nanos"), _NANOS_PER_SECOND)
        self.seconds = _whole(seconds, "seconds") + carry
        self.nanos = nanos

    @staticmethod
    def of_epoch_milli(epoch_milli: int) -> Instant:
        seconds, millis = divmod(_whole(epoch_milli, "epoch_milli"), 1000)
        return Instant(seconds, millis * _NANOS_PER_MILLI)

    def to_epoch_milli(self) -> int:
        """Milliseconds since the epoch, rounded down (toward the past)."""
        return self.seconds * 1000 + self.nanos // _NANOS_PER_MILLI

    def __eq__(self, other: object) -> bool:
        return (
            type(other) is type(self)
            and other.seconds == self.seconds  # type: ignore[attr-defined]
            and other.nanos == self.nanos  # type: ignore[attr-defined]
        )

    def __hash__(self) -> int:
        return hash(("Instant", self.seconds, self.nanos))

    def __reduce__(self) -> tuple:
        return (Instant, (self.seconds, self.nanos))

    def __repr__(self) -> str:
        return f"Instant<{self.seconds}, {self.nanos}>"
