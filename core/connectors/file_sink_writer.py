"""The per-subtask writer of :class:`~flowrun.core.connectors.file_system.FileSink`.

Part files follow Flink's life cycle with names that are deterministic per subtask:

* in progress: ``<bucket>/.<prefix>-<uid>-<subtask>-<counter><suffix>.inprogress.<random>``
  (hidden, so readers of the directory and our own text source skip it);
* finished: ``<bucket>/<prefix>-<uid>-<subtask>-<counter><suffix>``, made by one atomic
  ``rename`` after an ``fsync``.

``uid`` is the operator uid (characters other than letters, digits, ``_ . -`` become ``_``),
``subtask`` the subtask index, and ``counter`` one sequence per writer across its buckets, as in
Flink. Flink 1.15+ uses a random uuid instead of ``<uid>-<subtask>``; we keep names stable so a
restored job can recognise its own files, and avoid clobbering output of earlier runs by
starting the counter after the highest counter already present in a bucket for the same
``<prefix>-<uid>-<subtask>``.

A part is finished when bounded input ends (:meth:`FileSinkWriter.finish`) and when the rolling
policy rolls it (size, age, inactivity). Flink would keep rolled parts *pending* until the next
checkpoint completes; until flowrun has checkpoints, rolled parts are finished at once.
:meth:`FileSinkWriter.abort` deletes in-progress files and leaves finished ones.

Bytes are buffered per part and written with one ``write`` call per batch (or per 256 KiB);
``flush`` writes the buffers out and also runs the periodic time-based rolling check, so the
engine should call it now and then even when no records arrive (Flink uses a timer).
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from flowrun.core.connectors.base import SinkWriter
from flowrun.core.connectors.bucket_assigner import BucketAssigner, BucketAssignerContext
from flowrun.core.connectors.rolling_policy import PartFileInfo, RollingPolicy
from flowrun.core.connectors.serialization import Encoder, records_of_batch

__all__ = ["FileSinkWriter", "part_file_name"]

_WRITE_THRESHOLD = 256 << 10  # buffered bytes per part that trigger a write
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def part_file_name(prefix: str, uid: str, subtask_index: int, counter: int, suffix: str) -> str:
    """The finished name of a part file.

    >>> part_file_name("part", "sink-1", 0, 3, ".txt")
    'part-sink-1-0-3.txt'
    """
    return f"{prefix}-{uid}-{subtask_index}-{counter}{suffix}"


class _Part:
    """One in-progress part file with its write buffer."""

    def __init__(self, final_path: str, temp_path: str, fd: int, now_ms: int) -> None:
        self.final_path = final_path
        self.temp_path = temp_path
        self.fd = fd
        self.info = PartFileInfo(size=0, creation_time=now_ms, last_update_time=now_ms)
        self.buffer: list[bytes] = []
        self.buffered = 0

    def append(self, data: bytes, now_ms: int) -> None:
        self.buffer.append(data)
        self.buffered += len(data)
        self.info.size += len(data)
        self.info.last_update_time = now_ms

    def write_out(self) -> None:
        if not self.buffered:
            return
        view = memoryview(b"".join(self.buffer))
        while view:
            view = view[os.write(self.fd, view) :]
        self.buffer = []
        self.buffered = 0


class FileSinkWriter(SinkWriter):
    """Writes records of one subtask into rolling part files, one open part per bucket."""

    def __init__(
        self,
        base_path: str,
        encoder: Encoder,
        bucket_assigner: BucketAssigner,
        rolling_policy: RollingPolicy,
        part_prefix: str,
        part_suffix: str,
        bucket_check_interval: int,
        subtask_index: int,
        operator_uid: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._base_path = base_path
        self._encoder = encoder
        self._assigner = bucket_assigner
        self._policy = rolling_policy
        self._prefix = part_prefix
        self._suffix = part_suffix
        self._check_interval = bucket_check_interval
        self._subtask = subtask_index
        self._uid = _UNSAFE.sub("_", operator_uid) or "sink"
        self._clock = clock
        self._parts: dict[str, _Part] = {}
        self._seen_dirs: set[str] = set()
        self._counter = 0
        self._last_check: int | None = None
        self.finished_files: list[str] = []
        """Paths of the part files this writer has finished, in order."""

    def _now(self) -> int:
        return int(self._clock() * 1000)

    # --- writing ---------------------------------------------------------------------

    def open(self) -> None:
        self._last_check = self._now()

    def write(self, records: list[Any]) -> None:
        now = self._now()
        self._check_processing_time(now)
        if not records:
            return
        context = BucketAssignerContext(now)
        if not self._assigner.per_element:
            self._write_bucket(self._assigner.get_bucket_id(records[0], context), records, now)
            return
        groups: dict[str, list[Any]] = {}
        for record in records:
            groups.setdefault(self._assigner.get_bucket_id(record, context), []).append(record)
        for bucket, group in groups.items():
            self._write_bucket(bucket, group, now)

    def write_batch(self, batch: pa.RecordBatch) -> None:
        self.write(records_of_batch(batch))

    def _write_bucket(self, bucket: str, records: list[Any], now: int) -> None:
        part = self._parts.get(bucket) or self._open_part(bucket, now)
        limit = self._policy.event_size_limit()
        data = self._encoder.encode_batch(records)
        if limit is None or part.info.size + len(data) <= limit:
            part.append(data, now)  # no record can start beyond the limit: no roll
        else:
            for piece in self._encoder.encode_each(records):
                if part.info.size > limit:
                    self._finish_part(bucket)
                    part = self._open_part(bucket, now)
                part.append(piece, now)
        if part.buffered >= _WRITE_THRESHOLD:
            part.write_out()

    # --- part files ------------------------------------------------------------------

    def _bucket_dir(self, bucket: str) -> str:
        return os.path.join(self._base_path, bucket) if bucket else self._base_path

    def _first_free_counter(self, directory: str) -> int:
        """One past the highest counter of our own parts (finished or not) in ``directory``."""
        stem = re.escape(f"{self._prefix}-{self._uid}-{self._subtask}-")
        pattern = re.compile(rf"^\.?{stem}(\d+){re.escape(self._suffix)}(\.inprogress\..*)?$")
        counters = [int(m.group(1)) for m in map(pattern.match, os.listdir(directory)) if m]
        return max(counters, default=-1) + 1

    def _open_part(self, bucket: str, now: int) -> _Part:
        directory = self._bucket_dir(bucket)
        if directory not in self._seen_dirs:
            os.makedirs(directory, exist_ok=True)
            self._counter = max(self._counter, self._first_free_counter(directory))
            self._seen_dirs.add(directory)
        name = part_file_name(self._prefix, self._uid, self._subtask, self._counter, self._suffix)
        self._counter += 1
        temp = os.path.join(directory, f".{name}.inprogress.{uuid.uuid4().hex[:12]}")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        part = _Part(os.path.join(directory, name), temp, os.open(temp, flags, 0o644), now)
        self._parts[bucket] = part
        return part

    def _finish_part(self, bucket: str) -> None:
        part = self._parts.pop(bucket)
        try:
            part.write_out()
            os.fsync(part.fd)
        finally:
            os.close(part.fd)
        os.rename(part.temp_path, part.final_path)
        self.finished_files.append(part.final_path)

    def _check_processing_time(self, now: int) -> None:
        if self._last_check is not None and now - self._last_check < self._check_interval:
            return
        self._last_check = now
        for bucket, part in list(self._parts.items()):
            if self._policy.should_roll_on_processing_time(part.info, now):
                self._finish_part(bucket)

    # --- life cycle ------------------------------------------------------------------

    def flush(self) -> None:
        for part in self._parts.values():
            part.write_out()
        self._check_processing_time(self._now())

    def finish(self) -> None:
        for bucket in list(self._parts):
            self._finish_part(bucket)

    def abort(self) -> None:
        parts, self._parts = self._parts, {}
        for part in parts.values():
            try:
                os.close(part.fd)
            except OSError:
                pass
            try:
                os.unlink(part.temp_path)
            except FileNotFoundError:
                pass
