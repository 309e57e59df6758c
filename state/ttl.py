"""State time-to-live: PyFlink's ``StateTtlConfig`` and ``Time``, plus the mechanics backends use.

**Configuration** mirrors ``pyflink.datastream.state.StateTtlConfig`` name for name: build it
with ``StateTtlConfig.new_builder(Time.days(1))...build()`` and attach it to a descriptor with
``descriptor.enable_time_to_live(config)``. Defaults are Flink's: update type
``OnCreateAndWrite``, visibility ``NeverReturnExpired``, processing time, background cleanup
on (incremental ``(5, False)`` and compaction filter ``1000`` unless configured otherwise).
``cleanup_in_lmdb_compact_filter`` is flowrun's name for the same strategy as
``cleanup_in_rocksdb_compact_filter``: the embedded LMDB backend has no compactions, so it
runs a background sweep that deletes expired entries and reads the clock again every
``query_time_after_num_entries`` entries. Either name configures it for either backend.

**Mechanics** (:class:`TtlPolicy`): TTL is processing time only, measured in epoch
milliseconds from the wall clock, because timestamps are stored in state and must mean the
same after a restore in another process (a monotonic clock would not). Every stored user
value carries the 8-byte big-endian timestamp of its last access in front of the serialized
bytes: ``stored = ts (8 bytes) + user bytes``. An entry is expired when ``ts + ttl <= now``.

TTL is **per element**, as in Flink: how a backend applies the policy per state kind:

* Value, reducing and aggregating state: one stored value per key,
  ``policy.on_write(serializer.serialize(v))``. Reads go through :meth:`TtlPolicy.on_read`;
  a reducing/aggregating ``add`` reads the current value that way first (expired counts as
  absent) and writes the folded value with ``on_write``.
* List state: every element is wrapped on its own: ``add(v)`` appends
  ``on_write(elem_bytes)`` and leaves older elements' timestamps alone; ``update(values)``
  wraps all elements with one timestamp. ``get()`` passes the stored elements to
  :meth:`TtlPolicy.on_read_all`, which returns the visible elements and, when anything
  expired or was refreshed, the element list to store instead (``[]``: clear the list).
* Map state: the user *keys* are stored plain (they are lookup keys); every user *value* is
  wrapped on its own, ``put`` uses ``on_write``, ``get``/``contains``/iteration use
  ``on_read`` per entry and skip entries whose returned value is ``None``.
* :meth:`TtlPolicy.on_read` returns ``(user_bytes_or_None, write_back)``: ``write_back`` is
  ``None`` (nothing to do), re-wrapped bytes (``OnReadAndWrite`` refreshed the timestamp:
  store them), or :attr:`TtlPolicy.DELETE` (``b""``, the entry expired: delete it; Flink
  clears an expired entry on read even when ``ReturnExpiredIfNotCleanedUp`` still returns it).
* Cleanup: ``policy.full_snapshot`` -> drop expired entries/elements from full snapshots;
  ``policy.incremental = (size, every_record)`` -> after each state access (and each record
  when ``every_record``) check the next ``size`` keys of a cursor over the state;
  ``policy.compact_filter = n`` -> the LMDB background sweep described above. Each is
  ``None``/``False`` when not configured.

Example::

    >>> from flowrun.state.ttl import StateTtlConfig, Time, TtlPolicy
    >>> config = StateTtlConfig.new_builder(Time.seconds(10)).update_ttl_on_read_and_write().build()
    >>> now = [1_000]
    >>> policy = TtlPolicy(config, clock=lambda: now[0])
    >>> stored = policy.on_write(b"v")              # written at t=1000
    >>> now[0] = 5_000
    >>> value, write_back = policy.on_read(stored)  # a read at t=5000 refreshes the timestamp
    >>> bytes(value), policy.unwrap(write_back)[0]
    (b'v', 5000)
    >>> now[0] = 11_000
    >>> policy.on_read(stored)                      # the old bytes expired at 11000: delete
    (None, b'')
"""

from __future__ import annotations

import struct
import time
from abc import ABC
from collections.abc import Callable, Iterable
from enum import Enum
from typing import Any

from flowrun.core.time import Duration

