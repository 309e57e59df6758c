"""Restoring from native LMDB checkpoints: a copied environment -> backend-neutral rows.

A checkpoint of the LMDB backend is a compacted copy of its environment
(:meth:`LmdbKeyedStateBackend.native_checkpoint`): cheap to take, because LMDB copies pages
in C while processing goes on. Savepoints stay in the backend-neutral Arrow format. To
restore a native checkpoint anywhere -- another parallelism, the heap backend -- the copy is
opened read-only and the rows of the wanted key-group range are produced exactly as a
backend snapshot would produce them; the states describe themselves in the copy's metadata
database (name, kind, types, TTL), so nothing else is needed.

Example::

    >>> import os, tempfile
    >>> from flowrun.state import ValueStateDescriptor
    >>> from flowrun.state.backends import EmbeddedLmdbStateBackend
    >>> from flowrun.state.key_groups import KeyGroupRange
    >>> from flowrun.core.typeinfo import Types
    >>> tmp = tempfile.mkdtemp()
    >>> backend = EmbeddedLmdbStateBackend().create_keyed_backend(
    ...     "op", KeyGroupRange(0, 127), 128, Types.STRING(), os.path.join(tmp, "env"))
    >>> state = backend.get_state(ValueStateDescriptor("n", Types.LONG()))
    >>> backend.set_current_key("a"); state.update(7)
    >>> path = os.path.join(tmp, "copy.mdb")
    >>> def write(copy):  # on the copy's thread
    ...     with open(path, "wb") as out:
    ...         copy(out.fileno())
    >>> backend.native_checkpoint(write).result()
    >>> [m.state_name for m, _ in map(read_stream_meta, native_streams(path, KeyGroupRange(0, 127)))]
    ['n']
    >>> backend.dispose()
"""

from __future__ import annotations

import json

import lmdb
import pyarrow as pa

from ..key_groups import KeyGroupRange
from ..snapshot import SnapshotFormatError, StateMeta, read_stream
from .lmdb import _FORMAT, _FORMAT_KEY, _META_DB, _STATE_DB, snapshot_rows

__all__ = ["native_streams", "read_stream_meta"]


def read_stream_meta(stream: pa.Buffer) -> tuple[StateMeta, int]:
    """(metadata, rows) of a snapshot stream (for inspection and tests)."""
    meta, table = read_stream(stream)
    return meta, table.num_rows


def native_streams(path: str, key_group_range: KeyGroupRange) -> list[pa.Buffer]:
    """One snapshot stream per state of the copied environment at ``path``, holding the
    rows of ``key_group_range`` (intersected with the range the copy covers)."""
    try:
        env = lmdb.open(path, subdir=False, readonly=True, lock=False, max_dbs=2)
    except lmdb.Error as exc:
        raise SnapshotFormatError(f"{path} is not an LMDB checkpoint: {exc}") from exc
    try:
        meta_db = env.open_db(_META_DB, create=False)
        state_db = env.open_db(_STATE_DB, create=False)
        with env.begin(db=meta_db) as txn:
            if txn.get(_FORMAT_KEY) != _FORMAT:
                raise SnapshotFormatError(f"{path} is not a flowrun LMDB checkpoint")
            operator = json.loads(txn.get(b"\x00operator"))
            states = {
                key[len(b"state:") :].decode(): json.loads(value)
                for key, value in txn.cursor()
                if key.startswith(b"state:")
            }
        own_start, own_end = operator["key_group_range"]
        start = max(own_start, key_group_range.start)
        end = min(own_end, key_group_range.end)
        rng = KeyGroupRange(start, end) if start <= end else KeyGroupRange.empty()
        streams = []
        with env.begin(db=state_db) as txn:
            for name, info in sorted(states.items(), key=lambda item: item[1]["id"]):
                meta = StateMeta(
                    operator_id=operator["operator_id"],
                    state_name=name,
                    state_kind=info["kind"],
                    value_type=info["value_type"],
                    key_type=operator["key_type"],
                    user_key_type=info["user_key_type"],
                    ttl=bool(info["ttl"]),
                    max_parallelism=operator["max_parallelism"],
                    key_group_range=(rng.start, rng.end) if len(rng) else None,
                )
                sid = info["id"].to_bytes(2, "big")
                streams.append(snapshot_rows(txn, meta, sid, rng, info["kind"] == "map"))
        return streams
    except lmdb.Error as exc:
        raise SnapshotFormatError(f"cannot read the LMDB checkpoint {path}: {exc}") from exc
    finally:
        env.close()
