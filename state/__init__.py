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
# Imported on first use (PEP 562): the backends pull in LMDB, the snapshot format and
# pyarrow.compute, which the JobManager process (building and supervising the job) never
# needs; only subtasks do, and the fork server has them loaded already.
from flowrun.core.lazy_exports import lazy_attributes  # noqa: E402

_LAZY = {
    "EmbeddedLmdbStateBackend": ".backends",
    "HashMapStateBackend": ".backends",
    "StateBackend": ".backends",
    "StateBackendError": ".backends",
    "StateMigrationError": ".backends",
    "OperatorStateStore": ".operator_state",
}
__all__ += list(_LAZY)


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())
