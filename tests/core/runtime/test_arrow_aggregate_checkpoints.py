"""Keyed Arrow count(): its running totals survive kill -9 and restores at other parallelism.

The totals live in numpy arrays of the operator and reach checkpoints through its keyed
backend; these jobs check that every word's final count is exact after a failure.
"""

from __future__ import annotations

import ast
import collections
import os
import random

import pytest
from flowrun_testing import (
    RESTART_AT_ONCE,
    CliRun,
    completed_checkpoints,
    run_args,
    run_flowrun,
    wait_gone,
)

from flowrun.core.runtime.checkpoint_storage import find_latest_checkpoint

JOB = os.path.join(os.path.dirname(__file__), "jobs", "arrow_checkpointed_count.py")
SMALL_STEPS = {"flowrun.source.arrow-batch-size": "200"}


def _words(path: str, n_lines: int, seed: int = 11) -> collections.Counter:
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(3000)] + ["straße", "日本"]
    weights = [1.0 / (i + 1) for i in range(len(vocab))]
    counts: collections.Counter = collections.Counter()
    with open(path, "w", encoding="utf-8") as out:
        for _ in range(n_lines):
            line = rng.choices(vocab, weights, k=8)
            counts.update(line)
            out.write(" ".join(line) + "\n")
    return counts


def _final_counts(*outputs: str) -> dict[str, int]:
    last: dict[str, int] = {}
    for out in outputs:
        for line in out.splitlines():
            row = ast.literal_eval(line[line.index("{") :])  # after print()'s "<subtask>> "
            last[row["word"]] = row["count"]
    return last


@pytest.mark.parametrize("backend", ["hashmap", "lmdb", "lmdb-arrow"])
def test_kill_9_of_a_counting_subtask_recovers_exact_totals(tmp_path, backend):
    native = "true" if backend == "lmdb" else "false"
    expected = _words(str(tmp_path / "in.txt"), 20_000)
    checkpoints = str(tmp_path / "chk")
    options = {
        **SMALL_STEPS,
        "state.backend": backend.split("-")[0],
        "flowrun.state.lmdb.native-checkpoints": native,
        "state.checkpoints.dir": checkpoints,
        **RESTART_AT_ONCE,
    }
    job_args = (tmp_path / "in.txt", checkpoints, f"kill={tmp_path / 'killed'}")
    code, out, err = run_flowrun(run_args(JOB, 2, options, *job_args))
    assert code == 0, err
    assert os.path.exists(tmp_path / "killed")
    assert "restarting (attempt 1)" in err and "from checkpoint" in err, err
    assert _final_counts(out) == dict(expected)


@pytest.mark.parametrize("new_parallelism,backend", [(1, "hashmap"), (3, "lmdb")])
def test_totals_restore_at_another_parallelism(tmp_path, new_parallelism, backend):
    expected = _words(str(tmp_path / "in.txt"), 60_000)
    checkpoints = str(tmp_path / "chk")
    options = {"state.checkpoints.dir": checkpoints, "state.checkpoints.num-retained": "3"}
    run = CliRun(run_args(JOB, 2, {**SMALL_STEPS, **options}, tmp_path / "in.txt", checkpoints))
    out1 = run.kill_9_when(
        lambda: len(completed_checkpoints(checkpoints)) >= 2, "2 checkpoints completed"
    )
    wait_gone(run.mark)
    latest = find_latest_checkpoint(os.path.join(checkpoints, os.listdir(checkpoints)[0]))
    assert latest is not None
    options = {"execution.savepoint.path": latest, "state.backend": backend}
    job_args = (tmp_path / "in.txt", tmp_path / "chk2")
    code, out2, err = run_flowrun(
        run_args(JOB, new_parallelism, {**SMALL_STEPS, **options}, *job_args)
    )
    assert code == 0, err
    assert _final_counts(out1) != dict(expected), "the first run was not stopped mid-stream"
    # Exact only if the totals were restored: the source resumes after the checkpoint.
    assert _final_counts(out1, out2) == dict(expected)
