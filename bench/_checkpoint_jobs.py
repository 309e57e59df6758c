"""The checkpointed jobs that ``bench_checkpointing.py`` measures, and their probes.

Why a module of its own: user functions and sources travel to subtask processes with
cloudpickle, which pickles module-level classes by reference; this module is importable by
its plain name in every subtask (see ``_jobs``), a test module imported by pytest is not.

Why probes in the job: the JobManager reports when it saw a failure, when the new attempt was
deployed and when all its subtasks ran (``JobOutcome.restarts``), but not when a subtask died,
when a subtask process started, or when the first record went through after a restart. The
functions below write those instants (``time.monotonic()``, one clock for every process on
Linux) into small files of an output directory, so the benchmark can put them next to the
JobManager's.

Four jobs:

* :func:`throughput_job` -- ``bench/test_state.py``'s read-modify-write job (NumberSequence
  source -> key_by -> ``CountPerKey`` -> no-op sink) at p=2, with checkpoints (aligned or
  unaligned) or without.
* :func:`fill_job` -- one source reader (:class:`FillSource`) emits ``0 .. K-1`` once, a keyed
  function stores ``k * 7`` per key; the reader then idles until ``hold`` checkpoints taken
  after its last record completed (optionally copying the last of them out of the job's
  checkpoint directory, which is discarded when the job finishes), and ends.
* :func:`recovery_job` -- a paced DataGeneratorSource -> key_by(i % K) ->
  :class:`KillOnceCount`, whose subtask 0 kills itself with SIGKILL once a checkpoint
  completed; exact final counts after the restart.
* :func:`restore_job` -- restores :func:`fill_job`'s keyed state from a checkpoint at another
  parallelism and checks a sample of keys (:class:`CheckRestored`).
"""

from __future__ import annotations

import glob
import os
import pickle
import shutil
import signal
import time
from typing import Any

from _sinks import LastValueSink
from _state_jobs import BACKENDS, CountPerKey, NullSink, _key_selector

from flowrun.core import (
    JobExecutionResult,
    KeyedProcessFunction,
    MapFunction,
    StreamExecutionEnvironment,
    Types,
)
from flowrun.core.connectors import NumberSequenceSource
from flowrun.core.connectors.base import Source, SourceReader
from flowrun.core.connectors.datagen import DataGeneratorSource, RateLimiterStrategy
from flowrun.state import ValueStateDescriptor

__all__ = [
    "CheckRestored",
    "FillSource",
    "KillOnceCount",
    "fill_job",
    "read_stamps",
    "recovery_job",
    "restore_job",
    "throughput_job",
]

FILL_UID = "fill"  #: uid of the keyed operator whose state fill_job writes and restore_job reads
VALUE_FACTOR = 7  #: fill_job stores key * VALUE_FACTOR


def _env(parallelism: int, backend: str, config: dict[str, str]) -> StreamExecutionEnvironment:
    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(parallelism)
    env.set_state_backend(BACKENDS[backend]())
    conf = env.get_configuration()
    for key, value in config.items():
        conf.set_string(key, value)
    return env


def _stamp(out_dir: str, name: str, value: Any) -> None:
    """Write ``value`` to ``<out_dir>/<name>.pickle`` (whole, via a rename)."""
    path = os.path.join(out_dir, name + ".pickle")
    with open(path + ".tmp", "wb") as out:
        pickle.dump(value, out)
    os.replace(path + ".tmp", path)


def read_stamps(out_dir: str, prefix: str) -> dict[str, Any]:
    """``{name: value}`` of every stamp whose name starts with ``prefix``.

    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> _stamp(d, "open-0", (1.5, 2.0)); _stamp(d, "first-1-0", 3.0)
    >>> read_stamps(d, "open-")
    {'open-0': (1.5, 2.0)}
    """
    found = {}
    for path in glob.glob(os.path.join(out_dir, prefix + "*.pickle")):
        with open(path, "rb") as f:
            found[os.path.basename(path)[: -len(".pickle")]] = pickle.load(f)
    return found


