"""Runtime operators: what a subtask runs for each node of its chain.

Operators work on whole batches -- a ``list`` of records on the rows API, a
``pyarrow.RecordBatch`` on the Arrow API -- so that the per-call overhead of
the chain is paid once per batch, not once per record. User functions are
still called once per record on the rows API (that is their contract); any
exception they raise becomes a :class:`UserCodeError` naming the operator, the
subtask, the record and the user's traceback.
"""

from __future__ import annotations

import traceback
from itertools import chain
from typing import Any

import pyarrow as pa

from flowrun.core.reprs import short_repr as _short_repr

__all__ = [
    "UserCodeError",
    "Output",
    "StreamOperator",
    "MapOperator",
    "FlatMapOperator",
    "FilterOperator",
    "ProcessOperator",
    "MapBatchesOperator",
    "SinkOperator",
    "CollectSinkOperator",
    "SourceOperator",
    "CoMapOperator",
    "CoFlatMapOperator",
    "CoProcessOperator",
]


class UserCodeError(Exception):
    """User code failed inside an operator; carries everything a user needs to fix it."""

    def __init__(
        self,
        operator: str,
        subtask: str,
        record: Any,
        cause: BaseException,
        what: str = "record",
        with_traceback: bool = True,
        label: str | None = None,
    ) -> None:
        self.operator = operator
        self.subtask = subtask
        self.record_repr = _short_repr(record)
        self.cause_type = type(cause).__name__
        self.user_traceback = (
            "".join(traceback.format_exception(cause)).rstrip() if with_traceback else ""
        )
        text = (
            f"{label or f'Operator {operator!r}'} (subtask {subtask}) failed on {what} "
            f"{self.record_repr}: {self.cause_type}: {cause}"
        )
        if self.user_traceback:
            text += "\n" + self.user_traceback
        super().__init__(text)

    def __reduce__(self):
        return (_rebuild_user_code_error, (str(self),))


def _rebuild_user_code_error(message: str) -> Exception:
    return RuntimeError(message)


def _failed_record(records: list, it: Any) -> Any:
    """The record a C-level loop (``list(map(fn, it))``) was at when ``fn`` raised.

    A list iterator's ``__reduce__`` reports its position, which is one past the record
    being processed, so the hot path needs no Python-level loop to name the culprit.
    """
    try:
        position = it.__reduce__()[2]
        return records[position - 1]
    except Exception:
        return "<unknown record>"


class Output:
    """Where an operator sends its results (the next chained operator or the network)."""

    def emit(self, records: list | pa.RecordBatch) -> None:  # pragma: no cover - interface
        raise NotImplementedError


class FunctionInitializationContext:
    """What ``CheckpointedFunction.initialize_state`` receives."""

    def __init__(self, ctx: Any) -> None:
        self._ctx = ctx

    def is_restored(self) -> bool:
        return bool(getattr(self._ctx, "restored", False))

    def get_operator_state_store(self) -> Any:
        return self._ctx.operator_state_store

    def get_keyed_state_store(self) -> Any:
        if self._ctx.keyed_backend is None:
            raise RuntimeError("keyed state needs a keyed stream: call key_by() first")
        return self._ctx.keyed_backend


class FunctionSnapshotContext:
    """What ``CheckpointedFunction.snapshot_state`` receives (Flink's names)."""

    def __init__(self, checkpoint_id: int, timestamp: int) -> None:
        self._checkpoint_id = checkpoint_id
        self._timestamp = timestamp

    def get_checkpoint_id(self) -> int:
        return self._checkpoint_id

    def get_checkpoint_timestamp(self) -> int:
        return self._timestamp


def _internal_list_state(name: str) -> Any:
    """Engine-owned operator list state (source splits, sink transactions)."""
    from flowrun.state.descriptors import ListStateDescriptor

    from ..typeinfo import Types

    return ListStateDescriptor(name, Types.PICKLED_BYTE_ARRAY())


SOURCE_SPLITS_STATE = "_flowrun_source_splits"
SINK_WRITER_STATE = "_flowrun_sink_writer_state"


