"""User function base classes, mirroring ``pyflink.datastream.functions``.

Users subclass these (``class Tokenize(FlatMapFunction): def flat_map(self, value): ...``)
or pass plain callables where PyFlink accepts them. As in PyFlink there are no Collector
objects: functions that emit several records are generators (``yield value``; ``yield
output_tag, value`` for a side output) or return iterables.

The engine does not want to care which of the two forms it got, so this module also has the
adapters it uses: :func:`as_map_fn`, :func:`as_flat_map_fn`, :func:`as_filter_fn`,
:func:`as_reduce_fn`, :func:`as_key_selector` and :func:`as_partitioner_fn` turn either form
into one plain callable (the bound method for Function instances, so there is no wrapper
frame per record), :func:`require_function` checks operators that only take a Function
subclass, and :func:`open_function` / :func:`close_function` run the lifecycle hooks of
Function instances only. Mistakes (a ``ProcessFunction`` given to ``key_by``, the class
``MyMap`` instead of an instance ``MyMap()``) fail with a TypeError when the job is built,
not with an AttributeError deep inside a subtask.

Example::

    >>> from flowrun.core.functions import MapFunction, as_map_fn
    >>> class Double(MapFunction):
    ...     def map(self, value):
    ...         return value * 2
    >>> as_map_fn(Double())(21), as_map_fn(lambda v: v + 1)(41)
    (42, 42)
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable
from enum import Enum
from typing import Any

__all__ = [
    "AggregateFunction",
    "BaseBroadcastProcessFunction",
    "BroadcastProcessFunction",
    "CheckpointedFunction",
    "KeyedBroadcastProcessFunction",
    "CoFlatMapFunction",
    "CoMapFunction",
    "CoProcessFunction",
    "FilterFunction",
    "FlatMapFunction",
    "Function",
    "KeySelector",
    "KeyedCoProcessFunction",
    "KeyedProcessFunction",
    "KeyedStateStore",
    "MapFunction",
    "NullByteKeySelector",
    "Partitioner",
    "ProcessFunction",
    "ReduceFunction",
    "RuntimeContext",
    "TimeDomain",
    "as_filter_fn",
    "as_flat_map_fn",
    "as_key_selector",
    "as_map_fn",
    "as_partitioner_fn",
    "as_reduce_fn",
    "close_function",
    "open_function",
    "require_function",
]


class TimeDomain(Enum):
    """Which clock a timer belongs to."""

    EVENT_TIME = 0
    PROCESSING_TIME = 1


class KeyedStateStore(ABC):
    """Access to keyed state; usable only in functions applied to a KeyedStream."""

    @abstractmethod
    def get_state(self, state_descriptor: Any) -> Any:
        """The ValueState named by the descriptor, scoped to the current key."""

    @abstractmethod
    def get_list_state(self, state_descriptor: Any) -> Any:
        """The ListState named by the descriptor, scoped to the current key."""

    @abstractmethod
    def get_map_state(self, state_descriptor: Any) -> Any:
        """The MapState named by the descriptor, scoped to the current key."""

    @abstractmethod
    def get_reducing_state(self, state_descriptor: Any) -> Any:
        """The ReducingState named by the descriptor, scoped to the current key."""

    @abstractmethod
    def get_aggregating_state(self, state_descriptor: Any) -> Any:
        """The AggregatingState named by the descriptor, scoped to the current key."""


_NO_KEYED_STATE = (
    "{method}({descriptor!r}) in '{task}': keyed state exists only in functions applied to a "
    "keyed stream; call key_by() before this operator (operator state is available through "
    "CheckpointedFunction.initialize_state)"
)


class RuntimeContext(KeyedStateStore):
    """What a function instance can learn about where it runs; passed to ``open``.

    The engine creates one per operator and subtask. On a keyed stream it carries the
    operator's keyed state backend and the state getters return state scoped to the current
    key; elsewhere they raise an error that says keyed state needs ``key_by()``.

    Example::

        >>> ctx = RuntimeContext("Tokenize", 2, 6, 128)
        >>> ctx.get_task_name_with_subtasks()
        'Tokenize (3/6)'
    """

    def __init__(
        self,
        task_name: str,
        index_of_this_subtask: int,
        number_of_parallel_subtasks: int,
        max_number_of_parallel_subtasks: int,
        attempt_number: int = 0,
        job_parameters: dict[str, str] | None = None,
        keyed_state_store: Any = None,
    ) -> None:
        self._keyed_state_store = keyed_state_store
        if not 0 <= index_of_this_subtask < number_of_parallel_subtasks:
            raise ValueError(
                f"subtask index {index_of_this_subtask} outside parallelism "
                f"{number_of_parallel_subtasks}"
            )
        self._task_name = task_name
        self._index = index_of_this_subtask
        self._parallelism = number_of_parallel_subtasks
        self._max_parallelism = max_number_of_parallel_subtasks
        self._attempt_number = attempt_number
        self._job_parameters = dict(job_parameters or {})

    def get_task_name(self) -> str:
        return self._task_name

    def get_number_of_parallel_subtasks(self) -> int:
        return self._parallelism

    def get_max_number_of_parallel_subtasks(self) -> int:
        return self._max_parallelism

    def get_index_of_this_subtask(self) -> int:
        """0-based index of this parallel instance."""
        return self._index

    def get_attempt_number(self) -> int:
        """0 on the first run, incremented on every restart of the subtask."""
        return self._attempt_number

    def get_task_name_with_subtasks(self) -> str:
        """The task name with ``(index+1/parallelism)``, as Flink prints it in logs."""
        return f"{self._task_name} ({self._index + 1}/{self._parallelism})"

    def get_job_parameter(self, key: str, default_value: str) -> str:
        """A global job parameter, or ``default_value`` when it was not set."""
        return self._job_parameters.get(key, default_value)

    def get_metrics_group(self) -> Any:
        """The metric group of this subtask (None until the metrics work lands)."""
        return None

    def _store(self, method: str, descriptor: Any) -> Any:
        if self._keyed_state_store is None:
            raise RuntimeError(
                _NO_KEYED_STATE.format(method=method, descriptor=descriptor, task=self._task_name)
            )
        return self._keyed_state_store

    def get_state(self, state_descriptor: Any) -> Any:
        return self._store("get_state", state_descriptor).get_state(state_descriptor)

    def get_list_state(self, state_descriptor: Any) -> Any:
        return self._store("get_list_state", state_descriptor).get_list_state(state_descriptor)

    def get_map_state(self, state_descriptor: Any) -> Any:
        return self._store("get_map_state", state_descriptor).get_map_state(state_descriptor)

    def get_reducing_state(self, state_descriptor: Any) -> Any:
        store = self._store("get_reducing_state", state_descriptor)
        return store.get_reducing_state(state_descriptor)

    def get_aggregating_state(self, state_descriptor: Any) -> Any:
        store = self._store("get_aggregating_state", state_descriptor)
        return store.get_aggregating_state(state_descriptor)

    def __repr__(self) -> str:
        return f"RuntimeContext({self.get_task_name_with_subtasks()!r})"


class Function(ABC):  # noqa: B024 - abstract by role; open/close are optional hooks
    """Base of all user functions; ``open`` runs before the first record, ``close`` after."""

    def open(self, runtime_context: RuntimeContext) -> None:  # noqa: B027
        pass

    def close(self) -> None:  # noqa: B027
        pass


class MapFunction(Function):
    """One output per input: ``map(value)`` returns it."""

    @abstractmethod
    def map(self, value: Any) -> Any:
        pass


class FlatMapFunction(Function):
    """Zero or more outputs per input: ``flat_map(value)`` yields or returns an iterable."""

    @abstractmethod
    def flat_map(self, value: Any) -> Any:
        pass


class FilterFunction(Function):
    """Keeps the values for which ``filter(value)`` is true; must not change the value."""

    @abstractmethod
    def filter(self, value: Any) -> bool:
        pass


class ReduceFunction(Function):
    """Combines two values of one type into one: ``reduce(value1, value2)``."""

    @abstractmethod
    def reduce(self, value1: Any, value2: Any) -> Any:
        pass


class AggregateFunction(Function):
    """Aggregation through an accumulator whose type may differ from input and result."""

    @abstractmethod
    def create_accumulator(self) -> Any:
        pass

    @abstractmethod
    def add(self, value: Any, accumulator: Any) -> Any:
        """Add ``value``; return the accumulator (it may be the mutated input)."""

    @abstractmethod
    def get_result(self, accumulator: Any) -> Any:
        pass

    @abstractmethod
    def merge(self, acc_a: Any, acc_b: Any) -> Any:
        """Merge two accumulators (used by merging windows); either may be reused."""


class KeySelector(Function):
    """Extracts the key of a value; must be deterministic across processes and runs."""

    @abstractmethod
    def get_key(self, value: Any) -> Any:
        pass


class NullByteKeySelector(KeySelector):
    """Gives every value the key 0, so keyed operators can serve non-keyed streams."""

    def get_key(self, value: Any) -> Any:
        return 0


class Partitioner(Function):
    """Picks the channel for a key: ``partition(key, num_partitions)`` in [0, n)."""

    @abstractmethod
    def partition(self, key: Any, num_partitions: int) -> int:
        pass


class CoMapFunction(Function):
    """``map1`` for the first of two connected streams, ``map2`` for the second."""

    @abstractmethod
    def map1(self, value: Any) -> Any:
        pass

    @abstractmethod
    def map2(self, value: Any) -> Any:
        pass


class CoFlatMapFunction(Function):
    """``flat_map1``/``flat_map2`` yield zero or more outputs per input of each stream."""

    @abstractmethod
    def flat_map1(self, value: Any) -> Any:
        pass

    @abstractmethod
    def flat_map2(self, value: Any) -> Any:
        pass


class ProcessFunction(Function):
    """Low-level per-element processing with access to time; yields outputs."""

    class Context(ABC):
        """Valid only during the call that received it."""

        @abstractmethod
        def timer_service(self) -> Any:
            """The TimerService, for the current time and watermark."""

        @abstractmethod
        def timestamp(self) -> int | None:
            """The element's timestamp; None if the stream has no timestamps."""

    @abstractmethod
    def process_element(self, value: Any, ctx: ProcessFunction.Context) -> Any:
        pass


