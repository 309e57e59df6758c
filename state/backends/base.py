"""The keyed state backend contract, and what the heap and LMDB backends share.

A :class:`KeyedStateBackend` holds the keyed state of one operator in one subtask: the key
groups of its :class:`~flowrun.state.key_groups.KeyGroupRange`. The runtime

* creates it through a :class:`StateBackend` (the config object users pass to
  ``env.set_state_backend``) with ``create_keyed_backend(...)``,
* calls :meth:`~KeyedStateBackend.restore` with the snapshot streams of the operator (from any
  old parallelism: rows outside this subtask's key groups are dropped),
* lets user code create state objects once (``get_state(descriptor)`` ... in ``open()``);
  every state object acts on the *current key*, which the runtime sets per record with
  :meth:`~KeyedStateBackend.set_prepared_key`, after the backend checked and encoded the
  batch's keys once with :meth:`~KeyedStateBackend.prepare_keys` (timers and tests use
  :meth:`~KeyedStateBackend.set_current_key`),
* brackets every input batch with :meth:`~KeyedStateBackend.begin_batch` /
  :meth:`~KeyedStateBackend.end_batch` (LMDB: one write transaction per batch),
* takes :meth:`~KeyedStateBackend.snapshot` at checkpoints: backend-neutral Arrow IPC streams
  (:mod:`flowrun.state.snapshot`), one per (state, key-group range),
* and finally :meth:`~KeyedStateBackend.close` / :meth:`~KeyedStateBackend.dispose`.

State names are the identity of state across snapshots. Requesting a name a second time in
one run with another kind, type or TTL configuration raises
:class:`~flowrun.state.descriptors.IncompatibleStateError` (``check_compatible``); declaring a
*restored* state with another kind or type, or with TTL switched on/off, raises its subclass
:class:`StateMigrationError`: a snapshot's bytes are only meaningful under the serializer that
wrote them, and Flink refuses the same changes. A restored state may change its TTL duration
and cleanup settings: timestamps are stored, the duration is applied when reading.

Threading: a backend belongs to its subtask's single thread, like everything in a subtask
process; a :class:`SnapshotHandle` is produced on that thread too (between batches).
"""

from __future__ import annotations

import datetime as _dt
import gc
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pyarrow as pa

from flowrun.core.typeinfo import (
    BasicType,
    BasicTypeInfo,
    DateTypeInfo,
    ListTypeInfo,
    MapTypeInfo,
    PickledBytesTypeInfo,
    RowTypeInfo,
    TimestampTypeInfo,
    TimeTypeInfo,
    TupleTypeInfo,
    TypeInformation,
)

from ..descriptors import IncompatibleStateError, check_compatible
from ..key_groups import KeyBatch, KeyGroupRange, assign_to_key_group, check_parallelism
from ..serializers import StateTypeError, TypeSerializer, key_serializer_for, serializer_for
from ..snapshot import KEYED_STATE_KINDS, StateMeta, filter_key_groups, read_stream
from ..ttl import TtlPolicy, processing_time_ms, ttl_policy_for

__all__ = [
    "KeyedStateBackend",
    "SnapshotHandle",
    "StateBackend",
    "StateBackendError",
    "StateMigrationError",
    "StateSpec",
    "fast_type_check",
]

Clock = Callable[[], int]


class StateBackendError(RuntimeError):
    """The state backend cannot work: unusable directory, disk full, closed backend..."""


class StateMigrationError(IncompatibleStateError):
    """A snapshot's state does not match its declaration (kind, type, TTL on/off, key type).

    A subclass of :class:`~flowrun.state.descriptors.IncompatibleStateError`, which is what a
    second, different declaration of one name in the same run raises.
    """


# ------------------------------------------------------------------------------------------
# Descriptors -> what a backend needs to know about one state
# ------------------------------------------------------------------------------------------

_KIND_BY_DESCRIPTOR = {
    "ValueStateDescriptor": "value",
    "ListStateDescriptor": "list",
    "MapStateDescriptor": "map",
    "ReducingStateDescriptor": "reducing",
    "AggregatingStateDescriptor": "aggregating",
}


