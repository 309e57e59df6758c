"""`flowrun run -d / list / savepoint / stop / cancel / run -s` on real jobs, and the offline
savepoint tools (`savepoint inspect`, `savepoint diff`, `savepoint --dispose`)."""

from __future__ import annotations

import os
import re
import time

import pytest
from flowrun_testing import CliRun, run_flowrun, wait_gone

from flowrun.core.runtime.checkpoint_storage import read_metadata
from flowrun.core.runtime.job_registry import JOBS_DIR_ENV

JOB = os.path.join(os.path.dirname(__file__), "jobs", "paced_count.py")
N, KEYS = 40_000, 10  # at 2000 records/s a job would run 20 s; the tests act long before that


class Jobs:
    """Runs `flowrun` commands against one private job registry (so `list` sees only ours)."""

    def __init__(self, tmp_path) -> None:
        self.tmp = tmp_path
        self.env = {JOBS_DIR_ENV: str(tmp_path / "jobs")}

    def __call__(self, *args: str, code: int = 0) -> str:
        got, out, err = run_flowrun(list(args), env=self.env, timeout=60)
        assert got == code, f"{args}: exit {got}\n{out}\n{err}"
        return out if code == 0 else err

    def start(self, *extra: str, args: tuple[str, ...] = (str(N), "2000")) -> tuple[str, str, str]:
        """`flowrun run -d`: (job id, log path, mark of its processes)."""
        run = CliRun(
            ["run", "-d", JOB, "-p", "2", "-D", "rest.port=0", "-D", f"io.tmp.dirs={self.tmp}"]
            + list(extra)
            + ["--", *args],
            env=self.env,
        )
        code, out, err = run.wait(60)
        assert code == 0, f"{out}\n{err}"
        log = re.search(r"^Output of the job goes to (.+)$", out, re.M).group(1)
        job_id = re.search(r"^Job has been submitted with JobID ([0-9a-f]{32})$", out, re.M)
        assert job_id, out
        assert os.path.dirname(log) == str(self.tmp)
        return job_id.group(1), log, run.mark

    def wait_for_checkpoint(self, job_id: str) -> None:
        """Until the job completed a checkpoint (so it runs and processed records)."""
        from flowrun.cli.rest_client import request
        from flowrun.core.runtime.job_registry import find_job

        before = os.environ.get(JOBS_DIR_ENV)
        os.environ[JOBS_DIR_ENV] = self.env[JOBS_DIR_ENV]
        try:
            entry = find_job(job_id)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                status, body = request(entry, "GET", f"/jobs/{job_id}/checkpoints")
                if status == 200 and body["counts"]["completed"] >= 1:
                    return
                time.sleep(0.05)
        finally:
            if before is None:
                del os.environ[JOBS_DIR_ENV]
            else:
                os.environ[JOBS_DIR_ENV] = before  # the run's registry (conftest)
        raise AssertionError("no checkpoint completed")


def _final_counts(*texts: str) -> dict[str, int]:
    last: dict[str, int] = {}
    for text in texts:
        for line in text.splitlines():
            match = re.match(r"^(?:\d+> )?(\d+) (\d+)$", line)
            if match:
                last[match.group(1)] = int(match.group(2))
    return last


def _records(text: str) -> int:
    return sum(1 for line in text.splitlines() if re.match(r"^(?:\d+> )?\d+ \d+$", line))


@pytest.fixture(scope="module")
def stopped(tmp_path_factory):
    """A job started with `run -d`, stopped with `flowrun stop --savepoint-path`."""
    tmp = tmp_path_factory.mktemp("stopped")
    jobs = Jobs(tmp)
    job_id, log, mark = jobs.start()
    jobs.wait_for_checkpoint(job_id)
    out = jobs("stop", "--savepoint-path", str(tmp / "sp"), job_id)
    lines = out.splitlines()
    assert lines[0] == f'Suspending job "{job_id}" with a savepoint.'
    path = re.fullmatch(r"Savepoint completed\. Path: (.+)", lines[-1]).group(1)
    left = wait_gone(mark)
    with open(log) as f:
        output = f.read()
    return {"jobs": jobs, "id": job_id, "path": path, "log": output, "left": left, "tmp": tmp}


