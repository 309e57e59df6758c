"""flowrun's public API: PyFlink's DataStream API on a multi-process engine.

Everything a job script needs is importable from here::

    from flowrun.core import StreamExecutionEnvironment, Types, MapFunction

Internals (graph, runtime, network) are private modules.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Names are resolved on first use (PEP 562): the CLI imports flowrun.core.* modules
# before pyarrow is needed, and starts the fork server without waiting for them.
_EXPORTS = {
    "AggregateFunction": ".functions",
    "ArrowKeyedStream": ".datastream",
    "BaseBroadcastProcessFunction": ".functions",
    "BroadcastConnectedStream": ".datastream",
    "BroadcastProcessFunction": ".functions",
    "BroadcastStream": ".datastream",
    "CheckpointedFunction": ".functions",
    "CloseableIterator": ".environment",
    "CoFlatMapFunction": ".functions",
    "CoMapFunction": ".functions",
    "CoProcessFunction": ".functions",
    "Configuration": ".config",
    "ConfigurationError": ".config",
    "ConnectedStreams": ".datastream",
    "DataStream": ".datastream",
    "DataStreamSink": ".datastream",
    "FilterFunction": ".functions",
    "FlatMapFunction": ".functions",
    "Function": ".functions",
    "GraphError": ".graph.stream_graph",
    "JobCancelledError": ".runtime.job_manager",
    "JobExecutionError": ".runtime.job_manager",
    "JobExecutionResult": ".environment",
    "KeySelector": ".functions",
    "KeyedBroadcastProcessFunction": ".functions",
    "KeyedCoProcessFunction": ".functions",
    "KeyedProcessFunction": ".functions",
    "KeyedStream": ".datastream",
    "MapFunction": ".functions",
    "NullByteKeySelector": ".functions",
    "Partitioner": ".functions",
    "ProcessFunction": ".functions",
    "RecordTypeError": ".records",
    "ReduceFunction": ".functions",
    "Row": ".row",
    "RowKind": ".row",
    "RuntimeContext": ".functions",
    "RuntimeExecutionMode": ".environment",
    "StreamExecutionEnvironment": ".environment",
    "TimeDomain": ".functions",
    "TypeInformation": ".typeinfo",
    "Types": ".typeinfo",
    "UserCodeError": ".runtime.operators",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'flowrun.core' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
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
    from .typeinfo import TypeInformation, Types

__all__ = [
    "AggregateFunction",
    "ArrowKeyedStream",
    "BaseBroadcastProcessFunction",
    "BroadcastConnectedStream",
    "BroadcastProcessFunction",
    "BroadcastStream",
    "CheckpointedFunction",
    "CloseableIterator",
    "CoFlatMapFunction",
    "CoMapFunction",
    "CoProcessFunction",
    "Configuration",
    "ConfigurationError",
    "ConnectedStreams",
    "DataStream",
    "DataStreamSink",
    "FilterFunction",
    "FlatMapFunction",
    "Function",
    "GraphError",
    "JobCancelledError",
    "JobExecutionError",
    "JobExecutionResult",
    "KeySelector",
    "KeyedBroadcastProcessFunction",
    "KeyedCoProcessFunction",
    "KeyedProcessFunction",
    "KeyedStream",
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
