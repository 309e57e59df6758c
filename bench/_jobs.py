"""The engine jobs the benchmarks run, built with the public PyFlink-style API.

Why a module of its own (and not the test files): user functions are shipped
to subtask processes with cloudpickle, which pickles module-level functions by
reference; this module is importable by its plain name in every subtask (the
fork server receives the JobManager's ``sys.path``), test modules imported by
pytest are not.
"""

from __future__ import annotations

import time

import pyarrow as pa
import pyarrow.compute as pc
from _sinks import LastValueSink, LatencySink

from flowrun.core import StreamExecutionEnvironment, Types
from flowrun.core.connectors.datagen import DataGeneratorSource, RateLimiterStrategy

__all__ = ["word_count_rows", "word_count_arrow", "latency_job", "split_words"]

WORD_COUNT = Types.TUPLE([Types.STRING(), Types.LONG()])


def _env(parallelism: int, config: dict | None = None) -> StreamExecutionEnvironment:
    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(parallelism)
    for key, value in (config or {}).items():
        env.get_configuration().set(key, value)
    return env


def _one(word: str) -> tuple[str, int]:
    return (word, 1)


def _first(pair: tuple) -> object:
    return pair[0]


def _add(a: tuple, b: tuple) -> tuple:
    return (a[0], a[1] + b[1])


def word_count_rows(path: str, parallelism: int, out_dir: str, config: dict | None = None):
    """read_text_file -> flat_map(str.split) -> map((w, 1)) -> key_by -> reduce -> sink."""
    env = _env(parallelism, config)
    (
        env.read_text_file(path)
        .flat_map(str.split, output_type=Types.STRING())
        .map(_one, output_type=WORD_COUNT)
        .key_by(_first)
        .reduce(_add)
        .sink_to(LastValueSink(out_dir))
    )
    return env.execute("bench word count (rows)")


def split_words(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Lines to words with Arrow kernels: one ``word`` row per word."""
    words = pc.list_flatten(pc.utf8_split_whitespace(batch.column("line")))
    return pa.record_batch([words], names=["word"])


def word_count_arrow(path: str, parallelism: int, out_dir: str, config: dict | None = None):
    """read_text_file(as_arrow) -> map_batches(split) -> key_by("word").count() -> sink."""
    env = _env(parallelism, config)
    (
        env.read_text_file(path, as_arrow=True)
        .map_batches(split_words)
        .key_by("word")
        .count()
        .sink_to(LastValueSink(out_dir, key="word", value="count"))
    )
    return env.execute("bench word count (arrow)")


def _stamped(index: int) -> tuple[int, int]:
    return (index % 64, time.time_ns())


def _identity(record: tuple) -> tuple:
    return record


def latency_job(rate: int, count: int, buffer_timeout: int, out_dir: str):
    """Paced source -> key_by -> map -> sink at parallelism 2; records carry time_ns()."""
    env = _env(2, {"execution.buffer-timeout": buffer_timeout})
    stamped = Types.TUPLE([Types.LONG(), Types.LONG()])
    source = DataGeneratorSource(_stamped, count, RateLimiterStrategy.per_second(rate))
    (
        env.from_source(source, None, "gen", type_info=stamped)
        .key_by(_first)
        .map(_identity, output_type=stamped)
        .sink_to(LatencySink(out_dir))
    )
    return env.execute("bench latency")
