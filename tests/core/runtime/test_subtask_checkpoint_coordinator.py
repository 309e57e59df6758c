"""The subtask side of checkpoints: acknowledgement order and cancelled LMDB copies.

Real parts: an LMDB keyed backend, its native copy thread, checkpoint storage on disk and a
real pipe as the control channel. Only the task around the coordinator is a stand-in (it
needs no operators or network for these steps).
"""

from __future__ import annotations

import os
import threading
import time
from multiprocessing import Pipe
from types import SimpleNamespace

import pytest

from flowrun.core.runtime.checkpoint_storage import StateHandle, read_state_file
from flowrun.core.runtime.subtask_checkpoint_coordinator import (
    SubtaskCheckpointCoordinator,
    _PendingSnapshot,
)
from flowrun.core.typeinfo import Types
from flowrun.state import ValueStateDescriptor
from flowrun.state.backends import EmbeddedLmdbStateBackend
from flowrun.state.key_groups import KeyGroupRange, assign_to_key_group

MAX_P = 128


@pytest.fixture
def backend(tmp_path):
    b = EmbeddedLmdbStateBackend(str(tmp_path / "env")).create_keyed_backend(
        "op", KeyGroupRange(0, MAX_P - 1), MAX_P
    )
    state = b.get_state(ValueStateDescriptor("n", Types.LONG()))
    for key in range(1000):
        b.set_current_key(key, assign_to_key_group(key, MAX_P))
        state.update(key)
    yield b
    b.dispose()


def _coordinator():
    ours, theirs = Pipe()
    task = SimpleNamespace(operators=[], info=SimpleNamespace(index=0, checkpointing={}))
    task.control = ours
    return SubtaskCheckpointCoordinator(task), theirs


def _snapshot(coordinator, cid: int, location: str, keyed) -> None:
    rng = KeyGroupRange(0, MAX_P - 1) if keyed is not None else None
    parts = [("op-uid-0123456789ab", [], keyed, [], rng)]
    started = time.perf_counter()
    steps = coordinator._write(cid, location, parts, started, 0.0, None)
    coordinator._pending.append(_PendingSnapshot(cid, steps, started, 0.0, None))


def _held_copy(backend, location: str, release: threading.Event):
    """A native copy whose upload waits for ``release`` before copying."""
    from flowrun.core.runtime.checkpoint_storage import write_state_file_from

    def write(copy):
        release.wait(10)
        return write_state_file_from(location, "op-0-state.mdb", copy)

    return backend.native_checkpoint(write)


def _acks(channel, timeout: float = 0.0) -> list:
    out = []
    while channel.poll(timeout):
        out.append(channel.recv())
        timeout = 0.0
    return [m for m in out if m[0] == "ack"]


def test_a_later_snapshot_acknowledges_while_an_earlier_copy_is_running(backend, tmp_path):
    coordinator, channel = _coordinator()
    first, second = tmp_path / "chk-4", tmp_path / "chk-5"
    first.mkdir()
    second.mkdir()
    release = threading.Event()
    copy = _held_copy(backend, str(first), release)
    _snapshot(coordinator, 4, str(first), copy)
    _snapshot(coordinator, 5, str(second), None)  # like the final checkpoint: no keyed state
    for _ in range(10):
        coordinator.pump()
    acks = _acks(channel)
    assert [a[1] for a in acks] == [5], "the snapshot behind a running copy was held up"
    assert coordinator.waiting and not coordinator.busy
    release.set()
    copy.join()
    assert coordinator.busy
    coordinator.complete_all()
    acks = _acks(channel)
    assert [a[1] for a in acks] == [4]
    (entry,) = acks[0][2]["operators"]["op-uid-0123456789ab"]["keyed"]
    handle = StateHandle.from_json(entry["handle"])
    assert entry["format"] == "lmdb" and handle.size > 0
    read_state_file(str(first), handle)  # size and checksum agree with the file
    assert not coordinator.waiting


def test_an_aborted_copy_leaves_no_file_and_sends_no_ack(backend, tmp_path):
    coordinator, channel = _coordinator()
    location = tmp_path / "chk-4"
    location.mkdir()
    release = threading.Event()
    copy = _held_copy(backend, str(location), release)
    _snapshot(coordinator, 4, str(location), copy)
    coordinator.pump()  # the snapshot now waits for its copy thread
    threading.Timer(0.05, release.set).start()
    coordinator.abort(4)  # the copy is cancelled: no checksum, no fsync, no file
    assert copy.done and not coordinator.waiting
    assert os.listdir(location) == []
    assert _acks(channel, 0.1) == []
    # the backend goes on: its read transaction ended, later copies work
    later = tmp_path / "chk-5"
    later.mkdir()
    done = threading.Event()
    done.set()
    assert _held_copy(backend, str(later), done).result().size > 0
