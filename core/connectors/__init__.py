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

from flowrun.core.connectors.base import DeliveryGuarantee, Sink, SinkWriter, Source, SourceReader
from flowrun.core.connectors.bulk_writer import BulkWriter, BulkWriterFactory
from flowrun.core.connectors.collection import CollectionSource
from flowrun.core.connectors.datagen import DataGeneratorSource
from flowrun.core.connectors.file_system import (
    BucketAssigner,
    BulkFormatBuilder,
    FileSink,
    OutputFileConfig,
    RollingPolicy,
)
from flowrun.core.connectors.number_seq import NumberSequenceSource
from flowrun.core.connectors.parquet import ParquetBulkWriters
from flowrun.core.connectors.print_sink import PrintSink
from flowrun.core.connectors.rate_limiter import RateLimiterStrategy
from flowrun.core.connectors.serialization import Encoder
from flowrun.core.connectors.sink_function import SinkFunction
from flowrun.core.connectors.socket import SocketTextSource
from flowrun.core.connectors.sqlite_sink import SqliteUpsertSink
from flowrun.core.connectors.text_file import TextDecodeError, TextFileSource
from flowrun.core.connectors.two_phase_commit import TwoPhaseCommitSinkFunction
from flowrun.core.connectors.write_ahead_sink import (
    CheckpointCommitter,
    GenericWriteAheadSink,
    SqliteCheckpointCommitter,
)

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
