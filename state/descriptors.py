"""State descriptors, as in ``pyflink.datastream.state``: a name, a kind and a declared type.

A function asks its runtime context for state by descriptor
(``ctx.get_state(ValueStateDescriptor("count", Types.LONG()))``); the name identifies the
state within the operator and in snapshots, the declared type picks the serializer
(:mod:`flowrun.state.serializers`).

flowrun is stricter than PyFlink in one respect: a descriptor must declare a type. State is
written to checkpoints and restored in other processes, possibly by a later version of the
job, so its bytes must be readable without guessing; ``Types.PICKLED_BYTE_ARRAY()`` states
explicitly that any picklable object is fine (and that restoring will unpickle).

Descriptors compare structurally (kind, name and types; not functions or TTL), hash
accordingly and pickle (a lambda reduce function needs cloudpickle, as everything crossing
processes in flowrun does). :func:`check_compatible` is what the runtime uses when one state
name is requested twice: same kind, same types and same TTL, or a clear error.

Example::

    >>> from flowrun.core.typeinfo import Types
    >>> from flowrun.state import ListStateDescriptor, ValueStateDescriptor
    >>> d = ListStateDescriptor("seen", Types.STRING())
    >>> d.get_name(), d.type_info, d.elem_type_info
    ('seen', ListTypeInfo<String>, String)
    >>> ValueStateDescriptor("n", Types.INT()) == ValueStateDescriptor("n", Types.INT())
    True
    >>> check_compatible(ValueStateDescriptor("n", Types.INT()), ValueStateDescriptor("n", Types.LONG()))
    Traceback (most recent call last):
    ...
    flowrun.state.descriptors.IncompatibleStateError: state 'n' is already registered as ValueState<Integer> and cannot be requested as ValueState<Long>: one state name holds one kind and type of state
"""

from __future__ import annotations

from abc import ABC
from collections.abc import Callable
from typing import Any

from flowrun.core.functions import AggregateFunction, Function, ReduceFunction
from flowrun.core.typeinfo import TypeInformation, Types

from .ttl import StateTtlConfig

__all__ = [
    "AggregatingStateDescriptor",
    "IncompatibleStateError",
    "ListStateDescriptor",
    "MapStateDescriptor",
    "ReducingStateDescriptor",
    "StateDescriptor",
    "ValueStateDescriptor",
    "check_compatible",
]


class IncompatibleStateError(ValueError):
    """One state name was requested with two different kinds, types or TTL configurations."""


def _check_name(descriptor: str, name: Any) -> str:
    if not isinstance(name, str):
        raise TypeError(f"{descriptor} name must be a str, got {name!r}")
    if not name:
        raise ValueError(f"{descriptor} name must not be empty")
    return name


def _require_type(descriptor: str, name: str, type_info: Any, what: str = "a type") -> Any:
    if type_info is None:
        raise TypeError(
            f"descriptor {descriptor}({name!r}) needs {what}; use Types.PICKLED_BYTE_ARRAY() "
            f"for arbitrary objects"
        )
    if isinstance(type_info, type) and issubclass(type_info, TypeInformation):
        raise TypeError(
            f"descriptor {descriptor}({name!r}): pass a type info instance such as Types.INT(), "
            f"not the class {type_info.__name__}"
        )
    if not isinstance(type_info, TypeInformation):
        raise TypeError(
            f"descriptor {descriptor}({name!r}): expected a TypeInformation (Types.*()), "
            f"got {type_info!r}"
        )
    return type_info


class StateDescriptor(ABC):  # noqa: B024 - abstract by role: use one of the subclasses
    """Base of all state descriptors: ``name``, ``type_info`` (the stored type) and TTL.

    Example::

        >>> from flowrun.core.typeinfo import Types
        >>> from flowrun.state import StateTtlConfig, Time
        >>> d = ValueStateDescriptor("last", Types.LONG())
        >>> d.enable_time_to_live(StateTtlConfig.new_builder(Time.minutes(5)).build())
        >>> d.ttl_config.get_ttl().to_milliseconds()
        300000
    """

    #: The state interface this descriptor creates (for messages and compatibility checks).
    _state_kind = "State"

    def __init__(self, name: str, type_info: TypeInformation) -> None:
        cls = type(self).__name__
        self.name = _check_name(cls, name)
        self.type_info = _require_type(cls, name, type_info)
        self._ttl_config: StateTtlConfig | None = None

    def get_name(self) -> str:
        """The name of the state (unique per operator)."""
        return self.name

    def enable_time_to_live(self, ttl_config: StateTtlConfig) -> None:
        """Let the state expire after the configured time since its last access.

        With TTL each stored value (each list element, each map entry) carries the time of
        its last access, and expired values are not returned and are eventually removed.
        """
        if not isinstance(ttl_config, StateTtlConfig):
            raise TypeError(
                "enable_time_to_live() needs a StateTtlConfig "
                f"(StateTtlConfig.new_builder(Time...).build()), got {ttl_config!r}"
            )
        self._ttl_config = ttl_config

    @property
    def ttl_config(self) -> StateTtlConfig | None:
        """The TTL configuration, or None when the state does not expire."""
        return self._ttl_config

    def _key(self) -> tuple:
        return (type(self), self.name, self.type_info)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StateDescriptor) and other._key() == self._key()

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.name, self.type_info))

    def _describe(self) -> str:
        return f"{self._state_kind}<{self.type_info!r}>"

    def __repr__(self) -> str:
        ttl = "" if self._ttl_config is None else f", ttl={self._ttl_config!r}"
        return f"{type(self).__name__}({self.name!r}, {self.type_info!r}{ttl})"


