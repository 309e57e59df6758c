"""PyFlink's ``FileSink`` for row and bulk formats, with its configuration objects.

Row format: records are encoded one per line (see :class:`Encoder`) into part files under
``base_path/<bucket>/``; buckets come from a :class:`BucketAssigner` (by default one directory
per hour of processing time, as in Flink), and a :class:`RollingPolicy` decides when a part file
is closed and the next one begun. Bulk format (``for_bulk_format``, e.g. Parquet through
:class:`~flowrun.core.connectors.parquet.ParquetBulkWriters`): a :class:`BulkWriterFactory`
encodes the records, and parts roll only at checkpoints and at the end of input.

With checkpointing the sink is exactly-once: parts become visible only when the checkpoint
that covers them completes, and a restore finishes what the last completed checkpoint covered
and removes what the failed attempt left behind. Part file naming and the in-progress ->
pending -> finished life cycle are described in
:mod:`~flowrun.core.connectors.file_sink_writer`.

Example::

    >>> import os, tempfile
    >>> base = tempfile.mkdtemp()
    >>> sink = (
    ...     FileSink.for_row_format(base, Encoder.simple_string_encoder())
    ...     .with_bucket_assigner(BucketAssigner.base_path_bucket_assigner())
    ...     .with_output_file_config(OutputFileConfig("out", ".txt"))
    ...     .build()
    ... )
    >>> writer = sink.create_writer(0, 1, "job-1", "words")
    >>> writer.open()
    >>> writer.write(["to", "be"])
    >>> writer.finish()
    >>> os.listdir(base), open(os.path.join(base, "out-words-0-0.txt")).read()
    (['out-words-0-0.txt'], 'to\\nbe\\n')
"""

from __future__ import annotations

import time
from collections.abc import Callable

from flowrun.core.connectors.base import Sink
from flowrun.core.connectors.bucket_assigner import (
    BasePathBucketAssigner,
    BucketAssigner,
    BucketAssignerContext,
    DateTimeBucketAssigner,
)
from flowrun.core.connectors.bulk_writer import BulkWriterFactory
from flowrun.core.connectors.file_sink_writer import FileSinkWriter
from flowrun.core.connectors.rolling_policy import (
    DefaultRollingPolicy,
    OnCheckpointRollingPolicy,
    PartFileInfo,
    RollingPolicy,
)
from flowrun.core.connectors.serialization import Encoder

__all__ = [
    "BasePathBucketAssigner",
    "BucketAssigner",
    "BucketAssignerContext",
    "BulkFormatBuilder",
    "BulkWriterFactory",
    "DateTimeBucketAssigner",
    "DefaultRollingPolicy",
    "Encoder",
    "FileSink",
    "OnCheckpointRollingPolicy",
    "OutputFileConfig",
    "OutputFileConfigBuilder",
    "PartFileInfo",
    "RollingPolicy",
    "RowFormatBuilder",
]


class OutputFileConfig:
    """Prefix and suffix of part file names (``"part"`` and ``""`` by default via the builder)."""

    def __init__(self, part_prefix: str, part_suffix: str) -> None:
        if "/" in part_prefix or "/" in part_suffix:
            raise ValueError("part prefix and suffix must not contain '/'")
        self._part_prefix = part_prefix
        self._part_suffix = part_suffix

    def get_part_prefix(self) -> str:
        return self._part_prefix

    def get_part_suffix(self) -> str:
        return self._part_suffix

    @staticmethod
    def builder() -> OutputFileConfigBuilder:
        return OutputFileConfigBuilder()

    def __repr__(self) -> str:
        return f"OutputFileConfig({self._part_prefix!r}, {self._part_suffix!r})"


class OutputFileConfigBuilder:
    """Builds an :class:`OutputFileConfig`; setters return the builder."""

    def __init__(self) -> None:
        self.part_prefix = "part"
        self.part_suffix = ""

    def with_part_prefix(self, prefix: str) -> OutputFileConfigBuilder:
        self.part_prefix = prefix
        return self

    def with_part_suffix(self, suffix: str) -> OutputFileConfigBuilder:
        self.part_suffix = suffix
        return self

    def build(self) -> OutputFileConfig:
        return OutputFileConfig(self.part_prefix, self.part_suffix)


