"""Keyed operators: user functions on a KeyedStream, with keyed state and timers.

Every keyed operator owns a keyed state backend restricted to its subtask's
key-group range and a timer service. For each input batch it extracts the keys
(the user's key selector, one C-level pass), computes their key groups with the
vectorised stable hash, brackets the batch with ``begin_batch``/``end_batch``
(one LMDB write transaction per batch), and sets the current key before each
record reaches user code -- so ``ValueState.value()`` and timers are scoped to
that record's key, exactly as in Flink.
"""

from __future__ import annotations

from typing import Any

from flowrun.state.key_groups import KeyBatch

from ..functions import Function, TimeDomain
from .operators import StreamOperator, _emit_results, _failed_record
from .timer_service import MAX_WATERMARK, TimerServiceFacade

__all__ = [
    "KeyedOperator",
    "KeyedMapOperator",
    "KeyedFlatMapOperator",
    "KeyedFilterOperator",
    "KeyedProcessOperator",
    "ReduceOperator",
    "AggregationOperator",
    "KeyedCoProcessOperator",
]

_MISSING = object()


class KeyedOperator(StreamOperator):
    """Base of operators running in a keyed context (one key selector per input)."""

    keyed = True

    def __init__(self, name: str, function: Any, key_selectors: list[Any]) -> None:
        self.name = name
        self.function = function
        self.key_selectors = key_selectors

    def open(self) -> None:
        from ..functions import as_key_selector, field_getter

        self.backend = self.ctx.keyed_backend
        self.timers = self.ctx.timer_service
        self.timer_service = TimerServiceFacade(self.timers, self)
        # The backend holds the current key; records set it through the backend's own
        # method directly (one call per record, not two).
        self.set_current_key = self.backend.set_current_key
        #: the user's selectors; ``_key_fns`` may be itemgetters doing the same (field_getter)
        self._user_key_fns = [as_key_selector(k) for k in self.key_selectors]
        self._key_fns = [field_getter(k) or k for k in self._user_key_fns]
        self.backend.begin_batch()
        try:
            super().open()
        finally:
            self.backend.end_batch()

    # -- keys -----------------------------------------------------------------------
    def _key_batch(self, records: list, input_index: int = 0) -> KeyBatch:
        keys = self._extract_keys(records, input_index)
        try:
            return KeyBatch(keys, self.ctx.max_parallelism)
        except TypeError as exc:  # UnhashableKeyError: find the record for the message
            bad = next((r for r, k in zip(records, keys, strict=True) if _bad_key(k)), None)
            raise self.fail(bad, exc) from exc

    def _extract_keys(self, records: list, input_index: int = 0) -> list:
        try:
            return list(map(self._key_fns[input_index], records))
        except Exception:
            pass  # the user's own selector raises it again: its name and traceback
        it = iter(records)
        try:
            return list(map(self._user_key_fns[input_index], it))
        except Exception as exc:
            raise self.fail(_failed_record(records, it), exc) from exc

    def _keys(self, records: list, input_index: int = 0) -> tuple[list, list]:
        batch = self._key_batch(records, input_index)
        return batch.keys, batch.group_list

    #: per-record work of each input: ``step(record, ctx)`` returns the record's outputs (an
    #: iterable) or None. A process function's ``process_element`` is such a step itself, so
    #: user code is called with no wrapper in between.
    _steps: list = []
    #: the second argument of every step (a process function's context)
    _ctx: Any = None

    def process(self, records: list, input_index: int = 0) -> None:
        """Run this input's step on each record, with the record's key as the current key.

        The backend checks and encodes the batch's keys once (``prepare_keys``) and runs the
        records itself (``run_prepared``), so per record only the current key is stored.
        """
        step, ctx = self._steps[input_index], self._ctx
        batch = self._key_batch(records, input_index)
        keys, groups = batch.keys, batch.group_list
        backend = self.backend
        tokens = backend.prepare_keys(batch)
        out: list = []
        backend.begin_batch()
        try:
            if tokens is not None:
                backend.run_prepared(step, ctx, keys, groups, tokens, records, out, self.fail)
            else:  # a key the batch check refused: the per-record call names it
                self._run_checked(step, ctx, keys, groups, records, out)
        finally:
            backend.end_batch()
        if out:
            self.output.emit(out)

    def _run_checked(
        self, step: Any, ctx: Any, keys: list, groups: list, records: list, out: list
    ) -> None:
        """The per-record path: ``set_current_key`` checks every key and names a bad one."""
        set_key, extend = self.backend.set_current_key, out.extend
        record = None
        try:
            for key, group, record in zip(keys, groups, records, strict=True):
                set_key(key, group)
                results = step(record, ctx)
                if results is not None:
                    extend(results)
        except Exception as exc:
            raise self.fail(record, exc) from exc

    @property
    def current_key(self) -> Any:
        return self.backend.get_current_key()

    @property
    def current_key_group(self) -> int:
        return self.backend.get_current_key_group()

    def get_current_key(self) -> Any:
        return self.backend.get_current_key()

    # -- timers -----------------------------------------------------------------------
    def next_timer(self) -> int | None:
        """Wall-clock ms of the next processing-time timer, for the mailbox loop."""
        return self.timers.next_processing_time()

    def fire_processing_timers(self, now: int) -> None:
        self._fire(lambda cb: self.timers.fire_processing_time(now, cb))

    def _fire(self, run: Any) -> None:
        out: list = []

        def callback(timestamp: int, key: Any, key_group: int, domain: TimeDomain) -> None:
            self.set_current_key(key, key_group)
            try:
                self.on_timer(timestamp, domain, out)
            except Exception as exc:
                raise self.fail(f"timer {timestamp} of key {key!r}", exc) from exc

        self.backend.begin_batch()
        try:
            run(callback)
        finally:
            self.backend.end_batch()
        if out:
            self.output.emit(out)

    def on_timer(self, timestamp: int, domain: TimeDomain, out: list) -> None:
        """Subclasses with user timers override this."""

    def end_input(self) -> None:
        # Bounded input: the watermark jumps to +inf and every event-time timer fires.
        self._fire(lambda cb: self.timers.advance_watermark(MAX_WATERMARK, cb))

    def close(self) -> None:
        super().close()


