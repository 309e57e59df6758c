"""DataStream, KeyedStream and DataStreamSink: PyFlink's DataStream API.

Every method records a transformation; nothing runs until
``env.execute()``. Names, parameter names and defaults follow PyFlink (see
``PYFLINK_API.md``). Arrow-native extensions -- ``map_batches`` and keyed
``sum``/``count`` over record-batch streams -- carry names PyFlink does not
use.

Example::

    >>> from flowrun.core import StreamExecutionEnvironment
    >>> env = StreamExecutionEnvironment.get_execution_environment()
    >>> counts = (env.from_collection(["a b", "b"])
    ...              .flat_map(str.split)
    ...              .map(lambda w: (w, 1))
    ...              .key_by(lambda t: t[0])
    ...              .reduce(lambda a, b: (a[0], a[1] + b[1])))
    >>> sorted(counts.execute_and_collect())            # doctest: +SKIP
    [('a', 1), ('b', 1), ('b', 2)]
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .graph.transformations import (
    ChainingStrategy,
    OperatorTransformation,
    PartitionTransformation,
    SinkTransformation,
    Transformation,
    UnionTransformation,
)
from .runtime import arrow_aggregates as aggs
from .runtime import keyed_operators as kops
from .runtime import operators as ops

if TYPE_CHECKING:  # pragma: no cover
    from .environment import StreamExecutionEnvironment

__all__ = [
    "DataStream",
    "KeyedStream",
    "DataStreamSink",
    "ArrowKeyedStream",
    "ConnectedStreams",
    "BroadcastStream",
    "BroadcastConnectedStream",
]


def _check_parallelism(parallelism: int) -> int:
    if not isinstance(parallelism, int) or isinstance(parallelism, bool) or parallelism < 1:
        raise ValueError(f"parallelism must be a positive integer, got {parallelism!r}")
    return parallelism


class DataStream:
    """A stream of records (rows API) or of ``pyarrow.RecordBatch`` (Arrow API)."""

    def __init__(self, env: StreamExecutionEnvironment, transformation: Transformation) -> None:
        self._env = env
        self._t = transformation

    # -- settings ---------------------------------------------------------------
    def get_name(self) -> str:
        return self._t.name

    def name(self, name: str) -> DataStream:
        self._t.name = name
        return self

    def uid(self, uid: str) -> DataStream:
        self._t.uid = uid
        return self

    def set_description(self, description: str) -> DataStream:
        self._t.description = description
        return self

    def set_parallelism(self, parallelism: int) -> DataStream:
        self._t.parallelism = _check_parallelism(parallelism)
        return self

    def set_max_parallelism(self, max_parallelism: int) -> DataStream:
        if not 1 <= max_parallelism <= 32768:
            raise ValueError(f"max parallelism must be within 1..32768, got {max_parallelism}")
        self._t.max_parallelism = max_parallelism
        return self

    def force_non_parallel(self) -> DataStream:
        self._t.parallelism = 1
        self._t.max_parallelism = 1
        return self

    def set_buffer_timeout(self, timeout_millis: int) -> DataStream:
        self._t.buffer_timeout = timeout_millis if timeout_millis != -1 else None
        return self

    def start_new_chain(self) -> DataStream:
        self._t.chaining = ChainingStrategy.HEAD
        return self

    def disable_chaining(self) -> DataStream:
        self._t.chaining = ChainingStrategy.NEVER
        return self

    def slot_sharing_group(self, slot_sharing_group: Any) -> DataStream:
        self._t.slot_sharing_group = getattr(slot_sharing_group, "name", slot_sharing_group)
        return self

    def get_type(self) -> Any:
        return self._t.output_type

    def get_execution_environment(self) -> StreamExecutionEnvironment:
        return self._env

    # -- helpers ----------------------------------------------------------------
    def _op(
        self,
        name: str,
        operator: Any,
        output_type: Any = None,
        arrow: bool = False,
        keyed: bool = False,
        inputs: list[Transformation] | None = None,
        cls: type = OperatorTransformation,
    ) -> Transformation:
        from .typeinfo import normalize_type

        t = cls(
            name=name,
            inputs=inputs or [self._t],
            factory=operator,
            output_type=normalize_type(output_type) if output_type is not None else None,
            arrow=arrow,
            keyed=keyed,
        )
        self._env._transformations.append(t)
        return t

    def _require_rows(self, method: str) -> None:
        if self._t.arrow:
            raise TypeError(
                f"{method}() works on record streams; this stream carries pyarrow.RecordBatch "
                "values -- use map_batches() or convert with to_rows()"
            )

    def _require_arrow(self, method: str) -> None:
        if not self._t.arrow:
            raise TypeError(
                f"{method}() works on Arrow streams (e.g. env.read_text_file(path, as_arrow=True))"
            )

    # -- transformations ----------------------------------------------------------
    def map(self, func: Any, output_type: Any = None) -> DataStream:
        from .functions import as_map_fn

        self._require_rows("map")
        as_map_fn(func)  # a wrong kind of function fails here, at build time
        return DataStream(self._env, self._op("Map", ops.MapOperator("Map", func), output_type))

    def flat_map(self, func: Any, output_type: Any = None) -> DataStream:
        from .functions import as_flat_map_fn

        self._require_rows("flat_map")
        as_flat_map_fn(func)
        op = ops.FlatMapOperator("Flat Map", func)
        return DataStream(self._env, self._op("Flat Map", op, output_type))

    def filter(self, func: Any) -> DataStream:
        from .functions import as_filter_fn

        self._require_rows("filter")
        as_filter_fn(func)
        op = ops.FilterOperator("Filter", func)
        return DataStream(self._env, self._op("Filter", op, self._t.output_type))

    def process(self, func: Any, output_type: Any = None) -> DataStream:
        from .functions import ProcessFunction

        self._require_rows("process")
        if not isinstance(func, ProcessFunction):
            raise TypeError(
                f"process() expects a ProcessFunction instance, got {type(func).__name__}"
            )
        op = ops.ProcessOperator("Process", func)
        return DataStream(self._env, self._op("Process", op, output_type))

    def map_batches(self, func: Any, name: str = "Map Batches") -> DataStream:
        """Arrow fast path: ``func(pyarrow.RecordBatch) -> pyarrow.RecordBatch``."""
        self._require_arrow("map_batches")
        if not callable(func):
            raise TypeError(f"map_batches() expects a callable, got {type(func).__name__}")
        op = ops.MapBatchesOperator(name, func)
        return DataStream(self._env, self._op(name, op, arrow=True))

    def to_rows(self) -> DataStream:
        """Turn an Arrow stream into a record stream of dicts (one per row)."""
        self._require_arrow("to_rows")
        op = ops.MapBatchesToRowsOperator("To Rows")
        return DataStream(self._env, self._op("To Rows", op))

    def key_by(self, key_selector: Any, key_type: Any = None) -> KeyedStream | ArrowKeyedStream:
        from flowrun.network.partitioner import ArrowKeyGroupPartitioner, KeyGroupStreamPartitioner

        from .functions import as_key_selector

        if self._t.arrow:
            if not isinstance(key_selector, str):
                raise TypeError("key_by() on an Arrow stream takes a column name")
            column = key_selector
            part = PartitionTransformation(
                name="Hash",
                inputs=[self._t],
                partitioner=lambda max_p: ArrowKeyGroupPartitioner(column, max_p),
                arrow=True,
            )
            return ArrowKeyedStream(self._env, part, column)
        as_key_selector(key_selector)  # type check now, at build time
        selector = key_selector
        part = PartitionTransformation(
            name="Hash",
            inputs=[self._t],
            partitioner=lambda max_p: KeyGroupStreamPartitioner(selector, max_p),
            output_type=self._t.output_type,
        )
        return KeyedStream(self._env, part, key_selector, self)

    def _partition(self, partitioner: Any) -> DataStream:
        t = PartitionTransformation(
            name=partitioner.name.title(),
            inputs=[self._t],
            partitioner=partitioner,
            output_type=self._t.output_type,
            arrow=self._t.arrow,
        )
        return DataStream(self._env, t)

    def forward(self) -> DataStream:
        from flowrun.network.partitioner import ForwardPartitioner

        return self._partition(ForwardPartitioner())

    def rebalance(self) -> DataStream:
        from flowrun.network.partitioner import RebalancePartitioner

        return self._partition(RebalancePartitioner())

    def rescale(self) -> DataStream:
        from flowrun.network.partitioner import RescalePartitioner

        return self._partition(RescalePartitioner())

    def shuffle(self) -> DataStream:
        from flowrun.network.partitioner import ShufflePartitioner

        return self._partition(ShufflePartitioner())

    def broadcast(self, *broadcast_state_descriptors: Any) -> DataStream | BroadcastStream:
        """Every element to every subtask; with MapStateDescriptors, a BroadcastStream."""
        from flowrun.network.partitioner import BroadcastPartitioner

        stream = self._partition(BroadcastPartitioner())
        if not broadcast_state_descriptors:
            return stream
        from flowrun.state.descriptors import MapStateDescriptor

        for d in broadcast_state_descriptors:
            if not isinstance(d, MapStateDescriptor):
                raise TypeError(f"broadcast() takes MapStateDescriptors, got {type(d).__name__}")
        return BroadcastStream(stream, list(broadcast_state_descriptors))

    def connect(
        self, ds: DataStream | BroadcastStream
    ) -> ConnectedStreams | BroadcastConnectedStream:
        """Two inputs of possibly different types into one operator."""
        if isinstance(ds, BroadcastStream):
            return BroadcastConnectedStream(self, ds)
        if not isinstance(ds, DataStream):
            raise TypeError(
                f"connect() takes a DataStream or BroadcastStream, got {type(ds).__name__}"
            )
        return ConnectedStreams(self, ds)

    def global_(self) -> DataStream:
        from flowrun.network.partitioner import GlobalPartitioner

        return self._partition(GlobalPartitioner())

    def partition_custom(self, partitioner: Any, key_selector: Any) -> DataStream:
        from flowrun.network.partitioner import CustomPartitionerWrapper

        return self._partition(CustomPartitionerWrapper(partitioner, key_selector))

    def union(self, *streams: DataStream) -> DataStream:
        for s in streams:
            if s._t.arrow != self._t.arrow:
                raise TypeError("union() needs streams of the same kind (all Arrow or all records)")
        t = UnionTransformation(
            name="Union",
            inputs=[self._t, *[s._t for s in streams]],
            output_type=self._t.output_type,
            arrow=self._t.arrow,
        )
        return DataStream(self._env, t)

    # -- sinks ----------------------------------------------------------------------
    def _sink(self, name: str, operator: Any) -> DataStreamSink:
        return DataStreamSink(self._op(name, operator, cls=SinkTransformation))

    def print(self, sink_identifier: str | None = None) -> DataStreamSink:
        from .connectors.print_sink import PrintSink

        return self._sink(
            "Sink: Print to Std. Out", ops.SinkOperator("Print", PrintSink(sink_identifier))
        )

    def sink_to(self, sink: Any) -> DataStreamSink:
        name = f"Sink: {type(sink).__name__}"
        return self._sink(name, ops.SinkOperator(name, sink))

    def add_sink(self, sink_func: Any) -> DataStreamSink:
        """Legacy sink: a ``SinkFunction`` (e.g. a ``TwoPhaseCommitSinkFunction``) called per
        record; each subtask runs its own copy. A ``Sink`` is accepted too (as ``sink_to``)."""
        from .connectors.sink_function import SinkFunctionSink, sink_of

        sink = sink_of(sink_func)
        if not isinstance(sink, SinkFunctionSink):
            return self.sink_to(sink)
        return self._sink(sink.name, ops.SinkOperator(sink.name, sink))

    def execute_and_collect(self, job_execution_name: str | None = None, limit: int | None = None):
        """Run the job and return its records: a list with ``limit``, else an iterator."""
        sink = self._sink("Sink: Collect", ops.CollectSinkOperator())
        return self._env._execute_and_collect(sink._t, job_execution_name, limit)


class DataStreamSink:
    """The end of a pipeline; only settings can be changed."""

    def __init__(self, transformation: Transformation) -> None:
        self._t = transformation

    def name(self, name: str) -> DataStreamSink:
        self._t.name = name
        return self

    def uid(self, uid: str) -> DataStreamSink:
        self._t.uid = uid
        return self

    def set_uid_hash(self, uid_hash: str) -> DataStreamSink:
        self._t.uid = uid_hash
        return self

    def set_parallelism(self, parallelism: int) -> DataStreamSink:
        self._t.parallelism = _check_parallelism(parallelism)
        return self

    def set_description(self, description: str) -> DataStreamSink:
        self._t.description = description
        return self

    def disable_chaining(self) -> DataStreamSink:
        self._t.chaining = ChainingStrategy.NEVER
        return self

    def slot_sharing_group(self, slot_sharing_group: Any) -> DataStreamSink:
        self._t.slot_sharing_group = getattr(slot_sharing_group, "name", slot_sharing_group)
        return self


class KeyedStream(DataStream):
    """A stream partitioned by key: keyed operators see ``ctx.get_current_key()``."""

    def __init__(
        self,
        env: StreamExecutionEnvironment,
        transformation: Transformation,
        key_selector: Any,
        origin: DataStream,
    ) -> None:
        super().__init__(env, transformation)
        self._key_selector = key_selector
        self._origin = origin

    def _keyed(self, name: str, operator: Any, output_type: Any = None) -> DataStream:
        t = self._op(name, operator, output_type, keyed=True)
        return DataStream(self._env, t)

    def _no_setting(self, *_args: Any) -> Any:
        raise TypeError(
            "cannot set properties on a KeyedStream; set them on the operator that follows"
        )

    set_parallelism = name = uid = set_max_parallelism = _no_setting  # type: ignore[assignment]
    start_new_chain = disable_chaining = force_non_parallel = _no_setting  # type: ignore[assignment]

    def _no_partitioning(self, *_args: Any) -> Any:
        raise TypeError("cannot override partitioning for KeyedStream")

    shuffle = rescale = rebalance = forward = broadcast = global_ = _no_partitioning  # type: ignore[assignment]
    partition_custom = _no_partitioning  # type: ignore[assignment]

    def map(self, func: Any, output_type: Any = None) -> DataStream:
        from .functions import as_map_fn

        as_map_fn(func)
        op = kops.KeyedMapOperator("Map", func, [self._key_selector])
        return self._keyed("Map", op, output_type)

    def flat_map(self, func: Any, output_type: Any = None) -> DataStream:
        from .functions import as_flat_map_fn

        as_flat_map_fn(func)
        op = kops.KeyedFlatMapOperator("Flat Map", func, [self._key_selector])
        return self._keyed("Flat Map", op, output_type)

    def filter(self, func: Any) -> DataStream:
        from .functions import as_filter_fn

        as_filter_fn(func)
        op = kops.KeyedFilterOperator("Filter", func, [self._key_selector])
        return self._keyed("Filter", op, self._t.output_type)

    def reduce(self, func: Any) -> DataStream:
        from .functions import as_reduce_fn

        as_reduce_fn(func)
        op = kops.ReduceOperator("Keyed Reduce", func, self._key_selector, self._t.output_type)
        return self._keyed("Keyed Reduce", op, self._t.output_type)

    def process(self, func: Any, output_type: Any = None) -> DataStream:
        from .functions import KeyedProcessFunction

        if not isinstance(func, KeyedProcessFunction):
            raise TypeError(
                f"KeyedStream.process() expects a KeyedProcessFunction, got {type(func).__name__}"
            )
        op = kops.KeyedProcessOperator("Keyed Process", func, [self._key_selector])
        return self._keyed("Keyed Process", op, output_type)

    def _aggregate(self, kind: str, position: int | str) -> DataStream:
        if not isinstance(position, (int, str)) or isinstance(position, bool):
            raise TypeError(f"{kind}() takes a field position (int) or name (str)")
        name = f"Keyed Aggregation ({kind})"
        op = kops.AggregationOperator(name, kind, position, self._key_selector, self._t.output_type)
        return self._keyed(name, op, self._t.output_type)

    def sum(self, position_to_sum: int | str = 0) -> DataStream:
        return self._aggregate("sum", position_to_sum)

    def min(self, position_to_min: int | str = 0) -> DataStream:
        return self._aggregate("min", position_to_min)

    def max(self, position_to_max: int | str = 0) -> DataStream:
        return self._aggregate("max", position_to_max)

    def min_by(self, position_to_min_by: int | str = 0) -> DataStream:
        return self._aggregate("min_by", position_to_min_by)

    def max_by(self, position_to_max_by: int | str = 0) -> DataStream:
        return self._aggregate("max_by", position_to_max_by)

    def key_by(self, key_selector: Any, key_type: Any = None) -> KeyedStream:
        return self._origin.key_by(key_selector, key_type)

    def union(self, *streams: DataStream) -> DataStream:
        return self._origin.union(*streams)

    def print(self, sink_identifier: str | None = None) -> DataStreamSink:
        return self._origin.print(sink_identifier)


class ArrowKeyedStream(DataStream):
    """An Arrow stream partitioned by a key column; aggregates whole batches."""

    def __init__(
        self, env: StreamExecutionEnvironment, transformation: Transformation, column: str
    ) -> None:
        super().__init__(env, transformation)
        self._column = column

    def _two_phase(self, name: str, column: str | None, out_name: str) -> DataStream:
        """Local pre-aggregation chained to the producer, then the shuffle, then the totals."""
        from flowrun.network.partitioner import ArrowKeyGroupPartitioner

        upstream = self._t.inputs[0]
        local = OperatorTransformation(
            name=f"Local {name}",
            inputs=[upstream],
            factory=aggs.ArrowLocalAggregateOperator(
                f"Local {name}", self._column, column, out_name
            ),
            arrow=True,
            parallelism_from_input=True,
        )
        self._env._transformations.append(local)
        key = self._column
        shuffle = PartitionTransformation(
            name="Hash",
            inputs=[local],
            partitioner=lambda max_p: ArrowKeyGroupPartitioner(
                key, max_p, hash_column=aggs.KEY_HASH_COLUMN
            ),
            arrow=True,
        )
        op = aggs.ArrowKeyedAggregateOperator(name, self._column, out_name)
        return DataStream(self._env, self._op(name, op, arrow=True, keyed=True, inputs=[shuffle]))

    def sum(self, column: str) -> DataStream:
        """Running per-key sum of ``column``: one output row per key touched by a batch."""
        return self._two_phase(f"Keyed Arrow Sum ({column})", column, column)

    def count(self) -> DataStream:
        """Running per-key count: one output row ``(key, count)`` per key touched by a batch."""
        return self._two_phase("Keyed Arrow Count", None, "count")


class ConnectedStreams:
    """Two streams feeding one operator (``map1``/``map2``, ``process_element1/2``)."""

    def __init__(self, stream1: DataStream, stream2: DataStream) -> None:
        self.stream1 = stream1
        self.stream2 = stream2

    def _keyed(self) -> bool:
        return isinstance(self.stream1, KeyedStream) and isinstance(self.stream2, KeyedStream)

    def key_by(
        self, key_selector1: Any, key_selector2: Any, key_type: Any = None
    ) -> ConnectedStreams:
        return ConnectedStreams(
            self.stream1.key_by(key_selector1, key_type),
            self.stream2.key_by(key_selector2, key_type),
        )

    def _two_input(
        self, name: str, operator: Any, output_type: Any, keyed: bool = False
    ) -> DataStream:
        t = self.stream1._op(
            name,
            operator,
            output_type,
            keyed=keyed,
            inputs=[self.stream1._t, self.stream2._t],
        )
        return DataStream(self.stream1._env, t)

    def map(self, func: Any, output_type: Any = None) -> DataStream:
        from .functions import CoMapFunction

        if not isinstance(func, CoMapFunction):
            raise TypeError(
                f"ConnectedStreams.map() expects a CoMapFunction, got {type(func).__name__}"
            )
        return self._two_input("Co-Map", ops.CoMapOperator("Co-Map", func), output_type)

    def flat_map(self, func: Any, output_type: Any = None) -> DataStream:
        from .functions import CoFlatMapFunction

        if not isinstance(func, CoFlatMapFunction):
            raise TypeError(
                f"ConnectedStreams.flat_map() expects a CoFlatMapFunction, got {type(func).__name__}"
            )
        return self._two_input(
            "Co-Flat Map", ops.CoFlatMapOperator("Co-Flat Map", func), output_type
        )

    def process(self, func: Any, output_type: Any = None) -> DataStream:
        from .functions import CoProcessFunction, KeyedCoProcessFunction

        if self._keyed():
            if not isinstance(func, KeyedCoProcessFunction):
                raise TypeError(
                    "process() on connected keyed streams expects a KeyedCoProcessFunction, "
                    f"got {type(func).__name__}"
                )
            op = kops.KeyedCoProcessOperator(
                "Keyed Co-Process",
                func,
                [self.stream1._key_selector, self.stream2._key_selector],
            )
            return self._two_input("Keyed Co-Process", op, output_type, keyed=True)
        if not isinstance(func, CoProcessFunction):
            raise TypeError(f"process() expects a CoProcessFunction, got {type(func).__name__}")
        return self._two_input("Co-Process", ops.CoProcessOperator("Co-Process", func), output_type)


class BroadcastStream:
    """A stream replicated to every subtask, with the broadcast states it may update."""

    def __init__(self, input_stream: DataStream, broadcast_state_descriptors: list) -> None:
        self.input_stream = input_stream
        self.broadcast_state_descriptors = broadcast_state_descriptors


class BroadcastConnectedStream:
    """A (keyed or non-keyed) stream connected with a BroadcastStream."""

    def __init__(self, non_broadcast_stream: DataStream, broadcast_stream: BroadcastStream) -> None:
        self.non_broadcast_stream = non_broadcast_stream
        self.broadcast_stream = broadcast_stream
        self.broadcast_state_descriptors = broadcast_stream.broadcast_state_descriptors

    def process(self, func: Any, output_type: Any = None) -> DataStream:
        from .functions import BroadcastProcessFunction, KeyedBroadcastProcessFunction
        from .runtime import broadcast_operators as bops

        data = self.non_broadcast_stream
        descriptors = self.broadcast_state_descriptors
        inputs = [data._t, self.broadcast_stream.input_stream._t]
        if isinstance(data, KeyedStream):
            if not isinstance(func, KeyedBroadcastProcessFunction):
                raise TypeError(
                    "a keyed stream connected with a broadcast stream needs a "
                    f"KeyedBroadcastProcessFunction, got {type(func).__name__}"
                )
            name = "Keyed Broadcast Process"
            op = bops.KeyedBroadcastProcessOperator(name, func, data._key_selector, descriptors)
            t = data._op(name, op, output_type, keyed=True, inputs=inputs)
        else:
            if not isinstance(func, BroadcastProcessFunction):
                raise TypeError(
                    "a non-keyed stream connected with a broadcast stream needs a "
                    f"BroadcastProcessFunction, got {type(func).__name__}"
                )
            name = "Broadcast Process"
            op = bops.BroadcastProcessOperator(name, func, descriptors)
            t = data._op(name, op, output_type, inputs=inputs)
        return DataStream(data._env, t)
