"""Helpers for tests that run the real ``flowrun`` command and check nothing is left behind."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import psutil

SHM_DIR = "/dev/shm"
BIN_DIR = os.path.dirname(sys.executable)
FLOWRUN = os.path.join(BIN_DIR, "flowrun")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def shm_segments() -> set[str]:
    try:
        return {n for n in os.listdir(SHM_DIR) if n.startswith("flowrun-")}
    except FileNotFoundError:
        return set()


def processes_with_mark(mark: str) -> list[psutil.Process]:
    """Processes whose environment carries ``FLOWRUN_TEST_MARK=mark`` (ours, from one run)."""
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.environ().get("FLOWRUN_TEST_MARK") == mark:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def wait_gone(mark: str, timeout: float = 10.0) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    left = processes_with_mark(mark)
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = processes_with_mark(mark)
    return left


class CliRun:
    """A ``flowrun`` invocation in its own process group, tagged for leak checks."""

    def __init__(self, args: list[str], cwd: str | None = None, env: dict | None = None) -> None:
        self.mark = uuid.uuid4().hex
        full_env = dict(os.environ)
        full_env.update(env or {})
        full_env["FLOWRUN_TEST_MARK"] = self.mark
        full_env["PYTHONUNBUFFERED"] = "1"
        self.proc = subprocess.Popen(
            [FLOWRUN, *args],
            cwd=cwd or REPO,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )

    def wait(self, timeout: float = 120.0) -> tuple[int, str, str]:
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)
            out, err = self.proc.communicate()
            raise AssertionError(f"flowrun did not finish in {timeout}s\n{out}\n{err}") from None
        return self.proc.returncode, out, err

    def subtask_processes(self) -> list[psutil.Process]:
        """Subtasks = processes of this run other than the CLI and its fork server."""
        try:
            cli = psutil.Process(self.proc.pid)
            server = [c for c in cli.children() if "forkserver" in " ".join(c.cmdline())]
        except psutil.NoSuchProcess:
            return []
        tasks = []
        for s in server:
            try:
                tasks.extend(s.children())
            except psutil.NoSuchProcess:
                pass
        return tasks


def run_flowrun(args: list[str], timeout: float = 120.0, **kw) -> tuple[int, str, str]:
    """Run ``flowrun`` to the end and assert it left no process and no segment behind."""
    before = shm_segments()
    run = CliRun(args, **kw)
    code, out, err = run.wait(timeout)
    left = wait_gone(run.mark)
    assert not left, f"processes left behind: {[p.pid for p in left]}"
    leaked = shm_segments() - before
    assert not leaked, f"shared-memory segments left behind: {leaked}"
    return code, out, err