class ValueStateDescriptor(StateDescriptor):
    """Describes a :class:`~flowrun.state.ValueState`: one value per key.

    Example::

        >>> from flowrun.core.typeinfo import Types
        >>> ValueStateDescriptor("count", Types.LONG())
        ValueStateDescriptor('count', Long)
    """

    _state_kind = "ValueState"

    def __init__(self, name: str, value_type_info: TypeInformation) -> None:
        super().__init__(name, value_type_info)


class ListStateDescriptor(StateDescriptor):
    """Describes a :class:`~flowrun.state.ListState`: a list of elements per key.

    ``type_info`` is ``Types.LIST(elem_type_info)``; ``elem_type_info`` is kept as well,
    since backends store (and expire) each element on its own.

    Example::

        >>> from flowrun.core.typeinfo import Types
        >>> ListStateDescriptor("events", Types.STRING()).type_info
        ListTypeInfo<String>
    """

    _state_kind = "ListState"

    def __init__(self, name: str, elem_type_info: TypeInformation) -> None:
        cls = type(self).__name__
        _check_name(cls, name)
        elem = _require_type(cls, name, elem_type_info, "an element type")
        super().__init__(name, Types.LIST(elem))
        self.elem_type_info = elem

    def _describe(self) -> str:
        return f"ListState<{self.elem_type_info!r}>"


class MapStateDescriptor(StateDescriptor):
    """Describes a :class:`~flowrun.state.MapState` (and broadcast state): a dict per key.

    ``type_info`` is ``Types.MAP(key_type_info, value_type_info)``. Map keys are stored with
    the canonical key encoding, so they must be str/int/float/bool/bytes/None/tuples/Rows
    (or of the declared key type) even when declared ``PICKLED_BYTE_ARRAY``.

    Example::

        >>> from flowrun.core.typeinfo import Types
        >>> d = MapStateDescriptor("totals", Types.STRING(), Types.DOUBLE())
        >>> d.key_type_info, d.value_type_info
        (String, Double)
    """

    _state_kind = "MapState"

    def __init__(
        self, name: str, key_type_info: TypeInformation, value_type_info: TypeInformation
    ) -> None:
        cls = type(self).__name__
        _check_name(cls, name)
        key = _require_type(cls, name, key_type_info, "a key type")
        value = _require_type(cls, name, value_type_info, "a value type")
        super().__init__(name, Types.MAP(key, value))
        self.key_type_info = key
        self.value_type_info = value

    def _describe(self) -> str:
        return f"MapState<{self.key_type_info!r}, {self.value_type_info!r}>"


class _CallableReduceFunction(ReduceFunction):
    """A plain callable ``(a, b) -> c`` as a ReduceFunction (PyFlink wraps them the same way)."""

    def __init__(self, func: Callable[[Any, Any], Any]) -> None:
        self._func = func

    def reduce(self, value1: Any, value2: Any) -> Any:
        return self._func(value1, value2)

    def __repr__(self) -> str:
        return f"ReduceFunction({self._func!r})"


class ReducingStateDescriptor(StateDescriptor):
    """Describes a :class:`~flowrun.state.ReducingState`: values folded with a reduce function.

    ``reduce_function`` is a :class:`~flowrun.core.functions.ReduceFunction` or a callable
    ``(value1, value2) -> value`` (wrapped into a ReduceFunction); ``type_info`` is the type of
    the values and of the reduced value.

    Example::

        >>> from flowrun.core.typeinfo import Types
        >>> d = ReducingStateDescriptor("sum", lambda a, b: a + b, Types.LONG())
        >>> d.get_reduce_function().reduce(2, 3)
        5
    """

    _state_kind = "ReducingState"

    def __init__(self, name: str, reduce_function: Any, type_info: TypeInformation) -> None:
        super().__init__(name, type_info)
        if not isinstance(reduce_function, ReduceFunction):
            if isinstance(reduce_function, type) or isinstance(reduce_function, Function):
                hint = (
                    f"; pass an instance: {reduce_function.__name__}()"
                    if isinstance(reduce_function, type)
                    and issubclass(reduce_function, ReduceFunction)
                    else ""
                )
                raise TypeError(
                    "ReducingStateDescriptor needs a ReduceFunction or a callable "
                    f"(value1, value2) -> value, got {reduce_function!r}{hint}"
                )
            if not callable(reduce_function):
                raise TypeError(
                    "ReducingStateDescriptor needs a ReduceFunction or a callable "
                    f"(value1, value2) -> value, got {reduce_function!r}"
                )
            reduce_function = _CallableReduceFunction(reduce_function)
        self._reduce_function = reduce_function

    def get_reduce_function(self) -> ReduceFunction:
        return self._reduce_function


