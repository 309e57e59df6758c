"""How an idle task waits for its doorbell: a short nap while messages stream in, else a block.

Why not always block in ``select``: writing into a pipe whose reader sleeps in
``select`` makes the *writer* wake the reader -- on the benchmark machine (a
KVM guest that halts idle vCPUs) that costs the writer 11-14 us instead of
0.5 us, because waking a halted vCPU takes an inter-processor interrupt. A
consumer that keeps up with its producer sleeps between any two buffers, so
the producer, usually the bottleneck, paid that once per buffer.

So while doorbell messages arrive often (on average at most
:data:`BUSY_GAP_S` apart), an idle task does not wait on its doorbell: it
naps for a short timed sleep (its own timer wakes it, nobody else pays) and
then checks the pipe with ``FIONREAD``. The other descriptors it waits for
(control socket, source readers) stay in the ``select`` and wake it at once.
As soon as messages come more than ~2 average gaps late, or the average gap
grows beyond :data:`BUSY_GAP_S`, it blocks as before: a quiet or trickling
task never naps, so naps cost CPU only where each saves a wake-up. This is
not spinning: every nap is a real sleep. The kernel's default timer slack
(50 us) would stretch a 10 us nap to ~85 us on the benchmark machine, so a
consumer would answer its producer's buffers that late and the producer would
cycle through more of its buffers (colder copies): the thread that waits sets
its own slack to :data:`NAP_TIMER_SLACK_NS` (naps then last ~30 us there; with
the default slack the 1 MiB channel benchmark was 3-4 us per batch slower).

Naps help only when a CPU would otherwise idle. When the machine has no CPU
to spare -- the producer and the consumer share one core, or other work
keeps every core busy -- each nap's timer preempts a task that was running,
and measured with both processes on one core the channel took twice as long.
So a task naps only while the runnable tasks of the machine (the kernel's
instantaneous count in ``/proc/loadavg``, the napper included) do not exceed
the CPUs it may run on; that count costs ~9 us to read, so it is re-read at
most every :data:`_RECHECK_S`. Without ``/proc/loadavg`` a task never naps.

Example::

    >>> import os
    >>> r, w = os.pipe()
    >>> waiter = IdleWait(r)
    >>> waiter.select([r], 0.0)       # nothing pending, no recent traffic: a plain select
    []
    >>> _ = os.write(w, b"x" * 16)
    >>> waiter.select([r], 0.0) == [r]
    True
"""

from __future__ import annotations

import array
import ctypes
import fcntl
import os
import select
import termios
import time

__all__ = ["IdleWait", "NAP_S", "BUSY_GAP_S", "NAP_TIMER_SLACK_NS"]

#: requested length of one nap (the timer slack lengthens it, see above)
NAP_S = 10e-6
#: timer slack of a waiting task's thread (prctl PR_SET_TIMERSLACK; the default is 50 us)
NAP_TIMER_SLACK_NS = 1000
#: nap only while doorbell messages arrive on average at least this often
BUSY_GAP_S = 250e-6
#: a longer pause between messages counts as this many busy gaps in the average (so
#: that after a pause a stream is seen as busy again after a few quick arrivals)
_MAX_GAPS = 4
#: how long a reading of the machine's runnable tasks is trusted
_RECHECK_S = 2e-3
_FIONREAD = getattr(termios, "FIONREAD", 0x541B)
_LOADAVG = "/proc/loadavg"
_PR_SET_TIMERSLACK = 29


def _set_timer_slack(nanoseconds: int) -> None:
    """Make this thread's timed sleeps end within ``nanoseconds`` of their time (Linux)."""
    try:
        ctypes.CDLL(None).prctl(_PR_SET_TIMERSLACK, nanoseconds, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


class IdleWait:
    """The wait of one task's mailbox loop, paced by its doorbell traffic."""

    __slots__ = (
        "_fd",
        "_busy_gap",
        "_max_gap",
        "_last",
        "_gap",
        "_available",
        "_loadavg_path",
        "_loadavg",
        "_cpus",
        "_spare",
        "_checked",
    )

    def __init__(
        self, doorbell_fd: int, loadavg: str = _LOADAVG, busy_gap: float = BUSY_GAP_S
    ) -> None:
        """``loadavg``: where the runnable tasks are read (a file in its format);
        ``busy_gap``: nap while messages arrive on average at most this far apart."""
        self._fd = doorbell_fd
        self._loadavg_path = loadavg
        self._busy_gap = busy_gap
        self._max_gap = _MAX_GAPS * busy_gap
        self._last = time.perf_counter()
        self._gap = self._max_gap  #: running average of the time between message arrivals
        self._available = array.array("i", [0])
        self._loadavg = -2  #: fd of /proc/loadavg, opened when first needed (-1: none)
        self._cpus = 0
        self._spare = False  #: whether a CPU was idle at the last check
        self._checked = -1.0
        _set_timer_slack(NAP_TIMER_SLACK_NS)

    def close(self) -> None:
        if self._loadavg >= 0:
            os.close(self._loadavg)
        self._loadavg = -1

    def on_messages(self) -> None:
        """Note that doorbell messages arrived (the caller just drained some)."""
        now = time.perf_counter()
        gap = min(now - self._last, self._max_gap)
        self._gap += (gap - self._gap) * 0.25
        self._last = now

    def napping(self) -> bool:
        """Whether the next idle wait is a nap rather than a blocking ``select``."""
        gap = self._gap
        if gap > self._busy_gap:
            return False
        now = time.perf_counter()
        if now - self._last >= 2 * gap + NAP_S:
            return False
        if now - self._checked >= _RECHECK_S:
            self._checked = now
            self._spare = self._cpu_to_spare()
        return self._spare

    def _cpu_to_spare(self) -> bool:
        """Whether the machine's runnable tasks (this one included) leave a CPU idle."""
        if self._loadavg == -2:
            try:
                self._loadavg = os.open(self._loadavg_path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:  # pragma: no cover - no /proc
                self._loadavg = -1
            self._cpus = _cpus()
        if self._loadavg < 0:
            return False
        try:  # "0.52 0.58 0.59 2/467 1234": the 4th field is runnable/total
            running = int(os.pread(self._loadavg, 128, 0).split()[3].split(b"/")[0])
        except (OSError, IndexError, ValueError):  # pragma: no cover - unexpected format
            return False
        return running <= self._cpus

    def select(self, fds: list[int], timeout: float | None) -> list[int]:
        """``select.select(fds, [], [], timeout)[0]``, napping instead while messages stream in.

        The doorbell is reported ready after a nap only if bytes are pending;
        a nap may thus return before ``timeout`` with nothing ready.
        """
        if timeout == 0 or self._fd not in fds or not self.napping():
            return select.select(fds, [], [], timeout)[0]
        nap = NAP_S if timeout is None else min(NAP_S, timeout)
        others = [fd for fd in fds if fd != self._fd]
        if others:
            ready = select.select(others, [], [], nap)[0]
        else:
            time.sleep(nap)
            ready = []
        try:
            fcntl.ioctl(self._fd, _FIONREAD, self._available, True)
        except OSError:  # pragma: no cover - not a pipe that supports FIONREAD
            return select.select(fds, [], [], 0)[0]
        if self._available[0]:
            ready.append(self._fd)
        return ready
