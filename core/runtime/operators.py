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
from itertools import chain, repeat
from typing import Any

import numpy as np
import pyarrow as pa

__all__ = [
    "UserCodeError",
    "Output",
    "StreamOperator",
    "MapOperator",
    "FlatMapOperator",
    "FilterOperator",
    "ProcessOperator",
    "KeyedProcessOperator",
    "ReduceOperator",
    "AggregationOperator",
    "MapBatchesOperator",
    "ArrowKeyedAggregateOperator",
    "SinkOperator",
    "CollectSinkOperator",
    "SourceOperator",
]


def _short_repr(value: Any, limit: int = 200) -> str:
    try:
        text = repr(value)
    except Exception as exc:  # a user object whose repr fails
        text = f"<unprintable {type(value).__name__}: {exc}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
        from ..functions import open_function

        if self.function is not None:
            try:
                open_function(self.function, self.ctx.runtime_context)
            except Exception as exc:
                raise UserCodeError(self.name, self.subtask, None, exc, what="open() with") from exc

    def process(self, records: Any, input_index: int = 0) -> None:  # pragma: no cover
        raise NotImplementedError

    def end_input(self) -> None:
        """Every input of this operator reached its end (bounded streams)."""

    def close(self) -> None:
        from ..functions import close_function

        if self.function is not None:
            close_function(self.function)

    def fail(self, record: Any, exc: BaseException) -> UserCodeError:
        return UserCodeError(self.name, self.subtask, record, exc)