__all__ = [
    "StateTtlConfig",
    "Time",
    "TtlPolicy",
    "processing_time_ms",
    "ttl_policy_for",
]


class Time:
    """An amount of time in milliseconds (``pyflink.common.time.Time``, Flink 1.x).

    Example::

        >>> Time.minutes(2).to_milliseconds(), Time.hours(1) == Time.minutes(60)
        (120000, True)
    """

    __slots__ = ("_milliseconds",)

    def __init__(self, milliseconds: int) -> None:
        if isinstance(milliseconds, bool) or not isinstance(milliseconds, int):
            raise TypeError(f"milliseconds must be an int, got {milliseconds!r}")
        self._milliseconds = int(milliseconds)

    def to_milliseconds(self) -> int:
        return self._milliseconds

    @staticmethod
    def milliseconds(milliseconds: int) -> Time:
        return Time(milliseconds)

    @staticmethod
    def seconds(seconds: int) -> Time:
        return Time.milliseconds(seconds * 1000)

    @staticmethod
    def minutes(minutes: int) -> Time:
        return Time.seconds(minutes * 60)

    @staticmethod
    def hours(hours: int) -> Time:
        return Time.minutes(hours * 60)

    @staticmethod
    def days(days: int) -> Time:
        return Time.hours(days * 24)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Time) and other._milliseconds == self._milliseconds

    def __hash__(self) -> int:
        return hash(("Time", self._milliseconds))

    def __reduce__(self) -> tuple:
        return (Time, (self._milliseconds,))

    def __repr__(self) -> str:
        return f"Time.milliseconds({self._milliseconds})"


def _ttl_millis(ttl: Any) -> int:
    """Milliseconds of a ``Time`` or ``Duration``; TTL must be positive (as Flink checks)."""
    to_ms = getattr(ttl, "to_milliseconds", None)
    if to_ms is None:
        raise TypeError(f"ttl must be a Time (or Duration), e.g. Time.days(1); got {ttl!r}")
    millis = to_ms()
    if millis <= 0:
        raise ValueError(f"TTL is expected to be positive, got {ttl!r}")
    return millis