def test_stop_ends_the_job_and_resuming_from_its_savepoint_is_exact(stopped, tmp_path):
    jobs = stopped["jobs"]
    assert stopped["left"] == [], "processes of the stopped job are left"
    assert jobs("list") == "No running jobs.\n"
    assert stopped["log"].rstrip().endswith(f"Savepoint completed. Path: {stopped['path']}")
    assert os.path.dirname(stopped["path"]) == str(stopped["tmp"] / "sp")
    assert 0 < _records(stopped["log"]) < N, "stop came after the end or before the start"
    # resume at another parallelism, unpaced: the merged counts are those of one whole run
    out = jobs("run", "-s", stopped["path"], JOB, "-p", "3", "--", str(N), "0")
    assert _records(stopped["log"]) + _records(out) == N, "records lost or repeated"
    assert _final_counts(stopped["log"], out) == {str(k): N // KEYS for k in range(KEYS)}


def test_resume_a_changed_job_dropping_the_state_no_operator_claims(stopped):
    """`run -n`: the counting operator got a new uid, so its counts start from zero, while the
    source (same uid) resumes where it stopped: nothing is read twice."""
    jobs = stopped["jobs"]
    out = jobs("run", "-n", "-s", stopped["path"], JOB, "--", str(N), "0", "10", "-v2")
    assert _records(stopped["log"]) + _records(out) == N
    counts = _final_counts(out)
    assert sum(counts.values()) == N - _records(stopped["log"])
    assert set(counts) == {str(k) for k in range(KEYS)}


def test_inspect_lists_operators_and_decodes_the_states(stopped):
    jobs, path = stopped["jobs"], stopped["path"]
    metadata, _ = read_metadata(path)
    out = jobs("savepoint", "inspect", path)
    lines = out.splitlines()
    assert lines[0] == f"Savepoint {path}"
    assert lines[1].startswith(f"  job {stopped['id']}, checkpoint {metadata['checkpoint_id']}, ")
    count_id = next(k for k, v in metadata["operators"].items() if v["uid"] == "count")
    at = lines.index(
        f"Operator 'count'  uid 'count'  id {count_id[:16]}  parallelism 2  max parallelism 128"
    )
    assert re.split(r"\s{2,}", lines[at + 1].strip()) == [
        "state",
        "kind",
        "key",
        "user key",
        "value",
        "rows",
        "bytes",
    ]
    count_row = re.split(r"\s{2,}", lines[at + 2].strip())
    last_row = re.split(r"\s{2,}", lines[at + 3].strip())
    assert count_row[:6] == ["count", "value", "undeclared", "-", "Long", "10"]
    assert last_row[:6] == ["last", "map", "undeclared", "String", "Long", "10"]
    assert "Operator 'Source: numbers'  uid 'numbers'" in out
    assert "_flowrun_source_splits  operator list (SPLIT_DISTRIBUTE)" in out

    # one state as a table: the counts in the savepoint are exactly the records printed
    table = jobs("savepoint", "inspect", path, "--state", "count/count", "--limit", "0")
    lines = table.splitlines()
    assert lines[0] == (
        f"State 'count' of operator 'count' (uid 'count', id {count_id[:16]}): value state, "
        "key undeclared, value Long, 10 rows"
    )
    assert re.split(r"\s{2,}", lines[1]) == ["key group", "key", "value"]
    rows = [re.split(r"\s{2,}", line) for line in lines[2:]]
    assert sorted(int(key) for _kg, key, _v in rows) == list(range(KEYS))
    assert {key: int(value) for _kg, key, value in rows} == _final_counts(stopped["log"])
    # map state by operator name, limited
    lines = jobs("savepoint", "inspect", path, "--state", "count/last", "--limit", "3").splitlines()
    assert re.split(r"\s{2,}", lines[1]) == ["key group", "key", "user key", "value"]
    for _kg, key, user_key, value in (re.split(r"\s{2,}", line) for line in lines[2:5]):
        assert int(value) % KEYS == int(key)
        assert user_key == ("'even'" if int(key) % 2 == 0 else "'odd'")
    assert lines[5:] == ["(3 of 10 rows; --limit 0 prints all)"]
    # a pickled state (declared PICKLED_BYTE_ARRAY): the reprs of the objects
    splits = jobs("savepoint", "inspect", path, "--state", "numbers/_flowrun_source_splits")
    assert len(re.findall(r"GeneratorSplit\(next_index=\d+, stop=\d+, step=1", splits)) == 2

    err = jobs("savepoint", "inspect", path, "--state", "count/nope", code=1)
    assert err.startswith("flowrun: error: --state 'count/nope': no such state in ")
    assert "'count/count', 'count/last'" in err
    err = jobs("savepoint", "inspect", path, "--state", "count", code=1)
    assert "expected <uid-or-operator-name>/<state name>" in err


def test_diff_against_changed_jobs(stopped):
    jobs, path = stopped["jobs"], stopped["path"]
    # same job at parallelism 3: restorable; the key-group plan
    out = jobs("savepoint", "diff", path, JOB, "-p", "3", "--", str(N), "0")
    assert "  'count' (uid 'count', id " in out
    assert "restored, parallelism 2 -> 3" in out
    plan = [re.split(r"\s{2,}", line.strip()) for line in out.splitlines() if "key groups" in line]
    assert plan == [
        ["subtask 0", "key groups 0-42", "old subtask 0 (0-63)"],
        ["subtask 1", "key groups 43-85", "old subtasks 0 (0-63), 1 (64-127)"],
        ["subtask 2", "key groups 86-127", "old subtask 1 (64-127)"],
    ]
    assert "Job operators that start with empty state:\n  none" in out
    assert out.rstrip().endswith("Restore would succeed.")

    # the counting operator got another uid: its state has no operator, the new one starts empty
    err_out = run_flowrun(
        ["savepoint", "diff", path, JOB, "-p", "3", "--", str(N), "0", "10", "-v2"],
        env=jobs.env,
    )
    code, out, _ = err_out
    assert code == 1
    assert re.search(
        r"'count' \(uid 'count', id \w+\): NO OPERATOR in the job has this id; "
        r"restore FAILS unless --allow-non-restored-state",
        out,
    )
    assert re.search(r"'count' \(uid 'count-v2', id \w+\): keyed, nothing in the savepoint", out)
    assert "Restore would FAIL: no operator for the state of 'count' (uid 'count'" in out
    out = jobs("savepoint", "diff", path, JOB, "-n", "-p", "3", "--", str(N), "0", "10", "-v2")
    assert "dropped (--allow-non-restored-state)" in out
    assert out.rstrip().endswith("Restore would succeed.")

    # another max parallelism: refused
    code, out, _ = run_flowrun(
        ["savepoint", "diff", path, JOB, "-D", "pipeline.max-parallelism=256", "--", "1", "0"],
        env=jobs.env,
    )
    assert code == 1
    assert "MAX PARALLELISM CHANGED 128 -> 256: restore is REFUSED" in out


def test_savepoint_list_and_cancel_of_a_detached_job(tmp_path):
    jobs = Jobs(tmp_path)
    job_id, log, mark = jobs.start()
    listed = jobs("list").splitlines()
    assert listed[0] == "------------------ Running/Restarting Jobs -------------------"
    assert re.fullmatch(
        rf"\d\d\.\d\d\.\d{{4}} \d\d:\d\d:\d\d : {job_id} : paced count \(RUNNING\) "
        r"http://127\.0\.0\.1:\d+",
        listed[1],
    ), listed
    assert listed[2:] == ["--------------------------------------------------------------"]

    out = jobs("savepoint", job_id, str(tmp_path / "sp"))
    lines = out.splitlines()
    assert lines[:2] == [f"Triggering savepoint for job {job_id}.", "Waiting for response..."]
    path = re.fullmatch(r"Savepoint completed\. Path: (.+)", lines[2]).group(1)
    assert lines[3] == "You can resume your program from this savepoint with the run command."
    assert read_metadata(path)[0]["kind"] == "savepoint"
    assert "Operator 'count'  uid 'count'" in jobs("savepoint", "inspect", path)

    out = jobs("cancel", job_id)
    assert out.splitlines() == [f"Cancelling job {job_id}.", f"Cancelled job {job_id}."]
    assert wait_gone(mark, timeout=1) == [], "cancel returned before the job was gone"
    assert jobs("list") == "No running jobs.\n"
    with open(log) as f:
        assert f"Job {job_id} was cancelled through the REST API." in f.read()


def test_cancel_with_savepoint_to_the_default_directory_then_dispose(tmp_path):
    jobs = Jobs(tmp_path)
    default_dir = tmp_path / "default-sp"
    job_id, _log, mark = jobs.start("-D", f"state.savepoints.dir={default_dir}")
    out = jobs("cancel", "-s", job_id)  # Flink's rule: -s's value is the job id when alone
    lines = out.splitlines()
    assert lines[0] == f"Cancelling job {job_id} with savepoint to the default savepoint directory."
    path = re.fullmatch(rf"Cancelled job {job_id}\. Savepoint stored in (.+)\.", lines[1]).group(1)
    assert os.path.dirname(path) == str(default_dir)
    assert wait_gone(mark, timeout=1) == []
    assert read_metadata(path)[0]["job_id"] == job_id

    # with an explicit directory
    job_id, _log, mark = jobs.start()
    out = jobs("cancel", "-s", str(tmp_path / "explicit"), job_id)
    explicit = re.fullmatch(
        rf"Cancelled job {job_id}\. Savepoint stored in (.+)\.", out.splitlines()[1]
    ).group(1)
    assert os.path.dirname(explicit) == str(tmp_path / "explicit")
    assert read_metadata(explicit)[0]["kind"] == "savepoint"
    assert wait_gone(mark, timeout=1) == []

    out = jobs("savepoint", "--dispose", path)
    assert out.splitlines() == [f"Disposing savepoint '{path}'.", f"Savepoint '{path}' disposed."]
    assert not os.path.exists(path)
    err = jobs("savepoint", "-d", path, code=1)
    assert err.splitlines()[-1] == f"flowrun: error: refusing to dispose {path}: it does not exist"


def test_clear_errors_for_unknown_jobs_and_paths(tmp_path):
    jobs = Jobs(tmp_path)
    unknown = "0123456789abcdef" * 2
    for args in (
        ["cancel", unknown],
        ["cancel", "-s", str(tmp_path), unknown],
        ["stop", "-p", str(tmp_path), unknown],
        ["savepoint", unknown],
    ):
        err = jobs(*args, code=1)
        assert err == (
            f"flowrun: error: no running job with id {unknown} on this machine (0 running; "
            "see 'flowrun list')\n"
        ), args
    assert jobs("cancel", code=2) == (
        "flowrun: error: cancel: missing the job id (see 'flowrun list')\n"
    )
    assert "savepoint: missing the job id" in jobs("savepoint", code=2)

    missing = str(tmp_path / "missing")
    assert jobs("savepoint", "inspect", missing, code=1) == (
        f"flowrun: error: no such file or directory: {missing}\n"
    )
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("hi")
    err = jobs("savepoint", "inspect", str(tmp_path / "plain"), code=1)
    assert err.startswith(f"flowrun: error: {tmp_path / 'plain'} is not a readable savepoint: ")
    assert err.count("\n") == 1
    err = jobs("savepoint", "diff", missing, JOB, code=1)
    assert err == f"flowrun: error: no such file or directory: {missing}\n"
    err = jobs("savepoint", "--dispose", str(tmp_path / "plain"), code=1)
    assert "refusing to dispose" in err and "no _metadata file" in err
    assert (tmp_path / "plain" / "notes.txt").exists()

    # a savepoint of a job without periodic checkpoints works (as in Flink); a savepoint
    # without a directory (and no state.savepoints.dir) is refused with the cause
    job_id, _log, mark = jobs.start(args=(str(N), "2000", "10", "", "0"))
    err = jobs("savepoint", job_id, code=1)
    assert "no savepoint directory" in err and err.count("\n") == 1
    jobs("savepoint", job_id, str(tmp_path / "sp"))
    assert len(list((tmp_path / "sp").glob("savepoint-*/_metadata"))) == 1
    jobs("cancel", job_id)
    assert wait_gone(mark, timeout=1) == []

    # run -d of a script that fails before it runs a job: its output, its exit code
    bad = tmp_path / "bad.py"
    bad.write_text("raise ValueError('broken job script')\n")
    code, out, err = run_flowrun(
        ["run", "-d", str(bad), "-D", f"io.tmp.dirs={tmp_path}"], env=jobs.env
    )
    assert code == 2
    assert "flowrun: error: the job did not start (exit code 2); its output:" in err
    assert "ValueError: broken job script" in err
    assert jobs("run", "-d", str(tmp_path / "nope.py"), code=2) == (
        f"flowrun: error: job file {tmp_path / 'nope.py'} does not exist\n"
    )


def test_detached_run_of_a_short_job_that_ends_at_once(tmp_path):
    jobs = Jobs(tmp_path)
    out = jobs(
        "run", "-d", JOB, "-D", f"io.tmp.dirs={tmp_path}", "-D", "rest.port=0", "--", "20", "0"
    )
    job_id = re.search(r"^Job has been submitted with JobID ([0-9a-f]{32})$", out, re.M).group(1)
    log = re.search(r"^Output of the job goes to (.+)$", out, re.M).group(1)
    # run_flowrun waited until every process of the run (the detached job's too) was gone
    assert jobs("list") == "No running jobs.\n"
    with open(log) as f:
        text = f.read()
    assert f"REST API of job {job_id}" in text
    assert _final_counts(text) == {str(k): 2 for k in range(KEYS)}


class Unimportable:
    """Pickled by reference to this test module, which the `flowrun` process cannot import."""

    def __init__(self, n: int) -> None:
        self.n = n


def _written_savepoint(tmp_path) -> str:
    """A savepoint written with the real state backend and checkpoint storage (no job): list
    state of named rows with TTL, tuple values under tuple keys, pickled map values."""
    from flowrun.core.runtime.checkpoint_storage import (
        StateHandle,
        write_metadata,
        write_state_file,
    )
    from flowrun.core.typeinfo import Types
    from flowrun.state import (
        ListStateDescriptor,
        MapStateDescriptor,
        StateTtlConfig,
        Time,
        ValueStateDescriptor,
    )
    from flowrun.state.backends import HashMapStateBackend
    from flowrun.state.key_groups import KeyGroupRange

    backend = HashMapStateBackend().create_keyed_backend(
        "f" * 32, KeyGroupRange(0, 127), 128, None, None, lambda: 1_700_000_000_000
    )
    events = ListStateDescriptor(
        "events", Types.ROW_NAMED(["name", "score"], [Types.STRING(), Types.DOUBLE()])
    )
    events.enable_time_to_live(StateTtlConfig.new_builder(Time.hours(1)).build())
    events = backend.get_list_state(events)
    pair = backend.get_state(
        ValueStateDescriptor("pair", Types.TUPLE([Types.INT(), Types.STRING()]))
    )
    objects = backend.get_map_state(
        MapStateDescriptor("objects", Types.STRING(), Types.PICKLED_BYTE_ARRAY())
    )
    from flowrun.core.row import Row

    backend.set_current_key(("user", 7))
    events.add_all([Row(name="a", score=1.5), Row(name="b", score=-2.0)])
    pair.update((7, "seven"))
    objects.put("plain", {"x": [1, 2]})
    objects.put("custom", Unimportable(3))
    location = str(tmp_path / "savepoint-handmade")
    os.makedirs(location)
    handles = [
        write_state_file(location, f"s{i}.arrow", stream)
        for i, stream in enumerate(backend.snapshot())
    ]
    backend.dispose()
    keyed = [{"handle": h.to_json(), "key_groups": [0, 127]} for h in handles]
    write_metadata(
        location,
        {
            "job_id": "handmade",
            "checkpoint_id": 1,
            "timestamp": 1_700_000_000_000,
            "kind": "savepoint",
            "operators": {
                "f" * 32: {
                    "name": "Process",
                    "uid": "proc",
                    "parallelism": 1,
                    "max_parallelism": 128,
                    "subtasks": [{"operator": [], "keyed": keyed, "timers": []}],
                }
            },
        },
        [StateHandle.from_json(h.to_json()) for h in handles],
    )
    return location


def test_inspect_decodes_rows_tuples_ttl_and_pickles(tmp_path):
    import datetime as dt

    path = _written_savepoint(tmp_path)
    jobs = Jobs(tmp_path)
    out = jobs("savepoint", "inspect", path)
    states = {
        re.split(r"\s{2,}", line.strip())[0]: re.split(r"\s{2,}", line.strip())[1:6]
        for line in out.splitlines()[5:]
    }
    assert states == {
        "events": [
            "list, TTL",
            "undeclared",
            "-",
            "RowTypeInfo(name: String, score: Double)",
            "2",
        ],
        "pair": ["value", "undeclared", "-", "TupleTypeInfo(Integer, String)", "1"],
        "objects": ["map", "undeclared", "String", "PickledByteArrayTypeInfo", "2"],
    }
    when = dt.datetime.fromtimestamp(1_700_000_000).strftime("%Y-%m-%d %H:%M:%S")
    lines = jobs("savepoint", "inspect", path, "--state", "proc/events").splitlines()
    assert re.split(r"\s{2,}", lines[1]) == ["key group", "key", "value", "last access"]
    assert [re.split(r"\s{2,}", line)[1:] for line in lines[2:]] == [
        ["('user', 7)", "Row(name='a', score=1.5)", when],
        ["('user', 7)", "Row(name='b', score=-2.0)", when],
    ]
    lines = jobs("savepoint", "inspect", path, "--state", "Process/pair").splitlines()
    assert re.split(r"\s{2,}", lines[2])[1:] == ["('user', 7)", "(7, 'seven')"]
    rows = jobs("savepoint", "inspect", path, "--state", "proc/objects").splitlines()[2:]
    cells = dict(re.split(r"\s{2,}", line)[2:] for line in rows)
    assert cells["'plain'"] == "{'x': [1, 2]}"
    assert cells["'custom'"].startswith("<cannot decode: ModuleNotFoundError")
