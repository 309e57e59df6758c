"""Operator (non-keyed) state: list, union list and broadcast state, and their redistribution.

Operator state belongs to a parallel instance, not to a key. How it is handed out when a job
is restored at another parallelism depends on how it was declared, exactly as Flink's
``RoundRobinOperatorStateRepartitioner`` does it:

* ``get_list_state`` (``SPLIT_DISTRIBUTE``): the elements of all old instances, concatenated
  in old-subtask order, are split into contiguous runs of ``n // p`` (the first ``n % p``
  instances of a round get one more; the round for the next state starts where the extra
  elements ran out, so small states do not all pile up on subtask 0). At unchanged
  parallelism every instance keeps its own elements.
* ``get_union_list_state`` (``UNION``): every new instance gets every element of every old
  instance (e.g. source offsets, from which each instance picks its share).
* ``get_broadcast_state`` (``BROADCAST``): a map that is the same on every instance; new
  instance ``i`` takes the copy of old instance ``i % old_parallelism`` (Flink's choice; the
  copies are identical when the broadcast side changed them identically).

Snapshots use the Arrow format of :mod:`flowrun.state.snapshot` with the operator schema (a
``mode`` column, null key group and key); list elements and broadcast values are typed
serializer bytes, broadcast keys canonical key bytes. :func:`redistribute` is a pure
function from the streams of the old instances to those of the new ones.

Example::

    >>> from flowrun.core.typeinfo import Types
    >>> from flowrun.state import ListStateDescriptor
    >>> olds = []
    >>> for elements in (["a", "b", "c"], ["d"]):
    ...     store = OperatorStateStore("src")
    ...     store.get_list_state(ListStateDescriptor("offsets", Types.STRING())).update(elements)
    ...     olds.append(store.snapshot())
    >>> news = redistribute(olds, 3)
    >>> for streams in news:
    ...     store = OperatorStateStore("src")
    ...     store.restore(streams)
    ...     print(store.get_list_state(ListStateDescriptor("offsets", Types.STRING())).get())
    ['a', 'b']
    ['c']
    ['d']
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from flowrun.core.typeinfo import TypeInformation

from .backends.base import StateMigrationError, fast_type_check
from .descriptors import ListStateDescriptor, MapStateDescriptor, check_compatible
from .serializers import StateTypeError, TypeSerializer, key_serializer_for, serializer_for
from .snapshot import StateMeta, StreamWriter, read_stream
from .state import BroadcastState, ListState

__all__ = [
    "BROADCAST",
    "SPLIT_DISTRIBUTE",
    "UNION",
    "OperatorBroadcastState",
    "OperatorListState",
    "OperatorStateStore",
    "redistribute",
]

SPLIT_DISTRIBUTE = "SPLIT_DISTRIBUTE"
UNION = "UNION"
BROADCAST = "BROADCAST"

_KIND_OF_MODE = {SPLIT_DISTRIBUTE: "list", UNION: "list", BROADCAST: "map"}
_GETTER_OF_MODE = {
    SPLIT_DISTRIBUTE: "get_list_state",
    UNION: "get_union_list_state",
    BROADCAST: "get_broadcast_state",
}


@dataclass
class _Restored:
    """Rows of one state restored before user code declared it (kept as bytes)."""

    meta: StateMeta
    values: list[bytes] = field(default_factory=list)
    user_keys: list[bytes] = field(default_factory=list)


def _type_repr(type_info: TypeInformation | None) -> str:
    return "" if type_info is None else repr(type_info)


class OperatorListState(ListState):
    """An operator's list state (even-split or union redistribution): a Python list."""

    def __init__(self, name: str, serializer: TypeSerializer, mode: str) -> None:
        self.name = name
        self.mode = mode
        self._serializer = serializer
        self._check = fast_type_check(serializer.type_info)
        self._elements: list[Any] = []

    def _validated(self, values: Any) -> list:
        if values is None:
            raise TypeError(f"list state {self.name!r}: the list of values must not be None")
        values = list(values)
        for value in values:
            self._validate(value)
        return values

    def _validate(self, value: Any) -> None:
        if value is None:
            raise TypeError(f"list state {self.name!r}: cannot add None to a ListState")
        if self._check is None or self._check(value):
            return
        self._serializer.serialize_checked(value, self.name, None)

    def get(self) -> list:
        return list(self._elements)

    def add(self, value: Any) -> None:
        self._validate(value)
        self._elements.append(value)

    def add_all(self, values: list) -> None:
        self._elements.extend(self._validated(values))

    def update(self, values: list) -> None:
        self._elements = self._validated(values)

    def clear(self) -> None:
        self._elements = []

    def __repr__(self) -> str:
        return f"<OperatorListState {self.name!r} {self.mode}: {len(self._elements)} elements>"