class KeyedProcessFunction(Function):
    """Per-element processing on a keyed stream with keyed state and timers."""

    class Context(ABC):
        """Valid only during the call that received it."""

        @abstractmethod
        def get_current_key(self) -> Any:
            pass

        @abstractmethod
        def timer_service(self) -> Any:
            """The TimerService, to register and delete timers for the current key."""

        @abstractmethod
        def timestamp(self) -> int | None:
            pass

    class OnTimerContext(Context):
        @abstractmethod
        def time_domain(self) -> TimeDomain:
            """The clock of the firing timer."""

    @abstractmethod
    def process_element(self, value: Any, ctx: KeyedProcessFunction.Context) -> Any:
        pass

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext) -> Any:
        """Called when a timer fires; may yield outputs. Optional."""
        return None


class CoProcessFunction(Function):
    """Processes the elements of two connected streams; no timers (as in PyFlink)."""

    class Context(ABC):
        @abstractmethod
        def timer_service(self) -> Any:
            pass

        @abstractmethod
        def timestamp(self) -> int | None:
            pass

    @abstractmethod
    def process_element1(self, value: Any, ctx: CoProcessFunction.Context) -> Any:
        pass

    @abstractmethod
    def process_element2(self, value: Any, ctx: CoProcessFunction.Context) -> Any:
        pass


