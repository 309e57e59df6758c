"""Word count with a keyed reduce -- flowrun's main example.

Run it with ``flowrun run examples/word_count.py -p 2``. Without ``--input`` it
generates its own text (deterministic, ~20,000 words) into a temporary file,
reads it with ``read_text_file`` (two readers share the file through byte-range
splits), splits lines into words, keys by word and keeps a running count with
``reduce``. Every update is printed as Flink prints it (``<subtask>> (word, n)``);
``--output DIR`` writes them with a FileSink instead (exactly once: part files are
committed by checkpoints).

Embedded defaults throughout: the running counts live in LMDB (the default state
backend), and checkpoints every 500 ms go to a local directory (``--checkpoints DIR``,
default a temporary one); a bounded job ends with a final checkpoint.

This is the program of the customer's notes (Flink 1.15 WordCount) in Python::

    text.flat_map(split).map(lambda w: (w, 1)).key_by(lambda t: t[0]).reduce(add)
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile

from flowrun.core import StreamExecutionEnvironment, Types
from flowrun.core.connectors import Encoder, FileSink

WORDS = (
    "the quick brown fox jumps over the lazy dog while flowrun counts every word "
    "in parallel across processes and arrow batches move through shared memory"
).split()


def generate_input(path: str, lines: int = 2000, seed: int = 7) -> None:
    """Deterministic text: Zipf-like choice of words, 5-15 words per line."""
    rng = random.Random(seed)
    weights = [1.0 / (rank + 1) for rank in range(len(WORDS))]
    with open(path, "w", encoding="utf-8") as out:
        for _ in range(lines):
            n = rng.randint(5, 15)
            out.write(" ".join(rng.choices(WORDS, weights, k=n)) + "\n")


def build(env: StreamExecutionEnvironment, path: str):
    """The word-count pipeline: rolling (word, count) updates."""
    return (
        env.read_text_file(path)
        .flat_map(lambda line: line.lower().split(), output_type=Types.STRING())
        .map(lambda word: (word, 1), output_type=Types.TUPLE([Types.STRING(), Types.LONG()]))
        .key_by(lambda pair: pair[0])
        .reduce(lambda a, b: (a[0], a[1] + b[1]))
        .name("Count")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", help="text file or directory (default: generated)")
    parser.add_argument("--output", help="directory for a FileSink instead of stdout")
    parser.add_argument("--lines", type=int, default=2000, help="lines to generate")
    parser.add_argument("--checkpoints", help="checkpoint directory (default: temporary)")
    args = parser.parse_args()

    env = StreamExecutionEnvironment.get_execution_environment()
    env.enable_checkpointing(500)
    with tempfile.TemporaryDirectory(prefix="flowrun-wordcount-") as tmp:
        env.get_checkpoint_config().set_checkpoint_storage_dir(
            args.checkpoints or os.path.join(tmp, "checkpoints")
        )
        path = args.input
        if path is None:
            path = os.path.join(tmp, "words.txt")
            generate_input(path, args.lines)
        counts = build(env, path)
        if args.output:
            counts.sink_to(
                FileSink.for_row_format(args.output, Encoder.simple_string_encoder()).build()
            )
        else:
            counts.print()
        result = env.execute("word count")
        print(f"job {result.get_job_id()} finished in {result.get_net_runtime()} ms")


if __name__ == "__main__":
    main()