# -- 1. throughput -------------------------------------------------------------------------


def throughput_job(
    backend: str,
    keys: int,
    records: int,
    parallelism: int,
    interval_ms: int,
    out_dir: str,
    unaligned: bool = False,
) -> JobExecutionResult:
    """``bench/test_state.py``'s job at ``parallelism``; checkpoints every ``interval_ms``
    (0 = off) into ``<out_dir>/chk``, aligned or unaligned. Returns the JobExecutionResult."""
    config = {}
    if interval_ms > 0:
        config = {
            "execution.checkpointing.interval": str(interval_ms),
            "execution.checkpointing.unaligned": str(unaligned).lower(),
            "state.checkpoints.dir": os.path.join(out_dir, "chk"),
        }
    env = _env(parallelism, backend, config)
    (
        env.from_source(NumberSequenceSource(0, records - 1), None, "seq")
        .key_by(_key_selector(keys))
        .process(CountPerKey(out_dir))
        .uid("count")
        .sink_to(NullSink())
    )
    return env.execute(f"bench checkpoint throughput {backend} K={keys} every {interval_ms} ms")


# -- 2. checkpoint size and duration -------------------------------------------------------


class _FillReader(SourceReader):
    def __init__(self, source: FillSource, next_key: int) -> None:
        self.source = source
        self.next_key = next_key
        self.full: list[int] = []  #: checkpoints whose barrier left after the last record
        self.ended = False

    def poll(self, max_records: int) -> list[int] | None:
        keys = self.source.keys
        if self.next_key < keys:
            hi = min(keys, self.next_key + max(1, max_records))
            out = list(range(self.next_key, hi))
            self.next_key = hi
            return out
        if self.ended:
            return None
        done = [cid for cid in self.full if self._completed(cid)]
        hold = self.source.hold
        if len(done) < hold:
            return []
        if self.source.keep_dir:  # after the measured checkpoints, so as not to disturb them
            metadata = self._completed(done[hold - 1])
            shutil.copytree(os.path.dirname(metadata), self.source.keep_dir)
        self.ended = True
        _stamp(self.source.out_dir, "full", done[:hold])
        return None

    def _completed(self, cid: int) -> str | None:
        found = glob.glob(os.path.join(self.source.checkpoint_dir, "*", f"chk-{cid}", "_metadata"))
        return found[0] if found else None

    def next_wakeup(self) -> float | None:
        return time.monotonic() + 0.01 if self.next_key >= self.source.keys else None

    def snapshot_state(self, checkpoint_id: int) -> list[Any]:
        if self.next_key < self.source.keys:
            return [self.next_key]
        if not self.ended:
            self.full.append(checkpoint_id)
        return []


class FillSource(Source):
    """Emits ``0 .. keys-1`` once (one reader), then waits for ``hold`` checkpoints.

    A checkpoint whose barrier the reader emitted after its last record holds the whole
    state: barriers are aligned, so every record before it was applied. The reader notes
    those checkpoint ids (``snapshot_state``), waits until ``hold`` of them completed (their
    ``_metadata`` exists under ``checkpoint_dir``), writes their ids to ``<out_dir>/full.pickle``
    and ends, which ends the job. With ``keep_dir`` it first copies the last of them there:
    checkpoints are self-contained directories, and the job's own are discarded when it
    finishes (Flink's retention for a finished job).
    """

    def __init__(
        self,
        keys: int,
        hold: int,
        checkpoint_dir: str,
        out_dir: str,
        keep_dir: str | None = None,
    ) -> None:
        self.keys = keys
        self.hold = hold
        self.checkpoint_dir = checkpoint_dir
        self.out_dir = out_dir
        self.keep_dir = keep_dir

    def max_parallelism(self) -> int | None:
        return 1

    def create_reader(self, subtask_index: int, parallelism: int) -> SourceReader:
        return _FillReader(self, 0)

    def restore_reader(
        self, subtask_index: int, parallelism: int, splits: list[Any]
    ) -> SourceReader:
        return _FillReader(self, splits[0] if splits else self.keys)


