"""The per-subtask writer of :class:`~flowrun.core.connectors.file_system.FileSink`.

Part files follow Flink's life cycle, in-progress -> pending -> finished, with names that are
deterministic per subtask:

* in progress: ``<bucket>/.<prefix>-<uid>-<subtask>-<counter><suffix>.inprogress.<token>``
  (hidden, so readers of the directory and our own text source skip it);
* pending: the same file, closed and ``fsync`` ed, listed in a checkpoint's state;
* finished: ``<bucket>/<prefix>-<uid>-<subtask>-<counter><suffix>``, made by an atomic link
  (or rename) that never replaces an existing file.

``uid`` is the operator uid (characters other than letters, digits, ``_ . -`` become ``_``),
``subtask`` the subtask index, and ``counter`` one sequence per writer across its buckets, kept
in the checkpoint and never below the highest counter of our own parts already in a bucket.
Flink 1.15+ uses a random uuid instead of ``<uid>-<subtask>``; stable names let a restored job
recognise its own files and make a replay write the very same files as a failure-free run.
``token`` (12 hex digits) names the writer *generation*: it is derived from the subtask index
and the state the writer was restored from, so an attempt that failed before taking a
checkpoint is recognised by the next attempt restoring the same checkpoint (a writer restored
with an empty share of the state, after a scale-out, takes a random token).

**Without checkpoints** (the engine never calls ``snapshot_state``, or said
``set_checkpointing_enabled(False)``) a part becomes finished as soon as it is closed: when the
rolling policy rolls it (size, age, inactivity) and when bounded input ends (``finish``).

**With checkpoints** (exactly-once): every open part is closed at each checkpoint
(``snapshot_state``; bulk formats roll only then) and parts closed since the previous checkpoint
become *pending* under that checkpoint id; the state element lists the pending parts, the part
counter and the generation token. ``notify_checkpoint_complete(n)`` finishes the pending parts
of every checkpoint up to ``n``. ``restore_state`` finishes the pending parts of the restored
(complete) checkpoint -- a no-op for those already finished -- and then deletes every hidden
in-progress file of the failed generations (the tokens in the restored state, and this
writer's own token), under the whole base path. Unlike Flink, an in-progress row part is not
resumed after a failure but rolled at every checkpoint, so ``should_roll_on_checkpoint`` of the
rolling policy is not consulted. ``abort`` deletes open parts and parts closed since the last
checkpoint, and keeps pending ones, whose checkpoint may have completed.

Bytes of row parts are buffered per part and written with one ``write`` call per batch (or per
256 KiB); ``flush`` writes the buffers out and also runs the periodic time-based rolling check,
so the engine should call it now and then even when no records arrive (Flink uses a timer).
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import time
import uuid
from collections.abc import Callable
from typing import Any, BinaryIO

import pyarrow as pa

from flowrun.core.connectors.base import SinkWriter
from flowrun.core.connectors.bucket_assigner import BucketAssigner, BucketAssignerContext
from flowrun.core.connectors.bulk_writer import BulkWriter, BulkWriterFactory
from flowrun.core.connectors.rolling_policy import PartFileInfo, RollingPolicy
from flowrun.core.connectors.serialization import Encoder, records_of_batch
from flowrun.core.reprs import short_repr

__all__ = ["FileSinkWriter", "commit_part_file", "part_file_name"]

_WRITE_THRESHOLD = 256 << 10  # buffered bytes per part that trigger a write
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
STATE_FORMAT = "flowrun.FileSink/1"


def part_file_name(prefix: str, uid: str, subtask_index: int, counter: int, suffix: str) -> str:
    """The finished name of a part file.

    >>> part_file_name("part", "sink-1", 0, 3, ".txt")
    'part-sink-1-0-3.txt'
    """
    return f"{prefix}-{uid}-{subtask_index}-{counter}{suffix}"


def _generation_token(subtask: int, restored_checkpoint: int | None, tokens: set[str]) -> str:
    text = f"{subtask}|{restored_checkpoint}|{','.join(sorted(tokens))}"
    return hashlib.md5(text.encode()).hexdigest()[:12]


def _fsync_directory(directory: str) -> None:
    """Make renames and links in ``directory`` durable (best effort where unsupported)."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def commit_part_file(temp_path: str, final_path: str) -> bool:
    """Make the closed part ``temp_path`` visible as ``final_path``; idempotent.

    Returns True when this call made it visible and False when an earlier call had (the hidden
    file is gone and the finished one exists, as after a crash between a commit and the
    checkpoint notification reaching every subtask). A hard link is made first and the hidden
    name removed after, so an existing file is never replaced: a name clash is an error, not
    silent data loss.

    >>> import os, tempfile
    >>> d = tempfile.mkdtemp()
    >>> temp, final = os.path.join(d, ".p-0.inprogress.1"), os.path.join(d, "p-0")
    >>> _ = open(temp, "w").write("x")
    >>> commit_part_file(temp, final), commit_part_file(temp, final), os.listdir(d)
    (True, False, ['p-0'])
    """
    try:
        os.link(temp_path, final_path)
    except FileExistsError:
        if os.path.exists(temp_path) and os.path.samefile(temp_path, final_path):
            os.unlink(temp_path)  # a crash between link and unlink
            return True
        if not os.path.exists(temp_path):
            return False
        raise FileExistsError(
            errno.EEXIST,
            f"cannot finish part file {temp_path!r}: another file already has its name "
            f"{final_path!r} (two sinks with the same uid, prefix and subtask writing into "
            "one directory?)",
        ) from None
    except FileNotFoundError:
        if os.path.exists(final_path):
            return False
        raise FileNotFoundError(
            errno.ENOENT,
            f"pending part file {temp_path!r} of a completed checkpoint is gone and "
            f"{final_path!r} does not exist: its records are lost (was the output "
            "directory changed while the job ran?)",
        ) from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
            raise
        # a file system without hard links: rename, after checking the name is free
        if os.path.exists(final_path):
            raise FileExistsError(
                errno.EEXIST, f"cannot finish part file {temp_path!r}: {final_path!r} exists"
            ) from None
        os.rename(temp_path, final_path)
        return True
    os.unlink(temp_path)
    return True


