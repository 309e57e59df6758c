"""Flink's ``socketTextStream``: delimited strings read from a TCP server, never blocking.

The reader connects to ``hostname:port`` and emits the text between delimiters (a ``\\r`` before
a ``\\n`` delimiter is dropped). The socket is non-blocking: :meth:`SocketTextReader.poll`
takes what the kernel has and :meth:`SocketTextReader.fileno` lets the mailbox loop wait for
more. Bytes are decoded as UTF-8, malformed sequences becoming U+FFFD (as Java's reader does).

Delivery is **at-most-once**, as in Flink: a socket cannot be rewound, so the reader records
no splits (``snapshot_state`` returns ``[]``) and a restored job connects afresh. Records
emitted after the last completed checkpoint, and text the reader had received but not yet
emitted, are lost on a failure; nothing is ever emitted twice.

When the server closes the connection, ``max_retry`` decides what happens (as in Flink):
``0`` ends the stream, ``n > 0`` allows ``n`` more connection attempts over the life of the
source, one every ``retry_delay_ms`` (500 ms), and ``-1`` retries forever. A failed connection
attempt also uses up one retry (Flink would fail the job at once; a server that is briefly down
is what retries are for); when none is left the error is raised. Text after the last delimiter
is kept across reconnections and emitted when the stream ends. (Flink's own loop checks
``attempt < maxRetry`` and so makes one attempt fewer than ``maxRetry`` says; we make exactly
``max_retry``.)

Example::

    >>> import socket as stdsocket
    >>> server = stdsocket.create_server(("127.0.0.1", 0))
    >>> reader = SocketTextSource("127.0.0.1", server.getsockname()[1]).create_reader(0, 1)
    >>> reader.open()
    >>> conn, _ = server.accept()
    >>> conn.sendall(b"hello\\r\\nworld\\npartial")
    >>> conn.close()
    >>> records = []
    >>> while (batch := reader.poll(10)) is not None:  # a real job waits on fileno() instead
    ...     records += batch
    >>> records
    ['hello', 'world', 'partial']
    >>> server.close()
"""

from __future__ import annotations

import codecs
import errno
import select
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from flowrun.core.connectors.base import Source, SourceReader

__all__ = ["DelimitedText", "SocketTextReader", "SocketTextSource"]

_RECV_SIZE = 64 << 10
_MAX_BYTES_PER_POLL = 1 << 20  # bound the work of one poll even if the peer floods us
_CONNECT_CHECK_INTERVAL = 0.05  # connect completion shows as "writable": look again this often
_IN_PROGRESS = {errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EALREADY, errno.EINTR}


class DelimitedText:
    """Cuts a stream of text into records at ``delimiter``, however the text arrives in pieces.

    Pending text is kept as a list of pieces (no quadratic re-joining while one long record
    trickles in); only the last ``len(delimiter) - 1`` characters are re-examined so that a
    delimiter split across pieces is still found. With the ``"\\n"`` delimiter a record's
    trailing ``"\\r"`` is dropped, as in Flink.

    >>> splitter = DelimitedText("||")
    >>> splitter.feed("a|"), splitter.feed("|b||c"), splitter.take_rest()
    ([], ['a', 'b'], 'c')
    """

    def __init__(self, delimiter: str) -> None:
        self.delimiter = delimiter
        self._pieces: list[str] = []
        self._tail = ""  # the last len(delimiter) - 1 characters of the pending text

    def feed(self, text: str) -> list[str]:
        """Add text; return the records it completes."""
        delim = self.delimiter
        keep = len(delim) - 1
        if delim not in self._tail + text:
            if text:
                self._pieces.append(text)
                self._tail = (self._tail + text)[-keep:] if keep else ""
            return []
        records = "".join([*self._pieces, text]).split(delim)
        rest = records.pop()
        self._pieces = [rest] if rest else []
        self._tail = rest[-keep:] if keep else ""
        if delim == "\n":
            records = [r[:-1] if r.endswith("\r") else r for r in records]
        return records

    def take_rest(self) -> str:
        """The text after the last delimiter; the splitter is empty afterwards."""
        rest = "".join(self._pieces)
        self._pieces = []
        self._tail = ""
        return rest


