"""Keyed state as Python objects in memory, organised per key group: ``HashMapStateBackend``.

Layout: per state, one dict per key group of the subtask's range (``tables[name][kg - start]``
maps key -> value), so a key-group range is a slice of that list and a snapshot of it is
direct. (Flink's heap backend nests the other way round, key group -> state; per-state lists
save one dict lookup on every access and keep the same property.)

Values are stored as the Python objects user code passes, never serialized on access: a
``ValueState`` read is one dict lookup. List state keeps a Python list per key, map state a
dict per key. With TTL every value / list element / map entry is stored as ``(value,
last_access_ms)``.

Restored rows are decoded lazily, one key group at a time: restoring keeps them as Arrow
record-batch slices per key group (``_pending``), and the first access to a key group --
:meth:`set_current_key`, a prepared batch (:meth:`prepare_keys`), the bulk reads and writes,
:meth:`keys` -- decodes its rows into its dicts. A restore then costs reading and checking the
files, not a Python object per row; a snapshot re-emits rows of untouched key groups as they
are. Invariant: the current key's key group, and every key group of the batch being
processed, are decoded; a key group with pending rows of a state has an empty dict for that
state (only rows restored before the state is declared are deferred, so they never meet
writes). States with TTL are decoded at once (their incremental cleanup walks the dicts).

Keys: a dict compares keys as Python does, and state keys compare as Flink's ``equals``
(and LMDB's key bytes) do -- ``1``, ``1.0`` and ``True`` are three keys, ``-0.0`` and ``0.0``
two, every NaN one key, numpy scalars are their Python values (see
:func:`~flowrun.state.serializers.key_serializer_for`). Keys of the common kinds (str,
bytes, int, None, tuples of them) are the same either way and are dict keys as they are;
any other key is stored under its canonical form (:func:`_dict_key_of`):
the decoding of its encoding when that is such a plain key, else a ``_StateKey`` that compares
by the encoded bytes. ``get_current_key()`` still returns the record's own key.

Type checks: a write is checked with a cheap predicate (:func:`~.base.fast_type_check`:
exact for basic types, a shallow arity/container check for composite ones); what it does not
accept goes through the serializer, which has the final word. Composite values are thus fully
validated when serialized, at snapshot time, where a mismatch raises ``StateTypeError``
naming the state and key. Values are kept by reference, as in Flink's heap backend: mutating
an object after ``update()`` mutates the state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from flowrun.core.typeinfo import TypeInformation

from ..key_groups import KeyBatch, KeyGroupRange, assign_to_key_group
from ..serializers import PLAIN_KEY_TYPES, dict_safe_keys
from ..snapshot import StreamWriter, filter_key_groups
from ..state import AggregatingState, ListState, MapState, ReducingState, ValueState
from ..ttl import TtlPolicy
from .base import (
    Clock,
    KeyedStateBackend,
    SnapshotHandle,
    StateBackend,
    StateSpec,
    aggregate_function_of,
    fast_type_check,
    gc_paused,
    reduce_function_of,
)

__all__ = ["HashMapKeyedStateBackend", "HashMapStateBackend"]

_FLUSH_ROWS = 1 << 16
#: keys of these types are their own dict key, alone or as the elements of a tuple
_PLAIN = PLAIN_KEY_TYPES
_all_plain = _PLAIN.issuperset  # one C call for a tuple's elements: map(type, key)
_MISSING = object()
_TS_BYTES = 8


class _StateKey:
    """A key whose Python equality is not its state-key equality, as a dict key: equal to
    another exactly when their encoded bytes are equal. ``key`` is the first object seen."""

    __slots__ = ("key", "encoded", "_hash")

    def __init__(self, key: Any, encoded: bytes) -> None:
        self.key = key
        self.encoded = encoded
        self._hash = hash(encoded)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return type(other) is _StateKey and other.encoded == self.encoded  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        return repr(self.key)


def _user_key(key: Any) -> Any:
    """The key a table holds, as user code sees it."""
    return key.key if type(key) is _StateKey else key


def _dict_key_of(serializer: Any, key: Any, encoded: bytes | None = None) -> Any:
    """The dict key of state key (or map user key) ``key`` under its key ``serializer``
    (see the module doc); ``encoded``: its bytes, if known. Raises what the serializer
    raises for a key it cannot encode."""
    kind = type(key)
    if kind in _PLAIN or (kind is tuple and _all_plain(map(type, key))):
        return key
    if encoded is None:
        encoded = serializer.serialize(key)
    if kind is float:
        return _StateKey(key, encoded)  # no other Python value encodes as a float does
    canonical = serializer.deserialize(encoded)
    kind = type(canonical)
    if kind in _PLAIN or (kind is tuple and _all_plain(map(type, canonical))):
        return canonical  # e.g. a numpy int: the plain key it equals
    return _StateKey(canonical, encoded)


def _user_items(stored: dict) -> list[tuple[Any, Any]]:
    """A map state's entries as user code sees them."""
    if dict_safe_keys(stored):
        return list(stored.items())
    return [(_user_key(key), value) for key, value in stored.items()]


