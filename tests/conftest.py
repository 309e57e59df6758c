"""Shared fixtures: every test checks that no shared-memory segment is left behind."""

from __future__ import annotations

import os
import time

import pytest
from flowrun_testing import run_flowrun, shm_segments

from flowrun.core.runtime.job_registry import JOBS_DIR_ENV


@pytest.fixture(autouse=True, scope="session")
def job_registry_of_this_run(tmp_path_factory):
    """Jobs started by the tests register in a directory of this run, not the user's.

    Why: a JobManager killed with ``kill -9`` (chaos and supervision tests) cannot remove
    its registry entry; ``flowrun list`` prunes such entries, but the test run must not
    leave hundreds of them in the user's ``flowrun-jobs-<uid>`` directory. Child processes
    (``flowrun run``, detached jobs) inherit the variable.
    """
    path = tmp_path_factory.mktemp("flowrun-jobs")
    before = os.environ.get(JOBS_DIR_ENV)
    os.environ[JOBS_DIR_ENV] = str(path)
    yield path
    if before is None:
        os.environ.pop(JOBS_DIR_ENV, None)
    else:
        os.environ[JOBS_DIR_ENV] = before


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