class StreamOperator:
    """Base of every runtime operator.

    Subclasses are built on the client, pickled with the job, and set up in the
    subtask process with :meth:`setup` before :meth:`open`.
    """

    name = "Operator"
    function: Any = None

    def setup(self, ctx: Any, output: Output) -> None:
        self.ctx = ctx
        self.output = output
        self.subtask = f"{ctx.index + 1}/{ctx.parallelism}"

    def open(self) -> None:
        from ..functions import CheckpointedFunction, open_function

        if isinstance(self.function, CheckpointedFunction):
            try:
                self.function.initialize_state(FunctionInitializationContext(self.ctx))
            except Exception as exc:
                raise UserCodeError(
                    self.name, self.subtask, None, exc, what="initialize_state() with"
                ) from exc
        if self.function is not None:
            try:
                open_function(self.function, self.ctx.runtime_context)
            except Exception as exc:
                raise UserCodeError(self.name, self.subtask, None, exc, what="open() with") from exc

    def process(self, records: Any, input_index: int = 0) -> None:  # pragma: no cover
        raise NotImplementedError

    # -- checkpoints ------------------------------------------------------------------
    def prepare_snapshot(self, checkpoint_id: int, timestamp: int) -> None:
        """Synchronous part of a checkpoint: copy working variables into managed state.

        Runs between two input batches, after every record before the barrier; the task
        then snapshots the operator state store, the keyed backend and the timers.
        """
        from ..functions import CheckpointedFunction

        if isinstance(self.function, CheckpointedFunction):
            try:
                self.function.snapshot_state(FunctionSnapshotContext(checkpoint_id, timestamp))
            except Exception as exc:
                raise UserCodeError(
                    self.name, self.subtask, None, exc, what="snapshot_state() with"
                ) from exc

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        """Checkpoint ``checkpoint_id`` is durable (Flink's CheckpointListener)."""
        self._notify("notify_checkpoint_complete", checkpoint_id)

    def notify_checkpoint_aborted(self, checkpoint_id: int) -> None:
        self._notify("notify_checkpoint_aborted", checkpoint_id)

    def _notify(self, method: str, checkpoint_id: int) -> None:
        callback = getattr(self.function, method, None)
        if callable(callback):
            try:
                callback(checkpoint_id)
            except Exception as exc:
                raise UserCodeError(
                    self.name, self.subtask, None, exc, what=f"{method}() with"
                ) from exc

    def end_input(self) -> None:
        """Every input of this operator reached its end (bounded streams)."""

    def close(self) -> None:
        from ..functions import close_function

        if self.function is not None:
            close_function(self.function)

    def fail(self, record: Any, exc: BaseException) -> UserCodeError:
        return UserCodeError(self.name, self.subtask, record, exc)

    def run_c_loop(self, records: list, loop: Any) -> list:
        """Run ``loop(iterator)`` -- a C-level pass such as ``list(map(fn, it))`` -- and on
        failure name the record the iterator was at."""
        it = iter(records)
        try:
            return loop(it)
        except Exception as exc:
            raise self.fail(_failed_record(records, it), exc) from exc


class MapOperator(StreamOperator):
    def __init__(self, name: str, function: Any) -> None:
        self.name = name
        self.function = function

    def open(self) -> None:
        from ..functions import as_map_fn

        super().open()
        self._fn = as_map_fn(self.function)

    def process(self, records: list, input_index: int = 0) -> None:
        fn = self._fn
        out = self.run_c_loop(records, lambda it: list(map(fn, it)))
        self.output.emit(out)


class FlatMapOperator(StreamOperator):
    def __init__(self, name: str, function: Any) -> None:
        self.name = name
        self.function = function

    def open(self) -> None:
        from ..functions import as_flat_map_fn

        super().open()
        self._fn = as_flat_map_fn(self.function)

    def process(self, records: list, input_index: int = 0) -> None:
        fn = self._fn
        out = self.run_c_loop(
            records, lambda it: list(chain.from_iterable(filter(None, map(fn, it))))
        )
        if out:
            self.output.emit(out)


class FilterOperator(StreamOperator):
    def __init__(self, name: str, function: Any) -> None:
        self.name = name
        self.function = function

    def open(self) -> None:
        from ..functions import as_filter_fn

        super().open()
        self._fn = as_filter_fn(self.function)

    def process(self, records: list, input_index: int = 0) -> None:
        fn = self._fn
        out = self.run_c_loop(records, lambda it: list(filter(fn, it)))
        if out:
            self.output.emit(out)


class _ProcessContext:
    """``ProcessFunction.Context`` / ``KeyedProcessFunction.Context`` for one call."""

    __slots__ = ("_key", "_timer_service")

    def __init__(self, timer_service: Any) -> None:
        self._key = None
        self._timer_service = timer_service

    def get_current_key(self) -> Any:
        return self._key

    def timestamp(self) -> int | None:
        return None  # event time arrives with watermarks

    def timer_service(self) -> Any:
        return self._timer_service