class HashMapStateBackend(StateBackend):
    """Working state as Python objects in the subtask's memory (Flink's ``HashMapStateBackend``).

    Fastest access; state must fit in memory. Snapshots serialize it to the neutral format.
    """

    name = "hashmap"

    def create_keyed_backend(
        self,
        operator_id: str,
        key_group_range: KeyGroupRange,
        max_parallelism: int,
        key_type_info: TypeInformation | None = None,
        working_dir: str | None = None,
        clock: Clock | None = None,
    ) -> HashMapKeyedStateBackend:
        return HashMapKeyedStateBackend(
            operator_id, key_group_range, max_parallelism, key_type_info, working_dir, clock
        )

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self)

    def __hash__(self) -> int:
        return hash(type(self).__name__)


class HashMapKeyedStateBackend(KeyedStateBackend):
    """Heap keyed state of one operator subtask; see the module docstring for the layout."""

    def __init__(
        self,
        operator_id: str,
        key_group_range: KeyGroupRange,
        max_parallelism: int,
        key_type_info: TypeInformation | None = None,
        working_dir: str | None = None,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(
            operator_id, key_group_range, max_parallelism, key_type_info, working_dir, clock
        )
        self._start = key_group_range.start
        self._slots = len(key_group_range)
        self._slot = 0
        self._tables: dict[str, list[dict]] = {}
        self._raw: dict[str, list[pa.Table]] = {}  # restored rows of states not declared yet
        #: declared states' restored rows not decoded yet: name -> (spec, slot -> batches)
        self._pending: dict[str, tuple[StateSpec, dict[int, list[pa.RecordBatch]]]] = {}
        self._unloaded: set[int] = set()  #: slots with pending rows
        self._batch_groups: Any = None  #: key groups of the batch being processed
        self._record_hooks: list[Callable[[], None]] = []
        #: the current key's key in the state dicts (see :func:`_dict_key_of`)
        self._dict_key: Any = None

    # -- current key -------------------------------------------------------------------

    def set_current_key(self, key: Any, key_group: int | None = None) -> None:
        if key_group is None:
            key_group = assign_to_key_group(key, self.max_parallelism)
        slot = key_group - self._start
        if not 0 <= slot < self._slots:
            self._key_group_of(key, key_group)  # raises with the full explanation
        if self._unloaded and slot in self._unloaded:
            self._load_slot(slot)
        self._current_key = key
        kind = type(key)  # the common keys inline, no call
        if kind is str or kind is int or (kind is tuple and _all_plain(map(type, key))):
            self._dict_key = key
        else:
            self._dict_key = _dict_key_of(self.key_serializer, key)
        self._current_key_group = key_group
        self._slot = slot
        if self._record_hooks:
            for hook in self._record_hooks:
                hook()

    def prepare_keys(self, batch: KeyBatch) -> Iterable[Any] | None:
        if not dict_safe_keys(batch.keys):
            return None  # set_current_key per record: it finds each key's dict key
        tokens = super().prepare_keys(batch)
        self._batch_groups = batch.groups
        if tokens is not None and self._unloaded:
            self._load_slots(np.unique(batch.groups) - self._start)
        return tokens

    def set_prepared_key(self, key: Any, key_group: int, token: Any) -> None:
        # prepare_keys checked the batch's key groups and keys, and decoded their pending rows
        self._current_key = key
        self._dict_key = key
        self._current_key_group = key_group
        self._slot = key_group - self._start
        if self._record_hooks:
            for hook in self._record_hooks:
                hook()

    # -- bulk access -------------------------------------------------------------------

    def _slots_of(self, key_groups: dict) -> bool:
        groups = key_groups.values()
        return (
            bool(groups) and self._start <= min(groups) and max(groups) < self._start + self._slots
        )

    def read_values(self, state: Any, key_groups: dict) -> dict:
        if (
            type(state) is not HeapValueState
            or not self._slots_of(key_groups)
            or not dict_safe_keys(key_groups)
        ):
            return super().read_values(state, key_groups)
        if self._unloaded:
            self._load_slots(kg - self._start for kg in set(key_groups.values()))
        tables, start, out = state._groups, self._start, {}
        for key, key_group in key_groups.items():
            value = tables[key_group - start].get(key)
            if value is not None:
                out[key] = value
        return out

    def write_values(self, state: Any, values: dict, key_groups: dict) -> None:
        if (
            type(state) is not HeapValueState
            or not self._slots_of(key_groups)
            or not dict_safe_keys(key_groups)
        ):
            super().write_values(state, values, key_groups)
            return
        if self._unloaded:
            self._load_slots(kg - self._start for kg in set(key_groups.values()))
        tables, start, check = state._groups, self._start, state._check
        for key, value in values.items():
            key_group = key_groups[key]
            if value is None:
                tables[key_group - start].pop(key, None)
                continue
            if check is not None and not check(value):
                self.set_current_key(key, key_group)
                state._validate(value)  # raises StateTypeError naming state, key and value
            tables[key_group - start][key] = value

    # -- state objects -----------------------------------------------------------------

    def _create_state(self, spec: StateSpec, restored: StateSpec | None) -> Any:
        groups = self._tables.get(spec.name)
        if groups is None:
            groups = [{} for _ in range(self._slots)]
            self._tables[spec.name] = groups
        for rows in self._raw.pop(spec.name, ()):
            if spec.ttl is None:
                self._defer_rows(spec, rows)
            else:
                self._load_rows(spec, groups, rows)
        ttl = spec.ttl
        cls = (_TTL_CLASSES if ttl is not None else _CLASSES)[spec.kind]
        state = cls(self, spec, groups)
        if ttl is not None and ttl.incremental is not None and ttl.incremental[0] > 0:
            cleanup = _IncrementalCleanup(groups, spec.kind, ttl, ttl.incremental[0])
            state._cleanup = cleanup.step
            if ttl.incremental[1]:
                self._record_hooks.append(cleanup.step)
        return state

    # -- inspection --------------------------------------------------------------------

    def keys(self, state_name: str) -> Iterator[Any]:
        groups = self._tables.get(state_name)
        if groups is not None:
            self._load_slots(list(self._unloaded))
            for table in groups:
                yield from map(_user_key, list(table))
            return
        if state_name not in self._specs:
            raise KeyError(f"no state named {state_name!r} in operator {self.operator_id!r}")
        decode = self.key_serializer.deserialize
        for rows in self._raw.get(state_name, ()):
            seen: set[bytes] = set()
            for key_bytes in rows.column("key").to_pylist():
                if key_bytes not in seen:
                    seen.add(key_bytes)
                    yield decode(key_bytes)

    def entry_count(self, state_name: str) -> int:
        """Number of keys with an entry in ``state_name`` (tests, metrics)."""
        self._load_slots(list(self._unloaded))
        return sum(len(table) for table in self._tables.get(state_name, ()))

    # -- snapshots ---------------------------------------------------------------------

    def _snapshot_async(self, key_group_range: KeyGroupRange) -> SnapshotHandle:
        streams = [self._snapshot_state(spec, key_group_range) for spec in self._specs.values()]
        return SnapshotHandle(iter(streams))

    def _snapshot_state(self, spec: StateSpec, rng: KeyGroupRange) -> pa.Buffer:
        writer = StreamWriter(spec.meta(self, rng))
        if spec.name not in self._tables:  # restored, never declared: re-emit its rows
            for rows in self._raw.get(spec.name, ()):
                writer.write_table(filter_key_groups(rows, rng))
            return writer.finish()
        groups = self._tables[spec.name]
        pending = self._pending[spec.name][1] if spec.name in self._pending else {}
        encode_key = self.key_serializer.serialize
        encode_value = _value_encoder(spec)
        ttl = spec.ttl
        skip_expired = ttl is not None and ttl.full_snapshot
        now = ttl.clock() if ttl is not None else 0
        kind = spec.kind
        cols: tuple[list, list, list, list] = ([], [], [], [])
        kgs, keys, user_keys, values = cols
        plain_values = ttl is None and kind in ("value", "reducing", "aggregating")
        encode_plain = spec.value_serializer.serialize  # type: ignore[union-attr]
        for kg in range(rng.start, rng.end + 1) if len(rng) else ():
            table = groups[kg - self._start]
            restored = pending.get(kg - self._start)
            if restored:  # never decoded, so unchanged (and its dict is empty): as restored
                writer.write_columns(kgs, keys, user_keys, values)
                for col in cols:
                    col.clear()
                writer.write_table(pa.Table.from_batches(restored))
            if not table:
                continue
            if plain_values and dict_safe_keys(table):
                # The common case in bulk: C-level map() over the key group's dict. A failure
                # falls through to the loop below, which names the offending key.
                try:
                    key_chunk = list(map(encode_key, table))
                    value_chunk = list(map(encode_plain, table.values()))
                except (TypeError, ValueError):
                    pass
                else:
                    kgs.extend([kg] * len(key_chunk))
                    keys.extend(key_chunk)
                    user_keys.extend([None] * len(key_chunk))
                    values.extend(value_chunk)
                    if len(values) >= _FLUSH_ROWS:
                        writer.write_columns(kgs, keys, user_keys, values)
                        for col in cols:
                            col.clear()
                    continue
            for key, stored in table.items():
                if type(key) is _StateKey:
                    key_bytes = key.encoded
                    key = key.key
                else:
                    key_bytes = _encode_key(encode_key, spec, key)
                if kind == "list":
                    for element in stored:
                        if skip_expired and ttl.is_expired(element[1], now):  # type: ignore[union-attr]
                            continue
                        kgs.append(kg)
                        keys.append(key_bytes)
                        user_keys.append(None)
                        values.append(encode_value(element, key))
                elif kind == "map":
                    encode_user_key = spec.user_key_serializer.serialize  # type: ignore[union-attr]
                    for user_key, entry in stored.items():
                        if skip_expired and ttl.is_expired(entry[1], now):  # type: ignore[union-attr]
                            continue
                        kgs.append(kg)
                        keys.append(key_bytes)
                        user_keys.append(
                            user_key.encoded
                            if type(user_key) is _StateKey
                            else _encode_user_key(encode_user_key, spec, key, user_key)
                        )
                        values.append(encode_value(entry, key))
                else:
                    if skip_expired and ttl.is_expired(stored[1], now):  # type: ignore[union-attr]
                        continue
                    kgs.append(kg)
                    keys.append(key_bytes)
                    user_keys.append(None)
                    values.append(encode_value(stored, key))
                if len(values) >= _FLUSH_ROWS:
                    writer.write_columns(kgs, keys, user_keys, values)
                    for col in cols:
                        col.clear()
        writer.write_columns(kgs, keys, user_keys, values)
        return writer.finish()

    # -- restore -----------------------------------------------------------------------

    def _restore_rows(self, spec: StateSpec, rows: pa.Table) -> None:
        groups = self._tables.get(spec.name)
        if groups is None:
            self._raw.setdefault(spec.name, []).append(rows)
        else:
            # declared already (rare: restoring into a backend in use): decoded at once, over
            # whatever was restored before, as every row of a restore overwrites its key
            self._load_slots(list(self._unloaded))
            self._load_rows(spec, groups, rows)

    def _defer_rows(self, spec: StateSpec, rows: pa.Table) -> None:
        """Keep restored rows of a newly declared state per key group, to be decoded when the
        key group is first accessed (the current key's and batch's key groups at once)."""
        per_slot = self._pending.setdefault(spec.name, (spec, {}))[1]
        for slot, part in self._runs(rows.to_batches()):
            per_slot.setdefault(slot, []).append(part)
            self._unloaded.add(slot)
        active = [self._slot]
        if self._batch_groups is not None and len(self._batch_groups):
            active += (np.unique(self._batch_groups) - self._start).tolist()
        self._load_slots(active)

    def _runs(self, batches: Iterable[pa.RecordBatch]) -> Iterator[tuple[int, pa.RecordBatch]]:
        """``(slot, rows)`` per run of rows of one key group (zero-copy slices, in order)."""
        start = self._start
        for batch in batches:
            key_groups = batch.column(0).to_numpy()
            bounds = (np.flatnonzero(np.diff(key_groups)) + 1).tolist()
            for lo, hi in zip([0, *bounds], [*bounds, len(key_groups)], strict=True):
                if hi > lo:
                    yield int(key_groups[lo]) - start, batch.slice(lo, hi - lo)

    def _load_slots(self, slots: Iterable[int]) -> None:
        unloaded = self._unloaded
        for slot in slots:
            if slot in unloaded:
                self._load_slot(slot)

    def _load_slot(self, slot: int) -> None:
        """Decode the pending rows of key group ``start + slot`` into its dicts."""
        self._unloaded.discard(slot)
        for name, (spec, per_slot) in list(self._pending.items()):
            batches = per_slot.pop(slot, None)
            if not per_slot:
                del self._pending[name]
            if batches:
                self._load_runs(spec, self._tables[name], [(slot, b) for b in batches])

    def _load_rows(self, spec: StateSpec, groups: list[dict], rows: pa.Table) -> None:
        """Deserialize snapshot rows (any key groups of this backend) into their dicts."""
        self._load_runs(spec, groups, list(self._runs(rows.to_batches())))

    def _load_runs(
        self, spec: StateSpec, groups: list[dict], runs: list[tuple[int, pa.RecordBatch]]
    ) -> None:
        """Deserialize ``(slot, rows of that key group)`` runs into the per-key-group dicts."""
        with gc_paused():
            if spec.ttl is None and spec.kind in ("value", "reducing", "aggregating"):
                self._load_plain_values(spec, groups, runs)
            else:
                for slot, rows in runs:
                    self._load_any_rows(spec, groups[slot], rows)

    def _load_any_rows(self, spec: StateSpec, table: dict, rows: pa.RecordBatch) -> None:
        """Row by row: lists, maps, TTL."""
        key_serializer = self.key_serializer
        decode_key = _cached_decoder(key_serializer.deserialize)
        decode_value = spec.value_serializer.deserialize  # type: ignore[union-attr]
        ttl = spec.ttl is not None
        kind = spec.kind
        user_keys = rows.column(2).to_pylist() if kind == "map" else None
        decode_user_key = spec.user_key_serializer.deserialize if kind == "map" else None  # type: ignore[union-attr]
        for i, (key_bytes, value_bytes) in enumerate(
            zip(rows.column(1).to_pylist(), rows.column(3).to_pylist(), strict=True)
        ):
            key = _dict_key_of(key_serializer, decode_key(key_bytes), key_bytes)
            if ttl:
                stored: Any = (
                    decode_value(memoryview(value_bytes)[_TS_BYTES:]),
                    int.from_bytes(value_bytes[:_TS_BYTES], "big", signed=True),
                )
            else:
                stored = decode_value(value_bytes)
            if kind == "list":
                table.setdefault(key, []).append(stored)
            elif kind == "map":
                encoded = user_keys[i]
                user_key = _dict_key_of(
                    spec.user_key_serializer,
                    decode_user_key(encoded),  # type: ignore[misc]
                    encoded,
                )
                table.setdefault(key, {})[user_key] = stored
            else:
                table[key] = stored

    def _load_plain_values(
        self, spec: StateSpec, groups: list[dict], runs: list[tuple[int, pa.RecordBatch]]
    ) -> None:
        """One value per key, no TTL: keys and values decoded in bulk per run, then inserted
        with one ``dict.update`` per run."""
        decode_keys = self.key_serializer.deserialize_iter
        decode_values = spec.value_serializer.deserialize_iter  # type: ignore[union-attr]
        sizes: dict[int, int] = {}
        for slot, rows in runs:
            sizes[slot] = sizes.get(slot, 0) + rows.num_rows
        for slot, size in sizes.items():
            if not groups[slot]:
                groups[slot] = _presized_dict(size)
        for slot, rows in runs:
            keys = decode_keys(rows.column(1))
            if not dict_safe_keys(keys):
                serializer = self.key_serializer
                keys = [
                    _dict_key_of(serializer, key, encoded)
                    for key, encoded in zip(keys, rows.column(1).to_pylist(), strict=True)
                ]
            values = decode_values(rows.column(3))
            groups[slot].update(zip(keys, values, strict=True))  # presized: no rehashing

    # -- lifecycle ---------------------------------------------------------------------

    def close(self) -> None:
        super().close()

    def dispose(self) -> None:
        super().dispose()
        self._tables.clear()
        self._raw.clear()
        self._pending.clear()
        self._unloaded.clear()
        self._record_hooks.clear()


def _new_presized() -> Callable[[int], dict]:
    """CPython's ``_PyDict_NewPresized`` (through ``ctypes.pythonapi``, which holds the GIL),
    or plain ``{}`` where it is not available.

    Why: a key group restored with 78k keys otherwise grows its dict through 15 resizes, each
    rehashing every entry into freshly allocated memory -- ~6% of a 10^7-key restore. The
    result is an ordinary dict (CPython caps the presize at 128k slots; beyond it grows as
    usual). Private API, so any failure to find it falls back to ``{}``.
    """
    try:
        import ctypes

        new = ctypes.pythonapi._PyDict_NewPresized
    except (ImportError, AttributeError):  # another interpreter: plain dicts
        return lambda size: {}
    new.restype = ctypes.py_object
    new.argtypes = [ctypes.c_ssize_t]
    return new


#: ``_presized_dict(n)``: an empty dict with room for ``n`` entries
_presized_dict = _new_presized()


def _cached_decoder(decode: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    """Decode key bytes once per distinct key (list and map state repeat keys row by row)."""
    cache: dict[bytes, Any] = {}

    def cached(data: bytes) -> Any:
        value = cache.get(data, _MISSING)
        if value is _MISSING:
            if len(cache) > 100_000:
                cache.clear()
            value = cache[data] = decode(data)
        return value

    return cached


def _encode_key(encode: Callable[[Any], bytes], spec: StateSpec, key: Any) -> bytes:
    try:
        return encode(key)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"state {spec.name!r}: key {key!r} does not match the operator's key type: {exc}"
        ) from exc


def _encode_user_key(
    encode: Callable[[Any], bytes], spec: StateSpec, key: Any, user_key: Any
) -> bytes:
    try:
        return encode(user_key)
    except (TypeError, ValueError) as exc:
        from ..serializers import StateTypeError

        raise StateTypeError(spec.name, key, user_key, spec.user_key_type, exc) from exc


def _value_encoder(spec: StateSpec) -> Callable[[Any, Any], bytes]:
    """Stored object -> snapshot value bytes (TTL timestamp first when TTL is on)."""
    checked = spec.value_serializer.serialize_checked  # type: ignore[union-attr]
    name = spec.name
    if spec.ttl is None:
        return lambda stored, key: checked(stored, name, key)
    return lambda stored, key: (
        stored[1].to_bytes(_TS_BYTES, "big", signed=True) + checked(stored[0], name, key)
    )


# ------------------------------------------------------------------------------------------
# State objects
# ------------------------------------------------------------------------------------------


class _HeapState:
    """Shared plumbing: the backend (current key and slot), the per-key-group dicts."""

    def __init__(self, backend: HashMapKeyedStateBackend, spec: StateSpec, groups: list[dict]):
        self._backend = backend
        self._spec = spec
        self._groups = groups
        self._check = fast_type_check(spec.value_type)
        self._ttl: TtlPolicy | None = spec.ttl
        self._cleanup: Callable[[], None] | None = None
        ttl = spec.ttl
        self._return_expired = ttl is not None and _return_expired(ttl)
        self._refresh = ttl is not None and _refresh_on_read(ttl)

    def _table(self) -> dict:
        return self._groups[self._backend._slot]

    def _validate(self, value: Any) -> None:
        check = self._check
        if check is not None and not check(value):
            spec = self._spec
            spec.value_serializer.serialize_checked(  # type: ignore[union-attr]
                value, spec.name, self._backend._current_key
            )

    def clear(self) -> None:
        b = self._backend
        self._groups[b._slot].pop(b._dict_key, None)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._spec.name!r}>"


