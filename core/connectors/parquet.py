"""Parquet part files for :class:`~flowrun.core.connectors.file_system.FileSink`.

Mirrors PyFlink 1.16's ``pyflink.datastream.formats.parquet.ParquetBulkWriters``:
``ParquetBulkWriters.for_row_type(row_type)`` describes the columns, and
``FileSink.for_bulk_format(path, factory)`` writes one Parquet file per part. PyFlink takes a
Table API ``RowType``; flowrun has no Table API, so the row type is the DataStream one,
``Types.ROW_NAMED(names, types)``, and records are checked and converted exactly as on a typed
stream (``Row``, tuple, list or dict; a record that does not fit fails with its position and
field). The optional ``_row_kind`` of rows is not written, as in Flink.

Rows are converted to Arrow per batch and kept in memory until ``parquet.block.size`` bytes
(128 MiB, parquet-mr's default) are buffered; then one row group is written. Finishing the part
(at a checkpoint or at the end of input) writes the last row group and the footer.

Example::

    >>> import os, tempfile
    >>> import pyarrow.parquet as pq
    >>> from flowrun.core.typeinfo import Types
    >>> from flowrun.core.connectors.file_system import FileSink
    >>> from flowrun.core.connectors.bucket_assigner import BucketAssigner
    >>> row_type = Types.ROW_NAMED(["word", "count"], [Types.STRING(), Types.LONG()])
    >>> base = tempfile.mkdtemp()
    >>> sink = (
    ...     FileSink.for_bulk_format(base, ParquetBulkWriters.for_row_type(row_type))
    ...     .with_bucket_assigner(BucketAssigner.base_path_bucket_assigner())
    ...     .build()
    ... )
    >>> writer = sink.create_writer(0, 1, "job-1", "counts")
    >>> writer.open()
    >>> writer.write([("to", 2), {"word": "be", "count": 1}])
    >>> writer.finish()
    >>> os.listdir(base)
    ['part-counts-0-0']
    >>> pq.read_table(os.path.join(base, "part-counts-0-0")).to_pylist()
    [{'word': 'to', 'count': 2}, {'word': 'be', 'count': 1}]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, BinaryIO

import pyarrow as pa

from flowrun.core.connectors.bulk_writer import BulkWriter, BulkWriterFactory
from flowrun.core.records import ROW_KIND_COLUMN, serializer_for
from flowrun.core.typeinfo import RowTypeInfo

__all__ = ["ParquetBulkWriter", "ParquetBulkWriters", "ParquetWriterFactory"]

_CODECS = ("UNCOMPRESSED", "SNAPPY", "GZIP", "BROTLI", "LZ4", "ZSTD")
_KNOWN_KEYS = (
    "parquet.block.size",
    "parquet.compression",
    "parquet.enable.dictionary",
    "parquet.page.size",
)
_NO_SPLIT = 1 << 62  # to_batches byte budget that never splits a batch


def _parse_config(hadoop_config: Any) -> dict[str, str]:
    """The ``parquet.*`` settings of a Hadoop-style configuration (a mapping, or an object
    with ``to_dict()`` such as PyFlink's ``Configuration``); other keys are ignored, as Hadoop
    ignores keys nobody reads, but a misspelt ``parquet.*`` key is an error."""
    if hadoop_config is None:
        return {}
    if hasattr(hadoop_config, "to_dict"):
        hadoop_config = hadoop_config.to_dict()
    if not isinstance(hadoop_config, Mapping):
        raise TypeError(
            f"hadoop_config must be a mapping of str to str, got {type(hadoop_config).__name__}"
        )
    out = {}
    for key, value in hadoop_config.items():
        if not isinstance(key, str) or not key.startswith("parquet."):
            continue
        if key not in _KNOWN_KEYS:
            raise ValueError(
                f"unknown Parquet setting {key!r} in hadoop_config; flowrun understands "
                f"{', '.join(_KNOWN_KEYS)}"
            )
        out[key] = str(value)
    return out


def _positive_int(config: dict[str, str], key: str, default: int) -> int:
    text = config.get(key)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise ValueError(f"{key} must be a positive number of bytes, got {text!r}")
    return value


class ParquetWriterFactory(BulkWriterFactory):
    """Writes records of a fixed row type as Parquet; build with
    :meth:`ParquetBulkWriters.for_row_type`."""

    def __init__(
        self,
        row_type: RowTypeInfo,
        compression: str = "SNAPPY",
        block_size: int = 128 * 1024 * 1024,
        page_size: int = 1024 * 1024,
        enable_dictionary: bool = True,
    ) -> None:
        if not isinstance(row_type, RowTypeInfo):
            raise TypeError(
                "Parquet needs a row type, e.g. Types.ROW_NAMED(['name', 'age'], "
                f"[Types.STRING(), Types.INT()]); got {row_type!r}"
            )
        codec = compression.upper()
        if codec not in _CODECS:
            raise ValueError(
                f"unknown Parquet compression {compression!r}; use one of {', '.join(_CODECS)}"
            )
        self.row_type = row_type
        self.compression = codec
        self.block_size = block_size
        self.page_size = page_size
        self.enable_dictionary = enable_dictionary
        serializer = serializer_for(row_type)  # fails early on types Arrow cannot hold
        self.schema = pa.schema([f for f in serializer.schema if f.name != ROW_KIND_COLUMN])

    def create(self, stream: BinaryIO) -> ParquetBulkWriter:
        return ParquetBulkWriter(self, stream)

    def __repr__(self) -> str:
        return f"ParquetBulkWriters.for_row_type({self.row_type!r})"


class ParquetBulkWriter(BulkWriter):
    """One Parquet part file: Arrow row groups of about ``block_size`` bytes, then a footer."""

    def __init__(self, factory: ParquetWriterFactory, stream: BinaryIO) -> None:
        self._factory = factory
        self._serializer = serializer_for(factory.row_type)
        self._schema = factory.schema
        self._names = factory.schema.names
        import pyarrow.parquet as pq  # on first use: it costs 0.1 s of start-up

        self._writer = pq.ParquetWriter(
            stream,
            factory.schema,
            compression=factory.compression,
            data_page_size=factory.page_size,
            use_dictionary=factory.enable_dictionary,
        )
        self._buffered: list[pa.RecordBatch] = []
        self._buffered_bytes = 0

    def add_elements(self, elements: list[Any]) -> None:
        for batch in self._serializer.to_batches(elements, _NO_SPLIT):
            columns = [batch.column(name) for name in self._names]
            self._add(pa.RecordBatch.from_arrays(columns, schema=self._schema))

    def add_batch(self, batch: pa.RecordBatch) -> None:
        missing = [name for name in self._names if name not in batch.schema.names]
        if missing:
            raise ValueError(
                f"the Parquet row type has field(s) {missing} that the Arrow batch lacks "
                f"(batch columns: {batch.schema.names})"
            )
        table = pa.Table.from_batches([batch]).select(self._names)
        try:
            table = table.cast(self._schema)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise ValueError(
                f"an Arrow batch with schema {batch.schema} does not fit the Parquet row type "
                f"{self._factory.row_type!r}: {exc}"
            ) from exc
        for piece in table.to_batches():
            self._add(piece)

    def _add(self, batch: pa.RecordBatch) -> None:
        if not batch.num_rows:
            return
        self._buffered.append(batch)
        self._buffered_bytes += batch.nbytes
        if self._buffered_bytes >= self._factory.block_size:
            self._write_row_group()

    def _write_row_group(self) -> None:
        if self._buffered:
            table = pa.Table.from_batches(self._buffered, schema=self._schema)
            self._writer.write_table(table, row_group_size=table.num_rows)
            self._buffered = []
            self._buffered_bytes = 0

    def flush(self) -> None:
        """Row groups stay in memory until full (as in parquet-mr); nothing to do."""

    def finish(self) -> None:
        self._write_row_group()
        self._writer.close()  # writes the footer; a stream we did not open stays open

    def discard(self) -> None:
        self._buffered = []
        try:
            self._writer.close()  # into a file about to be deleted; keeps pyarrow quiet
        except Exception:
            pass


class ParquetBulkWriters:
    """PyFlink's factory of Parquet bulk writers."""

    @staticmethod
    def for_row_type(
        row_type: RowTypeInfo,
        hadoop_config: Mapping[str, str] | None = None,
        utc_timestamp: bool = False,
    ) -> ParquetWriterFactory:
        """A bulk writer factory writing records of ``row_type`` into Parquet files.

        ``hadoop_config`` may set ``parquet.compression`` (UNCOMPRESSED, SNAPPY -- the
        default --, GZIP, BROTLI, LZ4, ZSTD), ``parquet.block.size`` (row group bytes),
        ``parquet.page.size`` and ``parquet.enable.dictionary``. ``utc_timestamp`` is accepted
        for PyFlink programs; flowrun writes a timestamp as the Arrow type of its
        ``TypeInformation`` either way.

        >>> from flowrun.core.typeinfo import Types
        >>> f = ParquetBulkWriters.for_row_type(
        ...     Types.ROW_NAMED(["a"], [Types.INT()]), {"parquet.compression": "zstd"}
        ... )
        >>> f.compression, f.schema.names
        ('ZSTD', ['a'])
        """
        config = _parse_config(hadoop_config)
        enable_dictionary = config.get("parquet.enable.dictionary", "true").strip().lower()
        if enable_dictionary not in ("true", "false"):
            raise ValueError(
                f"parquet.enable.dictionary must be true or false, got {enable_dictionary!r}"
            )
        return ParquetWriterFactory(
            row_type,
            compression=config.get("parquet.compression", "SNAPPY"),
            block_size=_positive_int(config, "parquet.block.size", 128 * 1024 * 1024),
            page_size=_positive_int(config, "parquet.page.size", 1024 * 1024),
            enable_dictionary=enable_dictionary == "true",
        )
