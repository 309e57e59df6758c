"""Drive sink writers through the checkpoint contract, as the runtime does, with real crashes.

Shared by the exactly-once sink tests (file sink, two-phase commit, write-ahead log): the
sink subtasks of one attempt (:class:`Job`), the runtime's redistribution of their
``snapshot_state`` lists on restore (:func:`redistribute_states`), and a crash that is a real
``SIGKILL`` of a forked child (:func:`crash`).
"""

from __future__ import annotations

import os
import pickle
import signal
import traceback
from collections.abc import Callable
from typing import Any

from flowrun.core.typeinfo import Types
from flowrun.state import ListStateDescriptor
from flowrun.state.operator_state import OperatorStateStore, redistribute

__all__ = ["Job", "crash", "redistribute_states"]


def redistribute_states(old: list[list[Any]], new_parallelism: int) -> list[list[Any]]:
    """What the runtime does with the sink's snapshot_state lists: operator list state
    (SPLIT_DISTRIBUTE) per old subtask, snapshotted, redistributed, restored."""
    descriptor = ListStateDescriptor("_flowrun_sink_writer_state", Types.PICKLED_BYTE_ARRAY())
    streams = []
    for elements in old:
        store = OperatorStateStore("sink")
        store.get_list_state(descriptor).update(list(elements))
        streams.append(store.snapshot())
    shares = []
    for mine in redistribute(streams, new_parallelism):
        store = OperatorStateStore("sink")
        store.restore(mine)
        shares.append(list(store.get_list_state(descriptor).get()))
    return shares


class Job:
    """The sink subtasks of one attempt: records are dealt out round-robin per batch."""

    uid = "out"  #: the operator uid the writers are created with
    flush = True  #: flush every writer after each batch (the runtime's timer)

    def __init__(self, sink, parallelism: int, restored: list[list[Any]] | None = None) -> None:
        self.writers = [
            sink.create_writer(i, parallelism, "job-1", self.uid) for i in range(parallelism)
        ]
        for i, writer in enumerate(self.writers):
            writer.set_checkpointing_enabled(True)
            if restored is not None:
                writer.restore_state(restored[i])
            writer.open()

    def write(self, records: list[str]) -> None:
        p = len(self.writers)
        for i, writer in enumerate(self.writers):
            writer.write(records[i::p])
            if self.flush:
                writer.flush()

    def checkpoint(self, checkpoint_id: int, notify: bool = True) -> list[list[Any]]:
        states = [writer.snapshot_state(checkpoint_id) for writer in self.writers]
        if notify:
            self.notify(checkpoint_id)
        return states

    def notify(self, checkpoint_id: int, subtasks: list[int] | None = None) -> None:
        for i, writer in enumerate(self.writers):
            if subtasks is None or i in subtasks:
                writer.notify_checkpoint_complete(checkpoint_id)

    def finish(self) -> None:
        for writer in self.writers:
            writer.finish()


def crash(attempt: Callable[[], Any], may_die_inside: bool = False) -> Any:
    """Run ``attempt`` in a forked child that then dies by SIGKILL (if it did not already);
    return its result."""
    result_path = f"/tmp/flowrun-crash-{os.getpid()}-{id(attempt)}.pickle"
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child never returns
        try:
            payload: Any = ("ok", attempt())
        except BaseException:
            payload = ("error", traceback.format_exc())
        with open(result_path, "wb") as f:
            pickle.dump(payload, f)
        os.kill(os.getpid(), signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    if not os.path.exists(result_path):
        assert may_die_inside, "the attempt died before it returned"
        return None  # killed inside ``attempt``
    with open(result_path, "rb") as f:
        kind, value = pickle.load(f)
    os.unlink(result_path)
    assert kind == "ok", value
    return value
