"""Shared fixtures: every test checks that no shared-memory segment is left behind."""

from __future__ import annotations

import time

import pytest
from flowrun_testing import run_flowrun, shm_segments


@pytest.fixture
def cli():
    return run_flowrun


@pytest.fixture(autouse=True)
def no_segment_leak():
    """Every test: no new flowrun segment in /dev/shm once it is over."""
    before = shm_segments()
    yield
    deadline = time.monotonic() + 5
    leaked = shm_segments() - before
    while leaked and time.monotonic() < deadline:
        time.sleep(0.05)
        leaked = shm_segments() - before
    assert not leaked, f"shared-memory segments left behind: {leaked}"
