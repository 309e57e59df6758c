"""A backpressured checkpointed job for ``bench_unaligned.py``.

Why a module of its own: user functions travel to subtask processes by reference (cloudpickle
pickles module-level classes by name), so they must live in a module every subtask can import.

The job: NumberSequence source (fast) -> key_by(i % 1000) -> :class:`SlowCount` (a keyed
counter that sleeps ``sleep_us`` per record, so the network buffers between source and
counter stay full) -> no-op sink, at p=2, with checkpoints every ``interval_ms``.
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
        return value


def _key(value: int) -> int:
    return value % 1000


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
        .key_by(_key)
        .map(SlowCount(sleep_us), output_type=Types.LONG())
        .uid("slow")
        .sink_to(NullSink())
    )
    return env.execute(f"backpressured {'unaligned' if unaligned else 'aligned'}")