def _bad_key(key: Any) -> bool:
    from flowrun.state.key_groups import java_hash

    try:
        java_hash(key)
        return False
    except TypeError:
        return True


class KeyedMapOperator(KeyedOperator):
    """``KeyedStream.map``: a (rich) map function that may use keyed state."""

    def open(self) -> None:
        from ..functions import as_map_fn

        super().open()
        fn = as_map_fn(self.function)
        self._steps = [lambda record, _ctx: (fn(record),)]


class KeyedFlatMapOperator(KeyedOperator):
    def open(self) -> None:
        from ..functions import as_flat_map_fn

        super().open()
        fn = as_flat_map_fn(self.function)
        self._steps = [lambda record, _ctx: fn(record)]


class KeyedFilterOperator(KeyedOperator):
    def open(self) -> None:
        from ..functions import as_filter_fn

        super().open()
        fn = as_filter_fn(self.function)
        self._steps = [lambda record, _ctx: (record,) if fn(record) else None]


class _KeyedContext:
    """``KeyedProcessFunction.Context`` / ``OnTimerContext`` (valid during one call)."""

    __slots__ = ("_op", "_domain")

    def __init__(self, op: KeyedOperator) -> None:
        self._op = op
        self._domain: TimeDomain | None = None

    def get_current_key(self) -> Any:
        return self._op.current_key

    def timer_service(self) -> Any:
        return self._op.timer_service

    def timestamp(self) -> int | None:
        return None  # record timestamps arrive with event time

    def time_domain(self) -> TimeDomain | None:
        return self._domain


class KeyedProcessOperator(KeyedOperator):
    """``KeyedStream.process(KeyedProcessFunction)``: state, timers, current key."""

    def open(self) -> None:
        super().open()
        self._ctx = _KeyedContext(self)
        self._steps = [self.function.process_element]

    def on_timer(self, timestamp: int, domain: TimeDomain, out: list) -> None:
        self._ctx._domain = domain
        try:
            _emit_results(self.function.on_timer(timestamp, self._ctx), out)
        finally:
            self._ctx._domain = None


