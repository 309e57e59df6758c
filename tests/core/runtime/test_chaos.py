"""Chaos: kill -9 random subtasks of a running job; the committed output must be exact.

The short runs are part of the default suite; ``-m soak`` runs the long ones (bigger input,
more kills).
"""

from __future__ import annotations

import collections
import os
import random
import signal
import time

import pytest
from flowrun_testing import CliRun, run_flowrun, shm_segments, wait_gone

JOB = os.path.join(os.path.dirname(__file__), "jobs", "chaos_count.py")


def _write_input(path: str, n_lines: int, seed: int) -> collections.Counter:
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(300)]
    counts: collections.Counter = collections.Counter()
    with open(path, "w") as out:
        for _ in range(n_lines):
            words = [rng.choice(vocab) for _ in range(6)]
            counts.update(words)
            out.write(" ".join(words) + "\n")
    return counts


def _expected_lines(counts: collections.Counter) -> collections.Counter:
    return collections.Counter(f"{w} {i}" for w, n in counts.items() for i in range(1, n + 1))


def _committed_lines(out_dir: str) -> collections.Counter:
    lines: collections.Counter = collections.Counter()
    for root, _dirs, files in os.walk(out_dir):
        for name in files:
            if name.startswith("."):
                continue  # in-progress / pending part files are not output yet
            with open(os.path.join(root, name)) as f:
                lines.update(f.read().splitlines())
    return lines


def _run_with_kills(tmp_path, conf: list[str], kills: int, n_lines: int, seed: int):
    counts = _write_input(str(tmp_path / "in.txt"), n_lines, seed)
    out_dir = str(tmp_path / "out")
    before = shm_segments()
    args = [
        "run",
        JOB,
        "-p",
        "2",
        "-D",
        "restart-strategy=fixed-delay",
        "-D",
        "restart-strategy.fixed-delay.attempts=20",
        "-D",
        "restart-strategy.fixed-delay.delay=50 ms",
    ]
    for item in conf:
        args += ["-D", item]
    run = CliRun([*args, "--", str(tmp_path / "in.txt"), out_dir, "slow"])
    rng = random.Random(seed)
    killed = []
    deadline = time.monotonic() + 60
    while len(killed) < kills and run.proc.poll() is None and time.monotonic() < deadline:
        time.sleep(rng.uniform(0.4, 0.9))
        tasks = [p for p in run.subtask_processes() if p.pid not in killed]
        if len(tasks) < 4:
            continue  # between attempts
        victim = rng.choice(tasks)
        try:
            os.kill(victim.pid, signal.SIGKILL)
            killed.append(victim.pid)
        except ProcessLookupError:
            pass
    code, _out, err = run.wait(timeout=120)
    assert code == 0, err
    assert len(killed) == kills, f"the job ended before {kills} kills ({len(killed)} done)"
    assert err.count("restarting (attempt") >= kills, err
    assert wait_gone(run.mark) == []
    assert shm_segments() <= before
    return counts, _committed_lines(out_dir)


CASES = [
    ("hashmap", False),
    ("lmdb", False),
    ("hashmap", True),
    ("lmdb", True),
]


@pytest.mark.parametrize("backend,unaligned", CASES)
def test_exactly_once_output_after_repeated_kill_9(tmp_path, backend, unaligned):
    counts, committed = _run_with_kills(
        tmp_path,
        [f"state.backend={backend}", f"execution.checkpointing.unaligned={str(unaligned).lower()}"],
        kills=2,
        n_lines=25_000,
        seed=11,
    )
    expected = _expected_lines(counts)
    assert committed == expected, (
        f"lost {sum((expected - committed).values())}, "
        f"duplicated {sum((committed - expected).values())}"
    )


def test_at_least_once_loses_nothing_after_kill_9(tmp_path):
    counts, committed = _run_with_kills(
        tmp_path,
        ["state.backend=hashmap", "execution.checkpointing.mode=AT_LEAST_ONCE"],
        kills=2,
        n_lines=25_000,
        seed=12,
    )
    # Each word's final count is right only if no record was lost (duplicates may appear).
    expected = _expected_lines(counts)
    assert set(expected) <= set(committed)


@pytest.mark.soak
@pytest.mark.parametrize("backend,unaligned", CASES)
def test_exactly_once_output_long_chaos(tmp_path, backend, unaligned):
    counts, committed = _run_with_kills(
        tmp_path,
        [f"state.backend={backend}", f"execution.checkpointing.unaligned={str(unaligned).lower()}"],
        kills=8,
        n_lines=150_000,
        seed=21,
    )
    assert committed == _expected_lines(counts)


TWO = os.path.join(os.path.dirname(__file__), "jobs", "two_pipelines.py")


@pytest.mark.parametrize("strategy", ["region", "full"])
def test_region_failover_restarts_only_the_failed_pipeline(tmp_path, strategy):
    counts_a = _write_input(str(tmp_path / "a.txt"), 60_000, seed=3)
    counts_b = _write_input(str(tmp_path / "b.txt"), 30_000, seed=4)
    marks = tmp_path / "marks"
    marks.mkdir()
    code, _out, err = run_flowrun(
        [
            "run",
            TWO,
            "-p",
            "2",
            "-D",
            f"jobmanager.execution.failover-strategy={strategy}",
            # the input fits in the network buffers: only unaligned checkpoints complete
            # while the job runs, and the failure is injected after one did
            "-D",
            "execution.checkpointing.unaligned=true",
            "-D",
            "restart-strategy=fixed-delay",
            "-D",
            "restart-strategy.fixed-delay.delay=0",
            "--",
            str(tmp_path / "a.txt"),
            str(tmp_path / "b.txt"),
            str(tmp_path / "out_a"),
            str(tmp_path / "out_b"),
            str(marks),
        ]
    )
    assert code == 0, err
    started = sorted(os.listdir(marks))
    b_attempts = {m.split("-")[2] for m in started if m.startswith("b-")}
    a_attempts = {m.split("-")[2] for m in started if m.startswith("a-")}
    assert a_attempts == {"0", "1"}
    if strategy == "region":
        assert "of region" in err, err
        assert b_attempts == {"0"}, f"pipeline b was restarted: {started}"
    else:
        assert b_attempts == {"0", "1"}
    assert _committed_lines(str(tmp_path / "out_a")) == _expected_lines(counts_a)
    assert _committed_lines(str(tmp_path / "out_b")) == _expected_lines(counts_b)