class FileSink(Sink):
    """Writes records into rolling, bucketed part files; build with :meth:`for_row_format`
    or :meth:`for_bulk_format`."""

    def __init__(
        self,
        base_path: str,
        encoder: Encoder | None,
        bucket_assigner: BucketAssigner,
        rolling_policy: RollingPolicy,
        output_file_config: OutputFileConfig,
        bucket_check_interval: int,
        clock: Callable[[], float] = time.time,
        writer_factory: BulkWriterFactory | None = None,
    ) -> None:
        if (encoder is None) == (writer_factory is None):
            raise ValueError("a FileSink needs either an encoder (row format) or a bulk writer")
        self.base_path = base_path
        self.encoder = encoder
        self.writer_factory = writer_factory
        self.bucket_assigner = bucket_assigner
        self.rolling_policy = rolling_policy
        self.output_file_config = output_file_config
        self.bucket_check_interval = bucket_check_interval
        self.clock = clock

    @staticmethod
    def for_row_format(
        base_path: str, encoder: Encoder, *, clock: Callable[[], float] = time.time
    ) -> RowFormatBuilder:
        """Start building a sink that writes one encoded record after another.

        ``clock`` (wall-clock seconds, for buckets and rolling) is a flowrun extension for tests.
        """
        if not isinstance(encoder, Encoder):
            raise TypeError(
                f"for_row_format() needs an Encoder (e.g. Encoder.simple_string_encoder()), "
                f"got {encoder!r}"
            )
        return RowFormatBuilder(base_path, encoder, clock)

    @staticmethod
    def for_bulk_format(
        base_path: str,
        writer_factory: BulkWriterFactory,
        *,
        clock: Callable[[], float] = time.time,
    ) -> BulkFormatBuilder:
        """Start building a sink that encodes records in bulk (e.g. Parquet).

        Bulk part files roll on checkpoints only (and at the end of bounded input).
        """
        if not isinstance(writer_factory, BulkWriterFactory):
            raise TypeError(
                "for_bulk_format() needs a BulkWriterFactory (e.g. "
                f"ParquetBulkWriters.for_row_type(row_type)), got {writer_factory!r}"
            )
        return BulkFormatBuilder(base_path, writer_factory, clock)

    def create_writer(
        self, subtask_index: int, parallelism: int, job_id: str, operator_uid: str
    ) -> FileSinkWriter:
        return FileSinkWriter(
            base_path=self.base_path,
            encoder=self.encoder,
            bucket_assigner=self.bucket_assigner,
            rolling_policy=self.rolling_policy,
            part_prefix=self.output_file_config.get_part_prefix(),
            part_suffix=self.output_file_config.get_part_suffix(),
            bucket_check_interval=self.bucket_check_interval,
            subtask_index=subtask_index,
            operator_uid=operator_uid,
            clock=self.clock,
            writer_factory=self.writer_factory,
        )

    def __repr__(self) -> str:
        fmt = self.encoder if self.writer_factory is None else self.writer_factory
        return f"FileSink({self.base_path!r}, {fmt!r}, {self.bucket_assigner!r})"