class AggregatingStateDescriptor(StateDescriptor):
    """Describes an :class:`~flowrun.state.AggregatingState`: values folded into an accumulator.

    ``agg_function`` must be an :class:`~flowrun.core.functions.AggregateFunction` instance;
    ``state_type_info`` is the type of its *accumulator*, which is what is stored.

    Example::

        >>> from flowrun.core.functions import AggregateFunction
        >>> from flowrun.core.typeinfo import Types
        >>> class Avg(AggregateFunction):
        ...     def create_accumulator(self): return (0, 0)
        ...     def add(self, value, acc): return (acc[0] + value, acc[1] + 1)
        ...     def get_result(self, acc): return acc[0] / acc[1]
        ...     def merge(self, a, b): return (a[0] + b[0], a[1] + b[1])
        >>> d = AggregatingStateDescriptor("avg", Avg(), Types.TUPLE([Types.LONG(), Types.LONG()]))
        >>> d.type_info
        TupleTypeInfo(Long, Long)
    """

    _state_kind = "AggregatingState"

    def __init__(self, name: str, agg_function: Any, state_type_info: TypeInformation) -> None:
        super().__init__(name, state_type_info)
        if not isinstance(agg_function, AggregateFunction):
            hint = ""
            if isinstance(agg_function, type) and issubclass(agg_function, AggregateFunction):
                hint = f"; pass an instance: {agg_function.__name__}()"
            raise TypeError(
                "AggregatingStateDescriptor needs an AggregateFunction instance "
                f"(flowrun.core.functions.AggregateFunction), got {agg_function!r}{hint}"
            )
        self._agg_function = agg_function

    def get_agg_function(self) -> AggregateFunction:
        return self._agg_function


def check_compatible(existing: StateDescriptor, new: StateDescriptor) -> None:
    """Raise :class:`IncompatibleStateError` unless ``new`` may reuse ``existing``'s state.

    The runtime calls it when a state name is requested a second time in one operator. Both
    must be the same kind of state with the same types (the stored bytes depend on them) and
    the same TTL configuration (with TTL every stored value carries a timestamp, and two
    different expiry rules for one state would contradict each other). Reduce and aggregate
    functions are not compared: as in Flink, the first registration's function is used.

    Example::

        >>> from flowrun.core.typeinfo import Types
        >>> check_compatible(ListStateDescriptor("l", Types.INT()), ListStateDescriptor("l", Types.INT()))
        >>> try:
        ...     check_compatible(ValueStateDescriptor("l", Types.INT()), ListStateDescriptor("l", Types.INT()))
        ... except IncompatibleStateError as exc:
        ...     print(str(exc).split(":")[0])
        state 'l' is already registered as ValueState<Integer> and cannot be requested as ListState<Integer>
    """
    for d, what in ((existing, "existing"), (new, "new")):
        if not isinstance(d, StateDescriptor):
            raise TypeError(f"check_compatible() needs state descriptors; {what} is {d!r}")
    if existing.name != new.name:
        raise ValueError(
            f"check_compatible() compares registrations of one state; got the names "
            f"{existing.name!r} and {new.name!r}"
        )
    if type(existing) is not type(new) or existing.type_info != new.type_info:
        raise IncompatibleStateError(
            f"state {new.name!r} is already registered as {existing._describe()} and cannot "
            f"be requested as {new._describe()}: one state name holds one kind and type of state"
        )
    old_ttl, new_ttl = existing.ttl_config, new.ttl_config
    if old_ttl != new_ttl:
        if old_ttl is None or new_ttl is None:
            detail = (
                f"without TTL and requested with {new_ttl!r}"
                if old_ttl is None
                else f"with {old_ttl!r} and requested without TTL"
            )
        else:
            detail = f"with {old_ttl!r} and requested with {new_ttl!r}"
        raise IncompatibleStateError(
            f"state {new.name!r} is already registered {detail}; one state has one TTL "
            f"configuration (values with TTL are stored with a timestamp)"
        )