class _RowPart:
    """One in-progress row-format part file with its write buffer."""

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

    def close(self) -> None:
        try:
            self.write_out()
            os.fsync(self.fd)
        finally:
            os.close(self.fd)

    def discard(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass
        _unlink_quietly(self.temp_path)


class _BulkPart:
    """One in-progress bulk-format part file: a stream and the format's writer on it."""

    def __init__(
        self, final_path: str, temp_path: str, stream: BinaryIO, writer: BulkWriter, now_ms: int
    ) -> None:
        self.final_path = final_path
        self.temp_path = temp_path
        self.stream = stream
        self.writer = writer
        self.info = PartFileInfo(size=0, creation_time=now_ms, last_update_time=now_ms)

    def write_out(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        try:
            self.writer.finish()
            self.stream.flush()
            os.fsync(self.stream.fileno())
        finally:
            self.stream.close()

    def discard(self) -> None:
        try:
            self.writer.discard()
        finally:
            try:
                self.stream.close()
            except Exception:
                pass
            _unlink_quietly(self.temp_path)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class FileSinkWriter(SinkWriter):
    """Writes records of one subtask into rolling part files, one open part per bucket."""

    def __init__(
        self,
        base_path: str,
        encoder: Encoder | None,
        bucket_assigner: BucketAssigner,
        rolling_policy: RollingPolicy,
        part_prefix: str,
        part_suffix: str,
        bucket_check_interval: int,
        subtask_index: int,
        operator_uid: str,
        clock: Callable[[], float] = time.time,
        writer_factory: BulkWriterFactory | None = None,
    ) -> None:
        if (encoder is None) == (writer_factory is None):
            raise ValueError("a FileSinkWriter needs either an encoder or a bulk writer factory")
        self._base_path = base_path
        self._encoder = encoder
        self._factory = writer_factory
        self._assigner = bucket_assigner
        self._policy = rolling_policy
        self._prefix = part_prefix
        self._suffix = part_suffix
        self._check_interval = bucket_check_interval
        self._subtask = subtask_index
        self._uid = _UNSAFE.sub("_", operator_uid) or "sink"
        self._clock = clock
        self._parts: dict[str, _RowPart | _BulkPart] = {}
        self._seen_dirs: set[str] = set()
        self._counter = 0
        self._last_check: int | None = None
        self._token = _generation_token(subtask_index, None, set())
        #: None: not told; False: finish parts at once; True: finish on checkpoint completion
        self._exactly_once: bool | None = None
        self._closed: list[tuple[str, str]] = []  # (temp, final) closed since the last snapshot
        self._pending: list[tuple[int, str, str]] = []  # (checkpoint id, temp, final)
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
        if self._factory is not None and not self._assigner.per_element and batch.num_rows:
            now = self._now()
            self._check_processing_time(now)
            bucket = self._assigner.get_bucket_id(None, BucketAssignerContext(now))
            part = self._parts.get(bucket) or self._open_part(bucket, now)
            part.writer.add_batch(batch)  # type: ignore[union-attr]
            part.info.last_update_time = now
            return
        self.write(records_of_batch(batch))

    def _write_bucket(self, bucket: str, records: list[Any], now: int) -> None:
        part = self._parts.get(bucket) or self._open_part(bucket, now)
        if isinstance(part, _BulkPart):
            part.writer.add_elements(records)
            part.info.last_update_time = now
            return
        assert self._encoder is not None
        limit = self._policy.event_size_limit()
        data = self._encoder.encode_batch(records)
        if limit is None or part.info.size + len(data) <= limit:
            part.append(data, now)  # no record can start beyond the limit: no roll
        else:
            for piece in self._encoder.encode_each(records):
                if part.info.size > limit:
                    self._close_part(bucket)
                    part = self._open_part(bucket, now)
                    assert isinstance(part, _RowPart)
                part.append(piece, now)
        if part.buffered >= _WRITE_THRESHOLD:
            part.write_out()

    # --- part files ------------------------------------------------------------------

    def _bucket_dir(self, bucket: str) -> str:
        return os.path.join(self._base_path, bucket) if bucket else self._base_path

    def _own_hidden(self) -> re.Pattern[str]:
        """Hidden in-progress files of this sink (any subtask): groups subtask, counter, token."""
        stem = re.escape(f"{self._prefix}-{self._uid}-")
        return re.compile(
            rf"^\.{stem}(\d+)-(\d+){re.escape(self._suffix)}\.inprogress\.([0-9a-f]+)$"
        )

    def _enter_directory(self, directory: str) -> None:
        """First part in ``directory``: remove our own generation's leftovers, then move the
        counter past every part of this subtask (finished or not) already there."""
        os.makedirs(directory, exist_ok=True)
        hidden = self._own_hidden()
        stem = re.escape(f"{self._prefix}-{self._uid}-{self._subtask}-")
        finished = re.compile(rf"^\.?{stem}(\d+){re.escape(self._suffix)}(\.inprogress\..*)?$")
        counters = []
        for name in os.listdir(directory):
            m = hidden.match(name)
            if m and m.group(3) == self._token:
                _unlink_quietly(os.path.join(directory, name))
                continue
            m = finished.match(name)
            if m:
                counters.append(int(m.group(1)))
        self._counter = max(self._counter, max(counters, default=-1) + 1)
        self._seen_dirs.add(directory)

    def _open_part(self, bucket: str, now: int) -> _RowPart | _BulkPart:
        directory = self._bucket_dir(bucket)
        if directory not in self._seen_dirs:
            self._enter_directory(directory)
        name = part_file_name(self._prefix, self._uid, self._subtask, self._counter, self._suffix)
        self._counter += 1
        temp = os.path.join(directory, f".{name}.inprogress.{self._token}")
        final = os.path.join(directory, name)
        if self._factory is None:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
            part: _RowPart | _BulkPart = _RowPart(final, temp, os.open(temp, flags, 0o644), now)
        else:
            stream = open(temp, "xb")  # noqa: SIM115 - owned by the part until it closes
            try:
                writer = self._factory.create(stream)
            except BaseException:
                stream.close()
                _unlink_quietly(temp)
                raise
            part = _BulkPart(final, temp, stream, writer, now)
        self._parts[bucket] = part
        return part

    def _close_part(self, bucket: str) -> None:
        """Roll: close the bucket's part; finish it now, or keep it for the next checkpoint."""
        part = self._parts.pop(bucket)
        try:
            part.close()
        except BaseException:
            _unlink_quietly(part.temp_path)
            raise
        if self._exactly_once:
            self._closed.append((part.temp_path, part.final_path))
        else:
            self._commit([(part.temp_path, part.final_path)])

    def _commit(self, parts: list[tuple[str, str]]) -> None:
        """Finish ``parts`` (all of them, even after an error; the first error is raised)."""
        first_error: BaseException | None = None
        directories = set()
        for temp, final in parts:
            try:
                commit_part_file(temp, final)
            except Exception as exc:
                if first_error is None:
                    first_error = exc
                continue
            directories.add(os.path.dirname(final))
            self.finished_files.append(final)
        for directory in directories:
            _fsync_directory(directory)
        if first_error is not None:
            raise first_error

    def _check_processing_time(self, now: int) -> None:
        if self._last_check is not None and now - self._last_check < self._check_interval:
            return
        self._last_check = now
        for bucket, part in list(self._parts.items()):
            if self._policy.should_roll_on_processing_time(part.info, now):
                self._close_part(bucket)

    # --- checkpoints -----------------------------------------------------------------

    def set_checkpointing_enabled(self, enabled: bool) -> None:
        self._exactly_once = bool(enabled)

    def snapshot_state(self, checkpoint_id: int) -> list[Any]:
        self._exactly_once = True
        for bucket in list(self._parts):
            self._close_part(bucket)
        self._pending.extend((checkpoint_id, temp, final) for temp, final in self._closed)
        self._closed = []
        return [
            {
                "format": STATE_FORMAT,
                "subtask": self._subtask,
                "token": self._token,
                "counter": self._counter,
                "checkpoint_id": checkpoint_id,
                "pending": list(self._pending),
            }
        ]

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        ready = [(temp, final) for cid, temp, final in self._pending if cid <= checkpoint_id]
        if ready:
            self._pending = [p for p in self._pending if p[0] > checkpoint_id]
            self._commit(ready)

    def restore_state(self, state: list[Any]) -> None:
        self._exactly_once = True
        elements = [self._check_element(e) for e in state]
        self._commit([(temp, final) for e in elements for _, temp, final in e["pending"]])
        tokens = {e["token"] for e in elements}
        if elements:
            restored = max(e["checkpoint_id"] for e in elements)
            self._token = _generation_token(self._subtask, restored, tokens)
        else:
            # Nothing tells this generation apart from another empty-handed one of the same
            # subtask index, whose state another subtask may be cleaning up right now.
            self._token = uuid.uuid4().hex[:12]
        own = [e["counter"] for e in elements if e["subtask"] == self._subtask]
        self._counter = max(own, default=0)
        self._remove_leftovers(tokens | {self._token})

    def _check_element(self, element: Any) -> dict[str, Any]:
        if not isinstance(element, dict) or element.get("format") != STATE_FORMAT:
            raise ValueError(
                f"FileSink cannot restore state element {short_repr(element)}: expected a dict "
                f"of format {STATE_FORMAT!r} written by FileSink.snapshot_state (was this "
                "sink's uid used by another kind of sink in the checkpoint's job?)"
            )
        return element

    def _remove_leftovers(self, tokens: set[str]) -> None:
        """Delete hidden in-progress files of the generations ``tokens`` under the base path:
        output of a failed attempt that no completed checkpoint covers."""
        if not os.path.isdir(self._base_path):
            return
        hidden = self._own_hidden()
        for directory, _, names in os.walk(self._base_path):
            for name in names:
                m = hidden.match(name)
                if m and m.group(3) in tokens:
                    _unlink_quietly(os.path.join(directory, name))

    # --- life cycle ------------------------------------------------------------------

    def flush(self) -> None:
        for part in self._parts.values():
            part.write_out()
        self._check_processing_time(self._now())

    def finish(self) -> None:
        for bucket in list(self._parts):
            self._close_part(bucket)
        parts = [(temp, final) for _, temp, final in self._pending] + self._closed
        self._pending, self._closed = [], []
        self._commit(parts)

    def abort(self) -> None:
        parts, self._parts = self._parts, {}
        for part in parts.values():
            part.discard()
        closed, self._closed = self._closed, []
        for temp, _ in closed:  # in no checkpoint: nobody will finish them
            _unlink_quietly(temp)