class StateTtlConfig:
    """How long state lives after its last access, and how expired state is cleaned up.

    Build one with :meth:`new_builder` and attach it with
    ``descriptor.enable_time_to_live(config)``. Configs compare structurally.

    Example::

        >>> from flowrun.state import StateTtlConfig, Time, ValueStateDescriptor
        >>> from flowrun.core.typeinfo import Types
        >>> ttl = (StateTtlConfig.new_builder(Time.hours(1))
        ...        .update_ttl_on_read_and_write()
        ...        .cleanup_full_snapshot()
        ...        .build())
        >>> ttl.get_update_type(), ttl.get_cleanup_strategies().in_full_snapshot()
        (<UpdateType.OnReadAndWrite: 2>, True)
        >>> ValueStateDescriptor("last_seen", Types.LONG()).enable_time_to_live(ttl)
    """

    class UpdateType(Enum):
        """When the last-access timestamp (which prolongs the TTL) is updated."""

        Disabled = 0
        """TTL is disabled: state never expires."""
        OnCreateAndWrite = 1
        """Set when the value is created and on every write."""
        OnReadAndWrite = 2
        """As OnCreateAndWrite, and also on every read."""

    class StateVisibility(Enum):
        """Whether an expired value that is still stored may be returned."""

        ReturnExpiredIfNotCleanedUp = 0
        NeverReturnExpired = 1

    class TtlTimeCharacteristic(Enum):
        """The clock TTL is measured on; processing time is the only one."""

        ProcessingTime = 0

    class CleanupStrategies:
        """Which cleanups run; expired state is always dropped when it is read, whatever is set.

        ``get_*`` return Flink's defaults when nothing was configured and background cleanup
        is on: incremental ``(5, False)`` and compaction filter ``1000``; None when it is off.
        """

        class Strategies(Enum):
            """Keys of the strategy map (fixed ordinals, as in Flink)."""

            FULL_STATE_SCAN_SNAPSHOT = 0
            INCREMENTAL_CLEANUP = 1
            ROCKSDB_COMPACTION_FILTER = 2

        class CleanupStrategy(ABC):  # noqa: B024 - a marker base, as in PyFlink
            """Base of the cleanup strategy configurations; they compare structurally."""

            def _key(self) -> tuple:
                return ()

            def __eq__(self, other: object) -> bool:
                return type(other) is type(self) and other._key() == self._key()  # type: ignore[attr-defined]

            def __hash__(self) -> int:
                return hash((type(self).__name__, self._key()))

        class EmptyCleanupStrategy(CleanupStrategy):
            """A strategy without settings (full-snapshot cleanup)."""

            def __repr__(self) -> str:
                return "EmptyCleanupStrategy"

        class IncrementalCleanupStrategy(CleanupStrategy):
            """Check ``cleanup_size`` keys per state access (and optionally per record)."""

            def __init__(self, cleanup_size: int, run_cleanup_for_every_record: bool) -> None:
                if isinstance(cleanup_size, bool) or not isinstance(cleanup_size, int):
                    raise TypeError(f"cleanup_size must be an int, got {cleanup_size!r}")
                if cleanup_size < 0:
                    raise ValueError(f"cleanup_size must not be negative, got {cleanup_size}")
                self._cleanup_size = cleanup_size
                self._run_cleanup_for_every_record = bool(run_cleanup_for_every_record)

            def get_cleanup_size(self) -> int:
                return self._cleanup_size

            def run_cleanup_for_every_record(self) -> bool:
                return self._run_cleanup_for_every_record

            def _key(self) -> tuple:
                return (self._cleanup_size, self._run_cleanup_for_every_record)

            def __repr__(self) -> str:
                return (
                    f"IncrementalCleanupStrategy({self._cleanup_size}, "
                    f"{self._run_cleanup_for_every_record})"
                )

        class RocksdbCompactFilterCleanupStrategy(CleanupStrategy):
            """Background cleanup re-reading the clock every ``query_time_after_num_entries``.

            In RocksDB this is the compaction filter; flowrun's LMDB backend runs it as a
            background sweep over the state (``cleanup_in_lmdb_compact_filter``).
            """

            def __init__(
                self,
                query_time_after_num_entries: int,
                periodic_compaction_time: Duration = Duration.of_days(30),
            ) -> None:
                if isinstance(query_time_after_num_entries, bool) or not isinstance(
                    query_time_after_num_entries, int
                ):
                    raise TypeError(
                        "query_time_after_num_entries must be an int, got "
                        f"{query_time_after_num_entries!r}"
                    )
                self._query_time_after_num_entries = query_time_after_num_entries
                self._periodic_compaction_time = periodic_compaction_time

            def get_query_time_after_num_entries(self) -> int:
                return self._query_time_after_num_entries

            def get_periodic_compaction_time(self) -> Duration:
                return self._periodic_compaction_time

            def _key(self) -> tuple:
                return (self._query_time_after_num_entries, self._periodic_compaction_time)

            def __repr__(self) -> str:
                return (
                    f"RocksdbCompactFilterCleanupStrategy({self._query_time_after_num_entries}, "
                    f"{self._periodic_compaction_time!r})"
                )

        EMPTY_STRATEGY = EmptyCleanupStrategy()

        def __init__(self, strategies: dict, is_cleanup_in_background: bool) -> None:
            self._strategies = dict(strategies)
            self._is_cleanup_in_background = bool(is_cleanup_in_background)

        def is_cleanup_in_background(self) -> bool:
            return self._is_cleanup_in_background

        def in_full_snapshot(self) -> bool:
            return _Strategies.FULL_STATE_SCAN_SNAPSHOT in self._strategies

        def get_incremental_cleanup_strategy(
            self,
        ) -> StateTtlConfig.CleanupStrategies.IncrementalCleanupStrategy | None:
            default = (
                _CleanupStrategies.IncrementalCleanupStrategy(5, False)
                if self._is_cleanup_in_background
                else None
            )
            return self._strategies.get(_Strategies.INCREMENTAL_CLEANUP, default)

        def get_rocksdb_compact_filter_cleanup_strategy(
            self,
        ) -> StateTtlConfig.CleanupStrategies.RocksdbCompactFilterCleanupStrategy | None:
            default = (
                _CleanupStrategies.RocksdbCompactFilterCleanupStrategy(1000)
                if self._is_cleanup_in_background
                else None
            )
            return self._strategies.get(_Strategies.ROCKSDB_COMPACTION_FILTER, default)

        def get_lmdb_compact_filter_cleanup_strategy(
            self,
        ) -> StateTtlConfig.CleanupStrategies.RocksdbCompactFilterCleanupStrategy | None:
            """flowrun's name for :meth:`get_rocksdb_compact_filter_cleanup_strategy`."""
            return self.get_rocksdb_compact_filter_cleanup_strategy()

        def _key(self) -> tuple:
            items = sorted(self._strategies.items(), key=lambda item: item[0].value)
            return (tuple(items), self._is_cleanup_in_background)

        def __eq__(self, other: object) -> bool:
            return isinstance(other, _CleanupStrategies) and other._key() == self._key()

        def __hash__(self) -> int:
            return hash(self._key())

        def __repr__(self) -> str:
            inner = ", ".join(f"{k.name}={v!r}" for k, v in self._strategies.items())
            return (
                f"CleanupStrategies({{{inner}}}, "
                f"is_cleanup_in_background={self._is_cleanup_in_background})"
            )

    class Builder:
        """Builder of :class:`StateTtlConfig`; every setter returns the builder."""

        def __init__(self, ttl: Time) -> None:
            self._ttl = ttl
            self._update_type = _UpdateType.OnCreateAndWrite
            self._state_visibility = _StateVisibility.NeverReturnExpired
            self._ttl_time_characteristic = _TtlTimeCharacteristic.ProcessingTime
            self._is_cleanup_in_background = True
            self._strategies: dict = {}

        def set_update_type(self, update_type: StateTtlConfig.UpdateType) -> StateTtlConfig.Builder:
            """When the last-access timestamp is updated (see ``StateTtlConfig.UpdateType``)."""
            if not isinstance(update_type, _UpdateType):
                raise TypeError(
                    f"update_type must be a StateTtlConfig.UpdateType, got {update_type!r}"
                )
            self._update_type = update_type
            return self

        def update_ttl_on_create_and_write(self) -> StateTtlConfig.Builder:
            return self.set_update_type(_UpdateType.OnCreateAndWrite)

        def update_ttl_on_read_and_write(self) -> StateTtlConfig.Builder:
            return self.set_update_type(_UpdateType.OnReadAndWrite)

        def set_state_visibility(
            self, state_visibility: StateTtlConfig.StateVisibility
        ) -> StateTtlConfig.Builder:
            """Whether expired values not cleaned up yet may be returned."""
            if not isinstance(state_visibility, _StateVisibility):
                raise TypeError(
                    "state_visibility must be a StateTtlConfig.StateVisibility, got "
                    f"{state_visibility!r}"
                )
            self._state_visibility = state_visibility
            return self

        def return_expired_if_not_cleaned_up(self) -> StateTtlConfig.Builder:
            return self.set_state_visibility(_StateVisibility.ReturnExpiredIfNotCleanedUp)

        def never_return_expired(self) -> StateTtlConfig.Builder:
            return self.set_state_visibility(_StateVisibility.NeverReturnExpired)

        def set_ttl_time_characteristic(
            self, ttl_time_characteristic: StateTtlConfig.TtlTimeCharacteristic
        ) -> StateTtlConfig.Builder:
            if not isinstance(ttl_time_characteristic, _TtlTimeCharacteristic):
                raise TypeError(
                    "ttl_time_characteristic must be a StateTtlConfig.TtlTimeCharacteristic, "
                    f"got {ttl_time_characteristic!r}"
                )
            self._ttl_time_characteristic = ttl_time_characteristic
            return self

        def use_processing_time(self) -> StateTtlConfig.Builder:
            return self.set_ttl_time_characteristic(_TtlTimeCharacteristic.ProcessingTime)

        def cleanup_full_snapshot(self) -> StateTtlConfig.Builder:
            """Leave expired entries out of full snapshots (checkpoints and savepoints)."""
            self._strategies[_Strategies.FULL_STATE_SCAN_SNAPSHOT] = (
                _CleanupStrategies.EMPTY_STRATEGY
            )
            return self

        def cleanup_incrementally(
            self, cleanup_size: int, run_cleanup_for_every_record: bool
        ) -> StateTtlConfig.Builder:
            """On every state access check ``cleanup_size`` more keys and drop expired ones.

            With ``run_cleanup_for_every_record`` the check also runs for every record. State
            that is neither accessed nor receives records keeps its expired entries until they
            are read or snapshotted. The check adds latency to the record path.
            """
            self._strategies[_Strategies.INCREMENTAL_CLEANUP] = (
                _CleanupStrategies.IncrementalCleanupStrategy(
                    cleanup_size, run_cleanup_for_every_record
                )
            )
            return self

        def cleanup_in_rocksdb_compact_filter(
            self,
            query_time_after_num_entries: int,
            periodic_compaction_time: Duration = Duration.of_days(30),
        ) -> StateTtlConfig.Builder:
            """Background cleanup, re-reading the clock every ``query_time_after_num_entries``.

            The RocksDB compaction filter in Flink; in flowrun the same setting drives the LMDB
            backend's background sweep (see :meth:`cleanup_in_lmdb_compact_filter`).
            ``periodic_compaction_time`` is kept for API parity; the sweep has no files to age.
            """
            self._strategies[_Strategies.ROCKSDB_COMPACTION_FILTER] = (
                _CleanupStrategies.RocksdbCompactFilterCleanupStrategy(
                    query_time_after_num_entries, periodic_compaction_time
                )
            )
            return self

        def cleanup_in_lmdb_compact_filter(
            self,
            query_time_after_num_entries: int,
            periodic_compaction_time: Duration = Duration.of_days(30),
        ) -> StateTtlConfig.Builder:
            """flowrun's name for the background cleanup of the embedded LMDB backend.

            LMDB never compacts, so a background sweep walks the state instead, deletes
            expired entries and reads the clock again after every
            ``query_time_after_num_entries`` entries. It configures the same strategy object
            as :meth:`cleanup_in_rocksdb_compact_filter`.
            """
            return self.cleanup_in_rocksdb_compact_filter(
                query_time_after_num_entries, periodic_compaction_time
            )

        def disable_cleanup_in_background(self) -> StateTtlConfig.Builder:
            """Turn off the default background cleanups; explicitly configured ones still run."""
            self._is_cleanup_in_background = False
            return self

        def set_ttl(self, ttl: Time) -> StateTtlConfig.Builder:
            self._ttl = ttl
            return self

        def build(self) -> StateTtlConfig:
            return StateTtlConfig(
                self._update_type,
                self._state_visibility,
                self._ttl_time_characteristic,
                self._ttl,
                _CleanupStrategies(self._strategies, self._is_cleanup_in_background),
            )

    def __init__(
        self,
        update_type: StateTtlConfig.UpdateType,
        state_visibility: StateTtlConfig.StateVisibility,
        ttl_time_characteristic: StateTtlConfig.TtlTimeCharacteristic,
        ttl: Time,
        cleanup_strategies: StateTtlConfig.CleanupStrategies,
    ) -> None:
        _ttl_millis(ttl)
        self._update_type = update_type
        self._state_visibility = state_visibility
        self._ttl_time_characteristic = ttl_time_characteristic
        self._ttl = ttl
        self._cleanup_strategies = cleanup_strategies

    @staticmethod
    def new_builder(ttl: Time) -> StateTtlConfig.Builder:
        return StateTtlConfig.Builder(ttl)

    def get_update_type(self) -> StateTtlConfig.UpdateType:
        return self._update_type

    def get_state_visibility(self) -> StateTtlConfig.StateVisibility:
        return self._state_visibility

    def get_ttl(self) -> Time:
        return self._ttl

    def get_ttl_time_characteristic(self) -> StateTtlConfig.TtlTimeCharacteristic:
        return self._ttl_time_characteristic

    def is_enabled(self) -> bool:
        """False when the update type is ``Disabled``: then the state has no TTL at all."""
        return self._update_type is not _UpdateType.Disabled

    def get_cleanup_strategies(self) -> StateTtlConfig.CleanupStrategies:
        return self._cleanup_strategies

    def _key(self) -> tuple:
        return (
            self._update_type,
            self._state_visibility,
            self._ttl_time_characteristic,
            _ttl_millis(self._ttl),
            self._cleanup_strategies,
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StateTtlConfig) and other._key() == self._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (
            f"StateTtlConfig<update_type={self._update_type}, "
            f"state_visibility={self._state_visibility}, "
            f"ttl_time_characteristic={self._ttl_time_characteristic}, ttl={self._ttl}>"
        )


