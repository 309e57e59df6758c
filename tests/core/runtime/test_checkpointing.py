"""Checkpoints end to end: real processes, real kill -9, exact results after recovery."""

from __future__ import annotations

import collections
import os
import random

import pytest
from flowrun_testing import run_flowrun, shm_segments

JOB = os.path.join(os.path.dirname(__file__), "jobs", "checkpointed_count.py")


def _words(path: str, n_lines: int, seed: int = 7) -> collections.Counter:
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(500)]
    counts: collections.Counter = collections.Counter()
    with open(path, "w") as out:
        for _ in range(n_lines):
            line = [rng.choice(vocab) for _ in range(8)]
            counts.update(line)
            out.write(" ".join(line) + "\n")
    return counts


def _final_counts(stdout: str) -> dict[str, int]:
    last: dict[str, int] = {}
    for line in stdout.splitlines():
        line = line.split("> ", 1)[-1]  # print()'s "<subtask>> " prefix at p > 1
        word, _, n = line.rpartition(" ")
        if word:
            last[word] = int(n)
    return last


@pytest.mark.parametrize("backend", ["hashmap", "lmdb"])
def test_kill_9_of_a_subtask_recovers_exact_state_from_the_checkpoint(tmp_path, backend):
    expected = _words(str(tmp_path / "in.txt"), 40_000)
    before = shm_segments()
    code, out, err = run_flowrun(
        [
            "run",
            JOB,
            "-p",
            "2",
            "-D",
            f"state.backend={backend}",
            "-D",
            "restart-strategy=fixed-delay",
            "-D",
            "restart-strategy.fixed-delay.attempts=3",
            "-D",
            "restart-strategy.fixed-delay.delay=0",
            "--",
            str(tmp_path / "in.txt"),
            "20000",
        ],
    )
    assert code == 0, err
    assert "restarting (attempt 1)" in err and "from checkpoint" in err, err
    assert _final_counts(out) == dict(expected)
    assert shm_segments() <= before