class RowFormatBuilder:
    """Configures a row-format :class:`FileSink`; every ``with_*`` returns the builder."""

    def __init__(
        self, base_path: str, encoder: Encoder, clock: Callable[[], float] = time.time
    ) -> None:
        self._base_path = base_path
        self._encoder = encoder
        self._clock = clock
        self._bucket_check_interval = 60 * 1000
        self._bucket_assigner: BucketAssigner = BucketAssigner.date_time_bucket_assigner()
        self._rolling_policy: RollingPolicy = RollingPolicy.default_rolling_policy()
        self._output_file_config = OutputFileConfig.builder().build()

    def with_bucket_check_interval(self, interval: int) -> RowFormatBuilder:
        """How often (ms) time-based rolling is checked; default one minute."""
        if interval <= 0:
            raise ValueError(f"bucket check interval must be > 0 ms, got {interval}")
        self._bucket_check_interval = interval
        return self

    def with_bucket_assigner(self, bucket_assigner: BucketAssigner) -> RowFormatBuilder:
        self._bucket_assigner = bucket_assigner
        return self

    def with_rolling_policy(self, rolling_policy: RollingPolicy) -> RowFormatBuilder:
        self._rolling_policy = rolling_policy
        return self

    def with_output_file_config(self, output_file_config: OutputFileConfig) -> RowFormatBuilder:
        self._output_file_config = output_file_config
        return self

    def disable_compact(self) -> RowFormatBuilder:
        """Compaction is not implemented, so it is always off; kept for PyFlink programs."""
        return self

    def build(self) -> FileSink:
        return FileSink(
            self._base_path,
            self._encoder,
            self._bucket_assigner,
            self._rolling_policy,
            self._output_file_config,
            self._bucket_check_interval,
            self._clock,
        )


class BulkFormatBuilder:
    """Configures a bulk-format :class:`FileSink`; every ``with_*`` returns the builder.

    >>> from flowrun.core.typeinfo import Types
    >>> from flowrun.core.connectors.parquet import ParquetBulkWriters
    >>> builder = FileSink.for_bulk_format("/tmp/out", ParquetBulkWriters.for_row_type(
    ...     Types.ROW_NAMED(["a"], [Types.INT()])))
    >>> try:
    ...     builder.with_rolling_policy(RollingPolicy.default_rolling_policy())
    ... except ValueError as e:
    ...     print(str(e).split(":")[0])
    a bulk-format FileSink rolls on checkpoints only
    """

    def __init__(
        self,
        base_path: str,
        writer_factory: BulkWriterFactory,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._base_path = base_path
        self._writer_factory = writer_factory
        self._clock = clock
        self._bucket_check_interval = 60 * 1000
        self._bucket_assigner: BucketAssigner = BucketAssigner.date_time_bucket_assigner()
        self._rolling_policy: RollingPolicy = RollingPolicy.on_checkpoint_rolling_policy()
        self._output_file_config = OutputFileConfig.builder().build()

    def with_bucket_check_interval(self, interval: int) -> BulkFormatBuilder:
        """How often (ms) time-based checks run; default one minute."""
        if interval <= 0:
            raise ValueError(f"bucket check interval must be > 0 ms, got {interval}")
        self._bucket_check_interval = interval
        return self

    def with_bucket_assigner(self, bucket_assigner: BucketAssigner) -> BulkFormatBuilder:
        self._bucket_assigner = bucket_assigner
        return self

    def with_rolling_policy(self, rolling_policy: RollingPolicy) -> BulkFormatBuilder:
        """Only :class:`OnCheckpointRollingPolicy` is accepted (PyFlink raises the same)."""
        if not isinstance(rolling_policy, OnCheckpointRollingPolicy):
            raise ValueError(
                "a bulk-format FileSink rolls on checkpoints only: use "
                f"RollingPolicy.on_checkpoint_rolling_policy(), got {rolling_policy!r}"
            )
        self._rolling_policy = rolling_policy
        return self

    def with_output_file_config(self, output_file_config: OutputFileConfig) -> BulkFormatBuilder:
        self._output_file_config = output_file_config
        return self

    def disable_compact(self) -> BulkFormatBuilder:
        """Compaction is not implemented, so it is always off; kept for PyFlink programs."""
        return self

    def build(self) -> FileSink:
        return FileSink(
            self._base_path,
            None,
            self._bucket_assigner,
            self._rolling_policy,
            self._output_file_config,
            self._bucket_check_interval,
            self._clock,
            writer_factory=self._writer_factory,
        )


FileSink.RowFormatBuilder = RowFormatBuilder  # type: ignore[attr-defined]  # PyFlink's nesting
FileSink.BulkFormatBuilder = BulkFormatBuilder  # type: ignore[attr-defined]
