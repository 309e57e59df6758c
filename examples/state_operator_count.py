"""Operator state through CheckpointedFunction (the customer's Hello01StateOperator / Hello04).

Each parallel instance numbers the records it has seen; the counter is kept in an operator
``ListState`` that ``snapshot_state`` refreshes on every checkpoint and
``initialize_state`` obtains (and, after a restore, reads back). Run it with
``flowrun run examples/state_operator_count.py -p 2``.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _input import source  # noqa: E402

from flowrun.core import CheckpointedFunction, MapFunction, StreamExecutionEnvironment, Types  # noqa: E402
from flowrun.state import ListStateDescriptor  # noqa: E402

SAMPLE = ["hello", "flowrun", "state", "operator", "list", "state", "count", "done"]


class CountingMap(MapFunction, CheckpointedFunction):
    def __init__(self):
        self.count = 0
        self.count_list_state = None

    def map(self, value):
        self.count += 1
        return f"[{value.upper()}][{self.count}]"

    def snapshot_state(self, context):
        self.count_list_state.clear()
        self.count_list_state.add(self.count)

    def initialize_state(self, context):
        descriptor = ListStateDescriptor("CountListState", Types.INT())
        self.count_list_state = context.get_operator_state_store().get_list_state(descriptor)
        if context.is_restored():
            self.count = sum(self.count_list_state.get())


env = StreamExecutionEnvironment.get_execution_environment()
source(env, SAMPLE, __doc__.splitlines()[0]).rebalance().map(CountingMap()).print()
env.execute("operator state count")
