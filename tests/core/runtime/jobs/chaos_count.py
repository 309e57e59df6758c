"""Keyed word count into the exactly-once FileSink, for chaos tests.

Usage: flowrun run chaos_count.py -p P -- INPUT OUTPUT_DIR [slow]
Writes one line ``<word> <running count>`` per input word; with exactly-once delivery the
committed part files hold every ``w i`` for i = 1..count(w) exactly once.
"""

import sys
import time

from flowrun.core import MapFunction, StreamExecutionEnvironment, Types
from flowrun.core.connectors.file_system import FileSink
from flowrun.core.connectors.serialization import Encoder
from flowrun.state import ValueStateDescriptor

path, out_dir = sys.argv[1], sys.argv[2]
slow = "slow" in sys.argv[3:]


class Count(MapFunction):
    def open(self, runtime_context):
        self.count = runtime_context.get_state(ValueStateDescriptor("count", Types.LONG()))
        self.seen = 0

    def map(self, word):
        self.seen += 1
        if slow and self.seen % 100 == 0:
            time.sleep(0.001)
        n = (self.count.value() or 0) + 1
        self.count.update(n)
        return f"{word} {n}"


env = StreamExecutionEnvironment.get_execution_environment()
env.enable_checkpointing(200)
(
    env.read_text_file(path)
    .flat_map(lambda line: line.split(), output_type=Types.STRING())
    .key_by(lambda w: w)
    .map(Count(), output_type=Types.STRING())
    .uid("count")
    .sink_to(FileSink.for_row_format(out_dir, Encoder.simple_string_encoder()).build())
    .uid("files")
)
env.execute("chaos count")