class KeyedCoProcessFunction(Function):
    """Processes two connected keyed streams, with keyed state and timers."""

    class Context(ABC):
        @abstractmethod
        def get_current_key(self) -> Any:
            pass

        @abstractmethod
        def timer_service(self) -> Any:
            pass

        @abstractmethod
        def timestamp(self) -> int | None:
            pass

    class OnTimerContext(Context):
        @abstractmethod
        def time_domain(self) -> TimeDomain:
            pass

    @abstractmethod
    def process_element1(self, value: Any, ctx: KeyedCoProcessFunction.Context) -> Any:
        pass

    @abstractmethod
    def process_element2(self, value: Any, ctx: KeyedCoProcessFunction.Context) -> Any:
        pass

    def on_timer(self, timestamp: int, ctx: KeyedCoProcessFunction.OnTimerContext) -> Any:
        """Called when a timer fires; may yield outputs. Optional."""
        return None


class BaseBroadcastProcessFunction(Function):
    """Common base of the two broadcast process functions (PyFlink 1.16)."""

    class BaseContext(ABC):
        @abstractmethod
        def timestamp(self) -> int | None:
            pass

        @abstractmethod
        def current_processing_time(self) -> int:
            pass

        @abstractmethod
        def current_watermark(self) -> int:
            pass

    class Context(BaseContext):
        """Broadcast side: read-write access to broadcast state."""

        @abstractmethod
        def get_broadcast_state(self, state_descriptor: Any) -> Any:
            pass

    class ReadOnlyContext(BaseContext):
        """Data side: read-only access to broadcast state."""

        @abstractmethod
        def get_broadcast_state(self, state_descriptor: Any) -> Any:
            pass


