"""Legacy sinks: a ``SinkFunction`` called once per record, for ``DataStream.add_sink``.

Flink's ``SinkFunction`` is the record-at-a-time sink interface that ``addSink`` takes
(PyFlink only wraps Java ones). flowrun runs Python subclasses: ``invoke(value, context)`` is
called for every record, ``open(runtime_context)`` first and ``close()`` last, and ``finish()``
when bounded input has ended (Flink 1.14+). ``add_sink`` wraps the function in a
:class:`SinkFunctionSink`, so it runs through the same sink contract as ``sink_to`` sinks; each
subtask works on its own copy of the function, as each Flink subtask deserializes its own.

A function that also has ``notify_checkpoint_complete(checkpoint_id)`` (Flink's
``CheckpointListener``) is notified of completed checkpoints. For exactly-once output, subclass
:class:`~flowrun.core.connectors.two_phase_commit.TwoPhaseCommitSinkFunction`.

Example::

    >>> class Collect(SinkFunction):
    ...     def open(self, runtime_context):
    ...         self.seen = []
    ...     def invoke(self, value, context):
    ...         self.seen.append(value * 10)
    >>> sink = SinkFunctionSink(Collect())
    >>> writer = sink.create_writer(0, 1, "job-1", "collect")
    >>> writer.open()
    >>> writer.write([1, 2])
    >>> writer.function.seen
    [10, 20]
    >>> sink_of(Collect).__class__
    Traceback (most recent call last):
    ...
    TypeError: add_sink() got the class Collect; pass an instance: Collect()
"""

from __future__ import annotations

import copy
import time
from typing import Any

from flowrun.core.connectors.base import Sink, SinkWriter
from flowrun.core.functions import Function, RuntimeContext
from flowrun.state.key_groups import compute_default_max_parallelism

__all__ = ["SinkFunction", "SinkFunctionSink", "SinkFunctionWriter", "sink_of"]

#: Flink's ``Long.MIN_VALUE`` watermark: no watermark has been seen.
_NO_WATERMARK = -(2**63)


class SinkFunction(Function):
    """A record-at-a-time sink (Flink's ``SinkFunction`` / ``RichSinkFunction``)."""

    class Context:
        """What ``invoke`` may ask besides the value (Flink's ``SinkFunction.Context``)."""

        def __init__(self, watermark: int = _NO_WATERMARK, timestamp: int | None = None) -> None:
            self._watermark = watermark
            self._timestamp = timestamp

        def current_processing_time(self) -> int:
            """Wall-clock time in epoch milliseconds."""
            return int(time.time() * 1000)

        def current_watermark(self) -> int:
            """The current event-time watermark (``-2**63`` when none has arrived)."""
            return self._watermark

        def timestamp(self) -> int | None:
            """The record's event timestamp, or None when the sink does not know it."""
            return self._timestamp

    def invoke(self, value: Any, context: SinkFunction.Context) -> None:
        """Write one record."""
        raise NotImplementedError(f"{type(self).__name__} must implement invoke(value, context)")

    def finish(self) -> None:  # noqa: B027 - an optional hook
        """Bounded input has ended; flush what is buffered (Flink 1.14's ``finish``)."""

    # -- the sink contract, as the writer drives it (overridden by two-phase commit) ----------
    def _flowrun_initialize(self) -> None:
        """A fresh start (no restore): called before ``open``."""

    def _flowrun_restore(self, state: list[Any]) -> None:
        if state:
            raise ValueError(
                f"{type(self).__name__} keeps no checkpoint state, but the checkpoint holds "
                f"{len(state)} state element(s) for it (was this sink's uid used by another "
                "sink?)"
            )

    def _flowrun_invoke(self, records: list[Any], context: SinkFunction.Context) -> None:
        invoke = self.invoke
        for value in records:
            invoke(value, context)

    def _flowrun_snapshot(self, checkpoint_id: int) -> list[Any]:
        return []

    def _flowrun_notify_complete(self, checkpoint_id: int) -> None:
        listener = getattr(self, "notify_checkpoint_complete", None)
        if callable(listener):
            listener(checkpoint_id)

    def _flowrun_notify_aborted(self, checkpoint_id: int) -> None:
        listener = getattr(self, "notify_checkpoint_aborted", None)
        if callable(listener):
            listener(checkpoint_id)

    def _flowrun_finish(self) -> None:
        self.finish()

    def _flowrun_abort(self) -> None:
        """The job failed: nothing to undo for a plain sink function."""


class SinkFunctionWriter(SinkWriter):
    """Drives one subtask's copy of a :class:`SinkFunction` through the sink contract."""

    def __init__(self, function: SinkFunction, runtime_context: RuntimeContext) -> None:
        self.function = function
        self.runtime_context = runtime_context
        self._restored = False
        self._opened = False
        self._context = SinkFunction.Context()

    def restore_state(self, state: list[Any]) -> None:
        self._restored = True
        self.function._flowrun_restore(list(state))

    def open(self) -> None:
        if not self._restored:
            self.function._flowrun_initialize()
        self.function.open(self.runtime_context)
        self._opened = True

    def write(self, records: list[Any]) -> None:
        self.function._flowrun_invoke(records, self._context)

    def snapshot_state(self, checkpoint_id: int) -> list[Any]:
        return self.function._flowrun_snapshot(checkpoint_id)

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        self.function._flowrun_notify_complete(checkpoint_id)

    def notify_checkpoint_aborted(self, checkpoint_id: int) -> None:
        self.function._flowrun_notify_aborted(checkpoint_id)

    def finish(self) -> None:
        try:
            self.function._flowrun_finish()
        finally:
            self._close()

    def abort(self) -> None:
        try:
            self.function._flowrun_abort()
        finally:
            self._close()

    def _close(self) -> None:
        if self._opened:
            self._opened = False
            self.function.close()


class SinkFunctionSink(Sink):
    """Adapts a :class:`SinkFunction` to the sink contract (what ``add_sink`` builds)."""

    def __init__(self, function: SinkFunction, name: str | None = None) -> None:
        self.function = function
        self.name = name or f"Sink: {type(function).__name__}"

    def create_writer(
        self, subtask_index: int, parallelism: int, job_id: str, operator_uid: str
    ) -> SinkFunctionWriter:
        try:
            function = copy.deepcopy(self.function)
        except Exception as exc:
            raise TypeError(
                f"{type(self.function).__name__} cannot be copied for each subtask ({exc}); a "
                "sink function must be picklable before open() -- create connections and "
                "files in open()"
            ) from exc
        context = RuntimeContext(
            self.name,
            subtask_index,
            parallelism,
            compute_default_max_parallelism(parallelism),
        )
        return SinkFunctionWriter(function, context)

    def __repr__(self) -> str:
        return f"SinkFunctionSink({self.function!r})"


def sink_of(sink_func: Any) -> Sink:
    """What ``add_sink`` runs: a SinkFunction wrapped as a Sink; a Sink as it is."""
    if isinstance(sink_func, SinkFunction):
        return SinkFunctionSink(sink_func)
    if isinstance(sink_func, Sink):
        return sink_func
    if isinstance(sink_func, type) and issubclass(sink_func, (SinkFunction, Sink)):
        raise TypeError(
            f"add_sink() got the class {sink_func.__name__}; pass an instance: "
            f"{sink_func.__name__}()"
        )
    raise TypeError(
        "add_sink() needs a SinkFunction instance (subclass SinkFunction or "
        f"TwoPhaseCommitSinkFunction and implement invoke), got {sink_func!r}"
    )
