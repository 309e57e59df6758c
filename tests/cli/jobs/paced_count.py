"""A paced keyed count with checkpoints, for tests that act on a job while it runs.

Usage: flowrun run paced_count.py [-p P] -- N RATE [KEYS] [UID-SUFFIX] [CHECKPOINT-MS]

The source emits ``0 .. N-1`` at ``RATE`` records per second (``0``: as fast as it can); a
keyed map (uid ``count``) counts per key ``i % KEYS`` (default 10) in a ``ValueState`` named
``count`` and remembers the last even and odd number per key in a ``MapState`` named
``last``. It prints ``key count`` lines, so the last line per key is that key's final count.
Checkpoints every CHECKPOINT-MS (default 100; 0: no checkpointing).
"""

import sys

from flowrun.core import MapFunction, StreamExecutionEnvironment, Types
from flowrun.core.connectors import DataGeneratorSource, RateLimiterStrategy
from flowrun.state import MapStateDescriptor, ValueStateDescriptor

n, rate = int(sys.argv[1]), float(sys.argv[2])
keys = int(sys.argv[3]) if len(sys.argv) > 3 else 10
uid = "count" + (sys.argv[4] if len(sys.argv) > 4 else "")
checkpoint_ms = int(sys.argv[5]) if len(sys.argv) > 5 else 100


class Count(MapFunction):
    def open(self, runtime_context):
        self.count = runtime_context.get_state(ValueStateDescriptor("count", Types.LONG()))
        self.last = runtime_context.get_map_state(
            MapStateDescriptor("last", Types.STRING(), Types.LONG())
        )

    def map(self, i):
        c = (self.count.value() or 0) + 1
        self.count.update(c)
        self.last.put("even" if i % 2 == 0 else "odd", i)
        return f"{i % keys} {c}"


env = StreamExecutionEnvironment.get_execution_environment()
if checkpoint_ms > 0:
    env.enable_checkpointing(checkpoint_ms)
source = DataGeneratorSource(
    lambda i: i, n, RateLimiterStrategy.per_second(rate) if rate > 0 else None, Types.LONG()
)
(
    env.from_source(source, None, "numbers")
    .uid("numbers")
    .key_by(lambda i: i % keys, key_type=Types.LONG())
    .map(Count(), output_type=Types.STRING())
    .name("count")
    .uid(uid)
    .print()
)
env.execute("paced count")
