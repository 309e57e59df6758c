"""State larger than memory through the engine: an LMDB job's subtasks keep their memory bounded.

``tests/state/test_lmdb_large.py`` shows it for the backend alone; this runs a real job
(``execute_and_collect()`` in this process, one OS process per subtask, p=1): a sequence
source -> ``key_by`` -> a KeyedProcessFunction that stores a 100-character string per key in a
ValueState, every key new. While it runs, a thread samples every subtask process (their pids
from the JobManager) with psutil: **anonymous memory** = ``rss - shared`` (file-backed and
shared-memory pages excluded: LMDB's memory-mapped pages and the network buffer pool are
both shared, reclaimable or accounted once). The figure is the peak growth of each subtask
above its first sample.

The last 1% of records revisit keys spread over the whole key space; the function checks their
stored values and emits one ``(key, ok)`` per revisit, so the run also proves the state holds.

The default run stores 400k keys (~45 MB of state data) on LMDB and, as the control, on the
HashMap backend: the heap run's growth must clearly exceed the bound that the LMDB run stays
under. The soak run (``-m soak``) stores 20 million keys (~2.3 GB) on LMDB.
"""

from __future__ import annotations

import threading
import time

import psutil
import pytest

from flowrun.core import KeyedProcessFunction, StreamExecutionEnvironment, Types
from flowrun.core.connectors import NumberSequenceSource
from flowrun.state import ValueStateDescriptor
from flowrun.state.backends import EmbeddedLmdbStateBackend, HashMapStateBackend

MIB = 1 << 20
VALUE_CHARS = 100
BACKENDS = {"lmdb": EmbeddedLmdbStateBackend, "hashmap": HashMapStateBackend}


def value_of(key: int) -> str:
    return f"{key:012d}" * 8 + "v" * (VALUE_CHARS - 96)


class StoreOnePerKey(KeyedProcessFunction):
    """Stores ``value_of(key)`` for a new key; for a key seen before, emits whether it held."""

    def open(self, runtime_context):
        self.state = runtime_context.get_state(ValueStateDescriptor("v", Types.STRING()))

    def process_element(self, value, ctx):
        key = ctx.get_current_key()
        stored = self.state.value()
        if stored is None:
            self.state.update(value_of(key))
        else:
            yield (key, stored == value_of(key))


def revisiting_key(keys: int):
    step = 100

    def key_of(i: int) -> int:
        return i if i < keys else (i - keys) * step

    return key_of


class SubtaskMemorySampler:
    """Samples ``rss - shared`` of every subtask the JobManager reports, every ``interval`` s."""

    def __init__(self, job_manager, interval: float = 0.02) -> None:
        self.jm = job_manager
        self.interval = interval
        self.first: dict[int, int] = {}
        self.peak: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)

    def _run(self) -> None:
        procs: dict[int, psutil.Process] = {}
        while not self._stop.is_set():
            for pid in list(self.jm.subtask_pids()):
                try:
                    proc = procs.get(pid) or procs.setdefault(pid, psutil.Process(pid))
                    if proc.status() == psutil.STATUS_ZOMBIE:
                        continue
                    info = proc.memory_info()
                except psutil.Error:
                    continue
                anon = info.rss - info.shared
                self.first.setdefault(pid, anon)
                self.peak[pid] = max(self.peak.get(pid, 0), anon)
            self._stop.wait(self.interval)

    def __enter__(self) -> SubtaskMemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def growth(self) -> dict[int, int]:
        return {pid: self.peak[pid] - self.first[pid] for pid in self.first}


def run_job(backend: str, keys: int) -> dict:
    revisits = keys // 100
    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(1)
    env.set_state_backend(BACKENDS[backend]())
    it = (
        env.from_source(NumberSequenceSource(0, keys + revisits - 1), None, "seq")
        .key_by(revisiting_key(keys))
        .process(StoreOnePerKey())
        .execute_and_collect()
    )
    start = time.perf_counter()
    with SubtaskMemorySampler(it._jm) as sampler:
        out = list(it)
    seconds = time.perf_counter() - start
    assert len(out) == revisits and all(ok for _, ok in out), "state lost or wrong"
    growth = sampler.growth()
    assert len(growth) == 2, growth  # the source and the keyed subtask were both sampled
    data = keys * (VALUE_CHARS + 12)  # value bytes plus an 8-byte key with some framing
    result = {
        "seconds": seconds,
        "data": data,
        "growth": max(growth.values()),
        "peak": max(sampler.peak.values()),
    }
    print(
        f"\n{backend}: {keys:,} keys ({data / MIB:.0f} MiB of state data) in {seconds:.1f} s "
        f"({(keys + revisits) / seconds:,.0f} records/s); largest subtask anonymous memory "
        f"+{result['growth'] / MIB:.1f} MiB (peak {result['peak'] / MIB:.0f} MiB)"
    )
    return result


BOUND = 32 * MIB


@pytest.fixture(scope="module")
def warm_engine() -> None:
    """A tiny job first: the fork server's imports must not count as a subtask's growth."""
    run_job("lmdb", 1_000)


def test_lmdb_job_memory_stays_bounded_while_a_heap_job_grows(warm_engine):
    keys = 400_000
    lmdb = run_job("lmdb", keys)
    assert lmdb["data"] > BOUND
    assert lmdb["growth"] < BOUND
    heap = run_job("hashmap", keys)
    assert heap["growth"] > 2 * BOUND  # the control clearly exceeds it
    assert heap["growth"] > 2 * lmdb["growth"]


@pytest.mark.soak
@pytest.mark.timeout(3600)
def test_lmdb_job_tens_of_millions_of_keys(warm_engine):
    keys = 20_000_000
    lmdb = run_job("lmdb", keys)
    assert lmdb["data"] > 2_000 * MIB
    assert lmdb["growth"] < 64 * MIB
