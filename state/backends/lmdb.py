"""Keyed state in an embedded LMDB environment per operator subtask: ``EmbeddedLmdbStateBackend``.

State lives in a memory-mapped B+tree file, so it may be larger than memory: the pages are
file-backed, and the kernel writes them back and reclaims them under memory pressure.

**Layout.** One named database holds every state of the subtask. A storage key is::

    key_group (2 bytes BE) | state id (2 bytes BE) | len(key) (2 bytes BE) | key bytes | suffix

with the key bytes from ``key_serializer_for(key_type)`` and ``suffix`` empty for value,
reducing and aggregating state, the canonical map-key bytes for map state, and an 8-byte
sequence number for list state: every list element is its own entry (``add`` is one put, not
a read-modify-write of the whole list, and each element carries its own TTL timestamp). The
length field makes the key part prefix-free, so "all entries of this key" is a prefix scan,
and key groups lead, so a key-group range is one contiguous cursor scan. Values are the typed
serializer's bytes, with the 8-byte TTL timestamp in front when TTL is on: exactly the bytes
of the snapshot format, so snapshots copy them without decoding.

**Transactions.** The runtime brackets every input batch with ``begin_batch``/``end_batch``;
all reads and writes in between use one write transaction (reads see the batch's own
writes), committed at ``end_batch`` and after a number of writes that bounds the replay log
below (see ``_txn_writes``). Point reads and writes go through the transaction's cursor while the
tree is small (``update()`` after ``value()`` of the same key then finds the cursor on the
right leaf page, with no search from the root), and through the transaction itself beyond
that, where the reused cursor measured slower (see ``_begin``). ``sync``/``metasync`` are
off: durability comes from checkpoints, never from LMDB's fsync; a crashed subtask's
environment is discarded and rebuilt from a snapshot.

**Map growth.** LMDB needs the map size up front. When a write hits ``MapFullError`` the
transaction is dead, so every write of the open transaction is also kept in a replay log;
on a full map the backend aborts, doubles the map (``env.set_mapsize``), replays the log into
a fresh transaction and retries: nothing written in the batch is lost, and no caller ever
sees ``MapFullError``.

**Disk full.** ``writemap`` (pages written straight into the shared mapping: 1.5x faster
read-modify-write on random keys than ``write()``-based commits, measured) turns a full disk
into a SIGBUS when a dirty page cannot be backed. So the data file is ``posix_fallocate``-d to
the full map size before the map is (re)sized: a full disk surfaces there as a clear
:class:`~.base.StateBackendError` naming the directory, while everything committed before
stays readable.

**Snapshots** come from an MVCC read transaction: :meth:`snapshot_async` commits the batch,
opens a read transaction (the synchronous part) and produces the Arrow streams from it later;
writes made after that point are invisible to it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import struct
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from itertools import repeat
from typing import Any

import lmdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flowrun.core.typeinfo import TypeInformation

from ..key_groups import KeyBatch, KeyGroupRange, assign_to_key_group
from ..serializers import StateTypeError
from ..snapshot import StateMeta, StreamWriter
from ..state import AggregatingState, ListState, MapState, ReducingState, ValueState
from ..ttl import TtlPolicy
from .background import BackgroundCall
from .base import (
    Clock,
    KeyedStateBackend,
    SnapshotHandle,
    StateBackend,
    StateBackendError,
    StateSpec,
    aggregate_function_of,
    reduce_function_of,
)
from .lmdb_pages import (
    PAGE_SIZE,
    BinaryRows,
    FixedRows,
    Rows,
    Unfit,
    binary_data,
    uniform_width,
    write_environment,
)

__all__ = ["DEFAULT_MAP_SIZE", "EmbeddedLmdbStateBackend", "LmdbKeyedStateBackend"]

DEFAULT_MAP_SIZE = 32 << 20
"""Initial map size per environment; it doubles whenever it fills up."""

_MAX_GROWTH_STEP = 4 << 30  # beyond this, grow linearly: doubling 64 GiB would reserve 64 more
_KEY_CACHE_SIZE = 65_536  # encoded str keys remembered by set_current_key
_MAX_TXN_WRITES = 100_000  # commit mid-batch after this many writes: bounds the replay log
_MIN_TXN_WRITES = 8_192  # ... or after this many on a small tree (see _txn_writes)
_TXN_WRITES_PER_PAGE = 64  # a commit re-copies a page at most once per this many writes
_CURSOR_MAX_PAGES = 1024  # point ops through a cursor while the tree is at most this (4 MiB)
_FORMAT = b"flowrun-lmdb-keyed-state/1"
_STATE_DB = b"flowrun-state"
_META_DB = b"flowrun-meta"
_FORMAT_KEY = b"\x00format"
_HEADER = 6  # key group, state id, key length
_SEQ_BYTES = 8
_RANGE = object()  # replay-log marker: delete every key with this prefix
_DISK_FULL = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}
_FLUSH_ROWS = 1 << 16
_MAX_KEY_BYTES = 511 - _HEADER - _SEQ_BYTES  # LMDB's key limit, less header and list suffix
_KG_BYTES = tuple(kg.to_bytes(2, "big") for kg in range(1 << 15))
_SIZE_BYTES = tuple(n.to_bytes(2, "big") for n in range(_MAX_KEY_BYTES + 1))
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


class EmbeddedLmdbStateBackend(StateBackend):
    """Working state in an embedded LMDB environment per operator subtask (the default).

    ``path``: base directory of the environments (default: the job's working directory, or a
    temporary directory). ``map_size``: initial map size in bytes (grows on demand).
    ``keep_on_close``: leave the environment files in place on ``dispose()`` (for inspection).
    """

    name = "lmdb"

    def __init__(
        self,
        path: str | None = None,
        map_size: int = DEFAULT_MAP_SIZE,
        keep_on_close: bool = False,
    ) -> None:
        if map_size <= 0:
            raise ValueError(f"map_size must be positive, got {map_size}")
        self.path = None if path is None else os.fspath(path)
        self.map_size = int(map_size)
        self.keep_on_close = bool(keep_on_close)

    def create_keyed_backend(
        self,
        operator_id: str,
        key_group_range: KeyGroupRange,
        max_parallelism: int,
        key_type_info: TypeInformation | None = None,
        working_dir: str | None = None,
        clock: Clock | None = None,
    ) -> LmdbKeyedStateBackend:
        base = self.path or working_dir
        temporary = base is None
        if temporary:
            base = tempfile.mkdtemp(prefix="flowrun-lmdb-")
        name = f"lmdb-{_UNSAFE.sub('_', str(operator_id))[:100]}-kg{key_group_range.start}"
        name += f"-{key_group_range.end}"
        return LmdbKeyedStateBackend(
            operator_id,
            key_group_range,
            max_parallelism,
            key_type_info,
            working_dir,
            clock,
            directory=os.path.join(base, name),  # type: ignore[arg-type]
            map_size=self.map_size,
            keep_on_close=self.keep_on_close,
            remove_parent=base if temporary else None,
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EmbeddedLmdbStateBackend) and (
            other.path,
            other.map_size,
            other.keep_on_close,
        ) == (self.path, self.map_size, self.keep_on_close)

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.path, self.map_size, self.keep_on_close))

    def __repr__(self) -> str:
        return (
            f"EmbeddedLmdbStateBackend(path={self.path!r}, map_size={self.map_size}, "
            f"keep_on_close={self.keep_on_close})"
        )


class LmdbKeyedStateBackend(KeyedStateBackend):
    """Keyed state of one operator subtask in its own LMDB environment (see module docs)."""

    def __init__(
        self,
        operator_id: str,
        key_group_range: KeyGroupRange,
        max_parallelism: int,
        key_type_info: TypeInformation | None = None,
        working_dir: str | None = None,
        clock: Clock | None = None,
        *,
        directory: str,
        map_size: int = DEFAULT_MAP_SIZE,
        keep_on_close: bool = False,
        remove_parent: str | None = None,
    ) -> None:
        super().__init__(
            operator_id, key_group_range, max_parallelism, key_type_info, working_dir, clock
        )
        self.directory = os.path.abspath(directory)
        self.keep_on_close = keep_on_close
        self._remove_parent = remove_parent
        self._txn: lmdb.Transaction | None = None
        #: what point reads and writes go through: the write transaction's cursor or the
        #: transaction itself (both have ``get(key)`` and ``put(key, value)``); see _begin
        self._point: lmdb.Cursor | lmdb.Transaction | None = None
        # replay log of the open transaction, flat: key, value, key, value... (no tuple per
        # write, so nothing in it is tracked by the cyclic GC)
        self._log: list[Any] = []
        #: log entries (two per write) after which the open transaction commits; see _begin
        self._log_cap = 2 * _MAX_TXN_WRITES
        self._depth = 0
        self._seq = 0
        self._sids: dict[str, bytes] = {}
        self._handles: set[SnapshotHandle] = set()
        self._bulk: list[tuple[pa.Array, pa.Array]] | None = None  #: rows of a bulk restore
        self._sweep_policies: dict[bytes, TtlPolicy] = {}
        self._sweep_every = 0
        self._sweep_count = 0
        self._sweep_from = b""
        self._klp = b""
        self._kg_start = key_group_range.start
        self._kg_end = key_group_range.end
        self._serialize_key = self.key_serializer.serialize
        self._klp_cache: dict[str, bytes] = {}
        layout = self.key_serializer.int_layout
        self._int_keys = None if layout is None else _IntKeys(*layout)
        self.grow_count = 0
        self._env = self._open_env(map_size)
        self._db = self._env.open_db(_STATE_DB)
        self._meta_db = self._env.open_db(_META_DB)
        self._put_meta(_FORMAT_KEY, _FORMAT)
        info = {
            "operator_id": self.operator_id,
            "key_group_range": [key_group_range.start, key_group_range.end],
            "max_parallelism": max_parallelism,
            "key_type": self.key_type_repr,
        }
        self._put_meta(b"\x00operator", json.dumps(info).encode())
        self._commit()

    # -- environment -------------------------------------------------------------------

    def _open_env(self, map_size: int) -> lmdb.Environment:
        """Open a fresh environment; refuse directories that are not ours to overwrite."""
        path = self.directory
        if os.path.lexists(path):
            if not os.path.isdir(path):
                raise StateBackendError(f"LMDB state path {path} exists and is not a directory")
            entries = set(os.listdir(path))
            if entries:
                if "data.mdb" not in entries:
                    raise StateBackendError(
                        f"LMDB state directory {path} is not empty and holds no LMDB "
                        f"environment ({', '.join(sorted(entries)[:5])}); refusing to use it"
                    )
                self._wipe_own_env(path)
        os.makedirs(path, exist_ok=True)
        env = self._lmdb_open(path, map_size)
        try:
            self._reserve(env, env.info()["map_size"])
        except BaseException:
            env.close()
            raise
        return env

    def _lmdb_open(self, path: str, map_size: int) -> lmdb.Environment:
        try:
            return lmdb.open(
                path,
                map_size=map_size,
                subdir=True,
                writemap=True,
                metasync=False,
                sync=False,
                map_async=True,
                readahead=False,
                meminit=False,
                max_dbs=2,
                max_spare_txns=2,
                lock=True,
            )
        except lmdb.Error as exc:
            raise StateBackendError(
                f"cannot open LMDB state directory {path}: {exc} (the data file is corrupt or "
                f"was written by an incompatible LMDB); remove the directory to start afresh"
            ) from exc

    def _wipe_own_env(self, path: str) -> None:
        """An environment left by an earlier attempt of this subtask: empty it.

        Working state never outlives its process (recovery restores from a checkpoint), so
        an old environment of ours is cleared. Anything else is refused, not overwritten.
        """
        env = self._lmdb_open(path, DEFAULT_MAP_SIZE)
        try:
            try:
                meta = env.open_db(_META_DB, create=False)
                with env.begin(db=meta) as txn:
                    marker = txn.get(_FORMAT_KEY)
            except lmdb.Error:
                marker = None
            if marker != _FORMAT:
                raise StateBackendError(
                    f"LMDB state directory {path} holds an LMDB environment that flowrun did "
                    f"not create (no {_FORMAT.decode()} marker); refusing to overwrite it"
                )
            with env.begin(write=True) as txn:
                for name in (_STATE_DB, _META_DB):
                    txn.drop(env.open_db(name, txn=txn), delete=False)
        except lmdb.Error as exc:
            raise StateBackendError(f"cannot reuse LMDB state directory {path}: {exc}") from exc
        finally:
            env.close()

    def _reserve(self, env: lmdb.Environment, size: int) -> None:
        """Allocate disk blocks for the whole map, so a full disk is an error, not a SIGBUS."""
        data_file = os.path.join(self.directory, "data.mdb")
        try:
            fd = os.open(data_file, os.O_RDWR)
        except OSError as exc:
            raise StateBackendError(f"cannot open {data_file}: {exc}") from exc
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError as exc:
            if exc.errno in _DISK_FULL:
                raise StateBackendError(
                    f"no space left for keyed state in {self.directory}: cannot reserve "
                    f"{size / (1 << 20):.0f} MiB for the LMDB map ({exc.strerror}); state "
                    f"committed so far is intact"
                ) from exc
            if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise StateBackendError(f"cannot reserve space in {data_file}: {exc}") from exc
            # file systems without fallocate: nothing to reserve, writes take their chances
        finally:
            os.close(fd)

    @property
    def map_size(self) -> int:
        return self._env.info()["map_size"]

    # -- transactions ------------------------------------------------------------------

    def _begin(self) -> lmdb.Transaction:
        self._check_open()
        txn = self._txn = self._env.begin(write=True, db=self._db)
        # Small tree: a cursor, so that a put right after a get of the same key finds the
        # leaf page without a search from the root (3*10^4 keys: 1.50 against 1.63 us per
        # read-modify-write). Large tree: the transaction, whose get/put use a fresh cursor
        # each; measured there the reused cursor is slower (10^6 keys: 3.5 against 3.0 us,
        # 5*10^6: 4.2 against 3.9 us); the two are even at about 10^5 keys, 1,000 pages.
        stat = txn.stat(self._db)
        pages = stat["branch_pages"] + stat["leaf_pages"] + stat["overflow_pages"]
        self._point = txn.cursor() if pages <= _CURSOR_MAX_PAGES else txn
        self._log_cap = 2 * _txn_writes(pages)
        return txn

    def _point_ops(self) -> lmdb.Cursor | lmdb.Transaction:
        """What point reads and writes go through (the transaction begun if need be)."""
        if self._txn is None:
            self._begin()
        return self._point  # type: ignore[return-value]

    def begin_batch(self) -> None:
        self._depth += 1

    def end_batch(self) -> None:
        if self._depth > 0:
            self._depth -= 1
        if self._depth == 0:
            self._commit()

    def _put(self, key: bytes, value: bytes) -> None:
        try:
            (self._point or self._point_ops()).put(key, value)
        except lmdb.Error as exc:
            self._put_retry(key, value, exc)
            return
        log = self._log
        log.append(key)
        log.append(value)
        if len(log) >= self._log_cap:
            self._commit()

    def _put_retry(self, key: bytes, value: bytes, exc: lmdb.Error) -> None:
        """A put failed: grow a full map (and replay) and retry, or explain the failure."""
        if isinstance(exc, lmdb.BadValsizeError):
            raise self._too_long(key) from exc
        if not isinstance(exc, lmdb.MapFullError):
            raise StateBackendError(f"keyed state write failed in {self.directory}: {exc}") from exc
        self._grow()
        self._put(key, value)

    def _delete(self, key: bytes) -> None:
        txn = self._txn or self._begin()
        try:
            txn.delete(key)
        except lmdb.MapFullError:
            self._grow()
            return self._delete(key)
        except lmdb.BadValsizeError:
            return  # too long to have been stored
        self._log += (key, None)

    def _delete_prefix(self, prefix: bytes) -> None:
        txn = self._txn or self._begin()
        try:
            _delete_range(txn, prefix)
        except lmdb.MapFullError:
            self._grow()
            return self._delete_prefix(prefix)
        self._log += (prefix, _RANGE)

    def _commit(self) -> None:
        txn = self._txn
        if txn is None:
            return
        try:
            txn.commit()
        except lmdb.MapFullError:
            self._txn = self._point = None  # a failed commit has aborted the transaction
            self._grow()
            self._commit()
            return
        except lmdb.Error as exc:
            self._txn = self._point = None
            self._log.clear()
            raise StateBackendError(
                f"cannot commit keyed state in {self.directory}: {exc}; the writes of the "
                f"current batch are lost, state committed before is intact"
            ) from exc
        self._txn = self._point = None
        self._log.clear()

    def _abort(self) -> None:
        txn, self._txn, self._point = self._txn, None, None
        if txn is not None:
            try:
                txn.abort()
            except lmdb.Error:
                pass

    def _grow(self) -> None:
        """Double the map, then replay the open transaction's writes into a fresh one."""
        self._abort()
        for handle in list(self._handles):
            handle.materialize()  # read transactions must end before the map moves
        size = self.map_size
        new_size = size + min(size, _MAX_GROWTH_STEP)
        try:
            self._reserve(self._env, new_size)
        except BaseException:
            self._log.clear()  # the batch is lost; committed state is intact and usable
            raise
        self._env.set_mapsize(new_size)
        self.grow_count += 1
        txn = self._begin()
        log = self._log
        try:
            for key, value in zip(log[::2], log[1::2], strict=True):
                if value is None:
                    txn.delete(key)
                elif value is _RANGE:
                    _delete_range(txn, key)
                elif type(value) is _Meta:
                    txn.put(key, value.data, db=self._meta_db)
                elif type(value) is _Many:
                    with txn.cursor() as cursor:
                        cursor.putmulti(value.data)
                else:
                    txn.put(key, value)
        except lmdb.MapFullError:
            self._grow()

    def _too_long(self, key: bytes) -> StateBackendError:
        limit = self._env.max_key_size()
        return StateBackendError(
            f"keyed state key too long for the LMDB backend: {len(key)} bytes with key group, "
            f"state id, key and map key/list sequence; LMDB allows {limit}. Use shorter keys "
            f"(or map keys), or the hashmap state backend"
        )

    def _put_meta(self, key: bytes, value: bytes) -> None:
        """A record in the metadata database (for inspection), in the open transaction."""
        txn = self._txn or self._begin()
        try:
            txn.put(key, value, db=self._meta_db)
        except lmdb.MapFullError:
            self._grow()
            return self._put_meta(key, value)
        self._log += (key, _Meta(value))

    # -- current key -------------------------------------------------------------------

    def set_current_key(self, key: Any, key_group: int | None = None) -> None:
        if key_group is None:
            key_group = assign_to_key_group(key, self.max_parallelism)
        if not self._kg_start <= key_group <= self._kg_end:
            self._key_group_of(key, key_group)  # raises with the full explanation
        klp = self._klp_cache.get(key) if type(key) is str else None
        if klp is None:
            klp = self._klp_of(key)  # raises for a key the key type does not take
        self._current_key = key
        self._current_key_group = key_group
        self._klp = klp

    def prepare_keys(self, batch: KeyBatch) -> Iterable[bytes] | None:
        """The keys' length-prefixed bytes (the storage key after key group and state id).

        A batch of exact ints that the key format holds is encoded lazily, one ``struct``
        call per key as the records are processed: the batch may hold 10^5 records, and a
        list of their encoded keys would be as large again as the replay log.
        """
        if not self._in_range(batch):
            return None
        ints, int_keys = batch.ints, self._int_keys
        if (
            ints is not None
            and int_keys is not None
            and (int_keys.wide or (int_keys.low <= ints.min() and ints.max() <= int_keys.high))
        ):
            return map(int_keys.pack, int_keys.heads, batch.keys)
        try:
            return list(map(self._klp_of, batch.keys))
        except (TypeError, StateBackendError):
            return None  # set_current_key raises it again, at the record with the key

    def set_prepared_key(self, key: Any, key_group: int, token: Any) -> None:
        self._current_key = key
        self._current_key_group = key_group
        self._klp = token

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
        # set_prepared_key's three stores as the loop's targets: no call per record
        extend = out.extend
        record = None
        try:
            for (
                self._current_key,
                self._current_key_group,
                self._klp,
                record,
            ) in zip(keys, key_groups, tokens, records, strict=True):
                results = step(record, ctx)
                if results is not None:
                    extend(results)
        except Exception as exc:
            raise fail(record, exc) from exc

    def _klp_of(self, key: Any) -> bytes:
        """``len(key bytes)`` (2 bytes) + the key bytes: the key's part of a storage key."""
        # str keys repeat across records: remember their encoding (only exact str, so
        # that keys equal in Python but different in type never share an entry)
        if type(key) is str:
            klp = self._klp_cache.get(key)
            if klp is not None:
                return klp
        try:
            data = self._serialize_key(key)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"key {key!r} does not match the key type "
                f"{self.key_type_repr or '<undeclared>'} of operator {self.operator_id!r}: "
                f"{exc}"
            ) from exc
        size = len(data)
        if size > _MAX_KEY_BYTES:
            raise self._too_long(b"\x00" * (size + _HEADER))
        klp = _SIZE_BYTES[size] + data
        if type(key) is str:
            cache = self._klp_cache
            if len(cache) >= _KEY_CACHE_SIZE:
                cache.clear()
            cache[key] = klp
        return klp

    # -- bulk access -------------------------------------------------------------------

    def _bulk_keys(self, state: Any, key_groups: dict) -> dict | None:
        """Storage keys of many keys of a plain (no TTL) ValueState; None: use the slow path."""
        if type(state) is not LmdbValueState or state._ttl is not None or not key_groups:
            return None
        groups = key_groups.values()
        if not (self._kg_start <= min(groups) and max(groups) <= self._kg_end):
            return None  # the per-key path explains the out-of-range key
        serialize, sid, out = self._serialize_key, state._sid, {}
        for key, key_group in key_groups.items():
            data = serialize(key)
            if len(data) > _MAX_KEY_BYTES:
                return None
            out[key] = _KG_BYTES[key_group] + sid + _SIZE_BYTES[len(data)] + data
        return out

    def read_values(self, state: Any, key_groups: dict) -> dict:
        storage = self._bulk_keys(state, key_groups)
        if storage is None:
            return super().read_values(state, key_groups)
        self._bulk = (state, key_groups, storage)  # write_values reuses the encoded keys
        txn = self._txn or self._begin()
        found = dict(txn.cursor().getmulti(storage.values()))
        deserialize = state._deserialize
        return {key: deserialize(found[data]) for key, data in storage.items() if data in found}

    def write_values(self, state: Any, values: dict, key_groups: dict) -> None:
        cached = getattr(self, "_bulk", None)
        storage = (
            cached[2]
            if cached is not None and cached[0] is state and cached[1] is key_groups
            else self._bulk_keys(state, key_groups)
        )
        self._bulk = None
        if storage is None or any(v is None for v in values.values()):
            super().write_values(state, values, key_groups)
            return
        serialize, items = state._serialize, []
        for key, value in values.items():
            try:
                items.append((storage[key], serialize(value)))
            except (TypeError, ValueError) as exc:
                raise StateTypeError(
                    state._spec.name, key, value, state._spec.value_type, exc
                ) from exc
        txn = self._txn or self._begin()
        try:
            txn.cursor().putmulti(items)
        except lmdb.MapFullError:
            # The transaction is dead: grow (which replays the batch's log into a fresh
            # one), then write these items through the per-write path.
            self._grow()
            for key, data in items:
                self._put(key, data)
            return
        except lmdb.Error as exc:
            raise StateBackendError(f"keyed state write failed in {self.directory}: {exc}") from exc
        log = self._log
        log += (b"", _Many(items))
        if len(log) >= self._log_cap:
            self._commit()

    # -- state objects -----------------------------------------------------------------

    def _sid(self, spec: StateSpec) -> bytes:
        sid = self._sids.get(spec.name)
        if sid is None:
            if len(self._sids) >= 0xFFFF:
                raise StateBackendError("more than 65535 states in one operator")
            sid = (len(self._sids) + 1).to_bytes(2, "big")
            self._sids[spec.name] = sid
            info = {
                "id": int.from_bytes(sid, "big"),
                "kind": spec.kind,
                "value_type": spec.value_type_repr,
                "user_key_type": spec.user_key_type_repr,
                "ttl": spec.ttl_stored,
            }
            self._put_meta(b"state:" + spec.name.encode(), json.dumps(info).encode())
        return sid

    def _create_state(self, spec: StateSpec, restored: StateSpec | None) -> Any:
        sid = self._sid(spec)
        ttl = spec.ttl
        cls = (_TTL_CLASSES if ttl is not None else _CLASSES)[spec.kind]
        if ttl is not None and ttl.compact_filter is not None and ttl.compact_filter > 0:
            self._sweep_policies[sid] = ttl
            every = ttl.compact_filter
            self._sweep_every = min(self._sweep_every, every) if self._sweep_every else every
        return cls(self, spec, sid)

    def _next_seq(self) -> bytes:
        seq = self._seq
        self._seq = seq + 1
        return seq.to_bytes(_SEQ_BYTES, "big")

    # -- TTL background cleanup (the RocksDB compaction-filter analogue) --------------

    def _ttl_tick(self) -> None:
        """One state entry processed; every ``query_time_after_num_entries`` run a sweep."""
        self._sweep_count += 1
        if self._sweep_count >= self._sweep_every:
            self._sweep_count = 0
            self.run_ttl_cleanup(self._sweep_every)

    def run_ttl_cleanup(self, max_entries: int | None = None) -> int:
        """Examine up to ``max_entries`` entries after the sweep cursor; delete expired ones.

        The cursor wraps around the key space, so repeated calls visit every entry. Only
        states whose TTL enables the compaction-filter strategy are cleaned. Returns the
        number of entries deleted.
        """
        if not self._sweep_policies:
            return 0
        budget = max_entries or self._sweep_every or 1000
        txn = self._txn or self._begin()
        policies = self._sweep_policies
        now = self.clock()  # read once per pass, as the compaction filter does per batch
        deleted: list[bytes] = []
        cursor = txn.cursor()
        positioned = cursor.set_range(self._sweep_from)
        if not positioned:
            positioned = cursor.first()
        examined = 0
        while positioned and examined < budget:
            key = cursor.key()
            examined += 1
            policy = policies.get(key[2:4])
            if policy is not None and policy.is_expired_entry(cursor.value(), now):
                deleted.append(key)
            positioned = cursor.next()
        self._sweep_from = cursor.key() if positioned else b""
        cursor.close()
        for key in deleted:
            self._delete(key)
        return len(deleted)

    # -- inspection --------------------------------------------------------------------

    def keys(self, state_name: str) -> Iterator[Any]:
        if state_name not in self._specs:
            raise KeyError(f"no state named {state_name!r} in operator {self.operator_id!r}")
        sid = self._sids.get(state_name)
        if sid is None:
            return
        decode = self.key_serializer.deserialize
        for kg in self.key_group_range:
            found = []
            txn = self._txn or self._begin()
            last = None
            prefix = kg.to_bytes(2, "big") + sid
            with txn.cursor() as cursor:
                if cursor.set_range(prefix):
                    for full in cursor.iternext(keys=True, values=False):
                        if full[:4] != prefix:
                            break
                        key_bytes = full[_HEADER : _HEADER + int.from_bytes(full[4:6], "big")]
                        if key_bytes != last:
                            found.append(key_bytes)
                            last = key_bytes
            for key_bytes in found:
                yield decode(key_bytes)

    def entry_count(self, state_name: str | None = None) -> int:
        """Stored entries of one state (all states with None): one per value/element/entry."""
        txn = self._txn or self._begin()
        if state_name is None:
            return txn.stat(self._db)["entries"]
        sid = self._sids.get(state_name)
        if sid is None:
            return 0
        count = 0
        with txn.cursor() as cursor:
            for kg in self.key_group_range:
                prefix = kg.to_bytes(2, "big") + sid
                if cursor.set_range(prefix):
                    for full in cursor.iternext(keys=True, values=False):
                        if full[:4] != prefix:
                            break
                        count += 1
        return count

    # -- snapshots ---------------------------------------------------------------------

    def _snapshot_async(self, key_group_range: KeyGroupRange) -> SnapshotHandle:
        self._commit()
        txn = self._env.begin(write=False, db=self._db)
        states = [(spec, self._sids.get(spec.name)) for spec in self._specs.values()]
        producer = self._produce(txn, states, key_group_range)
        handle: SnapshotHandle

        def release() -> None:
            self._handles.discard(handle)
            try:
                txn.abort()
            except lmdb.Error:
                pass

        handle = SnapshotHandle(producer, release)
        self._handles.add(handle)
        return handle

    def _produce(
        self,
        txn: lmdb.Transaction,
        states: list[tuple[StateSpec, bytes | None]],
        rng: KeyGroupRange,
    ) -> Iterator[pa.Buffer]:
        for spec, sid in states:
            yield self._snapshot_state(txn, spec, sid, rng)

    def _snapshot_state(
        self, txn: lmdb.Transaction, spec: StateSpec, sid: bytes | None, rng: KeyGroupRange
    ) -> pa.Buffer:
        ttl = spec.ttl
        drop = ttl.ttl_ms if ttl is not None and ttl.full_snapshot and ttl.enabled else None
        return snapshot_rows(
            txn, spec.meta(self, rng), sid, rng, spec.kind == "map", drop, self.clock()
        )

    # -- native checkpoints ------------------------------------------------------------

    def native_checkpoint(self, write: Callable[[Callable[[int], None]], Any]) -> NativeCopy:
        """Copy the environment as of now, on a thread (a checkpoint).

        A checkpoint (not a savepoint) can be this compacted copy of the LMDB file: the
        content is fixed by a read transaction begun here, and ``mdb_env_copy`` writes it in
        C without the GIL while the task goes on processing. Restores turn it into the
        backend-neutral rows (:func:`~flowrun.state.backends.lmdb_native.native_streams`),
        so it still restores at any parallelism and into either backend.

        ``write(copy)`` runs on the thread: it calls ``copy(fd)`` to write the copy into a
        file descriptor (e.g. straight into checkpoint storage) and returns what
        :meth:`NativeCopy.result` returns. The read transaction ends as soon as the copy is
        written: while it is open LMDB cannot reuse the pages that writes free, so the
        processing thread's writes would land on fresh pages for the whole upload.
        """
        self._check_open()
        self._commit()
        copy = NativeCopy(self._env, self._env.begin(write=False), self._handles, write)
        self._handles.add(copy)
        copy.start()
        return copy

    # -- restore -----------------------------------------------------------------------

    def _restore_rows(self, spec: StateSpec, rows: pa.Table) -> None:
        """Snapshot rows -> storage keys (vectorised): collected for a bulk load into an empty
        environment (:meth:`_bulk_load`), else written chunk by chunk with putmulti."""
        sid = self._sid(spec)
        kind = spec.kind
        for batch in rows.to_batches(max_chunksize=_FLUSH_ROWS):
            n = batch.num_rows
            if not n:
                continue
            if kind == "list":
                first = self._seq
                self._seq += n
                suffix = np.arange(first, first + n, dtype=">u8").view(np.uint8).reshape(n, 8)
            elif kind == "map":
                suffix = batch.column(2)
            else:
                suffix = None
            keys = batch.column(1)
            key_groups = batch.column(0).to_numpy(zero_copy_only=False)
            key_sizes = pc.binary_length(keys).to_numpy(zero_copy_only=False)
            if int(key_sizes.max()) > _MAX_KEY_BYTES:
                raise self._too_long(b"\x00" * (int(key_sizes.max()) + _HEADER))
            block = _restored_block(key_groups, sid, keys, key_sizes, suffix, batch.column(3))
            if self._bulk is not None:
                self._bulk.append((key_groups, sid, block))
                continue
            rows_ = block.binary()
            pairs = list(zip(rows_.keys.to_pylist(), rows_.values.to_pylist(), strict=True))
            # Rows of a snapshot stream come in storage-key order: when a chunk is sorted
            # and lies after everything stored, LMDB appends it (about twice as fast).
            self._put_many(pairs, append=block.ascending())
        self._commit()

    def _restore_streams(self, streams: Any) -> None:
        """Restore; into an empty environment the rows are bulk loaded (:meth:`_bulk_load`)."""
        self._commit()
        with self._env.begin(db=self._db) as txn:
            empty = txn.stat(self._db)["entries"] == 0
        self._bulk = [] if empty and not self._handles else None
        try:
            super()._restore_streams(streams)
            blocks = self._bulk
            self._bulk = None
            if blocks:
                self._bulk_load(blocks)
        finally:
            self._bulk = None

    def _bulk_load(self, blocks: list[tuple[np.ndarray, bytes, Rows]]) -> None:
        """Write the restored rows as the environment's B+tree pages (no Python object per
        row, :mod:`.lmdb_pages`), or insert them when they are not in storage-key order or do
        not fit LMDB nodes.

        ``blocks`` are (key groups, state id, rows) per record batch of the snapshot streams,
        each in storage-key order. One state's streams follow each other in key-group order;
        several states interleave (storage keys lead with the key group, then the state id),
        so their blocks are cut at key-group boundaries and the pieces ordered by (key
        group, state id) -- slices, not copies.
        """
        ordered = [rows for _, _, rows in blocks]
        if not _in_order(blocks):
            ordered = _interleaved(blocks)
        if self._env.stat()["psize"] == PAGE_SIZE:
            with self._env.begin(db=self._meta_db) as txn:
                meta = list(txn.cursor())
            data = os.path.join(self.directory, "data.mdb")
            scratch = data + ".bulk"
            current = self.map_size

            def map_size(pages: int) -> int:  # room for as much again, grown as _grow does
                size = current
                while size < 2 * pages * PAGE_SIZE:
                    size += min(size, _MAX_GROWTH_STEP)
                return size

            databases = {
                _META_DB: (
                    pa.array([k for k, _ in meta], pa.binary()),
                    pa.array([v for _, v in meta], pa.binary()),
                ),
                _STATE_DB: ordered,
            }
            try:
                size = write_environment(scratch, databases, map_size)
            except Unfit:
                with contextlib.suppress(OSError):
                    os.unlink(scratch)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    os.unlink(scratch)
                raise StateBackendError(
                    f"cannot write restored keyed state into {self.directory}: {exc}"
                ) from exc
            else:
                self._reopen_with(scratch, data, size)
                return
        for _, _, block in blocks:
            rows = block.binary()
            pairs = list(zip(rows.keys.to_pylist(), rows.values.to_pylist(), strict=True))
            self._put_many(pairs, append=block.ascending())
        self._commit()

    def _reopen_with(self, scratch: str, data: str, map_size: int) -> None:
        """Replace the (empty, closed) environment's data file with ``scratch`` and reopen."""
        self._env.close()
        os.replace(scratch, data)
        self._env = self._lmdb_open(self.directory, map_size)
        self._reserve(self._env, map_size)
        self._db = self._env.open_db(_STATE_DB)
        self._meta_db = self._env.open_db(_META_DB)

    def _put_many(self, pairs: list[tuple[bytes, bytes]], append: bool = False) -> None:
        txn = self._txn or self._begin()
        try:
            with txn.cursor() as cursor:
                if append and (not cursor.last() or cursor.key() < pairs[0][0]):
                    cursor.putmulti(pairs, append=True)
                else:
                    cursor.putmulti(pairs)
        except lmdb.MapFullError:
            self._grow()
            self._put_many(pairs, append)
            return
        except lmdb.BadValsizeError as exc:
            raise self._too_long(max((k for k, _ in pairs), key=len)) from exc
        self._log += (b"", _Many(pairs))
        self._commit()  # one chunk per transaction keeps the replay log small

    # -- lifecycle ---------------------------------------------------------------------

    def close(self) -> None:
        if self._closed:
            return
        try:
            self._commit()
        finally:
            for handle in list(self._handles):
                handle.materialize()
            self._abort()
            self._env.close()
            super().close()

    def dispose(self) -> None:
        try:
            self.close()
        finally:
            if not self.keep_on_close:
                shutil.rmtree(self.directory, ignore_errors=True)
                if self._remove_parent is not None:
                    shutil.rmtree(self._remove_parent, ignore_errors=True)


