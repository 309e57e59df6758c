"""BackgroundCall: the thread behind a snapshot's slow steps (LMDB copies, state files)."""

from __future__ import annotations

import threading

import pytest

from flowrun.state.backends.background import BackgroundCall


def test_the_value_and_a_wake_up_on_the_thread_once_done():
    release = threading.Event()
    woken: list[str] = []
    call = BackgroundCall(lambda: release.wait(10) and 42, "test-call")
    call.on_done = lambda: woken.append(threading.current_thread().name)
    call.start()
    assert not call.done and woken == []
    release.set()
    assert call.result() == 42
    assert call.done and woken == ["test-call"]


def test_an_exception_is_raised_by_result_and_still_wakes():
    def fail():
        raise OSError("disk full")

    woken = threading.Event()
    call = BackgroundCall(fail, "test-fail")
    call.on_done = woken.set
    call.start()
    assert woken.wait(10)
    with pytest.raises(OSError, match="disk full"):
        call.result()
