"""Counting per word in a ValueState from a rich map (the map of the customer's HelloEosUseKFK).

The stream is keyed by word; the map function reads the word's count from keyed state,
adds one and writes it back, so every word counts on its own, at any parallelism:
``flowrun run examples/state_keyed_count.py -p 2``.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _input import source  # noqa: E402

from flowrun.core import MapFunction, StreamExecutionEnvironment, Types  # noqa: E402
from flowrun.state import ValueStateDescriptor  # noqa: E402

SAMPLE = "to be or not to be that is the question to be".split()


class CountPerWord(MapFunction):
    def open(self, runtime_context):
        self.value_state = runtime_context.get_state(
            ValueStateDescriptor("countBuffer", Types.INT())
        )

    def map(self, value):
        count = (self.value_state.value() or 0) + 1
        self.value_state.update(count)
        return f"{value} value:{count}"


env = StreamExecutionEnvironment.get_execution_environment()
(
    source(env, SAMPLE, __doc__.splitlines()[0])
    .key_by(lambda word: word)
    .map(CountPerWord(), output_type=Types.STRING())
    .print()
)
env.execute("keyed state count")