class HeapValueState(_HeapState, ValueState):
    def value(self) -> Any:
        b = self._backend
        return self._groups[b._slot].get(b._dict_key)

    def update(self, value: Any) -> None:
        b = self._backend
        if value is None:
            self._groups[b._slot].pop(b._dict_key, None)
            return
        check = self._check
        if check is not None and not check(value):
            self._validate(value)
        self._groups[b._slot][b._dict_key] = value


def _no_null_elements(spec: StateSpec, values: Any) -> list:
    if values is None:
        raise TypeError(f"list state {spec.name!r}: the list of values must not be None")
    values = list(values)
    if any(v is None for v in values):
        raise TypeError(f"list state {spec.name!r}: cannot add None to a ListState")
    return values


class HeapListState(_HeapState, ListState):
    def get(self) -> list:
        b = self._backend
        stored = self._groups[b._slot].get(b._dict_key)
        return list(stored) if stored else []

    def add(self, value: Any) -> None:
        if value is None:
            raise TypeError(f"list state {self._spec.name!r}: cannot add None to a ListState")
        self._validate(value)
        b = self._backend
        table = self._groups[b._slot]
        stored = table.get(b._dict_key)
        if stored is None:
            table[b._dict_key] = [value]
        else:
            stored.append(value)

    def add_all(self, values: list) -> None:
        values = _no_null_elements(self._spec, values)
        if not values:
            return
        for value in values:
            self._validate(value)
        b = self._backend
        self._groups[b._slot].setdefault(b._dict_key, []).extend(values)

    def update(self, values: list) -> None:
        values = _no_null_elements(self._spec, values)
        for value in values:
            self._validate(value)
        b = self._backend
        if values:
            self._groups[b._slot][b._dict_key] = values
        else:
            self._groups[b._slot].pop(b._dict_key, None)


