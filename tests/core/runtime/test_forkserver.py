"""The fork server that starts subtasks: the environment they run in."""

from __future__ import annotations

import os
import subprocess

import pytest

from flowrun.core import config as cfg
from flowrun.core.runtime.forkserver import ForkServer, subtask_environment

TUNABLE = "glibc.cpu.x86_non_temporal_threshold"
#: glibc's dynamic loader on x86-64, which can print the tunables it parsed
LOADER = "/lib64/ld-linux-x86-64.so.2"


def test_subtask_environment_sets_the_non_temporal_copy_threshold() -> None:
    env = subtask_environment({"PATH": "/bin"})
    assert env == {
        "PATH": "/bin",
        "GLIBC_TUNABLES": f"{TUNABLE}={cfg.NON_TEMPORAL_COPY_THRESHOLD}",
    }


def test_subtask_environment_keeps_the_users_tunables() -> None:
    user = {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}
    env = subtask_environment(user)
    assert env["GLIBC_TUNABLES"] == (
        f"glibc.malloc.arena_max=2:{TUNABLE}={cfg.NON_TEMPORAL_COPY_THRESHOLD}"
    )
    assert user == {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}  # not modified


def test_a_threshold_the_user_set_wins() -> None:
    user = {"GLIBC_TUNABLES": f"{TUNABLE}=999999999:glibc.malloc.arena_max=2"}
    assert subtask_environment(user) == user


def test_subtasks_run_with_the_threshold() -> None:
    """A process the fork server starts (as every subtask) sees the tunable."""
    server = ForkServer.start()
    read_fd, write_fd = os.pipe()
    try:
        server.spawn("flowrun_testing:write_environment_variable", ("GLIBC_TUNABLES",), [write_fd])
        os.close(write_fd)
        write_fd = -1
        value = b""
        while chunk := os.read(read_fd, 4096):
            value += chunk
    finally:
        os.close(read_fd)
        if write_fd >= 0:
            os.close(write_fd)
        server.close()
    assert f"{TUNABLE}={cfg.NON_TEMPORAL_COPY_THRESHOLD}" in value.decode().split(":")


@pytest.mark.skipif(not os.path.exists(LOADER), reason="no x86-64 glibc loader here")
def test_glibc_accepts_the_threshold() -> None:
    """glibc ignores a tunable outside its bounds without a word: check it took ours."""
    listed = subprocess.run(
        [LOADER, "--list-tunables"],
        env=subtask_environment({}),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = next(line for line in listed.splitlines() if line.startswith(f"{TUNABLE}:"))
    assert int(line.split()[1], 16) == cfg.NON_TEMPORAL_COPY_THRESHOLD