class _TimerService:
    """The TimerService of a non-keyed ProcessFunction: time only, no timers (as Flink)."""

    def current_processing_time(self) -> int:
        import time

        return time.time_ns() // 1_000_000

    def current_watermark(self) -> int:
        return -(2**63)

    def _unsupported(self, *_args: Any) -> None:
        raise RuntimeError(
            "timers are scoped to a key: they can only be used on a keyed stream "
            "(key_by(...).process(KeyedProcessFunction))"
        )

    register_processing_time_timer = _unsupported
    register_event_time_timer = _unsupported
    delete_processing_time_timer = _unsupported
    delete_event_time_timer = _unsupported


def _emit_results(results: Any, out: list) -> None:
    if results is None:
        return
    out.extend(results)


class ProcessOperator(StreamOperator):
    """``DataStream.process(ProcessFunction)``: ``process_element`` yields outputs."""

    def __init__(self, name: str, function: Any) -> None:
        self.name = name
        self.function = function

    def open(self) -> None:
        super().open()
        self._ctx = _ProcessContext(_TimerService())
        self._fn = self.function.process_element

    def process(self, records: list, input_index: int = 0) -> None:
        fn, ctx = self._fn, self._ctx
        out: list = []
        record = None
        try:
            for record in records:
                _emit_results(fn(record, ctx), out)
        except Exception as exc:
            raise self.fail(record, exc) from exc
        if out:
            self.output.emit(out)


class MapBatchesOperator(StreamOperator):
    """Arrow fast path: ``fn(pyarrow.RecordBatch) -> pyarrow.RecordBatch``."""

    def __init__(self, name: str, function: Any) -> None:
        self.name = name
        self.function = function

    def process(self, batch: pa.RecordBatch, input_index: int = 0) -> None:
        try:
            result = self.function(batch)
        except Exception as exc:
            raise self.fail(_batch_summary(batch), exc) from exc
        if isinstance(result, pa.Table):
            for b in result.to_batches():
                self.output.emit(b)
            return
        if not isinstance(result, pa.RecordBatch):
            raise self.fail(
                _batch_summary(batch),
                TypeError(
                    f"map_batches function must return a pyarrow.RecordBatch or Table, "
                    f"got {type(result).__name__}"
                ),
            )
        if result.num_rows:
            self.output.emit(result)


def _batch_summary(batch: pa.RecordBatch) -> str:
    head = batch.slice(0, 3).to_pylist()
    return f"batch of {batch.num_rows} rows {batch.schema.names}, first rows {head}"


class SinkOperator(StreamOperator):
    """Writes records through a connector's SinkWriter."""

    def __init__(self, name: str, sink: Any) -> None:
        self.name = name
        self.sink = sink

    def open(self) -> None:
        self.writer = self.sink.create_writer(
            self.ctx.index, self.ctx.parallelism, self.ctx.job_id, self.ctx.operator_uid
        )
        #: with checkpointing, output becomes final with the job's last checkpoint
        self.deferred_finish = bool(getattr(self.ctx, "checkpointing", False))
        try:
            tell = getattr(self.writer, "set_checkpointing_enabled", None)
            if tell is not None:  # writers that hold output back until a checkpoint completes
                tell(self.deferred_finish)
            if self.ctx.restored:
                state = self.ctx.operator_state_store.get_list_state(
                    _internal_list_state(SINK_WRITER_STATE)
                )
                self.writer.restore_state(list(state.get()))
            self.writer.open()
        except Exception as exc:
            raise self.fail(None, exc) from exc

    def _writer_call(self, method: str, *args: Any) -> Any:
        try:
            return getattr(self.writer, method)(*args)
        except Exception as exc:
            raise self.fail(None, exc) from exc

    def prepare_snapshot(self, checkpoint_id: int, timestamp: int) -> None:
        snapshot = list(self._writer_call("snapshot_state", checkpoint_id))
        store = self.ctx.operator_state_store
        # A stateless writer (print, collect) leaves no state behind in the checkpoint.
        if snapshot or SINK_WRITER_STATE in store.get_registered_state_names():
            store.get_list_state(_internal_list_state(SINK_WRITER_STATE)).update(snapshot)

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        self._writer_call("notify_checkpoint_complete", checkpoint_id)

    def notify_checkpoint_aborted(self, checkpoint_id: int) -> None:
        self._writer_call("notify_checkpoint_aborted", checkpoint_id)

    def final_commit(self) -> None:
        """The job's final checkpoint completed: make all output final."""
        self._writer_call("finish")

    def process(self, records: Any, input_index: int = 0) -> None:
        try:
            if isinstance(records, pa.RecordBatch):
                self.writer.write_batch(records)
            else:
                self.writer.write(records)
        except Exception as exc:
            summary = (
                _batch_summary(records) if isinstance(records, pa.RecordBatch) else records[:3]
            )
            raise self.fail(summary, exc) from exc

    def flush(self) -> None:
        self.writer.flush()

    def end_input(self) -> None:
        if self.deferred_finish:
            self.writer.flush()
        else:
            self.writer.finish()

    def abort(self) -> None:
        writer = getattr(self, "writer", None)
        if writer is not None:
            writer.abort()

    def close(self) -> None:
        pass