def _descriptor_kind(descriptor: Any) -> str | None:
    for cls in type(descriptor).__mro__:
        kind = _KIND_BY_DESCRIPTOR.get(cls.__name__)
        if kind is not None:
            return kind
    return None


def _type_repr(type_info: TypeInformation | None) -> str:
    return "" if type_info is None else repr(type_info)


@dataclass
class StateSpec:
    """One registered (or restored) state: its kind, types, serializers and TTL policy.

    ``value_type`` is the type of what is stored per row: the value (value state), the element
    (list state), the map value (map state), the reduced value or the accumulator.
    ``user_key_type`` is the map key type. ``descriptor`` is None for a state known only from
    a restored snapshot (it is kept and snapshotted again until user code declares it).
    """

    name: str
    kind: str
    value_type: TypeInformation | None = None
    user_key_type: TypeInformation | None = None
    descriptor: Any = None
    ttl: TtlPolicy | None = None
    ttl_stored: bool = False
    value_type_repr: str = ""
    user_key_type_repr: str = ""
    value_serializer: TypeSerializer | None = None
    user_key_serializer: TypeSerializer | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, descriptor: Any, kind: str, clock: Clock) -> StateSpec:
        """The spec of a user descriptor requested through ``get_<kind>_state``."""
        declared = _descriptor_kind(descriptor)
        name = getattr(descriptor, "name", None)
        if declared is None or not isinstance(name, str):
            raise TypeError(f"expected a {kind} state descriptor, got {descriptor!r}")
        if declared != kind:
            raise TypeError(
                f"state {name!r}: a {type(descriptor).__name__} describes {declared} state; "
                f"use get_{'' if declared == 'value' else declared + '_'}state() for it"
            )
        value_type, user_key_type = _stored_types(descriptor, kind)
        ttl = ttl_policy_for(descriptor, clock)
        return cls(
            name=name,
            kind=kind,
            value_type=value_type,
            user_key_type=user_key_type,
            descriptor=descriptor,
            ttl=ttl,
            ttl_stored=ttl is not None,
            value_type_repr=_type_repr(value_type),
            user_key_type_repr=_type_repr(user_key_type) if kind == "map" else "",
            value_serializer=serializer_for(value_type),
            user_key_serializer=key_serializer_for(user_key_type) if kind == "map" else None,
        )

    @classmethod
    def restored(cls, meta: StateMeta) -> StateSpec:
        """A state known only from a snapshot: its bytes are kept as they are."""
        return cls(
            name=meta.state_name,
            kind=meta.state_kind,
            ttl_stored=meta.ttl,
            value_type_repr=meta.value_type,
            user_key_type_repr=meta.user_key_type,
        )

    def meta(self, backend: KeyedStateBackend, key_group_range: KeyGroupRange) -> StateMeta:
        return StateMeta(
            operator_id=backend.operator_id,
            state_name=self.name,
            state_kind=self.kind,
            value_type=self.value_type_repr,
            key_type=backend.key_type_repr,
            user_key_type=self.user_key_type_repr,
            ttl=self.ttl_stored,
            max_parallelism=backend.max_parallelism,
            key_group_range=(key_group_range.start, key_group_range.end),
        )

    def check_same_layout(self, kind: str, value_repr: str, user_key_repr: str, ttl: bool) -> None:
        """Raise :class:`StateMigrationError` unless the stored bytes mean the same thing."""
        problems = []
        if kind != self.kind:
            problems.append(f"kind {self.kind} vs {kind}")
        if value_repr != self.value_type_repr:
            problems.append(f"type {self.value_type_repr or '<pickled>'} vs {value_repr}")
        if user_key_repr != self.user_key_type_repr:
            problems.append(f"map key type {self.user_key_type_repr} vs {user_key_repr}")
        if ttl != self.ttl_stored:
            problems.append(f"TTL {'on' if self.ttl_stored else 'off'} vs {'on' if ttl else 'off'}")
        if problems:
            raise StateMigrationError(
                f"state {self.name!r} is incompatible with its earlier declaration or "
                f"snapshot ({'; '.join(problems)}); use a new state name, or migrate the "
                f"state with a savepoint-processing job"
            )