def _identity(k: int) -> int:
    return k


class Fill(KeyedProcessFunction):
    """Stores ``key * 7`` in a LONG ValueState; writes how many keys it stored at close."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir

    def open(self, runtime_context) -> None:
        self.ctx = runtime_context
        self.state = runtime_context.get_state(ValueStateDescriptor("v", Types.LONG()))
        self.records = 0

    def process_element(self, value, ctx):
        self.state.update(value * VALUE_FACTOR)
        self.records += 1

    def close(self) -> None:
        _stamp(self.out_dir, f"filled-{self.ctx.get_index_of_this_subtask()}", self.records)


def fill_job(
    backend: str,
    keys: int,
    parallelism: int,
    interval_ms: int,
    hold: int,
    out_dir: str,
    keep_dir: str | None = None,
    canonical: bool = False,
) -> JobExecutionResult:
    """Fill ``keys`` keys at ``parallelism`` with checkpoints every ``interval_ms``, keep
    going until ``hold`` checkpoints of the full state completed; see :class:`FillSource`.
    ``canonical`` writes LMDB checkpoints in the backend-neutral savepoint format instead of
    native environment copies."""
    checkpoint_dir = os.path.join(out_dir, "chk")
    env = _env(
        parallelism,
        backend,
        {
            "execution.checkpointing.interval": str(interval_ms),
            "state.checkpoints.dir": checkpoint_dir,
            # keep every full checkpoint until the reader has seen them complete
            "state.checkpoints.num-retained": str(hold + 2),
            "flowrun.state.lmdb.native-checkpoints": "false" if canonical else "true",
        },
    )
    (
        env.from_source(FillSource(keys, hold, checkpoint_dir, out_dir, keep_dir), None, "fill")
        .uid("fill-source")
        .key_by(_identity)
        .process(Fill(out_dir))
        .uid(FILL_UID)
        .sink_to(NullSink())
    )
    return env.execute(f"bench checkpoint fill {backend} K={keys} p={parallelism}")


# -- 3. recovery ---------------------------------------------------------------------------


class KillOnceCount(MapFunction):
    """Counts records per key; subtask 0 kills itself with SIGKILL on attempt 0.

    It does so at its first record after ``kill_after`` records once a checkpoint completed,
    writing ``time.monotonic()`` to ``killed.pickle`` first. On later attempts every subtask
    stamps when it was unpickled and when its ``open()`` ended (state restored), in
    ``open-<attempt>-<subtask>.pickle``, and its first record, in
    ``first-<attempt>-<subtask>.pickle``. Emits ``(key, count)``.
    """

    def __init__(self, out_dir: str, keys: int, kill_after: int) -> None:
        self.out_dir = out_dir
        self.keys = keys
        self.kill_after = kill_after
        self.loaded_at = 0.0

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.loaded_at = time.monotonic()

    def open(self, runtime_context) -> None:
        self.attempt = runtime_context.get_attempt_number()
        self.index = runtime_context.get_index_of_this_subtask()
        self.count = runtime_context.get_state(ValueStateDescriptor("n", Types.LONG()))
        self.seen = 0
        self.completed = False
        self.noted = False
        if self.attempt:
            name = f"open-{self.attempt}-{self.index}"
            _stamp(self.out_dir, name, (self.loaded_at, time.monotonic()))

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        self.completed = True

    def map(self, value):
        if self.attempt == 0:
            self.seen += 1
            if self.index == 0 and self.completed and self.seen > self.kill_after:
                _stamp(self.out_dir, "killed", time.monotonic())
                os.kill(os.getpid(), signal.SIGKILL)
        elif not self.noted:
            self.noted = True
            _stamp(self.out_dir, f"first-{self.attempt}-{self.index}", time.monotonic())
        n = (self.count.value() or 0) + 1
        self.count.update(n)
        return (value % self.keys, n)


def _mod_key(keys: int):
    return lambda i: i % keys


def recovery_job(
    backend: str,
    keys: int,
    records: int,
    rate: int,
    parallelism: int,
    interval_ms: int,
    kill_after: int,
    out_dir: str,
) -> JobExecutionResult:
    """A paced source (``rate`` records/s, so that little data is in flight and a barrier
    does not queue behind seconds of records) -> key_by(i % keys) -> KillOnceCount ->
    LastValueSink, restarting with fixed-delay 0 ms from the latest checkpoint."""
    env = _env(
        parallelism,
        backend,
        {
            "execution.checkpointing.interval": str(interval_ms),
            "state.checkpoints.dir": os.path.join(out_dir, "chk"),
            "restart-strategy": "fixed-delay",
            "restart-strategy.fixed-delay.attempts": "1",
            "restart-strategy.fixed-delay.delay": "0",
        },
    )
    pair = Types.TUPLE([Types.LONG(), Types.LONG()])
    source = DataGeneratorSource(_identity, records, RateLimiterStrategy.per_second(rate))
    (
        env.from_source(source, None, "gen", type_info=Types.LONG())
        .uid("gen")
        .key_by(_mod_key(keys))
        .map(KillOnceCount(out_dir, keys, kill_after), output_type=pair)
        .uid("count")
        .sink_to(LastValueSink(out_dir))
    )
    return env.execute(f"bench recovery {backend} p={parallelism}")


# -- 4. restore at another parallelism ----------------------------------------------------


class CheckRestored(KeyedProcessFunction):
    """Checks ``value == key * 7`` for every record (a sample of keys) on restored state.

    Stamps ``time.monotonic()`` when the subtask unpickled it (the subtask process has just
    started, nothing is restored yet) and at the end of ``open()`` (state restored and
    declared), into ``open-<subtask>.pickle``; the checked and wrong keys, and the time at
    ``close()`` (every sampled key read: the HashMap backend decodes restored rows per key
    group on first access, and the sample reaches every key group), into
    ``checked-<subtask>.pickle``.
    """

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir
        self.loaded_at = 0.0

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.loaded_at = time.monotonic()

    def open(self, runtime_context) -> None:
        self.index = runtime_context.get_index_of_this_subtask()
        self.state = runtime_context.get_state(ValueStateDescriptor("v", Types.LONG()))
        self.checked = 0
        self.wrong: list[tuple[int, Any]] = []
        _stamp(self.out_dir, f"open-{self.index}", (self.loaded_at, time.monotonic()))

    def process_element(self, value, ctx):
        got = self.state.value()
        self.checked += 1
        if got != value * VALUE_FACTOR:
            self.wrong.append((value, got))

    def close(self) -> None:
        _stamp(
            self.out_dir,
            f"checked-{self.index}",
            (self.checked, self.wrong[:10], time.monotonic()),
        )


def restore_job(
    backend: str,
    parallelism: int,
    sample: list[int],
    restore_from: str | None,
    out_dir: str,
) -> JobExecutionResult:
    """Restore :data:`FILL_UID`'s state from ``restore_from`` (None: start empty, the
    baseline) at ``parallelism`` and check ``sample``'s values."""
    config = {"execution.savepoint.ignore-unclaimed-state": "true"}
    if restore_from is not None:
        config["execution.savepoint.path"] = restore_from
    env = _env(parallelism, backend, config)
    (
        env.from_collection(sample, type_info=Types.LONG())
        .key_by(_identity)
        .process(CheckRestored(out_dir))
        .uid(FILL_UID)
        .sink_to(NullSink())
    )
    return env.execute(f"bench restore {backend} p={parallelism}")