class _HeapMapMixin(_HeapState):
    def _init_map(self) -> None:
        self._key_check = fast_type_check(self._spec.user_key_type)
        self._user_key_serializer = self._spec.user_key_serializer

    def _uk(self, user_key: Any) -> Any:
        """The dict key of ``user_key`` in the key's map (see :func:`_dict_key_of`)."""
        kind = type(user_key)
        if kind is str or kind is int:
            return user_key
        return _dict_key_of(self._user_key_serializer, user_key)

    def _validate_user_key(self, user_key: Any) -> None:
        check = self._key_check
        if check is not None and not check(user_key):
            spec = self._spec
            try:
                spec.user_key_serializer.serialize(user_key)  # type: ignore[union-attr]
            except (TypeError, ValueError) as exc:
                from ..serializers import StateTypeError

                raise StateTypeError(
                    spec.name, self._backend._current_key, user_key, spec.user_key_type, exc
                ) from exc

    def _validate_entry(self, user_key: Any, value: Any) -> None:
        self._validate_user_key(user_key)
        if value is not None:
            self._validate(value)


class HeapMapState(_HeapMapMixin, MapState):
    def __init__(self, backend: HashMapKeyedStateBackend, spec: StateSpec, groups: list[dict]):
        super().__init__(backend, spec, groups)
        self._init_map()

    def _map(self) -> dict | None:
        b = self._backend
        return self._groups[b._slot].get(b._dict_key)

    def get(self, key: Any) -> Any:
        stored = self._map()
        return None if stored is None else stored.get(self._uk(key))

    def put(self, key: Any, value: Any) -> None:
        self._validate_entry(key, value)
        b = self._backend
        table = self._groups[b._slot]
        stored = table.get(b._dict_key)
        if stored is None:
            table[b._dict_key] = {self._uk(key): value}
        else:
            stored[self._uk(key)] = value

    def put_all(self, dict_value: dict) -> None:
        items = list(dict_value.items())
        for key, value in items:
            self._validate_entry(key, value)
        if items:
            if not dict_safe_keys(dict_value):
                items = [(self._uk(key), value) for key, value in items]
            b = self._backend
            self._groups[b._slot].setdefault(b._dict_key, {}).update(items)

    def remove(self, key: Any) -> None:
        b = self._backend
        table = self._groups[b._slot]
        stored = table.get(b._dict_key)
        if stored is not None:
            stored.pop(self._uk(key), None)
            if not stored:
                del table[b._dict_key]

    def contains(self, key: Any) -> bool:
        stored = self._map()
        return stored is not None and self._uk(key) in stored

    def items(self) -> list[tuple[Any, Any]]:
        stored = self._map()
        return _user_items(stored) if stored else []

    def entries(self) -> list[tuple[Any, Any]]:
        return self.items()

    def keys(self) -> list[Any]:
        stored = self._map()
        if not stored:
            return []
        return list(stored) if dict_safe_keys(stored) else list(map(_user_key, stored))

    def values(self) -> list[Any]:
        stored = self._map()
        return list(stored.values()) if stored else []

    def is_empty(self) -> bool:
        return not self._map()


