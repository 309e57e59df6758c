"""Arrow word count (``key_by("word").count()``) with checkpoints every 50 ms.

Usage: flowrun run arrow_checkpointed_count.py -p P -- INPUT CHECKPOINT_DIR [kill=MARKER]
Prints one ``{'word': ..., 'count': ...}`` line per key and batch; the last line per word is
that word's final count. Every batch of lines sleeps 2 ms, so that checkpoints complete while
the job runs. With ``kill=MARKER``, a counting subtask kills itself with SIGKILL once a
checkpoint completed under CHECKPOINT_DIR, unless MARKER exists (it creates it first, so only
one subtask of one attempt does).
"""

import glob
import os
import signal
import sys
import time

import pyarrow as pa
import pyarrow.compute as pc

from flowrun.core import StreamExecutionEnvironment

path, checkpoint_dir = sys.argv[1], sys.argv[2]
options = dict(a.split("=", 1) for a in sys.argv[3:] if "=" in a)


def split(batch: pa.RecordBatch) -> pa.RecordBatch:
    time.sleep(0.002)
    words = pc.list_flatten(pc.utf8_split_whitespace(batch.column("line")))
    return pa.record_batch([words], names=["word"])


def kill_once(batch: pa.RecordBatch) -> pa.RecordBatch:
    marker = options.get("kill")
    if marker and glob.glob(os.path.join(checkpoint_dir, "*", "chk-*", "_metadata")):
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return batch
        os.kill(os.getpid(), signal.SIGKILL)
    return batch


env = StreamExecutionEnvironment.get_execution_environment()
env.enable_checkpointing(50)
(
    env.read_text_file(path, as_arrow=True)
    .map_batches(split)
    .key_by("word")
    .count()
    .uid("count")
    .map_batches(kill_once)
    .print()
)
env.execute("arrow checkpointed count")