class OperatorBroadcastState(BroadcastState):
    """A broadcast state: one dict per instance, identical across instances by contract."""

    def __init__(
        self, name: str, key_serializer: TypeSerializer, value_serializer: TypeSerializer
    ) -> None:
        self.name = name
        self._key_serializer = key_serializer
        self._value_serializer = value_serializer
        self._key_check = fast_type_check(key_serializer.type_info)
        self._value_check = fast_type_check(value_serializer.type_info)
        self._map: dict[Any, Any] = {}

    def _validate(self, key: Any, value: Any) -> None:
        if self._key_check is not None and not self._key_check(key):
            try:
                self._key_serializer.serialize(key)
            except (TypeError, ValueError) as exc:
                raise StateTypeError(
                    self.name, key, key, self._key_serializer.type_info, exc
                ) from exc
        if value is not None and self._value_check is not None and not self._value_check(value):
            self._value_serializer.serialize_checked(value, self.name, key)

    def get(self, key: Any) -> Any:
        return self._map.get(key)

    def contains(self, key: Any) -> bool:
        return key in self._map

    def items(self) -> list[tuple[Any, Any]]:
        return list(self._map.items())

    def entries(self) -> list[tuple[Any, Any]]:
        return self.items()

    def keys(self) -> list[Any]:
        return list(self._map)

    def values(self) -> list[Any]:
        return list(self._map.values())

    def is_empty(self) -> bool:
        return not self._map

    def put(self, key: Any, value: Any) -> None:
        self._validate(key, value)
        self._map[key] = value

    def put_all(self, dict_value: dict) -> None:
        items = list(dict_value.items())
        for key, value in items:
            self._validate(key, value)
        self._map.update(items)

    def remove(self, key: Any) -> None:
        self._map.pop(key, None)

    def clear(self) -> None:
        self._map.clear()

    def __repr__(self) -> str:
        return f"<OperatorBroadcastState {self.name!r}: {len(self._map)} entries>"


