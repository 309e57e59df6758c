"""The ``flowrun`` command: the README's commands, --plan, config, and bad input."""

from __future__ import annotations

import re
from collections import Counter

import pytest
from flowrun_testing import REPO, run_flowrun

TINY = """
from flowrun.core import StreamExecutionEnvironment, Types
env = StreamExecutionEnvironment.get_execution_environment()
{body}
env.execute("tiny")
"""


def _job(tmp_path, body: str, name: str = "job.py"):
    path = tmp_path / name
    path.write_text(TINY.format(body=body))
    return str(path)


def test_readme_main_example_counts_words_exactly():
    """The README's first command: the word-count example at parallelism 2."""
    code, out, err = run_flowrun(["run", "examples/word_count.py", "-p", "2"], cwd=REPO)
    assert code == 0, err
    updates = [line for line in out.splitlines() if re.match(r"^[12]> \(", line)]
    assert updates, out[:500]
    # Each subtask prints its prefix (parallelism 2); the last update per word is its count.
    final: dict[str, int] = {}
    for line in updates:
        word, count = re.match(r"^[12]> \('(.+)', (\d+)\)$", line).groups()
        assert int(count) == final.get(word, 0) + 1, "rolling counts go up by one per word"
        final[word] = int(count)

    import importlib.util

    spec = importlib.util.spec_from_file_location("wc", f"{REPO}/examples/word_count.py")
    wc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(wc)
    import os
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "w.txt")
        wc.generate_input(path)
        with open(path) as f:
            expected = Counter(w for line in f for w in line.lower().split())
    assert final == dict(expected)
    assert re.search(r"job [0-9a-f]{32} finished in \d+ ms", out)


def test_plan_prints_the_chained_graph(tmp_path):
    job = _job(
        tmp_path,
        "env.from_sequence(1, 10).map(lambda x: (x, 1)).key_by(lambda t: t[0])"
        ".reduce(lambda a, b: a).print()",
    )
    code, out, err = run_flowrun(["run", "--plan", job, "-p", "3"])
    assert code == 0, err
    assert "Source: Sequence Source -> Map  parallelism=3" in out
    assert "--HASH--> [1] Keyed Reduce -> Sink: Print to Std. Out" in out
    assert "Keyed Reduce -> Sink: Print to Std. Out  parallelism=3" in out


def test_dynamic_properties_reach_the_job(tmp_path):
    job = tmp_path / "conf.py"
    job.write_text(
        "from flowrun.core import StreamExecutionEnvironment\n"
        "env = StreamExecutionEnvironment.get_execution_environment()\n"
        "print('timeout', env.get_buffer_timeout(), 'p', env.get_parallelism())\n"
    )
    code, out, err = run_flowrun(["run", str(job), "-p", "3", "-D", "execution.buffer-timeout=0"])
    assert code == 0, err
    assert "timeout 0 p 3" in out


def test_readme_configuration_flags(tmp_path):
    job = tmp_path / "conf2.py"
    job.write_text(
        "from flowrun.core import StreamExecutionEnvironment\n"
        "env = StreamExecutionEnvironment.get_execution_environment()\n"
        "c = env.get_configuration()\n"
        "print(c.get('taskmanager.memory.segment-size'), c.get('state.backend'))\n"
        "env.from_collection(['a', 'b', 'a']).key_by(lambda w: w).reduce(lambda a, b: a + b)"
        ".print()\n"
        "env.execute()\n"
    )
    code, out, err = run_flowrun(
        [
            "run",
            str(job),
            "-D",
            "execution.buffer-timeout=0",
            "-D",
            "taskmanager.memory.segment-size=256kb",
            "-D",
            "state.backend=hashmap",
        ]
    )
    assert code == 0, err
    assert "262144 hashmap" in out
    assert sorted(out.splitlines()[1:]) == ["a", "aa", "b"]


def test_script_arguments_after_double_dash(tmp_path):
    job = tmp_path / "args.py"
    job.write_text("import sys\nprint(sys.argv[1:])\n")
    code, out, _ = run_flowrun(["run", str(job), "--", "--input", "x"])
    assert code == 0
    assert "['--input', 'x']" in out


