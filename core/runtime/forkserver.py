"""A fork server that starts subtask processes with pyarrow and numpy already imported.

Why not ``multiprocessing``'s forkserver: it re-imports the parent's
``__main__`` in every child, and a PyFlink-style job script without an
``if __name__ == "__main__"`` guard would then run itself again in every
subtask. This server is a fresh interpreter (``python -m``), so nothing of the
JobManager's state leaks into it; it imports the heavy modules once, then forks
one child per request. A child gets exactly the file descriptors sent with its
request (control socket, doorbells), dies with the server
(``PR_SET_PDEATHSIG``; the server is single-threaded), and the server dies with
its JobManager process: it exits, killing its children, when its socket reaches
EOF. Exit statuses come back as messages; the JobManager
watches liveness itself through pidfds, which work for non-children.

Example::

    >>> server = ForkServer.start()
    >>> pid = server.spawn("os:getpid", (), [])   # doctest: +SKIP
    >>> server.close()
"""

from __future__ import annotations

import ctypes
import gc
import importlib
import os
import pickle
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Mapping
from typing import Any

from flowrun.core import config as cfg

__all__ = ["ForkServer", "get_fork_server", "subtask_environment"]

_LEN = struct.Struct("<I")
_PRELOAD = (
    "numpy",
    "numpy.ma",  # np.unique imports it on first use: 60 ms in every subtask otherwise
    "pyarrow",
    "pyarrow.ipc",
    "pyarrow.compute",
    "cloudpickle",
    "flowrun.core.runtime.stream_task",
    # every subtask sets up checkpointing (savepoints work without periodic checkpoints):
    # loaded here, its modules (pyarrow.fs, lmdb) are shared pages, not per-subtask memory
    "flowrun.core.runtime.subtask_checkpoint_coordinator",
    "flowrun.core.records",
    "flowrun.core.functions",
    "flowrun.core.connectors",
    "flowrun.state",
    "flowrun.network.partitioner",
    "flowrun.state.key_groups",
)
_PR_SET_PDEATHSIG = 1
_GLIBC_TUNABLES = "GLIBC_TUNABLES"
_NON_TEMPORAL_THRESHOLD = "glibc.cpu.x86_non_temporal_threshold"


def _send(sock: socket.socket, obj: Any, fds: list[int] | None = None) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    payload = _LEN.pack(len(data)) + data
    if fds:
        socket.send_fds(sock, [payload[:4096]], fds)
        if len(payload) > 4096:
            sock.sendall(payload[4096:])
    else:
        sock.sendall(payload)


def _recv_exact(sock: socket.socket, n: int, chunks: list[bytes]) -> bytes:
    have = sum(len(c) for c in chunks)
    while have < n:
        chunk = sock.recv(min(1 << 20, n - have))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        have += len(chunk)
    return b"".join(chunks)


def _recv_request(sock: socket.socket) -> tuple[Any, list[int]]:
    """One request with its file descriptors (fork-server side)."""
    data, fds, _flags, _addr = socket.recv_fds(sock, 4096, 256)
    if not data:
        raise EOFError
    head = _recv_exact(sock, 4, [data])
    (length,) = _LEN.unpack(head[:4])
    body = _recv_exact(sock, 4 + length, [head])
    return pickle.loads(body[4:]), fds