class OperatorStateStore:
    """The operator state of one parallel instance (Java's ``OperatorStateStore``).

    ``restore`` takes the streams assigned to this instance (see :func:`redistribute`);
    states restored before user code declares them are kept as bytes and deserialized on
    declaration, when their type can be checked against the snapshot's.
    """

    def __init__(self, operator_id: str = "") -> None:
        self.operator_id = operator_id
        self._descriptors: dict[str, Any] = {}
        self._modes: dict[str, str] = {}
        self._lists: dict[str, OperatorListState] = {}
        self._broadcasts: dict[str, OperatorBroadcastState] = {}
        self._restored: dict[str, _Restored] = {}
        self.restored = False

    # -- declaration -------------------------------------------------------------------

    def get_list_state(self, state_descriptor: ListStateDescriptor) -> OperatorListState:
        """List state split evenly over the new instances on rescaling."""
        return self._list_state(state_descriptor, SPLIT_DISTRIBUTE)

    def get_union_list_state(self, state_descriptor: ListStateDescriptor) -> OperatorListState:
        """List state of which every instance gets the union of all elements on restore."""
        return self._list_state(state_descriptor, UNION)

    def get_broadcast_state(self, state_descriptor: MapStateDescriptor) -> OperatorBroadcastState:
        """The broadcast (map) state of ``state_descriptor``; same object on every call."""
        if not isinstance(state_descriptor, MapStateDescriptor):
            raise TypeError(f"broadcast state needs a MapStateDescriptor, got {state_descriptor!r}")
        name = self._declare(state_descriptor, BROADCAST)
        state = self._broadcasts.get(name)
        if state is None:
            key_type = state_descriptor.key_type_info
            value_type = state_descriptor.value_type_info
            state = OperatorBroadcastState(
                name, key_serializer_for(key_type), serializer_for(value_type)
            )
            restored = self._restored.pop(name, None)
            if restored is not None:
                _check_restored(restored.meta, name, _type_repr(value_type), _type_repr(key_type))
                decode_key = state._key_serializer.deserialize
                decode = state._value_serializer.deserialize
                for key_bytes, value_bytes in zip(restored.user_keys, restored.values, strict=True):
                    state._map[decode_key(key_bytes)] = decode(value_bytes)
            self._broadcasts[name] = state
        return state

    def _list_state(self, descriptor: ListStateDescriptor, mode: str) -> OperatorListState:
        if not isinstance(descriptor, ListStateDescriptor):
            raise TypeError(f"operator list state needs a ListStateDescriptor, got {descriptor!r}")
        name = self._declare(descriptor, mode)
        state = self._lists.get(name)
        if state is None:
            elem_type = descriptor.elem_type_info
            state = OperatorListState(name, serializer_for(elem_type), mode)
            restored = self._restored.pop(name, None)
            if restored is not None:
                _check_restored(restored.meta, name, _type_repr(elem_type), "")
                decode = state._serializer.deserialize
                state._elements = [decode(v) for v in restored.values]
            self._lists[name] = state
        return state

    def _declare(self, descriptor: Any, mode: str) -> str:
        name = descriptor.name
        if descriptor.ttl_config is not None:
            raise ValueError(
                f"operator state {name!r}: TTL is only supported for keyed state, as in Flink"
            )
        known = self._modes.get(name)
        restored = self._restored.get(name)
        if known is None and restored is not None:
            known = restored.meta.mode
        if known is not None and known != mode:
            raise StateMigrationError(
                f"operator state {name!r} is {known} state (declared with "
                f"{_GETTER_OF_MODE[known]}()) and cannot be requested with "
                f"{_GETTER_OF_MODE[mode]}()"
            )
        existing = self._descriptors.get(name)
        if existing is not None:
            check_compatible(existing, descriptor)
        else:
            self._descriptors[name] = descriptor
        self._modes[name] = mode
        return name

    def get_registered_state_names(self) -> set[str]:
        """Names of the list and union list states (declared or restored)."""
        names = set(self._lists)
        names.update(n for n, r in self._restored.items() if r.meta.mode != BROADCAST)
        return names

    def get_registered_broadcast_state_names(self) -> set[str]:
        """Names of the broadcast states (declared or restored)."""
        names = set(self._broadcasts)
        names.update(n for n, r in self._restored.items() if r.meta.mode == BROADCAST)
        return names

    # -- snapshot / restore ------------------------------------------------------------

    def snapshot(self) -> list[pa.Buffer]:
        """One stream per state (restored-but-undeclared states are carried along)."""
        streams = []
        for name, state in self._lists.items():
            descriptor = self._descriptors[name]
            meta = self._meta(name, state.mode, _type_repr(descriptor.elem_type_info), "")
            encode = state._serializer.serialize_checked
            values = [encode(v, name, None) for v in state._elements]
            streams.append(_write(meta, [None] * len(values), values))
        for name, state in self._broadcasts.items():
            descriptor = self._descriptors[name]
            meta = self._meta(
                name,
                BROADCAST,
                _type_repr(descriptor.value_type_info),
                _type_repr(descriptor.key_type_info),
            )
            encode_key = state._key_serializer.serialize
            encode = state._value_serializer.serialize_checked
            keys, values = [], []
            for key, value in state._map.items():
                keys.append(encode_key(key))
                values.append(encode(value, name, key))
            streams.append(_write(meta, keys, values))
        for restored in self._restored.values():
            user_keys = restored.user_keys or [None] * len(restored.values)
            streams.append(_write(restored.meta, user_keys, restored.values))
        return streams

    def _meta(self, name: str, mode: str, value_type: str, user_key_type: str) -> StateMeta:
        return StateMeta(
            operator_id=self.operator_id,
            state_name=name,
            state_kind=_KIND_OF_MODE[mode],
            value_type=value_type,
            user_key_type=user_key_type,
            mode=mode,
        )

    def restore(self, streams: Iterable[Any]) -> None:
        """Load the streams assigned to this instance (several per state are concatenated)."""
        for stream in streams:
            meta, table = read_stream(stream)
            if not meta.is_operator_state:
                raise StateMigrationError(
                    f"stream of state {meta.state_name!r} is keyed state; restore it into a "
                    f"keyed state backend"
                )
            self.restored = True
            values = table.column("value").to_pylist()
            user_keys = table.column("user_key").to_pylist() if meta.mode == BROADCAST else []
            name = meta.state_name
            self._restore_into(name, meta, values, user_keys)

    def _restore_into(
        self, name: str, meta: StateMeta, values: list[bytes], user_keys: list[bytes]
    ) -> None:
        declared = self._modes.get(name)
        if declared is not None and declared != meta.mode:
            raise StateMigrationError(
                f"operator state {name!r} was snapshotted as {meta.mode} state but is declared "
                f"as {declared} state"
            )
        if name in self._lists:
            state = self._lists[name]
            _check_restored(meta, name, _type_repr(state._serializer.type_info), "")
            decode = state._serializer.deserialize
            state._elements.extend(decode(v) for v in values)
        elif name in self._broadcasts:
            bstate = self._broadcasts[name]
            _check_restored(
                meta,
                name,
                _type_repr(bstate._value_serializer.type_info),
                _type_repr(bstate._key_serializer.type_info),
            )
            decode_key = bstate._key_serializer.deserialize
            decode = bstate._value_serializer.deserialize
            for key_bytes, value_bytes in zip(user_keys, values, strict=True):
                bstate._map[decode_key(key_bytes)] = decode(value_bytes)
        else:
            pending = self._restored.get(name)
            if pending is None:
                self._restored[name] = _Restored(meta, list(values), list(user_keys))
            else:
                _check_restored(meta, name, pending.meta.value_type, pending.meta.user_key_type)
                pending.values.extend(values)
                pending.user_keys.extend(user_keys)