class HeapReducingState(_HeapState, ReducingState):
    def __init__(self, backend: HashMapKeyedStateBackend, spec: StateSpec, groups: list[dict]):
        super().__init__(backend, spec, groups)
        self._reduce = reduce_function_of(spec.descriptor)

    def get(self) -> Any:
        b = self._backend
        return self._groups[b._slot].get(b._dict_key)

    def add(self, value: Any) -> None:
        b = self._backend
        table = self._groups[b._slot]
        if value is None:  # as Flink's heap backend: adding null clears
            table.pop(b._dict_key, None)
            return
        current = table.get(b._dict_key)
        result = value if current is None else self._reduce(current, value)
        self._validate(result)
        table[b._dict_key] = result


class HeapAggregatingState(_HeapState, AggregatingState):
    def __init__(self, backend: HashMapKeyedStateBackend, spec: StateSpec, groups: list[dict]):
        super().__init__(backend, spec, groups)
        self._agg = aggregate_function_of(spec.descriptor)

    def get(self) -> Any:
        b = self._backend
        acc = self._groups[b._slot].get(b._dict_key)
        return None if acc is None else self._agg.get_result(acc)

    def add(self, value: Any) -> None:
        b = self._backend
        table = self._groups[b._slot]
        if value is None:  # as Flink's heap backend: adding null clears
            table.pop(b._dict_key, None)
            return
        acc = table.get(b._dict_key)
        if acc is None:
            acc = self._agg.create_accumulator()
        acc = self._agg.add(value, acc)
        self._validate(acc)
        table[b._dict_key] = acc