def subtask_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment of the fork server (and so of every subtask): ``environ`` with
    glibc's non-temporal copy threshold (see :data:`~flowrun.core.config.NON_TEMPORAL_COPY_THRESHOLD`)
    added to ``GLIBC_TUNABLES``, unless that already sets it.

    glibc reads its tunables once, when a program starts, hence the environment of the
    fresh interpreter rather than a call at run time; it ignores the variable on other
    architectures, and other C libraries do not read it.
    """
    env = dict(environ)
    threshold = cfg.NON_TEMPORAL_COPY_THRESHOLD
    tunables = env.get(_GLIBC_TUNABLES, "")
    if threshold and f"{_NON_TEMPORAL_THRESHOLD}=" not in tunables:
        setting = f"{_NON_TEMPORAL_THRESHOLD}={threshold}"
        env[_GLIBC_TUNABLES] = f"{tunables}:{setting}" if tunables else setting
    return env


def _set_pdeathsig() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except OSError:
        pass


def _preload() -> None:
    """Import what subtasks use, once, so that every child shares it.

    Packages that import their modules on first use (``_LAZY``: connectors, state backends)
    get all of them here. Then pyarrow's first conversion runs once, for the imports it does
    lazily (dateutil, six: ~20 ms in every child otherwise).
    """
    for name in _PRELOAD:
        try:
            module = importlib.import_module(name)
            for relative in sorted(set(getattr(module, "_LAZY", {}).values())):
                importlib.import_module(relative, name)
        except Exception:
            pass
    try:
        import pyarrow

        pyarrow.array([0])
    except Exception:
        pass


def _serve(fd: int) -> None:
    """Server main loop (runs in the fork-server process)."""
    sock = socket.socket(fileno=fd)
    # No PR_SET_PDEATHSIG here: it fires when the *thread* that started us ends,
    # and the JobManager may run in a short-lived thread. EOF on the socket is
    # what tells us the JobManager process is gone.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _preload()
    # Move everything imported so far out of the collector's sight: a child's garbage
    # collections then never touch (and copy-on-write) the shared pages of these objects.
    gc.freeze()
    children: set[int] = set()
    # SIGCHLD only rings a self-pipe; reaping and reporting happen in the loop, so no
    # message is ever written from inside a signal handler (that could interleave with,
    # or deadlock against, a message being sent by the loop itself).
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)

    def reap() -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            children.discard(pid)
            try:
                _send(sock, ("exit", pid, os.waitstatus_to_exitcode(status)))
            except OSError:
                return

    while True:
        try:
            ready, _, _ = select.select([sock, wake_r], [], [])
        except InterruptedError:
            continue
        if wake_r in ready:
            try:
                os.read(wake_r, 4096)
            except BlockingIOError:
                pass
            reap()
        if sock not in ready:
            continue
        try:
            request, fds = _recv_request(sock)
        except (EOFError, ConnectionError):
            break
        token, target, args, sys_path = request
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                os.close(wake_r)
                os.close(wake_w)
                sock.close()
                _set_pdeathsig()
                for entry in reversed(sys_path):
                    if entry not in sys.path:
                        sys.path.insert(0, entry)
                module, _, func = target.partition(":")
                fn = getattr(importlib.import_module(module), func)
                code = fn(fds, *args) or 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                import traceback

                traceback.print_exc()
                code = 1
            finally:
                try:
                    sys.stdout.flush()
                    sys.stderr.flush()
                except Exception:
                    pass
                os._exit(code)
        children.add(pid)
        for f in fds:
            os.close(f)
        _send(sock, ("spawned", token, pid))
    for pid in list(children):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    os._exit(0)


class ForkServer:
    """Client handle of a running fork server (JobManager side)."""

    def __init__(self, proc: subprocess.Popen, sock: socket.socket) -> None:
        self._proc = proc
        self._sock = sock
        self._token = 0
        self._lock = threading.Lock()
        self._inbuf = bytearray()
        self.exit_codes: dict[int, int] = {}

    @classmethod
    def start(cls) -> ForkServer:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = subtask_environment(os.environ)
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                f"from flowrun.core.runtime.forkserver import _serve; _serve({child.fileno()})",
            ],
            pass_fds=[child.fileno()],
            env=env,
            stdin=subprocess.DEVNULL,
        )
        child.close()
        return cls(proc, parent)

    def fileno(self) -> int:
        return self._sock.fileno()

    def alive(self) -> bool:
        return self._proc.poll() is None

    def _read_messages(self, block: bool) -> list[Any]:
        """Complete messages from the server; waits for at least one if ``block``."""
        messages = []
        while True:
            while len(self._inbuf) >= 4:
                (length,) = _LEN.unpack_from(self._inbuf)
                if len(self._inbuf) < 4 + length:
                    break
                messages.append(pickle.loads(self._inbuf[4 : 4 + length]))
                del self._inbuf[: 4 + length]
            if messages or not block:
                if not block:
                    try:
                        chunk = self._sock.recv(65536, socket.MSG_DONTWAIT)
                    except (BlockingIOError, InterruptedError):
                        return messages
                    if not chunk:
                        return messages
                    self._inbuf += chunk
                    continue
                return messages
            chunk = self._sock.recv(65536)
            if not chunk:
                raise EOFError("the fork server exited")
            self._inbuf += chunk

    def _note(self, message: Any) -> None:
        if message[0] == "exit":
            self.exit_codes[message[1]] = message[2]

    def spawn(self, target: str, args: tuple, fds: list[int]) -> int:
        """Fork a child running ``target(fds, *args)``; returns its pid."""
        with self._lock:
            self._token += 1
            token = self._token
            _send(self._sock, (token, target, args, list(sys.path)), fds)
            pid = None
            while pid is None:
                for message in self._read_messages(block=True):
                    if message[0] == "spawned" and message[1] == token:
                        pid = message[2]
                    else:
                        self._note(message)
            return pid

    def poll_exits(self) -> None:
        """Read pending exit notices without blocking."""
        with self._lock:
            for message in self._read_messages(block=False):
                self._note(message)

    def close(self) -> None:
        try:
            self._sock.close()
        finally:
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()


_server: ForkServer | None = None
_server_lock = threading.Lock()


def get_fork_server() -> ForkServer:
    """The process-wide fork server, started on first use and restarted if it died."""
    global _server
    with _server_lock:
        if _server is None or not _server.alive():
            _server = ForkServer.start()
            import atexit

            atexit.register(_shutdown)
        return _server


def _shutdown() -> None:
    global _server
    if _server is not None:
        _server.close()
        _server = None
