"""CPU seconds of a job's subtask processes, and how many cores the machine really gave us.

Why both: on this shared 2-core machine the second core is intermittently
taken by other tenants -- two CPU-bound processes in parallel sometimes take
2.5x as long as one, while a single process keeps its speed. A parallel job
suffers from that and the single-process baselines do not, so a ratio of wall
times alone mixes engine cost with machine noise. CPU seconds of the subtasks
are (nearly) immune to it, and :func:`parallel_capacity` measures, in the same
round, how many cores two processes actually got.
"""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
from collections.abc import Callable

import psutil

__all__ = ["ChildCpuMonitor", "parallel_capacity"]


class ChildCpuMonitor:
    """Polls every descendant of this process; ``cpu_seconds`` is their CPU time in the block.

    Processes are sampled every ``interval`` seconds, so each short-lived
    subtask may lose up to one interval of CPU; with ~5 subtasks per job that
    is far below the differences that matter here.
    """

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-cpu-monitor", daemon=True)

    def _sample(self, record_first: bool) -> None:
        for child in psutil.Process().children(recursive=True):
            try:
                times = child.cpu_times()
            except psutil.Error:
                continue
            cpu = times.user + times.system
            if record_first:
                self._first[child.pid] = cpu
            self._last[child.pid] = cpu

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample(record_first=False)

    def __enter__(self) -> ChildCpuMonitor:
        self._sample(record_first=True)  # processes already alive (the fork server) count by delta
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def cpu_seconds(self) -> float:
        return sum(cpu - self._first.get(pid, 0.0) for pid, cpu in self._last.items())


def parallel_capacity(work: Callable[[], float], single_seconds: float) -> float:
    """Cores effectively available now: ``work`` run in two processes at once vs alone.

    ``work`` returns its own duration; 2.0 means both cores were ours, 1.0
    means the two processes had to share one core.
    """
    ctx = mp.get_context("fork")
    results = ctx.SimpleQueue()
    procs = [ctx.Process(target=lambda: results.put(work()), daemon=True) for _ in range(2)]
    start = time.perf_counter()
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    wall = time.perf_counter() - start
    for _ in procs:
        results.get()
    return 2 * single_seconds / wall
