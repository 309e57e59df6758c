"""flowrun's public API: PyFlink's DataStream API on a multi-process engine.

Everything a job script needs is importable from here::

    from flowrun.core import StreamExecutionEnvironment, Types, MapFunction

Internals (graph, runtime, network) are private modules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .lazy_exports import lazy_attributes

# Names are resolved on first use (PEP 562): the CLI imports flowrun.core.* modules
# before pyarrow is needed, and starts the fork server without waiting for them.
_EXPORTS = {
    "AggregateFunction": ".functions",
    "ArrowKeyedStream": ".datastream",
    "BaseBroadcastProcessFunction": ".functions",
    "BroadcastConnectedStream": ".datastream",
    "BroadcastProcessFunction": ".functions",
    "BroadcastStream": ".datastream",
    "CheckpointConfig": ".checkpoint_config",
    "CheckpointStorage": ".checkpoint_config",
    "CheckpointedFunction": ".functions",
    "CheckpointingMode": ".checkpoint_config",
    "CloseableIterator": ".environment",
    "CoFlatMapFunction": ".functions",
    "CoMapFunction": ".functions",
    "CoProcessFunction": ".functions",
    "Configuration": ".config",
    "ConfigurationError": ".config",
    "ConnectedStreams": ".datastream",
    "DataStream": ".datastream",
    "DataStreamSink": ".datastream",
    "ExponentialDelayRestartStrategyConfiguration": ".restart_strategy",
    "ExternalizedCheckpointCleanup": ".checkpoint_config",
    "FailureRateRestartStrategyConfiguration": ".restart_strategy",
    "FallbackRestartStrategyConfiguration": ".restart_strategy",
    "FileSystemCheckpointStorage": ".checkpoint_config",
    "FilterFunction": ".functions",
    "FixedDelayRestartStrategyConfiguration": ".restart_strategy",
    "FlatMapFunction": ".functions",
    "Function": ".functions",
    "GraphError": ".graph.stream_graph",
    "JobCancelledError": ".runtime.job_manager",
    "JobExecutionError": ".runtime.job_manager",
    "JobExecutionResult": ".environment",
    "JobManagerCheckpointStorage": ".checkpoint_config",
    "KeySelector": ".functions",
    "KeyedBroadcastProcessFunction": ".functions",
    "KeyedCoProcessFunction": ".functions",
    "KeyedProcessFunction": ".functions",
    "KeyedStream": ".datastream",
    "MapFunction": ".functions",
    "NoRestartStrategyConfiguration": ".restart_strategy",
    "NullByteKeySelector": ".functions",
    "Partitioner": ".functions",
    "ProcessFunction": ".functions",
    "RecordTypeError": ".records",
    "ReduceFunction": ".functions",
    "RestartStrategies": ".restart_strategy",
    "RestartStrategyConfiguration": ".restart_strategy",
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


__getattr__, __dir__ = lazy_attributes(__name__, _EXPORTS, globals())


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from .checkpoint_config import (
        CheckpointConfig,
        CheckpointingMode,
        CheckpointStorage,
        ExternalizedCheckpointCleanup,
        FileSystemCheckpointStorage,
        JobManagerCheckpointStorage,
    )
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
    from .restart_strategy import (
        ExponentialDelayRestartStrategyConfiguration,
        FailureRateRestartStrategyConfiguration,
        FallbackRestartStrategyConfiguration,
        FixedDelayRestartStrategyConfiguration,
        NoRestartStrategyConfiguration,
        RestartStrategies,
        RestartStrategyConfiguration,
    )
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
    "CheckpointConfig",
    "CheckpointStorage",
    "CheckpointedFunction",
    "CheckpointingMode",
    "CloseableIterator",
    "CoFlatMapFunction",
    "CoMapFunction",
    "CoProcessFunction",
    "Configuration",
    "ConfigurationError",
    "ConnectedStreams",
    "DataStream",
    "DataStreamSink",
    "ExponentialDelayRestartStrategyConfiguration",
    "ExternalizedCheckpointCleanup",
    "FailureRateRestartStrategyConfiguration",
    "FallbackRestartStrategyConfiguration",
    "FileSystemCheckpointStorage",
    "FilterFunction",
    "FixedDelayRestartStrategyConfiguration",
    "FlatMapFunction",
    "Function",
    "GraphError",
    "JobCancelledError",
    "JobExecutionError",
    "JobExecutionResult",
    "JobManagerCheckpointStorage",
    "KeySelector",
    "KeyedBroadcastProcessFunction",
    "KeyedCoProcessFunction",
    "KeyedProcessFunction",
    "KeyedStream",
    "MapFunction",
    "NoRestartStrategyConfiguration",
    "NullByteKeySelector",
    "Partitioner",
    "ProcessFunction",
    "RecordTypeError",
    "ReduceFunction",
    "RestartStrategies",
    "RestartStrategyConfiguration",
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