def _stored_types(
    descriptor: Any, kind: str
) -> tuple[TypeInformation | None, TypeInformation | None]:
    """(value type, map key type) of a descriptor, whichever way it spells them."""
    type_info = getattr(descriptor, "type_info", None)
    if kind == "list":
        elem = getattr(descriptor, "elem_type_info", None)
        if elem is None and isinstance(type_info, ListTypeInfo):
            elem = type_info.get_element_type()
        return (elem if elem is not None else type_info), None
    if kind == "map":
        key = getattr(descriptor, "key_type_info", None)
        value = getattr(descriptor, "value_type_info", None)
        if key is None and isinstance(type_info, MapTypeInfo):
            key, value = type_info.get_key_type(), type_info.get_value_type()
        return value, key
    return type_info, None


def reduce_function_of(descriptor: Any) -> Callable[[Any, Any], Any]:
    getter = getattr(descriptor, "get_reduce_function", None)
    fn = getter() if getter is not None else getattr(descriptor, "reduce_function", None)
    reduce = getattr(fn, "reduce", None)
    if reduce is not None:
        return reduce
    if callable(fn):
        return fn
    raise TypeError(f"{descriptor!r} has no reduce function")


def aggregate_function_of(descriptor: Any) -> Any:
    getter = getattr(descriptor, "get_agg_function", None)
    fn = getter() if getter is not None else getattr(descriptor, "agg_function", None)
    if fn is None or not hasattr(fn, "add") or not hasattr(fn, "create_accumulator"):
        raise TypeError(f"{descriptor!r} has no AggregateFunction")
    return fn


# ------------------------------------------------------------------------------------------
# Cheap type checks on write (heap backend)
# ------------------------------------------------------------------------------------------

_INT_BOUNDS = {
    BasicType.BYTE: (-(1 << 7), (1 << 7) - 1),
    BasicType.SHORT: (-(1 << 15), (1 << 15) - 1),
    BasicType.INT: (-(1 << 31), (1 << 31) - 1),
    BasicType.LONG: (-(1 << 63), (1 << 63) - 1),
}


def fast_type_check(type_info: TypeInformation | None) -> Callable[[Any], bool] | None:
    """A predicate that *accepts* the common well-typed values of ``type_info`` cheaply.

    Why not the serializer: a serializer round trip per write would cost the heap backend
    most of its speed. The predicate is exact for basic types (``type(v) is int`` and in
    range for INT, ``type(v) is str`` for STRING ...) and shallow for composite ones (a tuple
    of the right arity for TUPLE, a list for LIST, a dict for MAP ...). A value it does not
    accept is handed to the serializer, which decides (it also accepts e.g. an ``int`` for
    DOUBLE, or a numpy scalar). Composite values are therefore validated in depth when they
    are serialized: at snapshot time. Returns None when nothing needs checking (pickled
    values: any picklable object goes; that, too, surfaces at snapshot time).
    """
    if type_info is None or isinstance(type_info, PickledBytesTypeInfo):
        return None
    if isinstance(type_info, BasicTypeInfo):
        basic = type_info._basic_type
        if basic in _INT_BOUNDS:
            low, high = _INT_BOUNDS[basic]
            return lambda v: type(v) is int and low <= v <= high
        exact = {
            BasicType.STRING: str,
            BasicType.BOOLEAN: bool,
            BasicType.FLOAT: float,
            BasicType.DOUBLE: float,
            BasicType.BIG_INT: int,
            BasicType.BIG_DEC: Decimal,
        }.get(basic)
        if exact is not None:
            return lambda v: type(v) is exact
        if basic is BasicType.CHAR:
            return lambda v: type(v) is str and len(v) == 1
        return lambda v: False  # INSTANT and the like: the serializer decides
    if isinstance(type_info, TupleTypeInfo):
        arity = len(type_info.get_field_types())
        return lambda v: type(v) is tuple and len(v) == arity
    if isinstance(type_info, RowTypeInfo):
        from flowrun.core.row import Row

        arity = len(type_info.get_field_types())
        return lambda v: type(v) is Row and len(v) == arity
    if isinstance(type_info, ListTypeInfo):
        return lambda v: type(v) is list
    if isinstance(type_info, MapTypeInfo):
        return lambda v: type(v) is dict
    if isinstance(type_info, TimestampTypeInfo):
        return lambda v: type(v) is _dt.datetime
    if isinstance(type_info, DateTypeInfo):
        return lambda v: type(v) is _dt.date
    if isinstance(type_info, TimeTypeInfo):
        return lambda v: type(v) is _dt.time
    return lambda v: False