def _txn_writes(pages: int) -> int:
    """Writes after which a write transaction on a tree of ``pages`` pages commits.

    Why not always the most (``_MAX_TXN_WRITES``): every write stays in the replay log, key
    and value objects alive, until the commit. A long log no longer fits the CPU cache, and
    allocating and freeing its objects then costs more than the commit: on a tree of ~100
    pages (10^4 keys) a read-modify-write took 1,158 ns with commits every 10^5 writes and
    1,111 ns every 8,192 (batches of 49,152 records, as the engine's input batches are).
    Why not always few: a commit ends the copy-on-write of the pages the transaction
    touched, and the next transaction copies them again; on a tree of 10^6 keys (17k pages)
    commits every 8,192 writes made a read-modify-write 3% slower. A commit every
    ``_TXN_WRITES_PER_PAGE`` writes per page of the tree bounds that re-copying to a
    64th of a page per write.
    """
    return min(_MAX_TXN_WRITES, max(_MIN_TXN_WRITES, _TXN_WRITES_PER_PAGE * pages))


class _IntKeys:
    """Encodes exact int keys to their length-prefixed bytes with one ``struct`` call each.

    ``prefix`` and ``fmt`` are the key serializer's ``int_layout``: its bytes of an int are
    ``prefix + struct.pack(fmt, key)`` for ``low <= key <= high`` (``wide``: the whole int64
    range, which a batch's ``ints`` are in already). The length field and the prefix are one
    constant ``head``.
    """

    __slots__ = ("pack", "heads", "low", "high", "wide")

    def __init__(self, prefix: bytes, fmt: str) -> None:
        code = fmt.lstrip("<>!=@")
        head = _SIZE_BYTES[len(prefix) + struct.calcsize(fmt)] + prefix
        self.pack = struct.Struct(f">{len(head)}s{code}").pack
        self.heads = repeat(head)
        bits = 8 * struct.calcsize(fmt)
        self.low = -(1 << (bits - 1)) if code.islower() else 0
        self.high = (1 << (bits - 1)) - 1 if code.islower() else (1 << bits) - 1
        self.wide = (self.low, self.high) == (-(1 << 63), (1 << 63) - 1)  # all of int64