class BroadcastProcessFunction(BaseBroadcastProcessFunction):
    """Non-keyed stream connected with a broadcast stream.

    ``process_element`` sees the broadcast state read-only; ``process_broadcast_element``
    may change it. Every parallel instance receives every broadcast element, so the
    broadcast state stays identical on all subtasks as long as updates are deterministic.
    """

    @abstractmethod
    def process_element(self, value: Any, ctx: BaseBroadcastProcessFunction.ReadOnlyContext) -> Any:
        pass

    @abstractmethod
    def process_broadcast_element(
        self, value: Any, ctx: BaseBroadcastProcessFunction.Context
    ) -> Any:
        pass


class KeyedBroadcastProcessFunction(BaseBroadcastProcessFunction):
    """Keyed stream connected with a broadcast stream: keyed state, timers, broadcast state."""

    class ReadOnlyContext(BaseBroadcastProcessFunction.ReadOnlyContext):
        @abstractmethod
        def timer_service(self) -> Any:
            pass

        @abstractmethod
        def get_current_key(self) -> Any:
            pass

    class OnTimerContext(ReadOnlyContext):
        @abstractmethod
        def time_domain(self) -> TimeDomain:
            pass

    @abstractmethod
    def process_element(
        self, value: Any, ctx: KeyedBroadcastProcessFunction.ReadOnlyContext
    ) -> Any:
        pass

    @abstractmethod
    def process_broadcast_element(
        self, value: Any, ctx: BaseBroadcastProcessFunction.Context
    ) -> Any:
        pass

    def on_timer(self, timestamp: int, ctx: KeyedBroadcastProcessFunction.OnTimerContext) -> Any:
        return None


class CheckpointedFunction(ABC):
    """Operator state for any function (Flink's Java interface; PyFlink has none).

    ``initialize_state(context)`` is called before ``open`` -- on a fresh start and on a
    restore (``context.is_restored()``) -- and is where a function gets its operator state
    from ``context.get_operator_state_store()`` (list, union list or broadcast state).
    ``snapshot_state(context)`` is called on every checkpoint so the function can copy its
    working variables into that state.
    """

    @abstractmethod
    def snapshot_state(self, context: Any) -> None:
        pass

    @abstractmethod
    def initialize_state(self, context: Any) -> None:
        pass


def _describe(f: Any) -> str:
    if isinstance(f, Function):
        return f"a {type(f).__name__} (a {_function_kind(f)})"
    return repr(f)


def _function_kind(f: Function) -> str:
    for base in type(f).__mro__:
        if base.__module__ == __name__ and base is not Function:
            return base.__name__
    return "Function"


def _adapt(f: Any, cls: type[Function], method: str, role: str) -> Callable[..., Any]:
    if isinstance(f, cls):
        return getattr(f, method)
    if isinstance(f, type):
        if issubclass(f, Function):
            raise TypeError(f"{role} got the class {f.__name__}; pass an instance: {f.__name__}()")
    elif isinstance(f, Function):
        raise TypeError(
            f"{role} needs a {cls.__name__} or a callable, got {_describe(f)}; "
            f"implement {cls.__name__}.{method}() instead"
        )
    if not callable(f):
        raise TypeError(f"{role} needs a {cls.__name__} or a callable, got {f!r}")
    return f


def as_map_fn(f: Any) -> Callable[[Any], Any]:
    """``value -> result`` from a MapFunction or a callable."""
    return _adapt(f, MapFunction, "map", "map()")


