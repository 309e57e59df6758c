"""Process lifecycle through the real ``flowrun`` command: PIDs, failures, kills, Ctrl-C, leaks."""

from __future__ import annotations

import os
import signal
import time

import psutil
from flowrun_testing import CliRun, run_flowrun, shm_segments, wait_gone

ENDLESS_JOB = """
from flowrun.core import StreamExecutionEnvironment
from flowrun.core.connectors.datagen import DataGeneratorSource, RateLimiterStrategy
env = StreamExecutionEnvironment.get_execution_environment()
src = DataGeneratorSource(lambda i: i, None, RateLimiterStrategy.per_second(2000))
(env.from_source(src, None, "gen")
    .map(lambda x: (x % 10, x))
    .key_by(lambda t: t[0])
    .reduce(lambda a, b: (a[0], a[1] + b[1]))
    .filter(lambda t: False)
    .print())
env.execute("endless")
"""


def _start_endless(tmp_path, parallelism: int = 2) -> CliRun:
    job = tmp_path / "endless.py"
    job.write_text(ENDLESS_JOB)
    return CliRun(["run", str(job), "-p", str(parallelism)])


def _wait_for_subtasks(run: CliRun, n: int, timeout: float = 20.0) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tasks = run.subtask_processes()
        if len(tasks) >= n:
            return tasks
        time.sleep(0.05)
    raise AssertionError(f"expected {n} subtask processes, saw {run.subtask_processes()}")


def test_every_subtask_is_its_own_process_and_ctrl_c_cancels_cleanly(tmp_path):
    before = shm_segments()
    run = _start_endless(tmp_path, parallelism=2)
    # 2 vertices (source chain, reduce chain) x parallelism 2
    tasks = _wait_for_subtasks(run, 4)
    pids = {t.pid for t in tasks}
    assert len(pids) == 4
    assert run.proc.pid not in pids
    assert all(t.is_running() for t in tasks)
    time.sleep(0.5)
    os.kill(run.proc.pid, signal.SIGINT)
    code, out, err = run.wait(30)
    assert code == 130, err
    assert "cancelled by Ctrl-C" in err
    assert not wait_gone(run.mark)
    assert shm_segments() - before == set()


def test_ctrl_c_to_the_whole_process_group(tmp_path):
    run = _start_endless(tmp_path)
    _wait_for_subtasks(run, 4)
    os.killpg(run.proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    code, _out, err = run.wait(30)
    assert code == 130, err
    assert not wait_gone(run.mark)


def test_kill_9_of_a_subtask_fails_the_job_at_once(tmp_path):
    before = shm_segments()
    run = _start_endless(tmp_path)
    tasks = _wait_for_subtasks(run, 4)
    victim = tasks[-1]
    victim.kill()
    killed_at = time.monotonic()
    code, _out, err = run.wait(30)
    took = time.monotonic() - killed_at
    assert code == 1
    assert f"pid {victim.pid}" in err and "SIGKILL" in err, err
    assert took < 10, f"failure took {took:.1f}s to surface"
    assert not wait_gone(run.mark)
    assert shm_segments() - before == set()


def test_kill_9_of_the_jobmanager_takes_every_subtask_down(tmp_path):
    run = _start_endless(tmp_path)
    _wait_for_subtasks(run, 4)
    os.kill(run.proc.pid, signal.SIGKILL)
    run.proc.wait()
    left = wait_gone(run.mark, timeout=10)
    assert not left, f"orphans after the JobManager died: {[p.pid for p in left]}"


def test_user_exception_names_operator_subtask_record_and_source_line(tmp_path):
    job = tmp_path / "boom.py"
    job.write_text(
        "from flowrun.core import StreamExecutionEnvironment\n"
        "env = StreamExecutionEnvironment.get_execution_environment()\n"
        "def check(x):\n"
        "    if x == 4242:\n"
        "        raise ValueError('no 4242 please')\n"
        "    return x\n"
        "env.from_sequence(1, 100000).map(check).name('Checker').print()\n"
        "env.execute()\n"
    )
    code, out, err = run_flowrun(["run", str(job), "-p", "2"])
    assert code == 1
    assert "Operator 'Checker'" in err
    assert "subtask " in err and "/2)" in err
    assert "record 4242" in err
    assert "ValueError: no 4242 please" in err
    assert f'File "{job}", line 5, in check' in err


def test_stale_segment_of_a_dead_jobmanager_is_removed(tmp_path):
    dead = psutil.Popen(["true"])
    dead.wait()
    stale = f"/dev/shm/flowrun-{dead.pid}-deadbeef"
    with open(stale, "wb") as f:
        f.write(b"\0" * 4096)
    try:
        job = tmp_path / "tiny.py"
        job.write_text(
            "from flowrun.core import StreamExecutionEnvironment\n"
            "env = StreamExecutionEnvironment.get_execution_environment()\n"
            "env.from_collection([1, 2, 3]).print()\n"
            "env.execute()\n"
        )
        code, out, err = run_flowrun(["run", str(job)])
        assert code == 0, err
        assert not os.path.exists(stale)
    finally:
        if os.path.exists(stale):
            os.unlink(stale)


def test_working_dir_of_a_killed_jobmanager_is_removed_by_the_next_run(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    job = tmp_path / "stateful.py"
    job.write_text(ENDLESS_JOB)
    run = CliRun(["run", str(job), "-p", "2", "-D", f"io.tmp.dirs={work}"])
    _wait_for_subtasks(run, 4)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not list(work.glob("flowrun-job-*/*")):
        time.sleep(0.05)
    assert list(work.glob("flowrun-job-*")), "the job keeps its LMDB state in a working dir"
    os.kill(run.proc.pid, signal.SIGKILL)
    run.proc.wait()
    assert not wait_gone(run.mark, timeout=10)
    tiny = tmp_path / "tiny.py"
    tiny.write_text(
        "from flowrun.core import StreamExecutionEnvironment\n"
        "env = StreamExecutionEnvironment.get_execution_environment()\n"
        "env.from_collection([1]).print()\n"
        "env.execute()\n"
    )
    code, _out, err = run_flowrun(["run", str(tiny), "-D", f"io.tmp.dirs={work}"])
    assert code == 0, err
    assert list(work.iterdir()) == []
