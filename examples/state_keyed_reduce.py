"""Keyed state in a rich reduce (the customer's Hello03StateKeyed, in Python).

Lines are ``fruit:weight``; the job keys by fruit and keeps the running total of each
fruit in a ``ValueState`` that the reduce function obtains in ``open()``. Run it with
``flowrun run examples/state_keyed_reduce.py`` (add ``-- --port 19523`` to read a socket).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _input import source  # noqa: E402

from flowrun.core import ReduceFunction, StreamExecutionEnvironment, Types  # noqa: E402
from flowrun.state import ValueStateDescriptor  # noqa: E402

FRUIT = Types.TUPLE([Types.STRING(), Types.INT()])
SAMPLE = ["apple:3", "banana:5", "apple:4", "cherry:1", "banana:2", "apple:10"]


class FruitWeightReduce(ReduceFunction):
    """Adds the weights of one fruit and keeps the total in keyed state."""

    def open(self, runtime_context):
        descriptor = ValueStateDescriptor("reduceValueState", FRUIT)
        self.value_state = runtime_context.get_state(descriptor)

    def reduce(self, value1, value2):
        total = (value1[0], value1[1] + value2[1])
        self.value_state.update(total)
        return total


def parse(line: str):
    name, weight = line.split(":")
    return name, int(weight)


env = StreamExecutionEnvironment.get_execution_environment()
env.set_parallelism(1)
(
    source(env, SAMPLE, __doc__.splitlines()[0])
    .map(parse, output_type=FRUIT)
    .key_by(lambda fruit: fruit[0])
    .reduce(FruitWeightReduce())
    .print()
)
env.execute("keyed state reduce")