class KeyedCoProcessOperator(KeyedProcessOperator):
    """``connect(...).key_by(k1, k2).process(KeyedCoProcessFunction)``."""

    def open(self) -> None:
        KeyedOperator.open(self)
        self._ctx = _KeyedContext(self)
        self._steps = [self.function.process_element1, self.function.process_element2]


def _state_type(type_info: Any) -> Any:
    from ..typeinfo import Types

    return type_info if type_info is not None else Types.PICKLED_BYTE_ARRAY()


class _StateView:
    """The dict interface of :class:`KeyedValueCache` over the backend, key by key.

    For batches whose keys cannot share a dict (see ``keyed_value_cache``): the same fold
    then reads and writes each record's key in the backend, with that key as current key.
    """

    __slots__ = ("_set_key", "_value", "_update")

    def __init__(self, backend: Any, state: Any) -> None:
        self._set_key = backend.set_current_key
        self._value = state.value
        self._update = state.update

    def get(self, key: Any) -> Any:
        self._set_key(key)
        return self._value()

    def __setitem__(self, key: Any, value: Any) -> None:
        self._set_key(key)
        self._update(value)


class _RunningValueOperator(KeyedOperator):
    """Base of the built-in rolling aggregations: one running value per key (a ValueState).

    Their per-record work cannot touch keyed state, so a batch runs against the dict of a
    :class:`KeyedValueCache`: no backend access per record, and per batch only for the keys
    entering the cache. The cache is written back before every snapshot of this operator
    and at the end of the input.
    """

    _state: Any = None
    _cache: Any = None

    def _open_state(self, name: str, type_info: Any) -> None:
        from flowrun.state.descriptors import ValueStateDescriptor

        from .keyed_value_cache import KeyedValueCache

        self._state = self.backend.get_state(ValueStateDescriptor(name, _state_type(type_info)))
        # Not restored: the backend is new, so the cache starts with every value there is.
        self._cache = KeyedValueCache(
            self.backend,
            self._state,
            self.ctx.max_parallelism,
            complete=not getattr(self.ctx, "restored", False),
        )

    def _fold(self, keys: list, records: list, values: Any, out: list, new: list) -> None:
        """Fold the batch into ``values`` (``get``/``[key] =``), appending each output to
        ``out`` and each key that had no value to ``new``."""
        raise NotImplementedError

    def process(self, records: list, input_index: int = 0) -> None:
        keys = self._extract_keys(records)
        cache = self._cache
        try:
            values = cache.values_for(keys)
        except TypeError as exc:  # UnhashableKeyError: find the record for the message
            bad = next((r for r, k in zip(records, keys, strict=True) if _bad_key(k)), None)
            raise self.fail(bad, exc) from exc
        except Exception as exc:
            raise self.fail(None, exc) from exc
        out: list = []
        new: list = []
        backend = self.backend
        backend.begin_batch()
        try:
            self._fold(
                keys,
                records,
                _StateView(backend, self._state) if values is None else values,
                out,
                new,
            )
        finally:
            backend.end_batch()
        if values is not None:
            if new and cache.complete:
                # Nothing was read for these keys: check now, before anything is emitted,
                # that they belong to this subtask, as reading them would have.
                try:
                    cache.check_keys(new)
                except TypeError as exc:  # UnhashableKeyError: find the record
                    bad = next((r for r, k in zip(records, keys, strict=True) if _bad_key(k)), None)
                    raise self.fail(bad, exc) from exc
                except Exception as exc:
                    raise self.fail(None, exc) from exc
            cache.batch_done()
        self.output.emit(out)

    def prepare_snapshot(self, checkpoint_id: int, timestamp: int) -> None:
        self._write_back()
        super().prepare_snapshot(checkpoint_id, timestamp)

    def end_input(self) -> None:
        self._write_back()
        super().end_input()

    def _write_back(self) -> None:
        if self._cache is None:
            return
        try:
            self._cache.flush()
        except Exception as exc:
            raise self.fail(None, exc) from exc


