"""Which sub-directory ("bucket") of a file sink's base path a record goes to.

PyFlink offers two assigners, both made by static factories on :class:`BucketAssigner`:
everything in the base path itself, or one directory per processing-time period named with a
Java date pattern (the default of ``FileSink``). Neither looks at the record, so the file sink
asks once per batch (:attr:`BucketAssigner.per_element` is ``False``); a custom assigner that
sets it to ``True`` is asked per record.

Example::

    >>> assigner = BucketAssigner.date_time_bucket_assigner("yyyy-MM-dd--HH", "UTC")
    >>> assigner.get_bucket_id("any record", BucketAssignerContext(1_700_000_000_000))
    '2023-11-14--22'
    >>> BucketAssigner.base_path_bucket_assigner().get_bucket_id("x", BucketAssignerContext(0))
    ''
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from flowrun.core.connectors.java_date_format import JavaDateFormat, resolve_zone

__all__ = [
    "BasePathBucketAssigner",
    "BucketAssigner",
    "BucketAssignerContext",
    "DateTimeBucketAssigner",
]


class BucketAssignerContext:
    """What an assigner may look at besides the record (Flink's ``BucketAssigner.Context``)."""

    def __init__(self, processing_time_ms: int, timestamp: int | None = None) -> None:
        self._processing_time = processing_time_ms
        self._timestamp = timestamp

    def current_processing_time(self) -> int:
        """Wall-clock time in epoch milliseconds."""
        return self._processing_time

    def timestamp(self) -> int | None:
        """The record's event timestamp, when the sink knows it."""
        return self._timestamp


class BucketAssigner:
    """Maps a record to a bucket id: a relative directory path, ``""`` for the base path."""

    per_element = True
    """Whether the bucket depends on the record (else it is computed once per batch)."""

    def get_bucket_id(self, element: Any, context: BucketAssignerContext) -> str:
        raise NotImplementedError

    @staticmethod
    def base_path_bucket_assigner() -> BasePathBucketAssigner:
        """Every record goes straight into the base path."""
        return BasePathBucketAssigner()

    @staticmethod
    def date_time_bucket_assigner(
        format_str: str = "yyyy-MM-dd--HH", timezone_id: str | None = None
    ) -> DateTimeBucketAssigner:
        """One bucket per processing-time period, named by the Java pattern ``format_str``
        in ``timezone_id`` (the system zone when ``None``)."""
        return DateTimeBucketAssigner(format_str, timezone_id)


class BasePathBucketAssigner(BucketAssigner):
    per_element = False

    def get_bucket_id(self, element: Any, context: BucketAssignerContext) -> str:
        return ""

    def __repr__(self) -> str:
        return "BucketAssigner.base_path_bucket_assigner()"


class DateTimeBucketAssigner(BucketAssigner):
    per_element = False

    def __init__(self, format_str: str = "yyyy-MM-dd--HH", timezone_id: str | None = None) -> None:
        self.format_str = format_str
        self.timezone_id = timezone_id
        self._format = JavaDateFormat(format_str)
        self._zone = resolve_zone(timezone_id)  # unknown zones fail when the job is defined

    def get_bucket_id(self, element: Any, context: BucketAssignerContext) -> str:
        seconds = context.current_processing_time() / 1000.0
        moment = datetime.fromtimestamp(seconds, tz=self._zone or timezone.utc)
        if self._zone is None:
            moment = moment.astimezone()  # the system's local zone
        return self._format.format(moment)

    def __repr__(self) -> str:
        return (
            f"BucketAssigner.date_time_bucket_assigner({self.format_str!r}, {self.timezone_id!r})"
        )