# ------------------------------------------------------------------------------------------
# TTL: every value / element / entry stored as (value, last_access_ms)
# ------------------------------------------------------------------------------------------


class _HeapTtlMixin(_HeapState):
    """Flink's TTL decorators over objects: expired entries are dropped when they are read."""

    def _now(self) -> int:
        return self._ttl.clock()  # type: ignore[union-attr]

    def _touch(self) -> None:
        """Every state access: one incremental cleanup step when configured."""
        if self._cleanup is not None:
            self._cleanup()

    def _read_cell(self, table: dict, key: Any) -> Any:
        """The value of a (value, ts) cell under TTL rules; ``_MISSING`` when not visible."""
        cell = table.get(key)
        if cell is None:
            return _MISSING
        value, ts = cell
        ttl = self._ttl
        now = ttl.clock()  # type: ignore[union-attr]
        if ts + ttl.ttl_ms <= now:  # type: ignore[union-attr]
            del table[key]
            return value if self._return_expired else _MISSING
        if self._refresh and ts != now:
            table[key] = (value, now)
        return value

    def _base_for_add(self, table: dict, key: Any) -> Any:
        """Current value to fold into (``_MISSING``: start afresh), as Flink's TTL reduce."""
        cell = table.get(key)
        if cell is None:
            return _MISSING
        value, ts = cell
        ttl = self._ttl
        if not self._return_expired and ttl.is_expired(ts):  # type: ignore[union-attr]
            return _MISSING
        return value