class CollectSinkOperator(StreamOperator):
    """Sends records back to the client for ``execute_and_collect``."""

    def __init__(self, name: str = "Sink: Collect") -> None:
        self.name = name

    def open(self) -> None:
        self._pending: list = []
        self._size = 0

    def process(self, records: Any, input_index: int = 0) -> None:
        if isinstance(records, pa.RecordBatch):
            records = records.to_pylist()
        self._pending.extend(records)
        if len(self._pending) >= 4096:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            self.ctx.send_to_client(self._pending)
            self._pending = []

    def end_input(self) -> None:
        self.flush()

    send_records = flush  #: marks the operator that sends records to the client

    def prepare_snapshot(self, checkpoint_id: int, timestamp: int) -> None:
        # Records before the barrier reach the client before the subtask's snapshot_taken
        # notice: the JobManager hands them out when the checkpoint completes (exactly once).
        self.flush()


class SourceOperator(StreamOperator):
    """Holds the source; the task's loop polls its reader and emits what it returns."""

    def __init__(self, name: str, source: Any) -> None:
        self.name = name
        self.source = source

    def open(self) -> None:
        ctx = self.ctx
        try:
            if ctx.restored:
                splits = ctx.operator_state_store.get_list_state(
                    _internal_list_state(SOURCE_SPLITS_STATE)
                ).get()
                self.reader = self.source.restore_reader(ctx.index, ctx.parallelism, list(splits))
            else:
                self.reader = self.source.create_reader(ctx.index, ctx.parallelism)
            self.reader.open()
        except Exception as exc:
            raise self.fail(None, exc) from exc

    def prepare_snapshot(self, checkpoint_id: int, timestamp: int) -> None:
        try:
            splits = self.reader.snapshot_state(checkpoint_id)
        except Exception as exc:
            raise self.fail(None, exc) from exc
        self.ctx.operator_state_store.get_list_state(
            _internal_list_state(SOURCE_SPLITS_STATE)
        ).update(list(splits))

    def close(self) -> None:
        reader = getattr(self, "reader", None)
        if reader is not None:
            reader.close()


class MapBatchesToRowsOperator(StreamOperator):
    """Arrow stream -> record stream: one dict per row (``RecordBatch.to_pylist``)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def process(self, batch: pa.RecordBatch, input_index: int = 0) -> None:
        rows = batch.to_pylist()
        if rows:
            self.output.emit(rows)


class _CoContext:
    """``CoProcessFunction.Context``: time only (no timers without keys, as in Flink)."""

    __slots__ = ()

    def timer_service(self) -> Any:
        return _TimerService()

    def timestamp(self) -> int | None:
        return None


class CoMapOperator(StreamOperator):
    """``ConnectedStreams.map(CoMapFunction)``: map1/map2; a None result is dropped."""

    def __init__(self, name: str, function: Any) -> None:
        self.name = name
        self.function = function

    def open(self) -> None:
        super().open()
        self._fns = [self.function.map1, self.function.map2]

    def process(self, records: list, input_index: int = 0) -> None:
        fn = self._fns[input_index]
        out = self.run_c_loop(records, lambda it: [r for r in map(fn, it) if r is not None])
        if out:
            self.output.emit(out)


class CoFlatMapOperator(StreamOperator):
    """``ConnectedStreams.flat_map(CoFlatMapFunction)``."""

    def __init__(self, name: str, function: Any) -> None:
        self.name = name
        self.function = function

    def open(self) -> None:
        super().open()
        self._fns = [self.function.flat_map1, self.function.flat_map2]

    def process(self, records: list, input_index: int = 0) -> None:
        fn = self._fns[input_index]
        out = self.run_c_loop(
            records, lambda it: list(chain.from_iterable(filter(None, map(fn, it))))
        )
        if out:
            self.output.emit(out)


class CoProcessOperator(StreamOperator):
    """``ConnectedStreams.process(CoProcessFunction)``."""

    def __init__(self, name: str, function: Any) -> None:
        self.name = name
        self.function = function

    def open(self) -> None:
        super().open()
        self._fns = [self.function.process_element1, self.function.process_element2]
        self._ctx = _CoContext()

    def process(self, records: list, input_index: int = 0) -> None:
        fn, ctx, out = self._fns[input_index], self._ctx, []
        record = None
        try:
            for record in records:
                _emit_results(fn(record, ctx), out)
        except Exception as exc:
            raise self.fail(record, exc) from exc
        if out:
            self.output.emit(out)