def test_config_lists_keys_with_defaults():
    code, out, _ = run_flowrun(["config"])
    assert code == 0
    assert "execution.buffer-timeout = 100" in out
    assert "taskmanager.memory.segment-size" in out


@pytest.mark.parametrize(
    "args,needle",
    [
        (["run", "/nonexistent/job.py"], "job file /nonexistent/job.py does not exist"),
        (["run", "JOB", "-p", "0"], "-p must be a positive integer, got 0"),
        (["run", "JOB", "-D", "execution.bufer-timeout=5"], "unknown configuration key"),
        (
            ["run", "JOB", "-D", "execution.buffer-timeout=soon"],
            "invalid value for execution.buffer-timeout",
        ),
        (["run", "JOB", "-D", "nonsense"], "-D expects key=value"),
    ],
)
def test_bad_command_lines_exit_2_with_a_clear_message(tmp_path, args, needle):
    job = _job(tmp_path, "env.from_collection([1]).print()")
    args = [job if a == "JOB" else a for a in args]
    code, out, err = run_flowrun(args)
    assert code == 2
    assert needle in err
    assert err.count("\n") <= 3, "one short paragraph, no traceback"


def test_unknown_key_suggests_the_right_one(tmp_path):
    job = _job(tmp_path, "env.from_collection([1]).print()")
    _code, _out, err = run_flowrun(["run", job, "-D", "execution.bufer-timeout=5"])
    assert "Did you mean execution.buffer-timeout" in err


def test_job_that_raises_on_import(tmp_path):
    job = tmp_path / "broken.py"
    job.write_text("import json\nraise RuntimeError('bad job setup')\n")
    code, _out, err = run_flowrun(["run", str(job)])
    assert code == 2
    assert "raised RuntimeError: bad job setup" in err
    assert f'File "{job}", line 2' in err


def test_record_not_matching_output_type(tmp_path):
    job = _job(
        tmp_path,
        "env.from_collection(['1', '2', 'three', '4'])"
        ".map(lambda s: int(s) if s.isdigit() else s, output_type=Types.INT())"
        ".name('Parse').rebalance().print()",
    )
    code, _out, err = run_flowrun(["run", job, "-p", "2"])
    assert code == 1
    assert "Operator 'Parse'" in err
    assert "does not match its declared output_type" in err
    assert "'three'" in err


def test_record_not_matching_output_type_inside_a_chain(tmp_path):
    job = _job(
        tmp_path,
        "env.from_collection([1, 2, 'x']).map(lambda v: v, output_type=Types.LONG())"
        ".name('Chained').print()",
    )
    code, _out, err = run_flowrun(["run", job])
    assert code == 1
    assert "Operator 'Chained'" in err and "'x'" in err


def test_key_selector_returning_an_unhashable_value(tmp_path):
    job = _job(
        tmp_path,
        "env.from_collection([1, 2, 3]).key_by(lambda x: [x]).reduce(lambda a, b: a).print()",
    )
    code, _out, err = run_flowrun(["run", job, "-p", "2"])
    assert code == 1
    assert "key selector" in err
    assert "list" in err
    assert "[1]" in err or "record 1" in err


def test_failure_in_open_names_the_operator(tmp_path):
    job = tmp_path / "open_fails.py"
    job.write_text(
        "from flowrun.core import StreamExecutionEnvironment, MapFunction\n"
        "class M(MapFunction):\n"
        "    def open(self, ctx):\n"
        "        raise IOError('cannot reach the lookup service')\n"
        "    def map(self, v):\n"
        "        return v\n"
        "env = StreamExecutionEnvironment.get_execution_environment()\n"
        "env.from_collection([1]).map(M()).name('Lookup').print()\n"
        "env.execute()\n"
    )
    code, _out, err = run_flowrun(["run", str(job)])
    assert code == 1
    assert "Operator 'Lookup'" in err and "cannot reach the lookup service" in err