class ReduceOperator(_RunningValueOperator):
    """Rolling keyed reduce: emits the new aggregate after every record (STREAMING).

    The running value of each key is a ValueState, so it lives in the configured state
    backend (LMDB by default) like any user state; a plain callable works through the
    operator's :class:`KeyedValueCache` of it, a ReduceFunction (which may use keyed state
    itself) per record with its key as current key.
    """

    def __init__(self, name: str, function: Any, key_selector: Any, type_info: Any = None) -> None:
        super().__init__(name, function, [key_selector])
        self.type_info = type_info

    def open(self) -> None:
        from ..functions import as_reduce_fn

        super().open()
        self._fn = as_reduce_fn(self.function)
        self._open_state("_reduce", self.type_info)
        if isinstance(self.function, Function):
            self._cache = None

    def process(self, records: list, input_index: int = 0) -> None:
        if self._cache is None:
            keys, groups = self._keys(records)
            self._process_rich(keys, groups, records)
        else:
            super().process(records, input_index)

    def _fold(self, keys: list, records: list, values: Any, out: list, new: list) -> None:
        fn, get, append, new_key = self._fn, values.get, out.append, new.append
        record = None
        try:
            for key, record in zip(keys, records, strict=True):
                value = get(key)
                if value is not None:
                    record = fn(value, record)
                else:
                    new_key(key)
                values[key] = record
                append(record)
        except Exception as exc:
            raise self.fail(record, exc) from exc

    def _process_rich(self, keys: list, groups: list, records: list) -> None:
        """A ReduceFunction instance may use keyed state itself: set the key per record."""
        fn, set_key, state = self._fn, self.set_current_key, self._state
        value_of, update = state.value, state.update
        out: list = []
        append = out.append
        record = None
        self.backend.begin_batch()
        try:
            for key, group, record in zip(keys, groups, records, strict=True):
                set_key(key, group)
                current = value_of()
                if current is not None:
                    record = fn(current, record)
                update(record)
                append(record)
        except Exception as exc:
            raise self.fail(record, exc) from exc
        finally:
            self.backend.end_batch()
        self.output.emit(out)


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


class AggregationOperator(_RunningValueOperator):
    """``KeyedStream.sum/min/max/min_by/max_by`` with PyFlink's semantics.

    sum/min/max keep the other fields of the first record of the key; min_by /
    max_by emit the whole record holding the extreme value, the earlier one on
    ties. The running record of each key is a ValueState (through the operator's
    :class:`KeyedValueCache`).
    """

    def __init__(
        self, name: str, kind: str, position: int | str, key_selector: Any, type_info: Any = None
    ) -> None:
        super().__init__(name, None, [key_selector])
        self.kind = kind
        self.position = position
        self.type_info = type_info

    def open(self) -> None:
        super().open()
        self._open_state(f"_{self.kind}", self.type_info)

    def _field(self, record: Any) -> Any:
        if isinstance(record, (str, bytes)) or not hasattr(record, "__getitem__"):
            if self.position not in (0, "0"):
                raise TypeError(
                    f"position {self.position!r} is not valid for a scalar record of type "
                    f"{type(record).__name__}; use 0"
                )
            return record
        return record[self.position]

    def _fold(self, keys: list, records: list, values: Any, out: list, new: list) -> None:
        kind, field_of = self.kind, self._field
        get = values.get
        record = None
        try:
            for key, record in zip(keys, records, strict=True):
                field = field_of(record)
                current = get(key)
                if current is None:
                    new.append(key)
                    value = record
                elif kind == "sum":
                    value = _replace_field(current, self.position, field_of(current) + field)
                elif kind == "min":
                    best = field_of(current)
                    value = (
                        current if best <= field else _replace_field(current, self.position, field)
                    )
                elif kind == "max":
                    best = field_of(current)
                    value = (
                        current if best >= field else _replace_field(current, self.position, field)
                    )
                elif kind == "min_by":
                    value = record if field < field_of(current) else current
                else:  # max_by
                    value = record if field > field_of(current) else current
                values[key] = value
                out.append(value)
        except Exception as exc:
            raise self.fail(record, exc) from exc
