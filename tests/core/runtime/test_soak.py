"""Soak and chaos: many jobs and random kills leave exact results and nothing behind.

The default run does a short version of each; ``pytest -m soak`` runs the long ones
(``FLOWRUN_SOAK_ROUNDS`` sets how many rounds).
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter

import psutil
import pytest
from flowrun_testing import CliRun, shm_segments, wait_gone

from flowrun.core import StreamExecutionEnvironment

SOAK_ROUNDS = int(os.environ.get("FLOWRUN_SOAK_ROUNDS", "50"))

CHAOS_JOB = """
import sys
from flowrun.core import StreamExecutionEnvironment
from flowrun.core.connectors.datagen import DataGeneratorSource, RateLimiterStrategy
env = StreamExecutionEnvironment.get_execution_environment()
src = DataGeneratorSource(lambda i: f"w{i % 97}", None, RateLimiterStrategy.per_second(20000))
(env.from_source(src, None, "gen").map(lambda w: (w, 1)).key_by(lambda t: t[0])
    .reduce(lambda a, b: (a[0], a[1] + b[1])).filter(lambda t: False).print())
env.execute("chaos")
"""


def _word_count_round(seed: int) -> None:
    rng = random.Random(seed)
    words = [f"k{rng.randint(0, 300)}" for _ in range(rng.randint(0, 20_000))]
    p = rng.choice([1, 2, 3, 4])
    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(p)
    env.get_configuration().set("execution.buffer-timeout", rng.choice([0, 1, 100]))
    out = list(
        env.from_collection(words)
        .rebalance()
        .map(lambda w: (w, 1))
        .key_by(lambda t: t[0])
        .reduce(lambda a, b: (a[0], a[1] + b[1]))
        .execute_and_collect()
    )
    final: dict[str, int] = {}
    for w, c in out:
        assert c == final.get(w, 0) + 1
        final[w] = c
    assert final == dict(Counter(words)), f"round {seed} (p={p})"


def _chaos_round(tmp_path, seed: int) -> None:
    rng = random.Random(seed)
    job = tmp_path / "chaos.py"
    job.write_text(CHAOS_JOB)
    before = shm_segments()
    run = CliRun(["run", str(job), "-p", str(rng.choice([2, 3]))])
    deadline = time.monotonic() + 20
    tasks: list[psutil.Process] = []
    while time.monotonic() < deadline and len(tasks) < 4:
        tasks = run.subtask_processes()
        time.sleep(0.05)
    time.sleep(rng.uniform(0.1, 0.8))
    victim = rng.choice(tasks)
    victim.kill()
    code, _out, err = run.wait(30)
    assert code == 1 and "SIGKILL" in err, err
    assert not wait_gone(run.mark)
    assert shm_segments() - before == set()


def test_repeated_jobs_exact_short():
    for seed in range(4):
        _word_count_round(seed)


def test_chaos_kill_short(tmp_path):
    _chaos_round(tmp_path, 0)


@pytest.mark.soak
def test_repeated_jobs_exact_soak():
    for seed in range(SOAK_ROUNDS):
        _word_count_round(1000 + seed)


@pytest.mark.soak
def test_chaos_kill_soak(tmp_path):
    for seed in range(max(1, SOAK_ROUNDS // 5)):
        _chaos_round(tmp_path, 1000 + seed)