def as_flat_map_fn(f: Any) -> Callable[[Any], Any]:
    """``value -> iterable`` from a FlatMapFunction or a callable."""
    return _adapt(f, FlatMapFunction, "flat_map", "flat_map()")


def as_filter_fn(f: Any) -> Callable[[Any], Any]:
    """``value -> bool`` from a FilterFunction or a callable."""
    return _adapt(f, FilterFunction, "filter", "filter()")


def as_reduce_fn(f: Any) -> Callable[[Any, Any], Any]:
    """``(value1, value2) -> value`` from a ReduceFunction or a callable."""
    return _adapt(f, ReduceFunction, "reduce", "reduce()")


def as_key_selector(f: Any) -> Callable[[Any], Any]:
    """``value -> key`` from a KeySelector or a callable."""
    return _adapt(f, KeySelector, "get_key", "key_by()")


_SUBSCRIPT_BODY = ("LOAD_FAST", "LOAD_CONST", "BINARY_SUBSCR", "RETURN_VALUE")
_NOT_CODE = frozenset({"RESUME", "NOP", "CACHE"})


def field_getter(f: Any) -> Callable[[Any], Any] | None:
    """``operator.itemgetter(c)`` for a plain function that is ``lambda r: r[c]``, else None.

    Why: ``key_by(lambda r: r[0])`` is how most jobs key tuples (PyFlink has no field-index
    ``key_by``), and the engine calls the selector once per record on both sides of the
    shuffle. ``itemgetter`` does the same subscript without a Python frame (~3x cheaper);
    it calls the same ``__getitem__``, so keys are identical. Only a function whose whole
    body is that subscript of its single argument by an int or str constant qualifies (no
    defaults, closure or other code); callers run the user's function again when the getter
    raises, so errors keep its name and traceback.

    Example::

        >>> field_getter(lambda r: r[1])(("a", 2))
        2
        >>> field_getter(lambda r: r[1] + 1) is None
        True
    """
    import dis
    import operator
    import types

    if type(f) is not types.FunctionType or f.__closure__ or f.__defaults__ or f.__kwdefaults__:
        return None
    code = f.__code__
    if code.co_argcount != 1 or code.co_kwonlyargcount or code.co_posonlyargcount > 1:
        return None
    if code.co_flags & (inspect.CO_VARARGS | inspect.CO_VARKEYWORDS | inspect.CO_GENERATOR):
        return None
    body = [i for i in dis.get_instructions(code) if i.opname not in _NOT_CODE]
    if tuple(i.opname for i in body) != _SUBSCRIPT_BODY or body[0].arg != 0:
        return None
    constant = body[1].argval
    if type(constant) not in (int, str):
        return None
    return operator.itemgetter(constant)


def as_partitioner_fn(f: Any) -> Callable[[Any, int], int]:
    """``(key, num_partitions) -> int`` from a Partitioner or a callable."""
    return _adapt(f, Partitioner, "partition", "partition_custom()")


def require_function(f: Any, cls: type[Function], role: str) -> Function:
    """Check that an operator that only takes a Function subclass got an instance of it.

    Example::

        >>> try:
        ...     require_function(print, ProcessFunction, "process()")
        ... except TypeError as e:
        ...     print(str(e).split(";")[0])
        process() needs a ProcessFunction instance, got a plain callable <built-in function print>
    """
    if isinstance(f, cls):
        return f
    if isinstance(f, type) and issubclass(f, cls):
        raise TypeError(f"{role} got the class {f.__name__}; pass an instance: {f.__name__}()")
    if isinstance(f, Function):
        raise TypeError(f"{role} needs a {cls.__name__} instance, got {_describe(f)}")
    if callable(f):
        raise TypeError(
            f"{role} needs a {cls.__name__} instance, got a plain callable {f!r}; "
            f"subclass {cls.__name__} and implement its methods"
        )
    raise TypeError(f"{role} needs a {cls.__name__} instance, got {f!r}")


def open_function(f: Any, runtime_context: RuntimeContext) -> None:
    """Call ``f.open(runtime_context)`` if ``f`` is a Function; plain callables have no hook."""
    if isinstance(f, Function):
        f.open(runtime_context)


def close_function(f: Any) -> None:
    """Call ``f.close()`` if ``f`` is a Function."""
    if isinstance(f, Function):
        f.close()