def _return_expired(ttl: TtlPolicy) -> bool:
    return ttl.visibility.name == "ReturnExpiredIfNotCleanedUp"


def _refresh_on_read(ttl: TtlPolicy) -> bool:
    return ttl.update_type.name == "OnReadAndWrite"


class HeapTtlValueState(_HeapTtlMixin, ValueState):
    def value(self) -> Any:
        self._touch()
        b = self._backend
        value = self._read_cell(self._groups[b._slot], b._dict_key)
        return None if value is _MISSING else value

    def update(self, value: Any) -> None:
        self._touch()
        b = self._backend
        if value is None:
            self._groups[b._slot].pop(b._dict_key, None)
            return
        self._validate(value)
        self._groups[b._slot][b._dict_key] = (value, self._now())

    def clear(self) -> None:
        self._touch()
        super().clear()


class HeapTtlListState(_HeapTtlMixin, ListState):
    def get(self) -> list:
        self._touch()
        b = self._backend
        table = self._groups[b._slot]
        stored = table.get(b._dict_key)
        if not stored:
            return []
        ttl = self._ttl
        now = self._now()
        return_expired = self._return_expired
        refresh = self._refresh
        expiry = now - ttl.ttl_ms  # type: ignore[union-attr]
        visible = []
        keep = []
        changed = False
        for element in stored:
            value, ts = element
            if ts <= expiry:
                changed = True
                if return_expired:
                    visible.append(value)
                continue
            visible.append(value)
            if refresh and ts != now:
                changed = True
                keep.append((value, now))
            else:
                keep.append(element)
        if changed:
            if keep:
                table[b._dict_key] = keep
            else:
                del table[b._dict_key]
        return visible

    def add(self, value: Any) -> None:
        self._touch()
        if value is None:
            raise TypeError(f"list state {self._spec.name!r}: cannot add None to a ListState")
        self._validate(value)
        b = self._backend
        self._groups[b._slot].setdefault(b._dict_key, []).append((value, self._now()))

    def add_all(self, values: list) -> None:
        self._touch()
        values = _no_null_elements(self._spec, values)
        for value in values:
            self._validate(value)
        if values:
            now = self._now()
            b = self._backend
            self._groups[b._slot].setdefault(b._dict_key, []).extend(
                (value, now) for value in values
            )

    def update(self, values: list) -> None:
        self._touch()
        values = _no_null_elements(self._spec, values)
        for value in values:
            self._validate(value)
        b = self._backend
        if values:
            now = self._now()
            self._groups[b._slot][b._dict_key] = [(value, now) for value in values]
        else:
            self._groups[b._slot].pop(b._dict_key, None)

    def clear(self) -> None:
        self._touch()
        super().clear()


class HeapTtlMapState(_HeapTtlMixin, _HeapMapMixin, MapState):
    def __init__(self, backend: HashMapKeyedStateBackend, spec: StateSpec, groups: list[dict]):
        super().__init__(backend, spec, groups)
        self._init_map()

    def _map(self) -> dict | None:
        b = self._backend
        return self._groups[b._slot].get(b._dict_key)

    def _drop_if_empty(self, stored: dict) -> None:
        if not stored:
            b = self._backend
            self._groups[b._slot].pop(b._dict_key, None)

    def _entry(self, key: Any) -> Any:
        self._touch()
        stored = self._map()
        if stored is None:
            return _MISSING
        value = self._read_cell(stored, self._uk(key))
        self._drop_if_empty(stored)
        return value

    def get(self, key: Any) -> Any:
        value = self._entry(key)
        return None if value is _MISSING else value

    def contains(self, key: Any) -> bool:
        return self._entry(key) is not _MISSING

    def put(self, key: Any, value: Any) -> None:
        self._touch()
        self._validate_entry(key, value)
        b = self._backend
        self._groups[b._slot].setdefault(b._dict_key, {})[self._uk(key)] = (value, self._now())

    def put_all(self, dict_value: dict) -> None:
        self._touch()
        items = list(dict_value.items())
        for key, value in items:
            self._validate_entry(key, value)
        if items:
            now = self._now()
            b = self._backend
            uk = self._uk
            self._groups[b._slot].setdefault(b._dict_key, {}).update(
                (uk(key), (value, now)) for key, value in items
            )

    def remove(self, key: Any) -> None:
        self._touch()
        stored = self._map()
        if stored is not None:
            stored.pop(self._uk(key), None)
            self._drop_if_empty(stored)

    def items(self) -> list[tuple[Any, Any]]:
        self._touch()
        stored = self._map()
        if not stored:
            return []
        ttl = self._ttl
        now = self._now()
        return_expired = self._return_expired
        refresh = self._refresh
        expiry = now - ttl.ttl_ms  # type: ignore[union-attr]
        out = []
        for key, (value, ts) in list(stored.items()):
            if ts <= expiry:
                del stored[key]
                if return_expired:
                    out.append((_user_key(key), value))
                continue
            if refresh and ts != now:
                stored[key] = (value, now)
            out.append((_user_key(key), value))
        self._drop_if_empty(stored)
        return out

    def entries(self) -> list[tuple[Any, Any]]:
        return self.items()

    def keys(self) -> list[Any]:
        return [key for key, _ in self.items()]

    def values(self) -> list[Any]:
        return [value for _, value in self.items()]

    def is_empty(self) -> bool:
        return not self.items()

    def clear(self) -> None:
        self._touch()
        super().clear()


