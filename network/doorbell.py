"""Small fixed-size signalling messages between subtask processes.

Data never travels here: a message only says "buffer 17 of your channel 3 holds
4,096 bytes, 2 more are queued" (DATA), "buffer 17 is free again, +1 credit"
(RECYCLE) or "+2 credits" (CREDIT). Every process owns one pipe; all its peers
write into it. Messages are 16 bytes, far below PIPE_BUF, so writes from many
processes never interleave, and the write syscall orders the buffer contents
before the notice. The number of messages that can be outstanding towards one
process is bounded by the buffers and credits of its channels, and the pipe is
enlarged to hold far more than that, so a writer never blocks in practice.
"""

from __future__ import annotations

import fcntl
import os
import struct
from enum import IntEnum

__all__ = ["Kind", "MESSAGE", "DoorbellReader", "DoorbellWriter", "create_doorbell_pipe"]

#: kind (u8), pad, target (u16: channel or subpartition index in the receiving
#: process), buffer (u32), length (u32), value (u32: backlog or credit)
MESSAGE = struct.Struct("<BxHIII")
_F_SETPIPE_SZ = 1031
_PIPE_SIZE = 1 << 20


class Kind(IntEnum):
    DATA = 1  #: sender -> receiver: buffer, length, backlog
    RECYCLE = 2  #: receiver -> sender: buffer is free; value = credit granted back
    CREDIT = 3  #: receiver -> sender: value = floating credits granted


def create_doorbell_pipe() -> tuple[int, int]:
    """A pipe with a large kernel buffer; returns (read_fd, write_fd)."""
    read_fd, write_fd = os.pipe()
    try:
        fcntl.fcntl(write_fd, _F_SETPIPE_SZ, _PIPE_SIZE)
    except OSError:
        pass  # above /proc/sys/fs/pipe-max-size: keep the default 64 KiB
    return read_fd, write_fd


class DoorbellReader:
    """The receiving end, drained without blocking by the mailbox loop."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        os.set_blocking(fd, False)
        self._rest = b""

    def fileno(self) -> int:
        return self._fd

    def drain(self) -> list[tuple[int, int, int, int, int]]:
        """Every complete message currently in the pipe (possibly none)."""
        chunks = [self._rest] if self._rest else []
        while True:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                break
            if not data:
                break
            chunks.append(data)
            if len(data) < 65536:
                break
        if not chunks:
            return []
        data = b"".join(chunks)
        usable = len(data) - len(data) % MESSAGE.size
        self._rest = data[usable:]
        return list(MESSAGE.iter_unpack(data[:usable]))


class DoorbellWriter:
    """The sending end towards one peer process."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def fileno(self) -> int:
        return self._fd

    def send(
        self, kind: int, target: int, buffer: int = 0, length: int = 0, value: int = 0
    ) -> None:
        os.write(self._fd, MESSAGE.pack(kind, target, buffer, length, value))
