"""Sources and sinks: where a job's records come from and where they go.

Mirrors ``pyflink.datastream.connectors`` (``NumberSequenceSource``, ``FileSink`` and its
configuration) and ``pyflink.common.serialization`` (``Encoder``), plus the sources and sinks
behind environment helpers that PyFlink implements in Java (``from_collection``,
``read_text_file``, ``socket_text_stream``, ``DataStream.print``) and Flink's
``DataGeneratorSource``. The engine-facing contract is in :mod:`.base`.

Example::

    >>> from flowrun.core.connectors import NumberSequenceSource
    >>> reader = NumberSequenceSource(1, 5).create_reader(0, 1)
    >>> reader.open()
    >>> reader.poll(10)
    [1, 2, 3, 4, 5]
"""

from flowrun.core.lazy_exports import lazy_attributes

# Imported on first use (PEP 562): a job imports the one connector it uses, not all of them
# (Parquet, SQLite, sockets...), which keeps the JobManager process's start-up short.
_LAZY = {
    "BucketAssigner": ".file_system",
    "BulkFormatBuilder": ".file_system",
    "BulkWriter": ".bulk_writer",
    "BulkWriterFactory": ".bulk_writer",
    "CheckpointCommitter": ".write_ahead_sink",
    "CollectionSource": ".collection",
    "DataGeneratorSource": ".datagen",
    "DeliveryGuarantee": ".base",
    "Encoder": ".serialization",
    "FileSink": ".file_system",
    "GenericWriteAheadSink": ".write_ahead_sink",
    "NumberSequenceSource": ".number_seq",
    "OutputFileConfig": ".file_system",
    "ParquetBulkWriters": ".parquet",
    "PrintSink": ".print_sink",
    "RateLimiterStrategy": ".rate_limiter",
    "RollingPolicy": ".file_system",
    "Sink": ".base",
    "SinkFunction": ".sink_function",
    "SinkWriter": ".base",
    "SocketTextSource": ".socket",
    "Source": ".base",
    "SourceReader": ".base",
    "SqliteCheckpointCommitter": ".write_ahead_sink",
    "SqliteUpsertSink": ".sqlite_sink",
    "TextDecodeError": ".text_file",
    "TextFileSource": ".text_file",
    "TwoPhaseCommitSinkFunction": ".two_phase_commit",
}

__all__ = [
    "BucketAssigner",
    "BulkFormatBuilder",
    "BulkWriter",
    "BulkWriterFactory",
    "CheckpointCommitter",
    "GenericWriteAheadSink",
    "ParquetBulkWriters",
    "SinkFunction",
    "SqliteCheckpointCommitter",
    "SqliteUpsertSink",
    "TwoPhaseCommitSinkFunction",
    "CollectionSource",
    "DataGeneratorSource",
    "DeliveryGuarantee",
    "Encoder",
    "FileSink",
    "NumberSequenceSource",
    "OutputFileConfig",
    "PrintSink",
    "RateLimiterStrategy",
    "RollingPolicy",
    "Sink",
    "SinkWriter",
    "SocketTextSource",
    "Source",
    "SourceReader",
    "TextDecodeError",
    "TextFileSource",
]


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())
