"""Two independent pipelines in one job (two pipelined regions), for region failover.

Usage: flowrun run two_pipelines.py -p 2 -- IN_A IN_B OUT_A OUT_B MARKS_DIR
Each pipeline counts words into its own exactly-once FileSink. Subtask 0 of pipeline A's
counter kills itself once (attempt 0, after a checkpoint completed). Every counter subtask
writes ``<pipeline>-<subtask>-<attempt>-<pid>`` into MARKS_DIR when it opens.
"""

import os
import signal
import sys
import time

from flowrun.core import MapFunction, StreamExecutionEnvironment, Types
from flowrun.core.connectors.file_system import FileSink
from flowrun.core.connectors.serialization import Encoder
from flowrun.state import ValueStateDescriptor

in_a, in_b, out_a, out_b, marks = sys.argv[1:6]


class Count(MapFunction):
    def __init__(self, pipeline, fail):
        self.pipeline = pipeline
        self.fail = fail

    def open(self, runtime_context):
        self.ctx = runtime_context
        self.count = runtime_context.get_state(ValueStateDescriptor("count", Types.LONG()))
        self.completed = False
        self.seen = 0
        mark = (
            f"{self.pipeline}-{runtime_context.get_index_of_this_subtask()}-"
            f"{runtime_context.get_attempt_number()}-{os.getpid()}"
        )
        open(os.path.join(marks, mark), "w").close()

    def notify_checkpoint_complete(self, checkpoint_id):
        self.completed = True

    def map(self, word):
        self.seen += 1
        if self.seen % 100 == 0:
            time.sleep(0.001)
        if (
            self.fail
            and self.completed
            and self.seen > 3000
            and self.ctx.get_attempt_number() == 0
            and self.ctx.get_index_of_this_subtask() == 0
        ):
            os.kill(os.getpid(), signal.SIGKILL)
        n = (self.count.value() or 0) + 1
        self.count.update(n)
        return f"{word} {n}"


env = StreamExecutionEnvironment.get_execution_environment()
env.enable_checkpointing(100)
for name, source, out, fail in (("a", in_a, out_a, True), ("b", in_b, out_b, False)):
    (
        env.read_text_file(source)
        .flat_map(lambda line: line.split(), output_type=Types.STRING())
        .key_by(lambda w: w)
        .map(Count(name, fail), output_type=Types.STRING())
        .uid(f"count-{name}")
        .sink_to(FileSink.for_row_format(out, Encoder.simple_string_encoder()).build())
        .uid(f"files-{name}")
    )
env.execute("two pipelines")
