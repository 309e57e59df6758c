"""Keyed word count over a text file with checkpoints; subtask 0 of the counting map kills
itself with SIGKILL on its first attempt once a checkpoint completed and it saw more records.

Usage: flowrun run checkpointed_count.py -p P -- INPUT KILL_AFTER [slow] [uid=U] [maxp=N]
       [corrupt=CHECKPOINT_DIR] [crawl=N]
Prints ``word count`` lines; the last line per word is that word's final count. ``slow``
sleeps a millisecond every 200 records, so that a test can act while the job runs.
``crawl=N``: subtask 0 takes half a millisecond per record for its first N records (of
attempt 0), and is killed only if a checkpoint completes within them.
"""

import glob
import os
import signal
import sys
import time

from flowrun.core import FlatMapFunction, MapFunction, StreamExecutionEnvironment, Types
from flowrun.state import ValueStateDescriptor

path, kill_after = sys.argv[1], int(sys.argv[2])
slow = "slow" in sys.argv[3:]
options = dict(a.split("=", 1) for a in sys.argv[3:] if "=" in a)


class Count(MapFunction):
    def open(self, runtime_context):
        self.ctx = runtime_context
        self.count = runtime_context.get_state(ValueStateDescriptor("count", Types.LONG()))
        self.seen = 0
        self.completed = False

    def notify_checkpoint_complete(self, checkpoint_id):
        self.completed = True
        corrupt = options.get("corrupt")  # damage the newest checkpoint, then fail
        if (
            corrupt
            and checkpoint_id >= 3
            and self.ctx.get_attempt_number() == 0
            and self.ctx.get_index_of_this_subtask() == 0
        ):
            for state_file in glob.glob(os.path.join(corrupt, "*", f"chk-{checkpoint_id}", "*")):
                if not state_file.endswith("_metadata"):
                    with open(state_file, "r+b") as f:
                        f.truncate(3)
            os.kill(os.getpid(), signal.SIGKILL)

    def map(self, word):
        self.seen += 1
        if slow and self.seen % 200 == 0:
            time.sleep(0.001)
        crawl = int(options.get("crawl", 0))
        first = self.ctx.get_attempt_number() == 0 and self.ctx.get_index_of_this_subtask() == 0
        if first and self.seen <= crawl:
            if self.seen == 1:
                self.completed = False  # only checkpoints completing from now on count
            time.sleep(0.0005)
            if self.completed:
                os.kill(os.getpid(), signal.SIGKILL)
        if (
            kill_after >= 0
            and self.completed
            and self.seen > kill_after
            and self.ctx.get_attempt_number() == 0
            and self.ctx.get_index_of_this_subtask() == 0
        ):
            os.kill(os.getpid(), signal.SIGKILL)
        n = (self.count.value() or 0) + 1
        self.count.update(n)
        return f"{word} {n}"


class Split(FlatMapFunction):
    """Splits lines; on the first attempt of a job that kills itself, slowly until a
    checkpoint completed, so that one completes before the input is in the buffers (an
    aligned barrier would queue behind all of it) however fast the engine is."""

    def open(self, runtime_context):
        fails = kill_after >= 0 or "corrupt" in options
        self.first = fails and runtime_context.get_attempt_number() == 0
        self.needed = 3 if "corrupt" in options else 1  # corrupt= acts on checkpoint 3
        self.completed = 0

    def notify_checkpoint_complete(self, checkpoint_id):
        self.completed += 1

    def flat_map(self, line):
        if self.first and self.completed < self.needed:
            time.sleep(0.0002)
        yield from line.split()


env = StreamExecutionEnvironment.get_execution_environment()
env.enable_checkpointing(50)
if "maxp" in options:
    env.set_max_parallelism(int(options["maxp"]))
(
    env.read_text_file(path)
    .flat_map(Split(), output_type=Types.STRING())
    .key_by(lambda w: w)
    .map(Count(), output_type=Types.STRING())
    .uid(options.get("uid", "count"))
    .print()
)
env.execute("checkpointed count")