class HeapTtlReducingState(_HeapTtlMixin, ReducingState):
    def __init__(self, backend: HashMapKeyedStateBackend, spec: StateSpec, groups: list[dict]):
        super().__init__(backend, spec, groups)
        self._reduce = reduce_function_of(spec.descriptor)

    def get(self) -> Any:
        self._touch()
        b = self._backend
        value = self._read_cell(self._groups[b._slot], b._dict_key)
        return None if value is _MISSING else value

    def add(self, value: Any) -> None:
        self._touch()
        b = self._backend
        table = self._groups[b._slot]
        if value is None:
            table.pop(b._dict_key, None)
            return
        current = self._base_for_add(table, b._dict_key)
        result = value if current is _MISSING else self._reduce(current, value)
        self._validate(result)
        table[b._dict_key] = (result, self._now())

    def clear(self) -> None:
        self._touch()
        super().clear()


class HeapTtlAggregatingState(_HeapTtlMixin, AggregatingState):
    def __init__(self, backend: HashMapKeyedStateBackend, spec: StateSpec, groups: list[dict]):
        super().__init__(backend, spec, groups)
        self._agg = aggregate_function_of(spec.descriptor)

    def get(self) -> Any:
        self._touch()
        b = self._backend
        acc = self._read_cell(self._groups[b._slot], b._dict_key)
        return None if acc is _MISSING else self._agg.get_result(acc)

    def add(self, value: Any) -> None:
        self._touch()
        b = self._backend
        table = self._groups[b._slot]
        if value is None:
            table.pop(b._dict_key, None)
            return
        acc = self._base_for_add(table, b._dict_key)
        if acc is _MISSING:
            acc = self._agg.create_accumulator()
        acc = self._agg.add(value, acc)
        self._validate(acc)
        table[b._dict_key] = (acc, self._now())

    def clear(self) -> None:
        self._touch()
        super().clear()


class _IncrementalCleanup:
    """Flink's incremental TTL cleanup: each step checks the next ``size`` keys of a state.

    A cursor walks the key groups round-robin; the keys of the key group under the cursor
    are copied into a list when the cursor enters it (dicts must not change size while
    iterated, and user code changes them between steps).
    """

    def __init__(self, groups: list[dict], kind: str, ttl: TtlPolicy, size: int) -> None:
        self._groups = groups
        self._kind = kind
        self._ttl = ttl
        self._size = size
        self._slot = -1
        self._keys: list = []
        self._pos = 0

    def step(self) -> None:
        budget = self._size
        groups = self._groups
        entered = 0
        expiry = self._ttl.clock() - self._ttl.ttl_ms
        while budget > 0:
            if self._pos >= len(self._keys):
                entered += 1
                if entered > len(groups):
                    return  # one full round in this step: fewer keys than the budget
                self._slot = (self._slot + 1) % len(groups)
                self._keys = list(groups[self._slot])
                self._pos = 0
                continue
            key = self._keys[self._pos]
            self._pos += 1
            budget -= 1
            self._check(groups[self._slot], key, expiry)

    def _check(self, table: dict, key: Any, expiry: int) -> None:
        stored = table.get(key)
        if stored is None:
            return
        if self._kind == "list":
            keep = [element for element in stored if element[1] > expiry]
            if not keep:
                del table[key]
            elif len(keep) != len(stored):
                table[key] = keep
        elif self._kind == "map":
            for user_key in [k for k, entry in stored.items() if entry[1] <= expiry]:
                del stored[user_key]
            if not stored:
                del table[key]
        elif stored[1] <= expiry:
            del table[key]


_CLASSES: dict[str, type] = {
    "value": HeapValueState,
    "list": HeapListState,
    "map": HeapMapState,
    "reducing": HeapReducingState,
    "aggregating": HeapAggregatingState,
}
_TTL_CLASSES: dict[str, type] = {
    "value": HeapTtlValueState,
    "list": HeapTtlListState,
    "map": HeapTtlMapState,
    "reducing": HeapTtlReducingState,
    "aggregating": HeapTtlAggregatingState,
}