class SocketTextSource(Source):
    """Strings from a socket, split at ``delimiter``; parallelism 1, at-most-once."""

    def __init__(
        self,
        hostname: str,
        port: int,
        delimiter: str = "\n",
        max_retry: int = 0,
        *,
        retry_delay_ms: int = 500,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < port < 65536:
            raise ValueError(f"port is out of range: {port}")
        if max_retry < -1:
            raise ValueError("max_retry must be 0 or more (retries), or -1 (retry forever)")
        if not delimiter:
            raise ValueError("delimiter must not be empty")
        if retry_delay_ms < 0:
            raise ValueError("retry_delay_ms must be zero or positive")
        self.hostname = hostname
        self.port = port
        self.delimiter = delimiter
        self.max_retry = max_retry
        self.retry_delay_ms = retry_delay_ms
        self.clock = clock

    def create_reader(self, subtask_index: int, parallelism: int) -> SocketTextReader:
        if parallelism != 1 or subtask_index != 0:
            raise ValueError(
                f"a socket source runs with parallelism 1, got subtask "
                f"{subtask_index} of {parallelism}"
            )
        return SocketTextReader(self)

    def restore_reader(
        self, subtask_index: int, parallelism: int, splits: list[Any]
    ) -> SocketTextReader:
        """A fresh connection: nothing was recorded, nothing can be replayed (at-most-once)."""
        if splits:
            raise ValueError(
                f"socket source records no splits and cannot restore {len(splits)}: "
                f"the state does not belong to this source"
            )
        return self.create_reader(subtask_index, parallelism)

    def is_bounded(self) -> bool:
        return False

    def max_parallelism(self) -> int | None:
        return 1

    def produces_arrow(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"SocketTextSource({self.hostname!r}, {self.port}, {self.delimiter!r}, {self.max_retry})"


class SocketTextReader(SourceReader):
    """State machine: connecting -> connected -> (waiting to retry -> connecting ...) -> ended."""

    def __init__(self, source: SocketTextSource) -> None:
        self._source = source
        self._clock = source.clock
        self._sock: socket.socket | None = None
        self._connected = False
        self._retry_at: float | None = None
        self._retries_used = 0
        self._ended = False
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._splitter = DelimitedText(source.delimiter)
        self._ready: deque[str] = deque()  # records split off but not handed out yet
        self._bytes_received = 0
        self._records_emitted = 0

    # --- connection management -------------------------------------------------------

    def open(self) -> None:
        self._start_connect()

    def _start_connect(self) -> None:
        src = self._source
        self._retry_at = None
        try:
            family, kind, proto, _, address = socket.getaddrinfo(
                src.hostname, src.port, type=socket.SOCK_STREAM
            )[0]
            sock = socket.socket(family, kind, proto)
        except OSError as err:
            self._connect_failed(err)
            return
        sock.setblocking(False)
        code = sock.connect_ex(address)
        self._sock = sock
        self._connected = code == 0
        if code not in _IN_PROGRESS and code != 0:
            self._connect_failed(OSError(code, errno.errorcode.get(code, str(code))))

    def _check_connect(self) -> bool:
        """True once a pending non-blocking connect has succeeded."""
        assert self._sock is not None
        poller = select.poll()
        poller.register(self._sock.fileno(), select.POLLOUT)
        if not poller.poll(0):
            return False
        code = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            self._connect_failed(OSError(code, errno.errorcode.get(code, str(code))))
            return False
        self._connected = True
        return True

    def _retry_allowed(self) -> bool:
        limit = self._source.max_retry
        return limit == -1 or self._retries_used < limit

    def _schedule_retry(self) -> None:
        self._retries_used += 1
        self._retry_at = self._clock() + self._source.retry_delay_ms / 1000.0

    def _connect_failed(self, err: OSError) -> None:
        self._drop_socket()
        if not self._retry_allowed():
            src = self._source
            raise ConnectionError(
                f"socket source could not connect to {src.hostname}:{src.port}: {err}"
            ) from err
        self._schedule_retry()

    def _connection_ended(self) -> None:
        self._drop_socket()
        self._take_text(self._decoder.decode(b"", final=True))
        self._decoder.reset()
        if self._retry_allowed():
            self._schedule_retry()
            return
        self._ended = True
        rest = self._splitter.take_rest()
        if rest:
            self._ready.append(rest)

    def _drop_socket(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._connected = False

    # --- reading ------------------------------------------------------------------------

    def _take_text(self, text: str) -> None:
        self._ready.extend(self._splitter.feed(text))

    def _receive(self, max_records: int) -> None:
        assert self._sock is not None
        budget = _MAX_BYTES_PER_POLL
        while len(self._ready) < max_records and budget > 0:
            try:
                data = self._sock.recv(_RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # reset by peer and the like: the connection is over
                data = b""
            if not data:
                self._connection_ended()
                return
            self._bytes_received += len(data)
            budget -= len(data)
            self._take_text(self._decoder.decode(data))

    def poll(self, max_records: int) -> list[str] | None:
        wanted = max(1, max_records)
        if not self._ended and len(self._ready) < wanted:
            if self._retry_at is not None and self._clock() >= self._retry_at:
                self._start_connect()
            if self._sock is not None and (self._connected or self._check_connect()):
                self._receive(wanted)
        if self._ready:
            count = min(wanted, len(self._ready))
            out = [self._ready.popleft() for _ in range(count)]
            self._records_emitted += count
            return out
        return None if self._ended else []

    def fileno(self) -> int | None:
        return self._sock.fileno() if self._sock is not None else None

    def next_wakeup(self) -> float | None:
        if self._ready:
            return self._clock()
        if self._retry_at is not None:
            return self._retry_at
        if self._sock is not None and not self._connected:
            return self._clock() + _CONNECT_CHECK_INTERVAL
        return None

    @property
    def bytes_received(self) -> int:
        """Bytes read from the socket so far, over all connections."""
        return self._bytes_received

    @property
    def records_emitted(self) -> int:
        """Records returned by ``poll`` so far."""
        return self._records_emitted

    def snapshot_state(self, checkpoint_id: int) -> list[Any]:
        """``[]``: a socket cannot be rewound, so there is nothing to resume (at-most-once)."""
        return []

    def close(self) -> None:
        self._drop_socket()
