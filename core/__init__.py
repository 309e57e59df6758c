"""flowrun's public API: PyFlink's DataStream API on a multi-process engine.

Everything a job script needs is importable from here::

    from flowrun.core import StreamExecutionEnvironment, Types, MapFunction

Internals (graph, runtime, network) are private modules.
"""

from .config import Configuration, ConfigurationError
from .datastream import ArrowKeyedStream, DataStream, DataStreamSink, KeyedStream
from .environment import (
    CloseableIterator,
    JobExecutionResult,
    RuntimeExecutionMode,
    StreamExecutionEnvironment,
)
from .functions import (
    AggregateFunction,
    CoFlatMapFunction,
    CoMapFunction,
    CoProcessFunction,
    FilterFunction,
    FlatMapFunction,
    Function,
    KeyedCoProcessFunction,
    KeyedProcessFunction,
    KeySelector,
    MapFunction,
    NullByteKeySelector,
    Partitioner,
    ProcessFunction,
    ReduceFunction,
    RuntimeContext,
    TimeDomain,
)
from .graph.stream_graph import GraphError
from .records import RecordTypeError
from .row import Row, RowKind
from .runtime.job_manager import JobCancelledError, JobExecutionError
from .runtime.operators import UserCodeError
from .typeinfo import Types, TypeInformation

__all__ = [
    "AggregateFunction",
    "ArrowKeyedStream",
    "CloseableIterator",
    "CoFlatMapFunction",
    "CoMapFunction",
    "CoProcessFunction",
    "Configuration",
    "ConfigurationError",
    "DataStream",
    "DataStreamSink",
    "FilterFunction",
    "FlatMapFunction",
    "Function",
    "GraphError",
    "JobCancelledError",
    "JobExecutionError",
    "JobExecutionResult",
    "KeyedCoProcessFunction",
    "KeyedProcessFunction",
    "KeyedStream",
    "KeySelector",
    "MapFunction",
    "NullByteKeySelector",
    "Partitioner",
    "ProcessFunction",
    "RecordTypeError",
    "ReduceFunction",
    "Row",
    "RowKind",
    "RuntimeContext",
    "RuntimeExecutionMode",
    "StreamExecutionEnvironment",
    "TimeDomain",
    "TypeInformation",
    "Types",
    "UserCodeError",
]
