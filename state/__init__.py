"""flowrun.state: keyed and operator state, as ``pyflink.datastream.state``.

Example::

    >>> from flowrun.core.typeinfo import Types
    >>> from flowrun.state import StateTtlConfig, Time, ValueStateDescriptor
    >>> d = ValueStateDescriptor("count", Types.LONG())
    >>> d.enable_time_to_live(StateTtlConfig.new_builder(Time.hours(1)).build())
"""

# --- state API: descriptors, state interfaces, TTL, serializer errors -----------------------
from .descriptors import (
    AggregatingStateDescriptor,
    IncompatibleStateError,
    ListStateDescriptor,
    MapStateDescriptor,
    ReducingStateDescriptor,
    StateDescriptor,
    ValueStateDescriptor,
)
from .serializers import StateTypeError
from .state import (
    AggregatingState,
    AppendingState,
    BroadcastState,
    ListState,
    MapState,
    MergingState,
    ReadOnlyBroadcastState,
    ReducingState,
    State,
    ValueState,
)
from .ttl import StateTtlConfig, Time

__all__ = [
    "AggregatingState",
    "AggregatingStateDescriptor",
    "AppendingState",
    "BroadcastState",
    "IncompatibleStateError",
    "ListState",
    "ListStateDescriptor",
    "MapState",
    "MapStateDescriptor",
    "MergingState",
    "ReadOnlyBroadcastState",
    "ReducingState",
    "ReducingStateDescriptor",
    "State",
    "StateDescriptor",
    "StateTtlConfig",
    "StateTypeError",
    "Time",
    "ValueState",
    "ValueStateDescriptor",
]
# --- end of state API (backend names go below, as ``__all__ += [...]``) ----------------------

# --- state backends and operator state ------------------------------------------------------
from .backends import (  # noqa: E402
    EmbeddedLmdbStateBackend,
    HashMapStateBackend,
    StateBackend,
    StateBackendError,
    StateMigrationError,
)
from .operator_state import OperatorStateStore  # noqa: E402

__all__ += [
    "EmbeddedLmdbStateBackend",
    "HashMapStateBackend",
    "OperatorStateStore",
    "StateBackend",
    "StateBackendError",
    "StateMigrationError",
]