def _check_restored(meta: StateMeta, name: str, value_type: str, user_key_type: str) -> None:
    if (meta.value_type, meta.user_key_type) != (value_type, user_key_type):
        raise StateMigrationError(
            f"operator state {name!r} was snapshotted with type "
            f"{meta.user_key_type + ' -> ' if meta.user_key_type else ''}{meta.value_type} and "
            f"is declared with {user_key_type + ' -> ' if user_key_type else ''}{value_type}"
        )


def _write(
    meta: StateMeta, user_keys: Sequence[bytes | None], values: Sequence[bytes]
) -> pa.Buffer:
    writer = StreamWriter(meta)
    step = 1 << 16
    for lo in range(0, len(values), step):
        chunk = values[lo : lo + step]
        nulls = [None] * len(chunk)
        writer.write_columns(nulls, nulls, user_keys[lo : lo + step], chunk)
    return writer.finish()


# ------------------------------------------------------------------------------------------
# Redistribution on restore
# ------------------------------------------------------------------------------------------


def redistribute(
    snapshots_per_old_subtask: Sequence[Sequence[Any]], new_parallelism: int
) -> list[list[pa.Buffer]]:
    """The operator state streams of each new instance, from those of each old instance.

    Pure: reads the old streams, returns new lists (passing union and broadcast streams
    through unchanged, re-slicing split list state). See the module docstring for the rules.
    """
    if new_parallelism <= 0:
        raise ValueError(f"new parallelism must be positive, got {new_parallelism}")
    old_parallelism = len(snapshots_per_old_subtask)
    parsed: list[list[tuple[Any, StateMeta, pa.Table]]] = []
    for streams in snapshots_per_old_subtask:
        entries = []
        for stream in streams:
            meta, table = read_stream(stream)
            if not meta.is_operator_state:
                raise StateMigrationError(
                    f"redistribute() handles operator state; {meta.state_name!r} is keyed state"
                )
            entries.append((stream, meta, table))
        parsed.append(entries)
    result: list[list[pa.Buffer]] = [[] for _ in range(new_parallelism)]
    unions = [s for entries in parsed for s, m, _ in entries if m.mode == UNION]
    if old_parallelism == new_parallelism:
        for index, entries in enumerate(parsed):
            result[index].extend(_buffer(s) for s, m, _ in entries if m.mode != UNION)
            result[index].extend(_buffer(s) for s in unions)
        return result

    for streams in result:
        streams.extend(_buffer(s) for s in unions)
    _split(parsed, new_parallelism, result)
    broadcasts: dict[str, list[Any]] = {}
    for entries in parsed:
        for stream, meta, _ in entries:
            if meta.mode == BROADCAST:
                broadcasts.setdefault(meta.state_name, []).append(stream)
    for index, streams in enumerate(result):
        for copies in broadcasts.values():
            streams.append(_buffer(copies[index % len(copies)]))
    return result


def _split(
    parsed: list[list[tuple[Any, StateMeta, pa.Table]]],
    new_parallelism: int,
    result: list[list[pa.Buffer]],
) -> None:
    """SPLIT_DISTRIBUTE: Flink's round-robin of contiguous runs, state by state."""
    by_name: dict[str, list[tuple[StateMeta, pa.Table]]] = {}
    for entries in parsed:
        for _, meta, table in entries:
            if meta.mode == SPLIT_DISTRIBUTE:
                by_name.setdefault(meta.state_name, []).append((meta, table))
    start_op = 0
    for name in sorted(by_name):
        parts = by_name[name]
        meta = parts[0][0]
        rows = pa.concat_tables([table for _, table in parts]) if parts else None
        total = rows.num_rows if rows is not None else 0
        base, remainder = divmod(total, new_parallelism)
        next_start = start_op
        offset = 0
        for i in range(new_parallelism):
            op = (i + start_op) % new_parallelism
            count = base
            if remainder > 0:
                count += 1
                remainder -= 1
            elif remainder == 0:
                next_start = op  # extra elements ran out: the next state starts here
                remainder -= 1
            writer = StreamWriter(meta)
            if count and rows is not None:
                writer.write_table(rows.slice(offset, count))
            offset += count
            result[op].append(writer.finish())
        start_op = next_start


def _buffer(stream: Any) -> pa.Buffer:
    if isinstance(stream, pa.Buffer):
        return stream
    if isinstance(stream, (bytes, bytearray, memoryview)):
        return pa.py_buffer(stream)
    meta, table = read_stream(stream)  # a file path: re-emit the rows as a buffer
    writer = StreamWriter(meta)
    writer.write_table(table)
    return writer.finish()
