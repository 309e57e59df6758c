"""Helpers for tests that run the real ``flowrun`` command and check nothing is left behind."""

from __future__ import annotations

import glob
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable

import psutil
import pytest

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

    def kill_9_when(self, ready: Callable[[], bool], what: str, timeout: float = 30.0) -> str:
        """Kill -9 the JobManager (the ``flowrun run`` process) once ``ready()``; returns
        what the job printed until then. Its stdout is drained meanwhile, or a print sink
        would block on the pipe."""
        chunks: list[str] = []
        reader = threading.Thread(target=lambda: chunks.append(self.proc.stdout.read()))
        reader.start()
        deadline = time.monotonic() + timeout
        while not ready():
            assert time.monotonic() < deadline, f"not within {timeout:.0f} s: {what}"
            time.sleep(0.02)
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        reader.join(timeout=30)
        return "".join(chunks)

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


def completed_checkpoints(checkpoint_dir: str) -> list[str]:
    """The ``_metadata`` files of the completed checkpoints under ``checkpoint_dir``."""
    return glob.glob(os.path.join(checkpoint_dir, "*", "chk-*", "_metadata"))


#: restart at once after a failure (the tests' kill -9 jobs), without waiting Flink's 1 s
RESTART_AT_ONCE = {"restart-strategy": "fixed-delay", "restart-strategy.fixed-delay.delay": "0"}


def run_args(job: str, parallelism: int, options: dict[str, str], *job_args: object) -> list[str]:
    """``flowrun run`` arguments: ``job`` at ``parallelism``, ``-D key=value`` per option, and
    the job's own arguments after ``--``."""
    args = ["run", job, "-p", str(parallelism)]
    for key, value in options.items():
        args += ["-D", f"{key}={value}"]
    return [*args, "--", *map(str, job_args)]


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


# --------------------------------------------------------------------------------------------
# A real S3 server (moto) for checkpoint storage tests and end-to-end runs on s3://

_MOTO_MAIN = r"""
import ctypes, os, signal, sys
parent = int(sys.argv[1])
try:  # die with the test process, even if it is killed without cleanup
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)
except (OSError, AttributeError):
    pass
if os.getppid() != parent:
    sys.exit(0)
from moto.server import main
main(["-H", "127.0.0.1", "-p", "0"])
"""


class MotoS3Server:
    """A moto S3 server in its own process on 127.0.0.1, on a port the OS picks.

    A separate process (not moto's in-process mock) so that every process of a flowrun job,
    forked subtasks included, reaches the same server through ``AWS_ENDPOINT_URL``. Its state
    lives in memory and goes with it. Use as a context manager, or through the
    ``moto_s3_server`` / ``s3_base`` fixtures.
    """

    def __init__(self, log_dir: str | None = None) -> None:
        self._log_path = os.path.join(
            log_dir or tempfile.gettempdir(), f"moto-{uuid.uuid4().hex}.log"
        )
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """The AWS_* variables that point pyarrow (and boto3) at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def start(self, timeout: float = 30.0) -> MotoS3Server:
        log = open(self._log_path, "wb")
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _MOTO_MAIN, str(os.getpid())],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while self.port is None:
            with open(self._log_path, "rb") as f:
                match = re.search(rb"Running on http://127\.0\.0\.1:(\d+)", f.read())
            if match:
                self.port = int(match.group(1))
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                output = self.log()
                self.stop()
                raise RuntimeError(f"moto S3 server did not start:\n{output}")
            time.sleep(0.05)
        return self

    def client(self):
        """A boto3 S3 client for this server (boto3 comes with moto), to look behind pyarrow."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def etag(self, bucket: str, key: str) -> str:
        """The object's ETag: ``"<md5>"`` for a single PUT, ``"<md5>-<parts>"`` for multipart."""
        return self.client().head_object(Bucket=bucket, Key=key)["ETag"]

    def bucket_names(self) -> list[str]:
        return [b["Name"] for b in self.client().list_buckets()["Buckets"]]

    def log(self) -> str:
        try:
            with open(self._log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        try:
            os.unlink(self._log_path)
        except FileNotFoundError:
            pass

    def __enter__(self) -> MotoS3Server:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


S3_TEST_BUCKET = "flowrun-test"


@pytest.fixture(scope="module")
def moto_s3_server():
    """A real moto S3 server for the module, with bucket ``S3_TEST_BUCKET``; stopped after."""
    with MotoS3Server() as server:
        server.create_bucket(S3_TEST_BUCKET)
        yield server


@pytest.fixture
def s3_base(moto_s3_server, monkeypatch) -> str:
    """``s3://flowrun-test/<unique prefix>`` with the AWS_* variables of the server set for the
    test (and so for every process it starts)."""
    for name in ("AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in moto_s3_server.env.items():
        monkeypatch.setenv(name, value)
    return f"s3://{S3_TEST_BUCKET}/{uuid.uuid4().hex[:12]}"


# --------------------------------------------------------------------------------------------
# Job files for ``flowrun run``: a map that kills its own subtask once, after a checkpoint

#: Python source to paste into a job file (it needs ``MapFunction`` imported). Why a string:
#: a job file is its own program, and its functions travel to the subtasks by value.
#: ``KillOnce(kill_after, subtask=0, then=None)`` passes records through (``then(x)`` if
#: given), sleeping 2 ms every 100 records so that checkpoints happen meanwhile, and SIGKILLs
#: its subtask ``subtask`` on the first attempt once a checkpoint completed and it saw more
#: than ``kill_after`` records; a negative ``kill_after`` never kills.
KILL_ONCE_SOURCE = """
class KillOnce(MapFunction):
    def __init__(self, kill_after, subtask=0, then=None):
        self.kill_after, self.subtask, self.then = kill_after, subtask, then

    def open(self, runtime_context):
        self.ctx = runtime_context
        self.seen = 0
        self.completed = False

    def notify_checkpoint_complete(self, checkpoint_id):
        self.completed = True

    def map(self, x):
        import os, signal, time

        self.seen += 1
        if self.seen % 100 == 0:
            time.sleep(0.002)
        if (
            self.kill_after >= 0
            and self.completed
            and self.seen > self.kill_after
            and self.ctx.get_attempt_number() == 0
            and self.ctx.get_index_of_this_subtask() == self.subtask
        ):
            os.kill(os.getpid(), signal.SIGKILL)
        return x if self.then is None else self.then(x)
"""


def write_environment_variable(fds: list[int], name: str) -> None:
    """Fork-server target: write this process's value of ``name`` (or nothing) to ``fds[0]``."""
    os.write(fds[0], os.environ.get(name, "").encode())
