"""The checkpoint coordinator's decisions, driven directly with an injected clock.

The end-to-end behaviour (barriers, snapshots, restores) is tested with real processes in
``test_checkpointing.py``; here every trigger/abort/complete rule is pinned down exactly.
"""

from __future__ import annotations

import os

import pytest

from flowrun.core.config import Configuration
from flowrun.core.runtime.checkpoint_barrier_handler import FLAG_SAVEPOINT, FLAG_UNALIGNED
from flowrun.core.runtime.checkpoint_coordinator import (
    CheckpointCoordinator,
    CheckpointFailure,
    TaskRef,
)
from flowrun.core.runtime.checkpoint_storage import read_metadata


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _coordinator(tmp_path, clock, **options):
    conf = Configuration()
    conf.set_string("execution.checkpointing.interval", str(options.pop("interval", 1000)))
    for key, value in options.items():
        conf.set_string(key.replace("_", "-").replace("--", "."), str(value))
    tasks = [
        TaskRef(0, 0, 1, True, [("src", "Source", None, 128)]),
        TaskRef(1, 0, 2, False, [("map", "Map", "m", 128)]),
        TaskRef(2, 1, 2, False, [("map", "Map", "m", 128)]),
    ]
    sent: list = []
    coordinator = CheckpointCoordinator(
        conf,
        "job",
        tasks,
        lambda task, message: sent.append((task, message)),
        str(tmp_path),
        clock=clock,
    )
    return coordinator, sent


def _ack(coordinator, cid, tasks=(0, 1, 2)):
    for task in tasks:
        coordinator.on_ack(task, cid, {"operators": {}, "bytes": 10, "sync_ms": 1.0})


def _triggers(sent):
    return [(task, m[1][0], m[1][2]) for task, m in sent if m[0] == "trigger_checkpoint"]


def test_periodic_trigger_goes_to_sources_and_completes_with_all_acks(tmp_path):
    clock = Clock()
    c, sent = _coordinator(tmp_path, clock)
    c.poll()
    assert _triggers(sent) == []  # not before the first interval
    clock.now += 1.0
    c.poll()
    assert _triggers(sent) == [(0, 1, 0)]
    _ack(c, 1, (0, 1))
    assert 1 in c.pending
    _ack(c, 1, (2,))
    assert c.latest().checkpoint_id == 1
    metadata, _ = read_metadata(c.latest().location)
    assert set(metadata["operators"]) == {"src", "map"}
    assert len(metadata["operators"]["map"]["subtasks"]) == 2
    assert [m for _, m in sent if m[0] == "notify_complete"] == [("notify_complete", 1)] * 3


def test_max_concurrent_and_min_pause(tmp_path):
    clock = Clock()
    c, sent = _coordinator(tmp_path, clock, **{"execution.checkpointing.min-pause": "500"})
    clock.now += 1.0
    c.poll()
    clock.now += 1.0
    c.poll()  # checkpoint 1 still pending: max concurrent 1
    assert [t[1] for t in _triggers(sent)] == [1]
    _ack(c, 1)
    clock.now += 0.1
    c.poll()  # min pause of 500 ms after completion
    assert [t[1] for t in _triggers(sent)] == [1]
    clock.now += 0.5
    c.poll()
    assert [t[1] for t in _triggers(sent)] == [1, 2]


def test_timeout_and_tolerable_failures(tmp_path):
    clock = Clock()
    c, sent = _coordinator(
        tmp_path,
        clock,
        **{
            "execution.checkpointing.timeout": "2000",
            "execution.checkpointing.tolerable-failed-checkpoints": "1",
        },
    )
    clock.now += 1.0
    c.poll()
    clock.now += 2.0
    c.poll()  # checkpoint 1 expired: tolerated; checkpoint 2 triggered
    assert ("abort_checkpoint", 1) in [m for _, m in sent]
    assert not os.path.exists(os.path.join(str(tmp_path), "job", "chk-1"))
    assert c.failed_in_a_row == 1  # tolerated
    with pytest.raises(CheckpointFailure, match="tolerable failure threshold"):
        c.on_decline(1, 2, "disk full")  # the second failure in a row is one too many


def test_a_completed_checkpoint_resets_the_failure_count_and_subsumes_older(tmp_path):
    clock = Clock()
    c, sent = _coordinator(
        tmp_path, clock, **{"execution.checkpointing.max-concurrent-checkpoints": "2"}
    )
    clock.now += 1.0
    c.poll()
    clock.now += 1.0
    c.poll()
    assert set(c.pending) == {1, 2}
    _ack(c, 2)
    assert 1 not in c.pending and ("abort_checkpoint", 1) in [m for _, m in sent]
    assert c.failed_in_a_row == 0


def test_ended_tasks_get_barriers_from_their_sources_up_to_the_final_checkpoint(tmp_path):
    clock = Clock()
    c, sent = _coordinator(tmp_path, clock)
    clock.now += 1.0
    c.poll()
    c.on_end_reached(2)  # its barrier follows its END_OF_DATA: no direct trigger
    assert _triggers(sent) == [(0, 1, 0)]
    _ack(c, 1)
    c.on_end_reached(0)  # a source that ended is still triggered (it emits the barrier)
    clock.now += 1.0
    c.poll()
    assert [t for t, n, _ in _triggers(sent) if n == 2] == [0]
    _ack(c, 2)
    c.on_end_reached(1)
    assert c.all_ended
    clock.now += 1.0
    c.poll()
    assert 3 not in c.pending  # no periodic checkpoint once every task ended
    cid = c.trigger(final=True)
    assert [t for t, n, _ in _triggers(sent) if n == cid] == [0]
    _ack(c, cid)
    assert c.final_done


def test_savepoints_are_aligned_and_do_not_count_as_checkpoints(tmp_path):
    clock = Clock()
    c, sent = _coordinator(tmp_path, clock, **{"execution.checkpointing.unaligned": "true"})
    done = []
    cid = c.trigger(savepoint_dir=str(tmp_path / "sp"), on_done=lambda cp, err: done.append(cp))
    flags = _triggers(sent)[0][2]
    assert flags & FLAG_SAVEPOINT and not flags & FLAG_UNALIGNED
    _ack(c, cid)
    assert done[0].is_savepoint and c.latest() is None
    assert os.path.basename(done[0].location).startswith("savepoint-")


def test_aligned_checkpoint_timeout_switches_to_unaligned(tmp_path):
    clock = Clock()
    c, sent = _coordinator(
        tmp_path,
        clock,
        **{
            "execution.checkpointing.unaligned": "true",
            "execution.checkpointing.aligned-checkpoint-timeout": "300",
        },
    )
    clock.now += 1.0
    c.poll()
    assert _triggers(sent) == [(0, 1, 0)]  # starts aligned
    clock.now += 0.29
    c.poll()
    assert len(_triggers(sent)) == 1
    clock.now += 0.02
    c.poll()
    assert ("abort_checkpoint", 1) in [m for _, m in sent]
    assert _triggers(sent)[-1] == (0, 2, FLAG_UNALIGNED)
    assert c.failed_in_a_row == 0