_UpdateType = StateTtlConfig.UpdateType
_StateVisibility = StateTtlConfig.StateVisibility
_TtlTimeCharacteristic = StateTtlConfig.TtlTimeCharacteristic
_CleanupStrategies = StateTtlConfig.CleanupStrategies
_Strategies = StateTtlConfig.CleanupStrategies.Strategies


# ------------------------------------------------------------------------------------------
# Mechanics for the backends
# ------------------------------------------------------------------------------------------

_TS = struct.Struct(">q")
_TS_UNPACK_FROM = _TS.unpack_from
TIMESTAMP_BYTES = _TS.size
"""Size of the last-access timestamp in front of every stored value with TTL."""


def processing_time_ms() -> int:
    """The TTL clock: wall-clock epoch milliseconds (meaningful across restores)."""
    return time.time_ns() // 1_000_000


class TtlPolicy:
    """What a backend does with TTL for one state: wrap, unwrap, expire, refresh.

    Built from a :class:`StateTtlConfig`; ``clock`` returns the current time in epoch ms and
    is injectable for tests. See the module docstring for how backends apply it per element.

    Attributes: ``config``, ``ttl_ms``, ``update_type``, ``visibility``, ``enabled`` (False for
    ``UpdateType.Disabled``: nothing expires), ``full_snapshot`` (bool), ``incremental``
    (``(cleanup_size, run_cleanup_for_every_record)`` or None), ``compact_filter``
    (``query_time_after_num_entries`` or None), ``clock``.

    Example::

        >>> config = StateTtlConfig.new_builder(Time.milliseconds(100)).build()
        >>> policy = TtlPolicy(config, clock=lambda: 5)
        >>> stored = policy.wrap(b"abc")
        >>> ts, user = policy.unwrap(stored)
        >>> ts, bytes(user), policy.is_expired(ts, now=104), policy.is_expired(ts, now=105)
        (5, b'abc', False, True)
    """

    DELETE = b""
    """``write_back`` value meaning "the entry expired: delete it"."""

    __slots__ = (
        "config",
        "ttl_ms",
        "update_type",
        "visibility",
        "enabled",
        "full_snapshot",
        "incremental",
        "compact_filter",
        "clock",
        "_refresh_on_read",
        "_return_expired",
    )

    def __init__(
        self, config: StateTtlConfig, clock: Callable[[], int] = processing_time_ms
    ) -> None:
        if not isinstance(config, StateTtlConfig):
            raise TypeError(f"config must be a StateTtlConfig, got {config!r}")
        self.config = config
        self.ttl_ms = _ttl_millis(config.get_ttl())
        self.update_type = config.get_update_type()
        self.visibility = config.get_state_visibility()
        self.enabled = config.is_enabled()
        self._refresh_on_read = self.update_type is _UpdateType.OnReadAndWrite
        self._return_expired = self.visibility is _StateVisibility.ReturnExpiredIfNotCleanedUp
        strategies = config.get_cleanup_strategies()
        self.full_snapshot = strategies.in_full_snapshot()
        incremental = strategies.get_incremental_cleanup_strategy()
        self.incremental = (
            None
            if incremental is None
            else (incremental.get_cleanup_size(), incremental.run_cleanup_for_every_record())
        )
        compact = strategies.get_rocksdb_compact_filter_cleanup_strategy()
        self.compact_filter = (
            None if compact is None else compact.get_query_time_after_num_entries()
        )
        self.clock = clock

    def wrap(self, user_bytes: bytes | memoryview, timestamp: int | None = None) -> bytes:
        """``timestamp`` (default: now) as 8 bytes, then the user bytes."""
        return _TS.pack(self.clock() if timestamp is None else timestamp) + user_bytes

    def unwrap(self, stored: bytes | memoryview) -> tuple[int, memoryview]:
        """``(timestamp, user bytes)`` of a stored value, without copying the user bytes."""
        view = memoryview(stored)
        if len(view) < TIMESTAMP_BYTES:
            raise ValueError(
                f"stored TTL value has {len(view)} bytes, fewer than its 8-byte timestamp"
            )
        return _TS.unpack_from(view)[0], view[TIMESTAMP_BYTES:]

    def is_expired(self, timestamp: int, now: int | None = None) -> bool:
        """Whether a value last accessed at ``timestamp`` is expired at ``now`` (default: clock)."""
        if not self.enabled:
            return False
        return timestamp + self.ttl_ms <= (self.clock() if now is None else now)

    def is_expired_entry(self, stored: bytes | memoryview, now: int | None = None) -> bool:
        """:meth:`is_expired` of a stored (wrapped) value: for snapshot and background cleanup."""
        return self.is_expired(self.unwrap(stored)[0], now)

    def on_write(self, user_bytes: bytes | memoryview) -> bytes:
        """The bytes to store for a value written now (every update type stamps writes)."""
        return _TS.pack(self.clock()) + user_bytes

    def on_read(self, stored: bytes | memoryview) -> tuple[bytes | memoryview | None, bytes | None]:
        """``(user bytes or None, write_back)`` for a read of one stored value.

        The user bytes (a slice of ``stored``: bytes for bytes, a view for a memoryview) are
        None only when the value expired and the visibility is ``NeverReturnExpired``.
        ``write_back`` is None (nothing to do), new stored bytes (``OnReadAndWrite``
        refreshed the timestamp) or :attr:`DELETE` (expired: delete the entry).
        """
        if len(stored) < TIMESTAMP_BYTES:
            self.unwrap(stored)  # raises the error
        timestamp = _TS_UNPACK_FROM(stored)[0]
        user = stored[TIMESTAMP_BYTES:]
        if not self.enabled:
            return user, None
        now = self.clock()
        if timestamp + self.ttl_ms <= now:
            return (user if self._return_expired else None), self.DELETE
        if self._refresh_on_read and timestamp != now:
            return user, _TS.pack(now) + user
        return user, None

    def on_read_all(
        self, stored_elements: Iterable[bytes | memoryview]
    ) -> tuple[list[bytes | memoryview], list[bytes | memoryview] | None]:
        """Read a list state's stored elements: ``(visible user bytes, new stored list)``.

        The second item is None when nothing has to change; otherwise it is the list of stored
        elements to keep (expired ones dropped, timestamps refreshed for ``OnReadAndWrite``);
        an empty list means "clear the state". With ``ReturnExpiredIfNotCleanedUp`` expired
        elements are still returned, but dropped from storage.
        """
        visible: list[bytes | memoryview] = []
        keep: list[bytes | memoryview] = []
        changed = False
        now = self.clock()
        enabled = self.enabled
        refresh = self._refresh_on_read and enabled
        deadline = now - self.ttl_ms  # expired when timestamp <= deadline
        for stored in stored_elements:
            if len(stored) < TIMESTAMP_BYTES:
                self.unwrap(stored)  # raises the error
            timestamp = _TS_UNPACK_FROM(stored)[0]
            user = stored[TIMESTAMP_BYTES:]
            if enabled and timestamp <= deadline:
                changed = True
                if self._return_expired:
                    visible.append(user)
                continue
            visible.append(user)
            if refresh and timestamp != now:
                changed = True
                keep.append(_TS.pack(now) + user)
            else:
                keep.append(stored)
        return visible, (keep if changed else None)

    def __repr__(self) -> str:
        return (
            f"TtlPolicy(ttl_ms={self.ttl_ms}, update_type={self.update_type.name}, "
            f"visibility={self.visibility.name})"
        )


def ttl_policy_for(
    state_descriptor: Any, clock: Callable[[], int] = processing_time_ms
) -> TtlPolicy | None:
    """The policy of a descriptor's TTL, or None when it has none or it is ``Disabled``.

    A None policy means values are stored without the timestamp prefix.

    Example::

        >>> from flowrun.state import ValueStateDescriptor
        >>> from flowrun.core.typeinfo import Types
        >>> ttl_policy_for(ValueStateDescriptor("v", Types.INT())) is None
        True
    """
    config = getattr(state_descriptor, "ttl_config", None)
    if config is None or not config.is_enabled():
        return None
    return TtlPolicy(config, clock)
