"""A backpressured checkpointed job for ``bench_unaligned.py``.

Why a module of its own: user functions travel to subtask processes by reference (cloudpickle
pickles module-level classes by name), so they must live in a module every subtask can import.

The job: NumberSequence source (fast) -> (i % 1000, 200-byte payload) -> key_by -> :class:`SlowCount`
(a keyed counter that sleeps ``sleep_us`` per record, so the network buffers between source
and counter stay full) -> no-op sink, at p=2, with checkpoints every ``interval_ms``. The
payload keeps the in-flight data (a few MB) far below the input, so the sources are still
running while checkpoints are taken.
"""

from __future__ import annotations

import time

from _state_jobs import NullSink

from flowrun.core import MapFunction, StreamExecutionEnvironment, Types
from flowrun.core.config import Configuration
from flowrun.core.connectors import NumberSequenceSource
from flowrun.state import ValueStateDescriptor

__all__ = ["SlowCount", "backpressured_job"]


class SlowCount(MapFunction):
    def __init__(self, sleep_us: int) -> None:
        self.sleep_s = sleep_us / 1e6

    def open(self, runtime_context):
        self.count = runtime_context.get_state(ValueStateDescriptor("n", Types.LONG()))
        self.seen = 0

    def map(self, value):
        self.seen += 1
        if self.seen % 100 == 0:
            time.sleep(self.sleep_s * 100)
        self.count.update((self.count.value() or 0) + 1)
        return value[0]


_PAD = "x" * 200


def _with_payload(value: int) -> tuple:
    return (value % 1000, _PAD)


def _key(record: tuple) -> int:
    return record[0]


def backpressured_job(records: int, sleep_us: int, interval_ms: int, unaligned: bool, chk: str):
    conf = Configuration()
    conf.set_string("execution.checkpointing.interval", str(interval_ms))
    conf.set_string("execution.checkpointing.unaligned", str(unaligned).lower())
    conf.set_string("state.checkpoints.dir", chk)
    conf.set_string("rest.port", "0")
    env = StreamExecutionEnvironment(conf)
    env.set_parallelism(2)
    (
        env.from_source(NumberSequenceSource(0, records - 1), None, "seq")
        .map(_with_payload, output_type=Types.TUPLE([Types.LONG(), Types.STRING()]))
        .key_by(_key)
        .map(SlowCount(sleep_us), output_type=Types.LONG())
        .uid("slow")
        .sink_to(NullSink())
    )
    return env.execute(f"backpressured {'unaligned' if unaligned else 'aligned'}")
