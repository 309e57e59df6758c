"""An idempotent upsert sink into an embedded SQLite database (exactly-once by idempotence).

The customer's notes (section 3.6.1) describe the simplest exactly-once sink: writes that
produce the same result however often they are repeated. Every record is an *upsert* keyed by
``key_fields``: a row with that key is inserted, or overwritten if it exists. After a failure
the job restarts from the last completed checkpoint and replays the records after it; the
replay overwrites the very rows it wrote before, so the table ends up as after a failure-free
run, with no transactions and no state in the checkpoint.

This holds only when keys are **deterministic**: a key computed from the record's content
(a user id, a window's start and key), never from the wall clock or a random number, which a
replay would compute differently. Between the failure and the end of the replay a reader may
see rows "jump back" to the values of the restored checkpoint and move forward again.

Changelog rows are honoured as in Flink's upsert sinks: a ``Row`` whose kind is ``DELETE``
deletes the row with its key, ``UPDATE_BEFORE`` is skipped, ``INSERT`` and ``UPDATE_AFTER``
upsert. Records are buffered per subtask (the last one per key wins) and written in one SQLite
transaction per flush; at each checkpoint barrier the buffer is written and committed before the
checkpoint is acknowledged, since records before a completed checkpoint are never replayed.

Records may be ``Row`` s, dicts (by field name), or tuples and lists (by position); values
must be SQLite's: ``int``, ``float``, ``str``, ``bytes`` or ``None``.

Example::

    >>> import os, sqlite3, tempfile
    >>> db = os.path.join(tempfile.mkdtemp(), "counts.db")
    >>> sink = SqliteUpsertSink(db, "word_counts", ["word"], ["word", "count"])
    >>> writer = sink.create_writer(0, 1, "job-1", "counts")
    >>> writer.open()
    >>> writer.write([("to", 1), ("be", 1), ("to", 2)])
    >>> writer.snapshot_state(1)  # barrier: the buffer is committed
    []
    >>> writer.write([{"word": "be", "count": 2}])  # a replay would write the same again
    >>> writer.finish()
    >>> sorted(sqlite3.connect(db).execute("SELECT word, count FROM word_counts"))
    [('be', 2), ('to', 2)]
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from flowrun.core.connectors.base import Sink, SinkWriter
from flowrun.core.reprs import short_repr
from flowrun.core.row import Row, RowKind
from flowrun.core.typeinfo import BasicType, BasicTypeInfo, RowTypeInfo

__all__ = ["SqliteUpsertSink", "SqliteUpsertWriter"]

_SQLITE_TYPES = (int, float, str, bytes, bytearray, memoryview, type(None))
_AFFINITY = {
    BasicType.BOOLEAN: "INTEGER",
    BasicType.BYTE: "INTEGER",
    BasicType.SHORT: "INTEGER",
    BasicType.INT: "INTEGER",
    BasicType.LONG: "INTEGER",
    BasicType.FLOAT: "REAL",
    BasicType.DOUBLE: "REAL",
    BasicType.STRING: "TEXT",
    BasicType.CHAR: "TEXT",
}


def _identifier(name: Any, what: str) -> str:
    if not isinstance(name, str) or not name or '"' in name or "\0" in name:
        raise ValueError(f"{what} must be a non-empty str without '\"' or NUL, got {name!r}")
    return f'"{name}"'


def _names(values: Any, what: str) -> list[str]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TypeError(f"{what} must be a list of field names, got {values!r}")
    names = list(values)
    for name in names:
        _identifier(name, f"every name in {what}")
    if len(set(names)) != len(names):
        raise ValueError(f"{what} has duplicates: {names}")
    return names


class SqliteUpsertSink(Sink):
    """Upserts records into ``table`` of the SQLite database ``db_path``, keyed by
    ``key_fields``; see the module docstring.

    ``field_names`` name the columns in record order (or pass ``row_type``, a
    ``Types.ROW_NAMED``, which also gives the columns SQLite types when the table is created).
    With ``create_table`` (the default) a missing table is created with ``key_fields`` as its
    primary key; an existing table must have those columns and a primary key or unique index on
    exactly ``key_fields``. ``batch_size`` distinct keys in the buffer trigger a write;
    ``timeout`` is how long (seconds) to wait for another process's write lock.
    """

    def __init__(
        self,
        db_path: str,
        table: str,
        key_fields: Sequence[str],
        field_names: Sequence[str] | None = None,
        *,
        row_type: RowTypeInfo | None = None,
        create_table: bool = True,
        batch_size: int = 10_000,
        timeout: float = 30.0,
    ) -> None:
        if not isinstance(db_path, str) or not db_path:
            raise ValueError(f"db_path must be a non-empty path, got {db_path!r}")
        _identifier(table, "table")
        if row_type is not None and not isinstance(row_type, RowTypeInfo):
            raise TypeError(f"row_type must be a Types.ROW_NAMED(...), got {row_type!r}")
        if field_names is None:
            if row_type is None:
                raise ValueError(
                    "SqliteUpsertSink needs the column names: pass field_names (in record "
                    "order) or row_type=Types.ROW_NAMED(...)"
                )
            field_names = row_type.get_field_names()
        fields = _names(field_names, "field_names")
        if row_type is not None and row_type.get_field_names() != fields:
            raise ValueError(
                f"field_names {fields} differ from the row type's {row_type.get_field_names()}"
            )
        keys = _names(key_fields, "key_fields")
        if not keys:
            raise ValueError("key_fields must name at least one field: upserts need a key")
        unknown = [k for k in keys if k not in fields]
        if unknown:
            raise ValueError(f"key field(s) {unknown} are not among the fields {fields}")
        if not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self.db_path = db_path
        self.table = table
        self.key_fields = keys
        self.field_names = fields
        self.row_type = row_type
        self.create_table = create_table
        self.batch_size = batch_size
        self.timeout = timeout

    def column_types(self) -> list[str]:
        """The SQLite type of each column when the sink creates the table ("" = none)."""
        if self.row_type is None:
            return [""] * len(self.field_names)
        out = []
        for t in self.row_type.get_field_types():
            if isinstance(t, BasicTypeInfo):
                out.append(_AFFINITY.get(t._basic_type, ""))
            else:
                out.append("BLOB" if t.to_arrow_type() == _binary() else "")
        return out

    def create_writer(
        self, subtask_index: int, parallelism: int, job_id: str, operator_uid: str
    ) -> SqliteUpsertWriter:
        return SqliteUpsertWriter(self)

    def __repr__(self) -> str:
        return f"SqliteUpsertSink({self.db_path!r}, {self.table!r}, {self.key_fields!r})"


def _binary() -> Any:
    import pyarrow as pa

    return pa.binary()


class SqliteUpsertWriter(SinkWriter):
    """One subtask's connection; buffers the last record per key between flushes."""

    def __init__(self, sink: SqliteUpsertSink) -> None:
        self._sink = sink
        self._fields = sink.field_names
        self._index = {name: i for i, name in enumerate(self._fields)}
        self._key_positions = [self._index[k] for k in sink.key_fields]
        self._buffer: dict[tuple, tuple[bool, tuple, Any]] = {}  # key -> (delete?, values, rec)
        self._conn: sqlite3.Connection | None = None
        table = _identifier(sink.table, "table")
        columns = ", ".join(_identifier(f, "field") for f in self._fields)
        marks = ", ".join("?" * len(self._fields))
        keys = ", ".join(_identifier(k, "key") for k in sink.key_fields)
        updates = ", ".join(
            f"{_identifier(f, 'field')} = excluded.{_identifier(f, 'field')}"
            for f in self._fields
            if f not in sink.key_fields
        )
        action = f"DO UPDATE SET {updates}" if updates else "DO NOTHING"
        self._upsert = (
            f"INSERT INTO {table} ({columns}) VALUES ({marks}) ON CONFLICT ({keys}) {action}"
        )
        where = " AND ".join(f"{_identifier(k, 'key')} = ?" for k in sink.key_fields)
        self._delete = f"DELETE FROM {table} WHERE {where}"

    # -- life cycle ----------------------------------------------------------------------
    def open(self) -> None:
        sink = self._sink
        conn = sqlite3.connect(sink.db_path, timeout=sink.timeout, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")  # readers do not block the writers
            conn.execute("PRAGMA synchronous=FULL")  # a commit survives a power loss
            if sink.create_table:
                self._create_table(conn)
            self._check_table(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _create_table(self, conn: sqlite3.Connection) -> None:
        sink = self._sink
        columns = ", ".join(
            f"{_identifier(f, 'field')} {t}".rstrip()
            for f, t in zip(self._fields, sink.column_types(), strict=True)
        )
        keys = ", ".join(_identifier(k, "key") for k in sink.key_fields)
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {_identifier(sink.table, 'table')} "
            f"({columns}, PRIMARY KEY ({keys}))"
        )

    def _check_table(self, conn: sqlite3.Connection) -> None:
        sink = self._sink
        table = _identifier(sink.table, "table")
        info = conn.execute(f"PRAGMA table_info({table})").fetchall()
        if not info:
            raise ValueError(
                f"table {sink.table!r} does not exist in {sink.db_path!r} (create_table=False)"
            )
        columns = {row[1] for row in info}
        missing = [f for f in self._fields if f not in columns]
        if missing:
            raise ValueError(
                f"table {sink.table!r} in {sink.db_path!r} has no column(s) {missing} "
                f"(columns: {sorted(columns)})"
            )
        wanted = set(sink.key_fields)
        if {row[1] for row in info if row[5]} == wanted:
            return
        for index in conn.execute(f"PRAGMA index_list({table})").fetchall():
            if index[2]:  # unique
                name = _identifier(index[1], "index")
                cols = {row[2] for row in conn.execute(f"PRAGMA index_info({name})")}
                if cols == wanted:
                    return
        raise ValueError(
            f"table {sink.table!r} in {sink.db_path!r} has no primary key or unique index on "
            f"exactly {sink.key_fields}: an upsert needs one to find the row it overwrites"
        )

    # -- records -------------------------------------------------------------------------
    def _values(self, record: Any) -> tuple:
        if isinstance(record, Row):
            fields = record._fields
            if fields is not None and list(fields) != self._fields:
                try:
                    return tuple(record[name] for name in self._fields)
                except (KeyError, ValueError):
                    raise ValueError(
                        f"row {short_repr(record)} has fields {list(fields)}; the sink needs "
                        f"{self._fields}"
                    ) from None
            values = tuple(record._values)
        elif isinstance(record, dict):
            missing = [f for f in self._fields if f not in record]
            if missing:
                raise ValueError(f"record {short_repr(record)} lacks field(s) {missing}")
            return tuple(record[f] for f in self._fields)
        elif isinstance(record, (tuple, list)):
            values = tuple(record)
        else:
            raise TypeError(
                f"SqliteUpsertSink takes Row, dict, tuple or list records, got "
                f"{type(record).__name__}: {short_repr(record)}"
            )
        if len(values) != len(self._fields):
            raise ValueError(
                f"record {short_repr(record)} has {len(values)} values for the "
                f"{len(self._fields)} fields {self._fields}"
            )
        return values

    def write(self, records: list[Any]) -> None:
        buffer = self._buffer
        positions = self._key_positions
        for record in records:
            kind = record.get_row_kind() if isinstance(record, Row) else RowKind.INSERT
            if kind is RowKind.UPDATE_BEFORE:
                continue
            values = self._values(record)
            for name, value in zip(self._fields, values, strict=True):
                if not isinstance(value, _SQLITE_TYPES):
                    raise TypeError(
                        f"SqliteUpsertSink cannot store {name}={short_repr(value)} of record "
                        f"{short_repr(record)}: SQLite takes int, float, str, bytes or None"
                    )
            key = tuple(values[i] for i in positions)
            buffer.pop(key, None)  # keep the buffer in the order of the last write per key
            buffer[key] = (kind is RowKind.DELETE, values, record)
        if len(buffer) >= self._sink.batch_size:
            self.flush()

    def flush(self) -> None:
        if not self._buffer or self._conn is None:
            return
        conn = self._conn
        entries = list(self._buffer.items())
        conn.execute("BEGIN IMMEDIATE")
        try:
            deletes = [key for key, (delete, _, _) in entries if delete]
            upserts = [values for _, (delete, values, _) in entries if not delete]
            if deletes:
                conn.executemany(self._delete, deletes)
            if upserts:
                conn.executemany(self._upsert, upserts)
            conn.execute("COMMIT")
        except BaseException as exc:
            conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise sqlite3.Error(
                    f"writing {len(entries)} record(s) to table {self._sink.table!r} of "
                    f"{self._sink.db_path!r} failed: {exc}"
                ) from exc
            raise
        self._buffer = {}

    # -- checkpoints ---------------------------------------------------------------------
    def snapshot_state(self, checkpoint_id: int) -> list[Any]:
        # Records before the barrier are never replayed once the checkpoint completes, so they
        # must be in the database before this subtask acknowledges it.
        self.flush()
        return []

    def finish(self) -> None:
        try:
            self.flush()
        finally:
            self._close()

    def abort(self) -> None:
        self._buffer = {}
        self._close()

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
