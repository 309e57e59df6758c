"""The job's shared-memory NetworkBufferPool and the LocalBufferPools carved from it.

Why one segment per job: every subtask process maps the same file once, and
a buffer is then named by its index alone, so a buffer hand-over between
processes is a 16-byte doorbell message and no data is copied. The segment
lives in ``/dev/shm`` (tmpfs); the JobManager unlinks it as soon as every
subtask has mapped it, so even a ``kill -9`` of the JobManager cannot leak it.
The name carries the JobManager's pid so that a later run can remove segments
whose owner died before the unlink (:func:`cleanup_stale_segments`).

Example::

    >>> pool = NetworkBufferPool.create("/dev/shm", "doctest", num_buffers=4, segment_size=4096)
    >>> local = LocalBufferPool(range(4))
    >>> index = local.request()
    >>> pool.buffer(index)[:5] = b"hello"
    >>> bytes(NetworkBufferPool.attach(pool.path, 4, 4096).buffer(index)[:5])
    b'hello'
    >>> pool.unlink(); pool.close()
"""

from __future__ import annotations

import mmap
import os
import re
from collections import deque
from collections.abc import Iterable

import psutil

__all__ = ["NetworkBufferPool", "LocalBufferPool", "cleanup_stale_segments", "SEGMENT_PREFIX"]

SEGMENT_PREFIX = "flowrun-"
_NAME_RE = re.compile(r"^flowrun-(\d+)-")


class NetworkBufferPool:
    """A file in shared memory cut into ``num_buffers`` segments of ``segment_size`` bytes."""

    def __init__(self, path: str, num_buffers: int, segment_size: int, create: bool) -> None:
        self.path = path
        self.num_buffers = num_buffers
        self.segment_size = segment_size
        size = num_buffers * segment_size
        flags = os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0)
        fd = os.open(path, flags, 0o600)
        try:
            if create:
                os.ftruncate(fd, size)
            self._mmap = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        self._view = memoryview(self._mmap)
        self._buffers = [
            self._view[i * segment_size : (i + 1) * segment_size] for i in range(num_buffers)
        ]

    @classmethod
    def create(
        cls, shm_dir: str, job_id: str, num_buffers: int, segment_size: int
    ) -> NetworkBufferPool:
        """Create the segment of a job (JobManager side)."""
        name = f"{SEGMENT_PREFIX}{os.getpid()}-{job_id}"
        return cls(os.path.join(shm_dir, name), num_buffers, segment_size, create=True)

    @classmethod
    def attach(cls, path: str, num_buffers: int, segment_size: int) -> NetworkBufferPool:
        """Map an existing segment (subtask side)."""
        return cls(path, num_buffers, segment_size, create=False)

    def buffer(self, index: int) -> memoryview:
        """The writable memory of buffer ``index``."""
        return self._buffers[index]

    def unlink(self) -> None:
        """Remove the name; the memory lives on until the last process unmaps it."""
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def close(self) -> None:
        for view in self._buffers:
            view.release()
        self._buffers = []
        self._view.release()
        try:
            self._mmap.close()
        except BufferError:
            # Arrow arrays still reference the memory; the mapping goes with the process.
            pass


class LocalBufferPool:
    """The buffers one result subpartition may fill; exhaustion is backpressure.

    The set of buffer indices is fixed when the job is deployed, so the pool is
    plain process-local bookkeeping: the receiver hands a buffer back with a
    RECYCLE doorbell message and the owner puts the index back here.
    """

    def __init__(self, indices: Iterable[int]) -> None:
        self._free: deque[int] = deque(indices)
        self.size = len(self._free)

    def request(self) -> int | None:
        """A free buffer index, or None when every buffer is in use."""
        return self._free.popleft() if self._free else None

    def recycle(self, index: int) -> None:
        self._free.append(index)

    @property
    def num_available(self) -> int:
        return len(self._free)


def cleanup_stale_segments(shm_dir: str) -> list[str]:
    """Remove segments whose JobManager process no longer exists; return their paths."""
    removed = []
    try:
        names = os.listdir(shm_dir)
    except FileNotFoundError:
        return removed
    for name in names:
        match = _NAME_RE.match(name)
        if not match:
            continue
        pid = int(match.group(1))
        if pid != os.getpid() and psutil.pid_exists(pid):
            continue
        if pid == os.getpid():
            continue
        path = os.path.join(shm_dir, name)
        try:
            os.unlink(path)
            removed.append(path)
        except FileNotFoundError:
            pass
    return removed