def _slices(data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> pa.Array:
    """A binary array of ``data[starts[i]:ends[i]]``, gathered with numpy (no Python loop)."""
    lengths = ends - starts
    offsets = np.zeros(len(starts) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    total = int(offsets[-1])
    if total:
        index = np.arange(total, dtype=np.int64)
        index += np.repeat(starts - offsets[:-1], lengths)
        gathered = data[index]
    else:
        gathered = np.zeros(0, dtype=np.uint8)
    return pa.Array.from_buffers(
        pa.binary(),
        len(starts),
        [None, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(gathered)],
    )


def _binary_parts(array: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(data bytes, int64 offsets) of a freshly built (large) binary array (offset 0, no
    nulls)."""
    buffers = array.buffers()
    width = np.int64 if array.type == pa.large_binary() else np.int32
    offsets = np.frombuffer(buffers[1], dtype=width)[: len(array) + 1].astype(np.int64)
    data = np.frombuffer(buffers[2], dtype=np.uint8) if buffers[2] is not None else None
    return (data if data is not None else np.zeros(0, dtype=np.uint8)), offsets


def _restored_block(
    key_groups: np.ndarray,
    sid: bytes,
    keys: pa.Array,
    key_sizes: np.ndarray,
    suffix: pa.Array | np.ndarray | None,
    values: pa.Array,
) -> Rows:
    """One record batch of snapshot rows as storage-key rows (``key group | state id | key
    length | key | suffix``, see the module docs): fixed-width parts viewed in the Arrow
    buffers when the keys, suffixes and values each have one width, else built storage keys."""
    n = len(keys)
    key_size = uniform_width(keys)
    value_size = uniform_width(values)
    suffix_size = (
        0
        if suffix is None
        else (suffix.shape[1] if isinstance(suffix, np.ndarray) else uniform_width(suffix))
    )
    if key_size is not None and value_size is not None and suffix_size is not None:
        parts = [
            key_groups.astype(">u2").view(np.uint8).reshape(n, 2),
            np.frombuffer(sid + _SIZE_BYTES[key_size], dtype=np.uint8).reshape(1, 4),
            binary_data(keys).reshape(n, key_size),
        ]
        if suffix is not None:
            parts.append(
                suffix
                if isinstance(suffix, np.ndarray)
                else binary_data(suffix).reshape(n, suffix_size)
            )
        return FixedRows(parts, binary_data(values).reshape(n, value_size))
    if suffix is None:
        tail: Any = pa.scalar(b"", pa.binary())
    elif isinstance(suffix, np.ndarray):
        tail = _fixed_width(suffix, suffix.shape[1])
    else:
        tail = suffix
    full = pc.binary_join_element_wise(
        _fixed_width(key_groups.astype(">u2"), 2),
        pa.scalar(sid, pa.binary()),
        _fixed_width(key_sizes.astype(">u2"), 2),
        keys,
        tail,
        pa.scalar(b"", pa.binary()),
    )
    return BinaryRows(full, values)


def _in_order(blocks: list[tuple[np.ndarray, bytes, Rows]]) -> bool:
    """Whether the blocks follow each other in (key group, state id) order (each block's rows
    are checked by the page writer)."""
    last = (-1, b"")
    for key_groups, sid, _ in blocks:
        first = (int(key_groups[0]), sid)
        if first < last:
            return False
        last = (int(key_groups[-1]), sid)
    return True


def _interleaved(blocks: list[tuple[np.ndarray, bytes, Rows]]) -> list[Rows]:
    """The blocks cut at key-group boundaries, pieces ordered by (key group, state id)
    (stable: pieces of one key group and state keep their order)."""
    pieces = []
    for index, (key_groups, sid, rows) in enumerate(blocks):
        bounds = [0, *(np.flatnonzero(np.diff(key_groups)) + 1).tolist(), len(key_groups)]
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            pieces.append((int(key_groups[lo]), sid, index, lo, hi, rows))
    pieces.sort(key=lambda p: p[:4])
    return [_slice_rows(rows, lo, hi) for *_, lo, hi, rows in pieces]


def _slice_rows(rows: Rows, lo: int, hi: int) -> Rows:
    if isinstance(rows, FixedRows):
        parts = [part if len(part) == 1 else part[lo:hi] for part in rows.key_parts]
        return FixedRows(parts, rows.values[lo:hi])
    return BinaryRows(rows.keys.slice(lo, hi - lo), rows.values.slice(lo, hi - lo))


def snapshot_rows(
    txn: lmdb.Transaction,
    meta: StateMeta,
    sid: bytes | None,
    rng: KeyGroupRange,
    is_map: bool,
    drop_older_than_ms: int | None = None,
    now: int = 0,
) -> pa.Buffer:
    """One state's snapshot stream, straight from the storage bytes of ``rng``.

    The cursor loop only collects (storage key, value) pairs; splitting storage keys into
    key group, key and map key, and dropping expired entries, is vectorised per chunk.
    """
    writer = StreamWriter(meta)
    if sid is None or not len(rng):
        return writer.finish()
    fulls: list[bytes] = []
    values: list[bytes] = []

    def flush() -> None:
        columns = _split_rows(fulls, values, is_map)
        if drop_older_than_ms is not None:
            columns = _drop_expired(columns, drop_older_than_ms, now)
        writer.write_arrays(*columns)
        fulls.clear()
        values.clear()

    add_key, add_value = fulls.append, values.append
    with txn.cursor() as cursor:
        for kg in range(rng.start, rng.end + 1):
            prefix = _KG_BYTES[kg] + sid
            if not cursor.set_range(prefix):
                break
            for full, value in cursor.iternext():
                if full[:4] != prefix:
                    break
                add_key(full)
                add_value(value)
            if len(fulls) >= _FLUSH_ROWS:
                flush()
    if fulls:
        flush()
    return writer.finish()


class CopyCancelled(Exception):
    """Raised on a :class:`NativeCopy`'s thread when its checkpoint was cancelled."""


class NativeCopy(BackgroundCall):
    """A compacted copy of an LMDB environment being written by a thread (a checkpoint).

    Kept among the backend's snapshot handles: the map may only move (grow) or close once
    the copy's read transaction has ended, which :meth:`materialize` waits for. That is as
    soon as the copy is written; what ``write`` does afterwards (checksum, fsync) no longer
    holds the environment.
    """

    def __init__(
        self,
        env: lmdb.Environment,
        txn: lmdb.Transaction,
        handles: set,
        write: Callable[[Callable[[int], None]], Any],
    ) -> None:
        super().__init__(lambda: write(self._copy), "lmdb-checkpoint")
        self._env = env
        self._txn: lmdb.Transaction | None = txn
        self._handles = handles
        self._lock = threading.Lock()
        self._copied = threading.Event()  #: set once the read transaction has ended
        #: set by :meth:`cancel`: the checkpoint was aborted (or subsumed), so a copy not yet
        #: written is skipped and a written one is not checksummed and synced
        self._cancelled = threading.Event()

    def _copy(self, fd: int) -> None:
        try:
            if not self._cancelled.is_set():
                self._env.copyfd(fd, compact=True, txn=self._txn)
        finally:
            self._end_txn()
        if self._cancelled.is_set():
            # ``write`` drops its half-made file on an exception: no checksum, no fsync
            raise CopyCancelled("the checkpoint was aborted")

    def _end_txn(self) -> None:
        with self._lock:
            txn, self._txn = self._txn, None
        if txn is not None:
            try:
                txn.abort()
            except lmdb.Error:
                pass
        self._copied.set()

    def _after(self) -> None:
        self._end_txn()  # in case write never called copy

    def materialize(self) -> None:
        """Wait until the copy is written and its read transaction has ended."""
        self._copied.wait()
        self._handles.discard(self)

    def join(self) -> None:
        """Wait until ``write`` has returned."""
        super().join()
        self.materialize()

    def result(self) -> Any:
        """What ``write`` returned, once done; raises what failed."""
        try:
            return super().result()
        except BaseException as exc:
            raise StateBackendError(f"LMDB checkpoint copy failed: {exc}") from exc

    def cancel(self) -> None:
        """Drop the copy: stop it early and wait for the thread; whatever it wrote is not
        referenced. A copy already under way is finished (``mdb_env_copy`` cannot be
        interrupted), but its file is then removed instead of checksummed and synced, so
        that an aborted checkpoint (one subsumed by the final checkpoint, say) does not hold
        up the task for the rest of its upload."""
        if not self.done:
            self._cancelled.set()
        self.join()


def _split_rows(
    fulls: list[bytes], values: list[bytes], is_map: bool
) -> tuple[pa.Array, pa.Array, pa.Array, pa.Array]:
    """Storage keys -> (key_group, key, user_key, value) columns of the snapshot format."""
    full = pa.array(fulls, pa.binary())
    data, offsets = _binary_parts(full)
    starts = offsets[:-1]
    key_groups = data[starts].astype(np.int32) * 256 + data[starts + 1]
    key_sizes = data[starts + 4].astype(np.int64) * 256 + data[starts + 5]
    key_starts = starts + _HEADER
    key_ends = key_starts + key_sizes
    keys = _slices(data, key_starts, key_ends)
    if is_map:
        user_keys = _slices(data, key_ends, offsets[1:])
    else:
        user_keys = pa.nulls(len(fulls), pa.binary())
    return pa.array(key_groups, pa.int32()), keys, user_keys, pa.array(values, pa.binary())


def _drop_expired(
    columns: tuple[pa.Array, pa.Array, pa.Array, pa.Array], ttl_ms: int, now: int
) -> tuple[pa.Array, ...]:
    """Rows whose value's 8-byte big-endian TTL timestamp is not expired at ``now``."""
    data, offsets = _binary_parts(columns[3])
    if not len(columns[3]):
        return columns
    stamps = data[offsets[:-1, None] + np.arange(8)].copy().view(">i8").ravel()
    keep = pa.array(stamps.astype(np.int64) + ttl_ms > now)
    return tuple(column.filter(keep) for column in columns)


def _fixed_width(values: np.ndarray, width: int) -> pa.Array:
    """Big-endian fixed-width numbers as a binary array (for building storage keys)."""
    array = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(width), len(values), [None, pa.py_buffer(np.ascontiguousarray(values))]
    )
    return array.cast(pa.binary())


class _Many:
    """Replay-log entry: a chunk of (key, value) pairs written with ``putmulti``."""

    __slots__ = ("data",)

    def __init__(self, data: list[tuple[bytes, bytes]]) -> None:
        self.data = data


class _Meta:
    """Replay-log wrapper: this write goes to the metadata database."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


def _delete_range(txn: lmdb.Transaction, prefix: bytes) -> None:
    with txn.cursor() as cursor:
        if not cursor.set_range(prefix):
            return
        while cursor.key()[: len(prefix)] == prefix:
            if not cursor.delete():
                break


# ------------------------------------------------------------------------------------------
# State objects
# ------------------------------------------------------------------------------------------


class _LmdbState:
    """Shared plumbing: the backend (transaction, current key bytes) and this state's id."""

    def __init__(self, backend: LmdbKeyedStateBackend, spec: StateSpec, sid: bytes) -> None:
        self._b = backend
        self._spec = spec
        self._sid = sid
        serializer = spec.value_serializer
        assert serializer is not None
        self._serialize = serializer.serialize
        self._deserialize = serializer.deserialize
        self._ttl: TtlPolicy | None = spec.ttl
        ttl = spec.ttl
        self._tick = backend._ttl_tick if ttl is not None and ttl.compact_filter else None
        self._return_expired = (
            ttl is not None and ttl.visibility.name == "ReturnExpiredIfNotCleanedUp"
        )
        # key group + state id of every key group of the backend, indexed by key group: a
        # storage key is then one index and one concatenation
        start, end = backend._kg_start, backend._kg_end
        self._prefixes: list[bytes | None] = [None] * start
        self._prefixes += [kg2 + sid for kg2 in _KG_BYTES[start : end + 1]]

    def _key(self) -> bytes:
        b = self._b
        return self._prefixes[b._current_key_group] + b._klp  # type: ignore[operator]

    def _encode(self, value: Any) -> bytes:
        try:
            return self._serialize(value)
        except (TypeError, ValueError) as exc:
            raise StateTypeError(
                self._spec.name, self._b._current_key, value, self._spec.value_type, exc
            ) from exc

    def _get(self, key: bytes) -> bytes | None:
        b = self._b
        return (b._point or b._point_ops()).get(key)

    def _scan(self, prefix: bytes) -> list[tuple[bytes, bytes]]:
        """All (storage key, value) pairs under ``prefix``, materialized (callers mutate)."""
        b = self._b
        txn = b._txn or b._begin()
        out = []
        with txn.cursor() as cursor:
            if cursor.set_range(prefix):
                size = len(prefix)
                for full, value in cursor.iternext():
                    if full[:size] != prefix:
                        break
                    out.append((full, value))
        return out

    def _ttl_read(self, key: bytes, stored: bytes) -> Any:
        """Apply TTL to one stored value read under ``key``: the user bytes or None."""
        user, write_back = self._ttl.on_read(stored)  # type: ignore[union-attr]
        if write_back is not None:
            if write_back:
                self._b._put(key, write_back)
            else:
                self._b._delete(key)
        return user

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._spec.name!r}>"


class LmdbValueState(_LmdbState, ValueState):
    """The per-record hot path: one cursor get in ``value()``, one cursor put in ``update()``.

    Values of BYTE/SHORT/INT/LONG are packed and unpacked with their ``struct`` directly (the
    serializer's ``int_layout``); anything else, and any value the struct refuses, goes
    through the serializer, which decides and explains.
    """

    def __init__(self, backend: LmdbKeyedStateBackend, spec: StateSpec, sid: bytes) -> None:
        super().__init__(backend, spec, sid)
        layout = spec.value_serializer.int_layout  # type: ignore[union-attr]
        if layout is not None and not layout[0]:
            packer = struct.Struct(layout[1])
            self._pack: Callable[[int], bytes] | None = packer.pack
            self._unpack: Callable[[bytes], tuple] | None = packer.unpack
        else:
            self._pack = self._unpack = None
        # the storage key value() built, for the update() that usually follows: the same
        # key bytes object (held here, so its identity cannot be reused) means the same key
        self._klp_seen: bytes | None = None
        self._key_seen: bytes | None = None

    def value(self) -> Any:
        b = self._b
        self._klp_seen = klp = b._klp
        self._key_seen = key = self._prefixes[b._current_key_group] + klp
        data = (b._point or b._point_ops()).get(key)
        if data is None:
            return None
        unpack = self._unpack
        if unpack is not None:
            try:
                return unpack(data)[0]
            except struct.error:
                pass  # malformed: the serializer raises the explanation
        return self._deserialize(data)

    def update(self, value: Any) -> None:
        b = self._b
        klp = b._klp
        if klp is self._klp_seen:
            key = self._key_seen
        else:
            key = self._prefixes[b._current_key_group] + klp
        pack = self._pack
        if pack is not None and type(value) is int:
            try:
                data = pack(value)
            except struct.error:
                data = self._encode(value)  # out of range: raises StateTypeError
        elif value is None:
            b._delete(key)
            return
        else:
            try:
                data = self._serialize(value)
            except (TypeError, ValueError) as exc:
                raise StateTypeError(
                    self._spec.name, b._current_key, value, self._spec.value_type, exc
                ) from exc
        try:
            (b._point or b._point_ops()).put(key, data)
        except lmdb.Error as exc:
            b._put_retry(key, data, exc)
            return
        log = b._log
        log.append(key)
        log.append(data)
        if len(log) >= b._log_cap:
            b._commit()

    def clear(self) -> None:
        self._b._delete(self._key())


def _elements(spec: StateSpec, values: Any) -> list:
    if values is None:
        raise TypeError(f"list state {spec.name!r}: the list of values must not be None")
    values = list(values)
    if any(v is None for v in values):
        raise TypeError(f"list state {spec.name!r}: cannot add None to a ListState")
    return values


class LmdbListState(_LmdbState, ListState):
    """Each element is its own entry: key | 8-byte sequence number (insertion order)."""

    def get(self) -> list:
        decode = self._deserialize
        return [decode(value) for _, value in self._scan(self._key())]

    def _append(self, prefix: bytes, data: bytes) -> None:
        b = self._b
        b._put(prefix + b._next_seq(), data)

    def add(self, value: Any) -> None:
        if value is None:
            raise TypeError(f"list state {self._spec.name!r}: cannot add None to a ListState")
        self._append(self._key(), self._encode(value))

    def add_all(self, values: list) -> None:
        encoded = [self._encode(v) for v in _elements(self._spec, values)]
        prefix = self._key()
        for data in encoded:
            self._append(prefix, data)

    def update(self, values: list) -> None:
        encoded = [self._encode(v) for v in _elements(self._spec, values)]
        prefix = self._key()
        self._b._delete_prefix(prefix)
        for data in encoded:
            self._append(prefix, data)

    def clear(self) -> None:
        self._b._delete_prefix(self._key())


class LmdbMapState(_LmdbState, MapState):
    """Each entry is its own storage key: key | canonical map-key bytes."""

    def __init__(self, backend: LmdbKeyedStateBackend, spec: StateSpec, sid: bytes) -> None:
        super().__init__(backend, spec, sid)
        user_keys = spec.user_key_serializer
        assert user_keys is not None
        self._serialize_user_key = user_keys.serialize
        self._deserialize_user_key = user_keys.deserialize

    def _entry_key(self, user_key: Any) -> bytes:
        try:
            data = self._serialize_user_key(user_key)
        except (TypeError, ValueError) as exc:
            spec = self._spec
            raise StateTypeError(
                spec.name, self._b._current_key, user_key, spec.user_key_type, exc
            ) from exc
        full = self._key() + data
        if len(full) > _MAX_KEY_BYTES + _HEADER + _SEQ_BYTES:
            raise self._b._too_long(full)
        return full

    def get(self, key: Any) -> Any:
        data = self._get(self._entry_key(key))
        return None if data is None else self._deserialize(data)

    def put(self, key: Any, value: Any) -> None:
        self._b._put(self._entry_key(key), self._encode(value))

    def put_all(self, dict_value: dict) -> None:
        encoded = [(self._entry_key(k), self._encode(v)) for k, v in dict_value.items()]
        for full, data in encoded:
            self._b._put(full, data)

    def remove(self, key: Any) -> None:
        self._b._delete(self._entry_key(key))

    def contains(self, key: Any) -> bool:
        return self._get(self._entry_key(key)) is not None

    def items(self) -> list[tuple[Any, Any]]:
        size = len(self._key())
        decode_key, decode = self._deserialize_user_key, self._deserialize
        return [(decode_key(full[size:]), decode(value)) for full, value in self._scan(self._key())]

    def keys(self) -> list[Any]:
        size = len(self._key())
        decode_key = self._deserialize_user_key
        return [decode_key(full[size:]) for full, _ in self._scan(self._key())]

    def values(self) -> list[Any]:
        decode = self._deserialize
        return [decode(value) for _, value in self._scan(self._key())]

    def is_empty(self) -> bool:
        prefix = self._key()
        b = self._b
        txn = b._txn or b._begin()
        with txn.cursor() as cursor:
            return not (cursor.set_range(prefix) and cursor.key()[: len(prefix)] == prefix)

    def clear(self) -> None:
        self._b._delete_prefix(self._key())


class LmdbReducingState(_LmdbState, ReducingState):
    def __init__(self, backend: LmdbKeyedStateBackend, spec: StateSpec, sid: bytes) -> None:
        super().__init__(backend, spec, sid)
        self._reduce = reduce_function_of(spec.descriptor)

    def get(self) -> Any:
        data = self._get(self._key())
        return None if data is None else self._deserialize(data)

    def add(self, value: Any) -> None:
        key = self._key()
        if value is None:  # as Flink's heap backend: adding null clears
            self._b._delete(key)
            return
        data = self._get(key)
        result = value if data is None else self._reduce(self._deserialize(data), value)
        self._b._put(key, self._encode(result))

    def clear(self) -> None:
        self._b._delete(self._key())


class LmdbAggregatingState(_LmdbState, AggregatingState):
    def __init__(self, backend: LmdbKeyedStateBackend, spec: StateSpec, sid: bytes) -> None:
        super().__init__(backend, spec, sid)
        self._agg = aggregate_function_of(spec.descriptor)

    def get(self) -> Any:
        data = self._get(self._key())
        return None if data is None else self._agg.get_result(self._deserialize(data))

    def add(self, value: Any) -> None:
        key = self._key()
        if value is None:  # as Flink's heap backend: adding null clears
            self._b._delete(key)
            return
        data = self._get(key)
        acc = self._agg.create_accumulator() if data is None else self._deserialize(data)
        self._b._put(key, self._encode(self._agg.add(value, acc)))

    def clear(self) -> None:
        self._b._delete(self._key())


# ------------------------------------------------------------------------------------------
# TTL: stored bytes are TtlPolicy-wrapped (8-byte timestamp + user bytes)
# ------------------------------------------------------------------------------------------


class _LmdbTtlMixin(_LmdbState):
    def _touch(self) -> None:
        if self._tick is not None:
            self._tick()

    def _read_value(self, key: bytes) -> Any:
        """TTL read of a value-like cell: the deserialized value or None."""
        stored = self._get(key)
        if stored is None:
            return None
        user = self._ttl_read(key, stored)
        return None if user is None else self._deserialize(user)

    def _base_for_add(self, key: bytes) -> tuple[bool, Any]:
        """(present, value) to fold an ``add`` into, with Flink's TTL reduce semantics."""
        stored = self._get(key)
        if stored is None:
            return False, None
        ttl = self._ttl
        ts, user = ttl.unwrap(stored)  # type: ignore[union-attr]
        if not self._return_expired and ttl.is_expired(ts):  # type: ignore[union-attr]
            return False, None
        return True, self._deserialize(user)

    def _wrap(self, value: Any) -> bytes:
        return self._ttl.on_write(self._encode(value))  # type: ignore[union-attr]


class LmdbTtlValueState(_LmdbTtlMixin, ValueState):
    def value(self) -> Any:
        self._touch()
        return self._read_value(self._key())

    def update(self, value: Any) -> None:
        self._touch()
        if value is None:
            self._b._delete(self._key())
            return
        self._b._put(self._key(), self._wrap(value))

    def clear(self) -> None:
        self._touch()
        self._b._delete(self._key())


class LmdbTtlListState(_LmdbTtlMixin, ListState):
    def get(self) -> list:
        self._touch()
        prefix = self._key()
        stored = [value for _, value in self._scan(prefix)]
        if not stored:
            return []
        visible, keep = self._ttl.on_read_all(stored)  # type: ignore[union-attr]
        if keep is not None:
            b = self._b
            b._delete_prefix(prefix)
            for data in keep:
                b._put(prefix + b._next_seq(), bytes(data))
        decode = self._deserialize
        return [decode(user) for user in visible]

    def add(self, value: Any) -> None:
        self._touch()
        if value is None:
            raise TypeError(f"list state {self._spec.name!r}: cannot add None to a ListState")
        b = self._b
        b._put(self._key() + b._next_seq(), self._wrap(value))

    def add_all(self, values: list) -> None:
        self._touch()
        encoded = [self._wrap(v) for v in _elements(self._spec, values)]
        prefix = self._key()
        b = self._b
        for data in encoded:
            b._put(prefix + b._next_seq(), data)

    def update(self, values: list) -> None:
        self._touch()
        encoded = [self._wrap(v) for v in _elements(self._spec, values)]
        prefix = self._key()
        b = self._b
        b._delete_prefix(prefix)
        for data in encoded:
            b._put(prefix + b._next_seq(), data)

    def clear(self) -> None:
        self._touch()
        self._b._delete_prefix(self._key())


class LmdbTtlMapState(_LmdbTtlMixin, LmdbMapState):
    def get(self, key: Any) -> Any:
        self._touch()
        return self._read_value(self._entry_key(key))

    def contains(self, key: Any) -> bool:
        self._touch()
        full = self._entry_key(key)
        stored = self._get(full)
        return stored is not None and self._ttl_read(full, stored) is not None

    def put(self, key: Any, value: Any) -> None:
        self._touch()
        self._b._put(self._entry_key(key), self._wrap(value))

    def put_all(self, dict_value: dict) -> None:
        self._touch()
        encoded = [(self._entry_key(k), self._wrap(v)) for k, v in dict_value.items()]
        for full, data in encoded:
            self._b._put(full, data)

    def remove(self, key: Any) -> None:
        self._touch()
        self._b._delete(self._entry_key(key))

    def _visible(self) -> list[tuple[bytes, Any]]:
        """(map-key bytes, user bytes) of the visible entries; expired ones are deleted."""
        self._touch()
        prefix = self._key()
        size = len(prefix)
        out = []
        for full, stored in self._scan(prefix):
            user = self._ttl_read(full, stored)
            if user is not None:
                out.append((full[size:], user))
        return out

    def items(self) -> list[tuple[Any, Any]]:
        decode_key, decode = self._deserialize_user_key, self._deserialize
        return [(decode_key(k), decode(v)) for k, v in self._visible()]

    def keys(self) -> list[Any]:
        decode_key = self._deserialize_user_key
        return [decode_key(k) for k, _ in self._visible()]

    def values(self) -> list[Any]:
        decode = self._deserialize
        return [decode(v) for _, v in self._visible()]

    def is_empty(self) -> bool:
        return not self._visible()

    def clear(self) -> None:
        self._touch()
        self._b._delete_prefix(self._key())


class LmdbTtlReducingState(_LmdbTtlMixin, ReducingState):
    def __init__(self, backend: LmdbKeyedStateBackend, spec: StateSpec, sid: bytes) -> None:
        super().__init__(backend, spec, sid)
        self._reduce = reduce_function_of(spec.descriptor)

    def get(self) -> Any:
        self._touch()
        return self._read_value(self._key())

    def add(self, value: Any) -> None:
        self._touch()
        key = self._key()
        if value is None:
            self._b._delete(key)
            return
        present, current = self._base_for_add(key)
        result = self._reduce(current, value) if present else value
        self._b._put(key, self._wrap(result))

    def clear(self) -> None:
        self._touch()
        self._b._delete(self._key())


class LmdbTtlAggregatingState(_LmdbTtlMixin, AggregatingState):
    def __init__(self, backend: LmdbKeyedStateBackend, spec: StateSpec, sid: bytes) -> None:
        super().__init__(backend, spec, sid)
        self._agg = aggregate_function_of(spec.descriptor)

    def get(self) -> Any:
        self._touch()
        stored = self._get(self._key())
        if stored is None:
            return None
        user = self._ttl_read(self._key(), stored)
        return None if user is None else self._agg.get_result(self._deserialize(user))

    def add(self, value: Any) -> None:
        self._touch()
        key = self._key()
        if value is None:
            self._b._delete(key)
            return
        present, acc = self._base_for_add(key)
        if not present:
            acc = self._agg.create_accumulator()
        self._b._put(key, self._wrap(self._agg.add(value, acc)))

    def clear(self) -> None:
        self._touch()
        self._b._delete(self._key())


_CLASSES: dict[str, Callable[..., Any]] = {
    "value": LmdbValueState,
    "list": LmdbListState,
    "map": LmdbMapState,
    "reducing": LmdbReducingState,
    "aggregating": LmdbAggregatingState,
}
_TTL_CLASSES: dict[str, Callable[..., Any]] = {
    "value": LmdbTtlValueState,
    "list": LmdbTtlListState,
    "map": LmdbTtlMapState,
    "reducing": LmdbTtlReducingState,
    "aggregating": LmdbTtlAggregatingState,
}
