"""IdleWait: naps only while doorbell messages stream in and a CPU is idle, else blocks."""

from __future__ import annotations

import ctypes
import os
import threading
import time

import pytest

from flowrun.network.idle_wait import BUSY_GAP_S, NAP_TIMER_SLACK_NS, IdleWait

_PR_SET_TIMERSLACK = 29
_PR_GET_TIMERSLACK = 30


@pytest.fixture
def pipe():
    r, w = os.pipe()
    yield r, w
    os.close(r)
    os.close(w)


def _loadavg(tmp_path, running: int) -> str:
    path = tmp_path / "loadavg"
    path.write_text(f"0.50 0.40 0.30 {running}/321 4242\n")
    return str(path)


#: a slow notion of "busy" for the tests that need a task to nap: messages 40 ms apart
#: count as a stream, so that a stall of the test process cannot end the naps
SLOW_BUSY_GAP = 0.2


def _stream(waiter: IdleWait, interval: float = 0.0, messages: int = 8) -> None:
    """Doorbell traffic (each call is a drain that found messages)."""
    for _ in range(messages):
        time.sleep(interval)
        waiter.on_messages()


def _napping_waiter(r: int, tmp_path) -> IdleWait:
    waiter = IdleWait(r, _loadavg(tmp_path, 1), busy_gap=SLOW_BUSY_GAP)
    _stream(waiter, interval=0.04)
    return waiter


def test_a_quiet_task_blocks(pipe, tmp_path):
    r, _w = pipe
    waiter = IdleWait(r, _loadavg(tmp_path, 1))
    assert not waiter.napping()
    start = time.perf_counter()
    assert waiter.select([r], 0.05) == []
    assert time.perf_counter() - start >= 0.04  # it waited for the whole timeout
    waiter.close()


def test_a_busy_task_with_an_idle_cpu_naps(pipe, tmp_path):
    r, w = pipe
    waiter = _napping_waiter(r, tmp_path)
    assert waiter.napping()
    start = time.perf_counter()
    assert waiter.select([r], 5.0) == []  # back after a nap, nothing pending
    assert time.perf_counter() - start < 2.5
    os.write(w, b"x" * 16)
    assert waiter.select([r], 1.0) == [r]  # the nap found the pending message
    waiter.close()


def test_other_descriptors_still_wake_a_napping_task(pipe, tmp_path):
    r, _w = pipe
    control_r, control_w = os.pipe()
    try:
        waiter = _napping_waiter(r, tmp_path)
        os.write(control_w, b"c")
        assert waiter.select([control_r, r], 1.0) == [control_r]
        waiter.close()
    finally:
        os.close(control_r)
        os.close(control_w)


def test_no_nap_without_a_cpu_to_spare(pipe, tmp_path):
    r, _w = pipe
    cpus = len(os.sched_getaffinity(0))
    waiter = IdleWait(r, _loadavg(tmp_path, cpus + 1), busy_gap=SLOW_BUSY_GAP)
    _stream(waiter, interval=0.04)
    assert not waiter.napping()
    waiter.close()


def test_no_nap_when_the_loadavg_cannot_be_read(pipe, tmp_path):
    r, _w = pipe
    waiter = IdleWait(r, str(tmp_path / "missing"), busy_gap=SLOW_BUSY_GAP)
    _stream(waiter, interval=0.04)
    assert not waiter.napping()
    waiter.close()


def test_naps_end_when_the_stream_pauses(pipe, tmp_path):
    r, _w = pipe
    waiter = _napping_waiter(r, tmp_path)
    assert waiter.napping()
    time.sleep(2 * SLOW_BUSY_GAP)  # more than twice the average gap: the stream paused
    assert not waiter.napping()
    waiter.close()


def test_a_trickle_never_naps(pipe, tmp_path):
    r, _w = pipe
    waiter = IdleWait(r, _loadavg(tmp_path, 1))
    for _ in range(6):
        time.sleep(2 * BUSY_GAP_S)
        waiter.on_messages()
    assert not waiter.napping()
    waiter.close()


def test_a_waiting_thread_gets_a_fine_timer_slack() -> None:
    """Naps must last about what they ask for: the kernel's default slack (50 us) made a
    10 us nap last ~85 us, and the producer then waited on its consumer's late answers."""
    libc = ctypes.CDLL(None)
    seen: list[int] = []

    def build() -> None:
        libc.prctl(_PR_SET_TIMERSLACK, 50_000, 0, 0, 0)  # the kernel's default
        before = libc.prctl(_PR_GET_TIMERSLACK, 0, 0, 0, 0)
        r, w = os.pipe()
        try:
            IdleWait(r)
            seen.extend([before, libc.prctl(_PR_GET_TIMERSLACK, 0, 0, 0, 0)])
        finally:
            os.close(r)
            os.close(w)

    thread = threading.Thread(target=build)
    thread.start()
    thread.join()
    assert seen[0] == 50_000
    assert seen[1] == NAP_TIMER_SLACK_NS