def validated(spec: StateSpec, check: Callable[[Any], bool] | None, value: Any, key: Any) -> None:
    """Raise :class:`StateTypeError` unless ``value`` fits ``spec``'s value type."""
    if check is None or check(value):
        return
    assert spec.value_serializer is not None
    spec.value_serializer.serialize_checked(value, spec.name, key)


# ------------------------------------------------------------------------------------------
# The backend contract
# ------------------------------------------------------------------------------------------


class KeyedStateBackend(ABC):
    """Keyed state of one operator in one subtask (its key-group range). Single-threaded.

    Subclasses implement :meth:`set_current_key` (and keep whatever per-key cache they
    need), :meth:`_create_state`, :meth:`keys`, :meth:`_snapshot_states`,
    :meth:`_restore_rows` and the lifecycle hooks.
    """

    def __init__(
        self,
        operator_id: str,
        key_group_range: KeyGroupRange,
        max_parallelism: int,
        key_type_info: TypeInformation | None = None,
        working_dir: str | None = None,
        clock: Clock | None = None,
    ) -> None:
        check_parallelism(max_parallelism, "max parallelism")
        if len(key_group_range) and key_group_range.end >= max_parallelism:
            raise ValueError(
                f"{key_group_range} does not fit max parallelism {max_parallelism} "
                f"(key groups 0..{max_parallelism - 1})"
            )
        self.operator_id = str(operator_id)
        self.key_group_range = key_group_range
        self.max_parallelism = max_parallelism
        self.key_type_info = key_type_info
        self.key_type_repr = _type_repr(key_type_info)
        self.key_serializer = key_serializer_for(key_type_info)
        self.working_dir = working_dir
        self.clock: Clock = clock if clock is not None else processing_time_ms
        self._current_key: Any = None
        self._current_key_group = -1
        self._specs: dict[str, StateSpec] = {}
        self._states: dict[str, Any] = {}
        self._closed = False

    # -- current key -------------------------------------------------------------------

    @abstractmethod
    def set_current_key(self, key: Any, key_group: int | None = None) -> None:
        """Make ``key`` the key every state object acts on; ``key_group`` if already known."""

    def prepare_keys(self, batch: KeyBatch) -> Iterable[Any] | None:
        """Per-record tokens for :meth:`set_prepared_key` (in key order), for a batch of keys.

        Why: checking the key groups of a whole batch at once, and encoding its keys in one
        pass, keeps that work out of the per-record call, which then only stores the current
        key. None means "use :meth:`set_current_key` per record": a key is outside this
        backend's range or cannot be encoded, and the per-record call raises the precise
        error at the record that has it. This default only checks the range.
        """
        if not self._in_range(batch):
            return None
        return batch.group_list

    def _in_range(self, batch: KeyBatch) -> bool:
        """Whether every key group of ``batch`` belongs to this backend (vectorised)."""
        groups = batch.groups
        return not len(groups) or (
            self.key_group_range.start <= int(groups.min())
            and int(groups.max()) <= self.key_group_range.end
        )

    def set_prepared_key(self, key: Any, key_group: int, token: Any) -> None:
        """:meth:`set_current_key` for a key of a batch passed to :meth:`prepare_keys`.

        ``key_group`` is the key's entry in the batch's ``group_list``, ``token`` its entry in
        what :meth:`prepare_keys` returned; nothing is checked again.
        """
        self.set_current_key(key, key_group)

    def run_prepared(
        self,
        step: Callable[[Any, Any], Iterable[Any] | None],
        ctx: Any,
        keys: list,
        key_groups: list[int],
        tokens: Iterable[Any],
        records: list,
        out: list,
        fail: Callable[[Any, Exception], Exception],
    ) -> None:
        """``step(record, ctx)`` for each record with its key current; outputs into ``out``.

        ``keys``, ``key_groups`` and ``tokens`` are a batch's keys, their ``group_list`` and
        what :meth:`prepare_keys` returned for it. Why the loop is here and not in the
        keyed operator: a backend whose current key is plain attributes sets them in the
        loop itself, with no call per record (LMDB); this default calls
        :meth:`set_prepared_key`. A step that raises is reported as ``fail(record, exc)``.
        """
        set_key, extend = self.set_prepared_key, out.extend
        record = None
        try:
            for key, group, token, record in zip(keys, key_groups, tokens, records, strict=True):
                set_key(key, group, token)
                results = step(record, ctx)
                if results is not None:
                    extend(results)
        except Exception as exc:
            raise fail(record, exc) from exc

    def get_current_key(self) -> Any:
        return self._current_key

    def get_current_key_group(self) -> int:
        return self._current_key_group

    def _key_group_of(self, key: Any, key_group: int | None) -> int:
        if key_group is None:
            key_group = assign_to_key_group(key, self.max_parallelism)
        if not self.key_group_range.start <= key_group <= self.key_group_range.end:
            raise ValueError(
                f"key {key!r} is in key group {key_group}, outside this backend's "
                f"{self.key_group_range} (operator {self.operator_id!r}): records were "
                f"routed with another max parallelism or key selector"
            )
        return key_group

    # -- state objects -----------------------------------------------------------------

    def get_state(self, state_descriptor: Any) -> Any:
        """The ``ValueState`` of a ``ValueStateDescriptor`` (same object on every call)."""
        return self._get_or_create(state_descriptor, "value")

    def get_list_state(self, state_descriptor: Any) -> Any:
        return self._get_or_create(state_descriptor, "list")

    def get_map_state(self, state_descriptor: Any) -> Any:
        return self._get_or_create(state_descriptor, "map")

    def get_reducing_state(self, state_descriptor: Any) -> Any:
        return self._get_or_create(state_descriptor, "reducing")

    def get_aggregating_state(self, state_descriptor: Any) -> Any:
        return self._get_or_create(state_descriptor, "aggregating")

    def get_registered_state_names(self) -> list[str]:
        """Names of the states declared by user code or restored from a snapshot."""
        return list(self._specs)

    def _get_or_create(self, descriptor: Any, kind: str) -> Any:
        self._check_open()
        spec = StateSpec.of(descriptor, kind, self.clock)
        existing = self._specs.get(spec.name)
        if existing is not None:
            if existing.descriptor is not None:
                check_compatible(existing.descriptor, descriptor)
                return self._states[spec.name]
            existing.check_same_layout(
                spec.kind, spec.value_type_repr, spec.user_key_type_repr, spec.ttl_stored
            )
        state = self._create_state(spec, restored=existing)
        self._specs[spec.name] = spec
        self._states[spec.name] = state
        return state

    @abstractmethod
    def _create_state(self, spec: StateSpec, restored: StateSpec | None) -> Any:
        """A state object for ``spec``; ``restored`` is the spec of restored data, if any."""

    # -- bulk access (built-in operators) ------------------------------------------------

    def read_values(self, state: Any, key_groups: dict) -> dict:
        """``{key: value}`` of a ValueState for many keys (keys without a value left out).

        For built-in operators whose per-record work cannot touch state: they read each
        distinct key of a batch once, work on a local dict, and write back with
        :meth:`write_values`. Backends may override both with a faster path; this one
        goes through the state object, so TTL and type checks apply as usual.
        """
        out = {}
        value_of = state.value
        for key, key_group in key_groups.items():
            self.set_current_key(key, key_group)
            value = value_of()
            if value is not None:
                out[key] = value
        return out

    def write_values(self, state: Any, values: dict, key_groups: dict) -> None:
        """Write ``{key: value}`` into a ValueState (the counterpart of :meth:`read_values`)."""
        update = state.update
        for key, value in values.items():
            self.set_current_key(key, key_groups[key])
            update(value)

    # -- batches -----------------------------------------------------------------------

    def begin_batch(self) -> None:  # noqa: B027 - optional hook
        """Start of an input batch (a no-op unless the backend buffers writes)."""

    def end_batch(self) -> None:  # noqa: B027 - optional hook
        """End of an input batch: LMDB commits its write transaction here."""

    # -- inspection --------------------------------------------------------------------

    @abstractmethod
    def keys(self, state_name: str) -> Iterator[Any]:
        """The keys that have an entry in ``state_name`` (expired TTL entries included)."""

    # -- snapshots ---------------------------------------------------------------------

    def snapshot(self, key_group_range: KeyGroupRange | None = None) -> list[pa.Buffer]:
        """One Arrow IPC stream per state holding the rows of ``key_group_range``.

        ``None`` means this backend's whole range. Every registered or restored state gets
        a stream, empty ones too, so the snapshot records every state's declaration.
        """
        return self.snapshot_async(key_group_range).result()

    def snapshot_async(self, key_group_range: KeyGroupRange | None = None) -> SnapshotHandle:
        """Fix the snapshot's content now, produce its bytes later (:class:`SnapshotHandle`).

        The synchronous part is what a checkpoint barrier waits for; processing may go on
        while the streams are produced. LMDB fixes the content with an MVCC read
        transaction (cheap); the heap backend serializes everything here (its objects are
        mutable in place, so there is nothing cheaper to hold on to).
        """
        self._check_open()
        return self._snapshot_async(self._snapshot_range(key_group_range))

    def _snapshot_range(self, key_group_range: KeyGroupRange | None) -> KeyGroupRange:
        own = self.key_group_range
        if key_group_range is None:
            return own
        start = max(own.start, key_group_range.start)
        end = min(own.end, key_group_range.end)
        return KeyGroupRange(start, end) if start <= end else KeyGroupRange.empty()

    @abstractmethod
    def _snapshot_async(self, key_group_range: KeyGroupRange) -> SnapshotHandle: ...

    def restore(self, streams: Iterable[Any]) -> None:
        """Load snapshot streams (of any old parallelism); rows of other key groups are dropped.

        Streams of other operators are rejected, as are snapshots taken under another max
        parallelism or key type (their key groups / key bytes would mean something else).
        """
        self._check_open()
        with gc_paused():
            self._restore_streams(streams)

    def _restore_streams(self, streams: Iterable[Any]) -> None:
        for stream in streams:
            meta, table = read_stream(stream)
            self._check_restorable(meta)
            spec = self._specs.get(meta.state_name)
            if spec is None:
                spec = StateSpec.restored(meta)
                self._specs[spec.name] = spec
            else:
                spec.check_same_layout(
                    meta.state_kind, meta.value_type, meta.user_key_type, meta.ttl
                )
            rows = filter_key_groups(table, self.key_group_range)
            if rows.num_rows:
                self._restore_rows(spec, rows)

    def _check_restorable(self, meta: StateMeta) -> None:
        if meta.is_operator_state or meta.state_kind not in KEYED_STATE_KINDS:
            raise StateBackendError(
                f"stream of state {meta.state_name!r} is not keyed state "
                f"(kind {meta.state_kind!r}); restore it into an OperatorStateStore"
            )
        if meta.max_parallelism != self.max_parallelism:
            raise StateBackendError(
                f"state {meta.state_name!r} was snapshotted with max parallelism "
                f"{meta.max_parallelism}, this operator has {self.max_parallelism}: key groups "
                f"cannot be mapped (the max parallelism of a stateful operator must not change)"
            )
        if meta.key_type != self.key_type_repr:
            raise StateMigrationError(
                f"state {meta.state_name!r} was snapshotted with key type "
                f"{meta.key_type or '<undeclared>'}, this operator's key type is "
                f"{self.key_type_repr or '<undeclared>'}"
            )

    @abstractmethod
    def _restore_rows(self, spec: StateSpec, rows: pa.Table) -> None:
        """Add snapshot rows (already filtered to this backend's range) to ``spec``'s state."""

    # -- lifecycle ---------------------------------------------------------------------

    def close(self) -> None:
        """Release resources; state objects must not be used afterwards."""
        self._closed = True

    def dispose(self) -> None:
        """Close and remove anything the backend keeps on disk."""
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise StateBackendError(f"state backend of operator {self.operator_id!r} is closed")

    def __enter__(self) -> KeyedStateBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.dispose()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(operator_id={self.operator_id!r}, "
            f"{self.key_group_range}, max_parallelism={self.max_parallelism})"
        )


