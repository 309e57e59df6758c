"""The backend-neutral snapshot format: one Arrow IPC stream per (state, key-group range).

Both keyed backends write and read exactly this format, so a snapshot taken from LMDB restores
into the heap backend and back, and a snapshot taken at one parallelism restores at another:
rows carry their key group, and a restoring backend keeps the rows of its own key-group range
(one vectorised filter, :func:`filter_key_groups`).

Columns (:data:`KEYED_SCHEMA`):

============  =========  ==========================================================
column        type       content
============  =========  ==========================================================
key_group     int32      the row's key group (null for operator state)
key           binary     canonical key bytes (``key_serializer_for(key_type)``)
user_key      binary     map state: canonical user-key bytes; null otherwise
value         binary     typed-serialized value; with TTL an 8-byte big-endian
                         last-access timestamp (ms) comes first
============  =========  ==========================================================

Value and reducing/aggregating state have one row per key, list state one row per element
(in list order, each with its own TTL timestamp) and map state one row per entry. Operator
state streams add a ``mode`` column (``SPLIT_DISTRIBUTE``, ``UNION``, ``BROADCAST``) and leave
``key_group``/``key`` null.

Schema metadata (``flowrun.*`` keys, UTF-8) says what the bytes are: the format version, the
operator id, state name and kind, the type infos as ``repr`` (compared on restore, so a state
re-declared with another type fails loudly instead of misreading bytes), whether values carry
a TTL timestamp, the max parallelism (key groups mean nothing under another one) and the
key-group range the stream covers. Nothing in a snapshot is unpickled unless the declared type
is a pickled one; that is the serializers' business, not this module's.

Example::

    >>> meta = StateMeta(operator_id="op", state_name="count", state_kind="value",
    ...                  value_type="Long", max_parallelism=128, key_group_range=(0, 127))
    >>> buf = write_stream(meta, [3], [b"k"], [None], [b"\\x00" * 8])
    >>> meta2, table = read_stream(buf)
    >>> meta2.state_name, table.num_rows
    ('count', 1)
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from .key_groups import KeyGroupRange

__all__ = [
    "FORMAT_VERSION",
    "KEYED_SCHEMA",
    "KEYED_STATE_KINDS",
    "OPERATOR_SCHEMA",
    "OPERATOR_STATE_MODES",
    "SnapshotFormatError",
    "StateMeta",
    "StreamWriter",
    "filter_key_groups",
    "partition_streams",
    "read_snapshot",
    "read_stream",
    "write_snapshot",
    "write_stream",
]

FORMAT_VERSION = 1
"""Bumped on any incompatible change of columns or metadata."""

KEYED_STATE_KINDS = ("value", "list", "map", "reducing", "aggregating")
OPERATOR_STATE_MODES = ("SPLIT_DISTRIBUTE", "UNION", "BROADCAST")

KEYED_SCHEMA = pa.schema(
    [
        pa.field("key_group", pa.int32()),
        pa.field("key", pa.binary()),
        pa.field("user_key", pa.binary()),
        pa.field("value", pa.binary(), nullable=False),
    ]
)
OPERATOR_SCHEMA = KEYED_SCHEMA.append(pa.field("mode", pa.string()))

_PREFIX = "flowrun."
_BATCH_ROWS = 1 << 16  # rows per record batch: bounded memory while a stream is written


class SnapshotFormatError(ValueError):
    """A stream is not a flowrun state snapshot, or one this version cannot read."""


@dataclass(frozen=True)
class StateMeta:
    """What one snapshot stream holds; serialized into the Arrow schema metadata.

    ``state_kind`` is one of :data:`KEYED_STATE_KINDS` for keyed state, or ``"operator"``
    with ``mode`` set for operator state. Type infos are kept as their ``repr`` strings: they
    identify a declaration well enough to reject a mismatch, and reading them back never
    executes anything.
    """

    operator_id: str
    state_name: str
    state_kind: str
    value_type: str = ""
    key_type: str = ""
    user_key_type: str = ""
    ttl: bool = False
    max_parallelism: int = 0
    key_group_range: tuple[int, int] | None = None
    mode: str | None = None
    format_version: int = FORMAT_VERSION
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def is_operator_state(self) -> bool:
        return self.mode is not None

    def to_metadata(self) -> dict[bytes, bytes]:
        items: dict[str, str] = {
            "format_version": str(self.format_version),
            "operator_id": self.operator_id,
            "state_name": self.state_name,
            "state_kind": self.state_kind,
            "value_type": self.value_type,
            "key_type": self.key_type,
            "user_key_type": self.user_key_type,
            "ttl": "true" if self.ttl else "false",
            "max_parallelism": str(self.max_parallelism),
        }
        if self.key_group_range is not None:
            items["key_group_range"] = f"{self.key_group_range[0]},{self.key_group_range[1]}"
        if self.mode is not None:
            items["mode"] = self.mode
        for name, value in self.extra.items():
            items[f"extra.{name}"] = value
        return {(_PREFIX + k).encode(): v.encode() for k, v in items.items()}

    @classmethod
    def from_metadata(cls, metadata: dict[bytes, bytes] | None) -> StateMeta:
        raw = {
            k.decode()[len(_PREFIX) :]: v.decode()
            for k, v in (metadata or {}).items()
            if k.startswith(_PREFIX.encode())
        }
        if "state_name" not in raw or "format_version" not in raw:
            raise SnapshotFormatError(
                "not a flowrun state snapshot stream (no flowrun.state_name/format_version "
                "in the Arrow schema metadata)"
            )
        version = int(raw["format_version"])
        if version > FORMAT_VERSION:
            raise SnapshotFormatError(
                f"state snapshot of {raw['state_name']!r} has format version {version}; this "
                f"flowrun reads versions up to {FORMAT_VERSION}"
            )
        kg_range = None
        if "key_group_range" in raw:
            start, _, end = raw["key_group_range"].partition(",")
            kg_range = (int(start), int(end))
        return cls(
            operator_id=raw.get("operator_id", ""),
            state_name=raw["state_name"],
            state_kind=raw.get("state_kind", ""),
            value_type=raw.get("value_type", ""),
            key_type=raw.get("key_type", ""),
            user_key_type=raw.get("user_key_type", ""),
            ttl=raw.get("ttl") == "true",
            max_parallelism=int(raw.get("max_parallelism", "0")),
            key_group_range=kg_range,
            mode=raw.get("mode"),
            format_version=version,
            extra={k[6:]: v for k, v in raw.items() if k.startswith("extra.")},
        )

    def with_range(self, key_group_range: KeyGroupRange) -> StateMeta:
        return replace(self, key_group_range=(key_group_range.start, key_group_range.end))


class StreamWriter:
    """Writes one snapshot stream batch by batch, so memory stays bounded for large states.

    Backends hand over column chunks (plain Python lists) with :meth:`write_columns`;
    :meth:`finish` returns the complete IPC stream as one ``pa.Buffer``.
    """

    def __init__(self, meta: StateMeta) -> None:
        self.meta = meta
        self.schema = (OPERATOR_SCHEMA if meta.is_operator_state else KEYED_SCHEMA).with_metadata(
            meta.to_metadata()
        )
        self._sink = pa.BufferOutputStream()
        self._writer = pa.ipc.new_stream(self._sink, self.schema)
        self.rows = 0

    def write_columns(
        self,
        key_groups: Sequence[int | None],
        keys: Sequence[bytes | None],
        user_keys: Sequence[bytes | None],
        values: Sequence[bytes],
    ) -> None:
        if not values:
            return
        arrays = [
            pa.array(key_groups, pa.int32()),
            pa.array(keys, pa.binary()),
            pa.array(user_keys, pa.binary()),
            pa.array(values, pa.binary()),
        ]
        if self.meta.is_operator_state:
            arrays.append(pa.array([self.meta.mode] * len(values), pa.string()))
        self._writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=self.schema))
        self.rows += len(values)

    def write_arrays(
        self, key_groups: pa.Array, keys: pa.Array, user_keys: pa.Array, values: pa.Array
    ) -> None:
        """Column chunks already built as Arrow arrays (vectorised producers)."""
        if not len(values):
            return
        arrays = [key_groups, keys, user_keys, values]
        if self.meta.is_operator_state:
            arrays.append(pa.array([self.meta.mode] * len(values), pa.string()))
        self._writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=self.schema))
        self.rows += len(values)

    def write_table(self, table: pa.Table) -> None:
        """Rows already in the snapshot layout (e.g. re-emitted by :func:`redistribute`)."""
        for batch in table.to_batches(max_chunksize=_BATCH_ROWS):
            self._writer.write_batch(pa.RecordBatch.from_arrays(batch.columns, schema=self.schema))
            self.rows += batch.num_rows

    def finish(self) -> pa.Buffer:
        self._writer.close()
        return self._sink.getvalue()


def write_stream(
    meta: StateMeta,
    key_groups: Sequence[int | None],
    keys: Sequence[bytes | None],
    user_keys: Sequence[bytes | None],
    values: Sequence[bytes],
) -> pa.Buffer:
    """A whole stream from columns in memory (small states, tests)."""
    writer = StreamWriter(meta)
    for lo in range(0, len(values), _BATCH_ROWS):
        hi = lo + _BATCH_ROWS
        writer.write_columns(key_groups[lo:hi], keys[lo:hi], user_keys[lo:hi], values[lo:hi])
    return writer.finish()


def read_stream(stream: Any) -> tuple[StateMeta, pa.Table]:
    """Metadata and rows of one stream (``pa.Buffer``, ``bytes`` or a file path).

    Reading a buffer is zero-copy: the table's binary columns point into it.
    """
    if isinstance(stream, (str, os.PathLike)):
        with pa.memory_map(os.fspath(stream), "r") as source:
            stream = source.read_buffer()
    try:
        reader = pa.ipc.open_stream(pa.py_buffer(stream) if isinstance(stream, bytes) else stream)
        table = reader.read_all()
    except pa.ArrowInvalid as exc:
        raise SnapshotFormatError(f"not an Arrow IPC stream: {exc}") from exc
    meta = StateMeta.from_metadata(table.schema.metadata)
    expected = OPERATOR_SCHEMA if meta.is_operator_state else KEYED_SCHEMA
    if table.schema.names != expected.names:
        raise SnapshotFormatError(
            f"state {meta.state_name!r}: columns {table.schema.names}, expected {expected.names}"
        )
    return meta, table


def partition_streams(streams: Iterable[Any]) -> tuple[list[Any], list[Any]]:
    """Split streams into (keyed state, operator state), reading only their schemas."""
    keyed: list[Any] = []
    operator: list[Any] = []
    for stream in streams:
        source = stream
        if isinstance(stream, (str, os.PathLike)):
            with pa.memory_map(os.fspath(stream), "r") as mapped:
                source = mapped.read_buffer()
        elif isinstance(stream, bytes):
            source = pa.py_buffer(stream)
        meta = StateMeta.from_metadata(pa.ipc.open_stream(source).schema.metadata)
        (operator if meta.is_operator_state else keyed).append(stream)
    return keyed, operator


def filter_key_groups(table: pa.Table, key_group_range: KeyGroupRange) -> pa.Table:
    """The rows whose key group lies in ``key_group_range`` (vectorised, order preserved)."""
    if table.num_rows == 0:
        return table
    column = table.column("key_group")
    low = pc.min(column).as_py()
    high = pc.max(column).as_py()
    if low is not None and key_group_range.start <= low and high <= key_group_range.end:
        return table  # common case when parallelism did not change: no copy
    # Streams are mostly in key-group order: whole record batches fall inside or outside
    # the range, so only the batches that straddle a boundary are filtered (and copied).
    start, end = key_group_range.start, key_group_range.end
    kept = []
    for batch in table.to_batches():
        kgs = batch.column(0)
        bounds = pc.min_max(kgs)
        lo, hi = bounds["min"].as_py(), bounds["max"].as_py()
        if lo is None or hi < start or lo > end:
            continue
        if start <= lo and hi <= end:
            kept.append(batch)
            continue
        mask = pc.and_(pc.greater_equal(kgs, start), pc.less_equal(kgs, end))
        kept.append(batch.filter(mask))
    return pa.Table.from_batches(kept, schema=table.schema)


# ------------------------------------------------------------------------------------------
# Files
# ------------------------------------------------------------------------------------------

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def write_snapshot(directory: str | os.PathLike, streams: Iterable[pa.Buffer]) -> list[str]:
    """Write streams as ``NNNNN-<state>.arrow`` files in ``directory``; returns their paths.

    Each file is written to a temporary name and renamed, so a reader never sees half a
    stream. (Checkpoint storage with its ``_metadata`` and checksums builds on top of this.)
    """
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    paths = []
    for index, stream in enumerate(streams):
        meta = StateMeta.from_metadata(pa.ipc.open_stream(stream).schema.metadata)
        name = _UNSAFE.sub("_", meta.state_name)[:80] or "state"
        path = os.path.join(directory, f"{index:05d}-{name}.arrow")
        tmp = path + ".tmp"
        with open(tmp, "wb") as out:
            out.write(memoryview(stream))
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
        paths.append(path)
    return paths


def read_snapshot(directory: str | os.PathLike) -> list[pa.Buffer]:
    """All streams written by :func:`write_snapshot` in ``directory``, memory-mapped."""
    directory = os.fspath(directory)
    buffers = []
    for name in sorted(os.listdir(directory)):
        if name.endswith(".arrow"):
            with pa.memory_map(os.path.join(directory, name), "r") as source:
                buffers.append(source.read_buffer())
    return buffers
