"""The broadcast state pattern: a data stream connected with a broadcast stream.

Every parallel instance receives every element of the broadcast side (the edge
uses the BROADCAST partitioner) and may update the broadcast state, a map held in
operator state; the data side sees that state read-only. Because all instances
apply the same updates in their own process, the broadcast state is the same on
every subtask -- which is also why a restore takes one copy for all of them.
"""

from __future__ import annotations

import time
from typing import Any

from .keyed_operators import KeyedOperator, _KeyedContext
from .operators import StreamOperator, _emit_results
from .timer_service import MIN_WATERMARK

__all__ = ["BroadcastProcessOperator", "KeyedBroadcastProcessOperator", "ReadOnlyBroadcastView"]


class ReadOnlyBroadcastView:
    """The data side's view of a broadcast state: reads only."""

    __slots__ = ("_state",)

    def __init__(self, state: Any) -> None:
        self._state = state

    def get(self, key: Any) -> Any:
        return self._state.get(key)

    def contains(self, key: Any) -> bool:
        return self._state.contains(key)

    def items(self) -> Any:
        return self._state.items()

    def keys(self) -> Any:
        return self._state.keys()

    def values(self) -> Any:
        return self._state.values()

    def is_empty(self) -> bool:
        return self._state.is_empty()

    def __getitem__(self, key: Any) -> Any:
        return self._state.get(key)

    def __contains__(self, key: Any) -> bool:
        return self._state.contains(key)

    def __iter__(self) -> Any:
        return iter(self._state.keys())

    def _read_only(self, *_args: Any) -> None:
        raise RuntimeError(
            "broadcast state is read-only in process_element(); change it in "
            "process_broadcast_element()"
        )

    put = put_all = remove = clear = __setitem__ = __delitem__ = _read_only


class _BroadcastContexts:
    """Both contexts of a broadcast process function, bound to the operator's state store."""

    def __init__(self, op: StreamOperator, descriptors: list) -> None:
        self._op = op
        self._names = {d.name for d in descriptors}

    def state(self, descriptor: Any) -> Any:
        if descriptor.name not in self._names:
            raise ValueError(
                f"broadcast state {descriptor.name!r} was not declared in broadcast(...); "
                f"declared: {sorted(self._names)}"
            )
        return self._op.ctx.operator_state_store.get_broadcast_state(descriptor)


class _ReadWriteContext:
    __slots__ = ("_contexts",)

    def __init__(self, contexts: _BroadcastContexts) -> None:
        self._contexts = contexts

    def get_broadcast_state(self, state_descriptor: Any) -> Any:
        return self._contexts.state(state_descriptor)

    def timestamp(self) -> int | None:
        return None

    def current_processing_time(self) -> int:
        return time.time_ns() // 1_000_000

    def current_watermark(self) -> int:
        return MIN_WATERMARK


class _ReadOnlyContext(_ReadWriteContext):
    __slots__ = ()

    def get_broadcast_state(self, state_descriptor: Any) -> Any:
        return ReadOnlyBroadcastView(self._contexts.state(state_descriptor))


class BroadcastProcessOperator(StreamOperator):
    """``stream.connect(broadcast_stream).process(BroadcastProcessFunction)``."""

    def __init__(self, name: str, function: Any, descriptors: list) -> None:
        self.name = name
        self.function = function
        self.descriptors = descriptors

    def open(self) -> None:
        super().open()
        contexts = _BroadcastContexts(self, self.descriptors)
        self._ctxs = [_ReadOnlyContext(contexts), _ReadWriteContext(contexts)]
        self._fns = [self.function.process_element, self.function.process_broadcast_element]

    def process(self, records: list, input_index: int = 0) -> None:
        fn, ctx, out = self._fns[input_index], self._ctxs[input_index], []
        record = None
        try:
            for record in records:
                _emit_results(fn(record, ctx), out)
        except Exception as exc:
            raise self.fail(record, exc) from exc
        if out:
            self.output.emit(out)


class _KeyedReadOnlyContext(_KeyedContext):
    __slots__ = ("_contexts",)

    def __init__(self, op: KeyedOperator, contexts: _BroadcastContexts) -> None:
        super().__init__(op)
        self._contexts = contexts

    def get_broadcast_state(self, state_descriptor: Any) -> Any:
        return ReadOnlyBroadcastView(self._contexts.state(state_descriptor))

    def current_processing_time(self) -> int:
        return time.time_ns() // 1_000_000

    def current_watermark(self) -> int:
        return self._op.timers.watermark


class KeyedBroadcastProcessOperator(KeyedOperator):
    """``keyed.connect(broadcast_stream).process(KeyedBroadcastProcessFunction)``."""

    def __init__(self, name: str, function: Any, key_selector: Any, descriptors: list) -> None:
        super().__init__(name, function, [key_selector])
        self.descriptors = descriptors

    def open(self) -> None:
        super().open()
        contexts = _BroadcastContexts(self, self.descriptors)
        self._ctx = _KeyedReadOnlyContext(self, contexts)
        self._bctx = _ReadWriteContext(contexts)
        self._steps = [self.function.process_element]

    def process(self, records: list, input_index: int = 0) -> None:
        if input_index == 0:
            super().process(records, 0)  # keyed data side: current key per record
            return
        fn, ctx, out = self.function.process_broadcast_element, self._bctx, []
        record = None
        try:  # broadcast side: no key
            for record in records:
                _emit_results(fn(record, ctx), out)
        except Exception as exc:
            raise self.fail(record, exc) from exc
        if out:
            self.output.emit(out)

    def on_timer(self, timestamp: int, domain: Any, out: list) -> None:
        self._ctx._domain = domain
        try:
            _emit_results(self.function.on_timer(timestamp, self._ctx), out)
        finally:
            self._ctx._domain = None