class SnapshotHandle:
    """A snapshot whose content was fixed when it was taken; its streams are made on demand.

    :meth:`streams` yields one ``pa.Buffer`` per state, so a caller may interleave record
    processing with producing them; :meth:`result` returns them all. ``release`` (if given)
    runs once the producer is exhausted or the handle is cancelled.
    """

    def __init__(
        self, producer: Iterator[pa.Buffer], release: Callable[[], None] | None = None
    ) -> None:
        self._producer: Iterator[pa.Buffer] | None = producer
        self._done: list[pa.Buffer] = []
        self._release = release

    @property
    def pending(self) -> bool:
        return self._producer is not None

    def streams(self) -> Iterator[pa.Buffer]:
        index = 0
        while True:
            if index < len(self._done):
                yield self._done[index]
                index += 1
                continue
            if self._producer is None:
                return
            try:
                self._done.append(next(self._producer))
            except StopIteration:
                self._finish()
            except BaseException:
                self.cancel()
                raise

    def result(self) -> list[pa.Buffer]:
        """All streams (producing whatever is left)."""
        for _ in self.streams():
            pass
        return list(self._done)

    def materialize(self) -> None:
        """Produce the remaining streams now (the LMDB backend must before its map moves)."""
        self.result()

    def cancel(self) -> None:
        """Drop the snapshot and release what holds its content (the read transaction)."""
        if self._producer is not None:
            close = getattr(self._producer, "close", None)
            if close is not None:
                close()
        self._finish()

    def _finish(self) -> None:
        self._producer = None
        release, self._release = self._release, None
        if release is not None:
            release()


class StateBackend(ABC):
    """A state backend configuration (what users pass to ``env.set_state_backend``).

    Picklable: it travels to every subtask process, which calls :meth:`create_keyed_backend`.
    """

    name = "abstract"

    @abstractmethod
    def create_keyed_backend(
        self,
        operator_id: str,
        key_group_range: KeyGroupRange,
        max_parallelism: int,
        key_type_info: TypeInformation | None = None,
        working_dir: str | None = None,
        clock: Clock | None = None,
    ) -> KeyedStateBackend: ...

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def state_type_error(spec: StateSpec, key: Any, value: Any, exc: BaseException) -> StateTypeError:
    """The user-facing error for a value that does not fit ``spec``'s declared type."""
    if isinstance(exc, StateTypeError):
        return exc
    return StateTypeError(spec.name, key, value, spec.value_type, exc)


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside (restoring state in bulk).

    A restore makes millions of short-lived tuples, lists and dicts that hold no cycles;
    each few hundred allocations would start a collection that walks them, which made
    building py-lmdb's (key, value) pairs ~1.5x slower. Nested uses keep it off until the
    outermost one ends; a collector that was off stays off.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