class MapOperator(StreamOperator):
    def __init__(self, name: str, function: Any) -> None:
        self.name = name
        self.function = function

    def open(self) -> None:
        from ..functions import as_map_fn

        super().open()
        self._fn = as_map_fn(self.function)

    def process(self, records: list, input_index: int = 0) -> None:
        it = iter(records)
        try:
            out = list(map(self._fn, it))
        except Exception as exc:
            raise self.fail(_failed_record(records, it), exc) from exc
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
        it = iter(records)
        try:
            # filter(None, ...) drops None (and empty) results: nothing to emit for those
            out = list(chain.from_iterable(filter(None, map(self._fn, it))))
        except Exception as exc:
            raise self.fail(_failed_record(records, it), exc) from exc
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
        it = iter(records)
        try:
            out = list(filter(self._fn, it))
        except Exception as exc:
            raise self.fail(_failed_record(records, it), exc) from exc
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
    """Processing time is real; timers need keyed state and arrive with the state backends."""

    def current_processing_time(self) -> int:
        import time

        return time.time_ns() // 1_000_000

    def current_watermark(self) -> int:
        return -(2**63)

    def _unsupported(self, *_args: Any) -> None:
        raise NotImplementedError(
            "timers are kept in keyed state and become available with the state backends"
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


class KeyedProcessOperator(ProcessOperator):
    """``KeyedStream.process(KeyedProcessFunction)`` with ``ctx.get_current_key()``."""

    def __init__(self, name: str, function: Any, key_selector: Any) -> None:
        super().__init__(name, function)
        self.key_selector = key_selector

    def open(self) -> None:
        from ..functions import as_key_selector

        super().open()
        self._key_of = as_key_selector(self.key_selector)

    def process(self, records: list, input_index: int = 0) -> None:
        fn, ctx, key_of = self._fn, self._ctx, self._key_of
        out: list = []
        record = None
        try:
            for record in records:
                ctx._key = key_of(record)
                _emit_results(fn(record, ctx), out)
        except Exception as exc:
            raise self.fail(record, exc) from exc
        if out:
            self.output.emit(out)


class ReduceOperator(StreamOperator):
    """Rolling keyed reduce: emits the new aggregate after every record (STREAMING)."""

    def __init__(self, name: str, function: Any, key_selector: Any) -> None:
        self.name = name
        self.function = function
        self.key_selector = key_selector

    def open(self) -> None:
        from ..functions import as_key_selector, as_reduce_fn

        super().open()
        self._fn = as_reduce_fn(self.function)
        self._key_of = as_key_selector(self.key_selector)
        self.values: dict = {}

    def process(self, records: list, input_index: int = 0) -> None:
        fn, key_of, values = self._fn, self._key_of, self.values
        get = values.get
        out: list = []
        append = out.append
        record = None
        missing = _MISSING
        try:
            for record in records:
                key = key_of(record)
                current = get(key, missing)
                if current is not missing:
                    record = fn(current, record)
                values[key] = record
                append(record)
        except Exception as exc:
            raise self.fail(record, exc) from exc
        self.output.emit(out)


_MISSING = object()


def _field_getter(position: int | str):
    if isinstance(position, int):
        return lambda r: r[position]
    return lambda r: r[position]


def _replace_field(record: Any, position: int | str, value: Any) -> Any:
    """A copy of ``record`` with one field replaced (tuples, Rows, lists, scalars)."""
    from ..row import Row

    if isinstance(record, Row):
        copy = Row(*record)
        names = record._fields if hasattr(record, "_fields") else None
        if names:
            copy.set_field_names(list(names))
        copy.set_row_kind(record.get_row_kind())
        copy[position] = value
        return copy
    if isinstance(record, tuple):
        index = position
        items = list(record)
        items[index] = value
        return type(record)(items) if type(record) is not tuple else tuple(items)
    if isinstance(record, list):
        items = list(record)
        items[position] = value
        return items
    if isinstance(record, dict):
        copy = dict(record)
        copy[position] = value
        return copy
    return value


class AggregationOperator(StreamOperator):
    """``KeyedStream.sum/min/max/min_by/max_by`` with PyFlink's semantics.

    sum/min/max keep the other fields of the first record of the key; min_by /
    max_by emit the whole record holding the extreme value, the earlier one on
    ties.
    """

    def __init__(self, name: str, kind: str, position: int | str, key_selector: Any) -> None:
        self.name = name
        self.kind = kind
        self.position = position
        self.key_selector = key_selector

    def open(self) -> None:
        from ..functions import as_key_selector

        super().open()
        self._key_of = as_key_selector(self.key_selector)
        self.values: dict = {}

    def _field(self, record: Any) -> Any:
        if (
            isinstance(record, (tuple, list, dict))
            or hasattr(record, "__getitem__")
            and not isinstance(record, (str, bytes))
        ):
            return record[self.position]
        if self.position not in (0, "0"):
            raise TypeError(
                f"position {self.position!r} is not valid for a scalar record of type "
                f"{type(record).__name__}; use 0"
            )
        return record

    def process(self, records: list, input_index: int = 0) -> None:
        key_of, values, kind = self._key_of, self.values, self.kind
        out: list = []
        record = None
        try:
            for record in records:
                key = key_of(record)
                field = self._field(record)
                current = values.get(key, _MISSING)
                if current is _MISSING:
                    value = record
                elif kind == "sum":
                    value = _replace_field(current, self.position, self._field(current) + field)
                elif kind == "min":
                    best = self._field(current)
                    value = (
                        current if best <= field else _replace_field(current, self.position, field)
                    )
                elif kind == "max":
                    best = self._field(current)
                    value = (
                        current if best >= field else _replace_field(current, self.position, field)
                    )
                elif kind == "min_by":
                    value = record if field < self._field(current) else current
                else:  # max_by
                    value = record if field > self._field(current) else current
                values[key] = value
                out.append(value)
        except Exception as exc:
            raise self.fail(record, exc) from exc
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


def _numpy_type(array: pa.Array) -> Any:
    return np.float64 if pa.types.is_floating(array.type) else np.int64


def _batch_summary(batch: pa.RecordBatch) -> str:
    head = batch.slice(0, 3).to_pylist()
    return f"batch of {batch.num_rows} rows {batch.schema.names}, first rows {head}"


class ArrowKeyedAggregateOperator(StreamOperator):
    """Keyed ``sum(col)`` / ``count()`` over Arrow batches with Arrow kernels.

    For every input batch the operator aggregates the batch with one
    ``group_by``, folds the per-key partial results into its running totals and
    emits one row per key touched by the batch with the key's new total -- the
    batch-at-a-time counterpart of Flink's rolling aggregation.
    """

    def __init__(self, name: str, key_column: str, kind: str, column: str | None) -> None:
        self.name = name
        self.key_column = key_column
        self.kind = kind
        self.column = column

    def open(self) -> None:
        super().open()
        self.totals: dict = {}
        self.out_name = "count" if self.kind == "count" else self.column

    def process(self, batch: pa.RecordBatch, input_index: int = 0) -> None:
        try:
            table = pa.Table.from_batches([batch])
            if self.kind == "count":
                aggregation, result = [([], "count_all")], "count_all"
            else:
                aggregation, result = [(self.column, "sum")], f"{self.column}_sum"
            grouped = table.group_by(self.key_column, use_threads=False).aggregate(aggregation)
            partial = grouped.column(result).combine_chunks()
            keys = grouped.column(self.key_column).combine_chunks()
        except Exception as exc:
            raise self.fail(_batch_summary(batch), exc) from exc
        # Fold the partial aggregates into the running totals with C-level loops only:
        # dict lookups through map(), the additions in numpy, the write-back through update().
        key_list = keys.to_pylist()
        totals = self.totals
        previous = np.fromiter(
            map(totals.get, key_list, repeat(0)), dtype=_numpy_type(partial), count=len(key_list)
        )
        new = previous + partial.to_numpy(zero_copy_only=False)
        totals.update(zip(key_list, new.tolist(), strict=True))
        out = pa.RecordBatch.from_arrays(
            [keys, pa.array(new)], names=[self.key_column, self.out_name]
        )
        self.output.emit(out)


class SinkOperator(StreamOperator):
    """Writes records through a connector's SinkWriter."""

    def __init__(self, name: str, sink: Any) -> None:
        self.name = name
        self.sink = sink

    def open(self) -> None:
        self.writer = self.sink.create_writer(
            self.ctx.index, self.ctx.parallelism, self.ctx.job_id, self.ctx.operator_uid
        )
        try:
            self.writer.open()
        except Exception as exc:
            raise self.fail(None, exc) from exc

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


class SourceOperator(StreamOperator):
    """Holds the source; the task's loop polls its reader and emits what it returns."""

    def __init__(self, name: str, source: Any) -> None:
        self.name = name
        self.source = source

    def open(self) -> None:
        self.reader = self.source.create_reader(self.ctx.index, self.ctx.parallelism)
        try:
            self.reader.open()
        except Exception as exc:
            raise self.fail(None, exc) from exc

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
