"""The REST API of a running job: real `flowrun run` processes, real HTTP on 127.0.0.1."""

from __future__ import annotations

import doctest
import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from flowrun_testing import CliRun, wait_gone

from flowrun.core.runtime.checkpoint_storage import read_metadata
from flowrun.core.runtime.job_registry import JOBS_DIR_ENV, find_job, list_jobs, register_job

JOB = os.path.join(os.path.dirname(__file__), "..", "..", "cli", "jobs", "paced_count.py")


def _http(method: str, url: str, body: object = None, raw: bytes | None = None):
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _start(tmp_path, *dynamic: str, args=("40000", "2000")) -> tuple[CliRun, str, str]:
    """A paced keyed count (about 20 s if left alone) and its registry entry: (run, id, url)."""
    jobs_dir = str(tmp_path / "jobs")
    command = ["run", JOB, "-p", "2"]
    for pair in dynamic:
        command += ["-D", pair]
    run = CliRun([*command, "--", *args], env={JOBS_DIR_ENV: jobs_dir})
    deadline = time.monotonic() + 30
    os.environ[JOBS_DIR_ENV] = jobs_dir
    try:
        while time.monotonic() < deadline:
            jobs = list_jobs()
            if jobs:
                return run, jobs[0].job_id, jobs[0].url
            if run.proc.poll() is not None:
                break
            time.sleep(0.02)
    finally:
        del os.environ[JOBS_DIR_ENV]
    os.killpg(run.proc.pid, signal.SIGKILL)
    raise AssertionError(f"the job did not register: {run.wait()}")


def _wait_checkpoint(url: str, job_id: str) -> dict:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        status, body = _http("GET", f"{url}/jobs/{job_id}/checkpoints")
        assert status == 200, body
        if body["counts"]["completed"] >= 1:
            return body
        time.sleep(0.05)
    raise AssertionError("no checkpoint completed")


def _wait_trigger(url: str, job_id: str, trigger: str) -> dict:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        status, body = _http("GET", f"{url}/jobs/{job_id}/savepoints/{trigger}")
        assert status == 200, body
        if body["status"]["id"] == "COMPLETED":
            return body["operation"]
        assert body == {"status": {"id": "IN_PROGRESS"}}
        time.sleep(0.02)
    raise AssertionError("savepoint did not complete")


def test_endpoints_errors_and_cancel_of_a_running_job_on_a_taken_port(tmp_path):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        run, job_id, url = _start(tmp_path, f"rest.port={port}")
        assert url.startswith("http://127.0.0.1:") and not url.endswith(f":{port}")

        status, body = _http("GET", f"{url}/jobs")
        assert (status, body) == (200, {"jobs": [{"id": job_id, "status": "RUNNING"}]})
        status, overview = _http("GET", f"{url}/jobs/{job_id}")
        assert status == 200
        assert (overview["jid"], overview["name"], overview["state"]) == (
            job_id,
            "paced count",
            "RUNNING",
        )
        assert [(v["name"], v["parallelism"]) for v in overview["vertices"]] == [
            ("Source: numbers", 2),
            ("count -> Sink: Print to Std. Out", 2),
        ]
        status, body = _http("GET", f"{url}/jobs/overview")
        assert status == 200 and [j["jid"] for j in body["jobs"]] == [job_id]
        stats = _wait_checkpoint(url, job_id)
        assert stats["enabled"] is True
        latest = stats["latest"]["completed"]
        assert latest["id"] >= 1 and read_metadata(latest["external_path"])[0]["kind"] == (
            "checkpoint"
        )

        # a savepoint through the API
        target = str(tmp_path / "sp")
        status, body = _http(
            "POST", f"{url}/jobs/{job_id}/savepoints", {"target-directory": target}
        )
        assert status == 202 and len(body["request-id"]) == 32
        operation = _wait_trigger(url, job_id, body["request-id"])
        location = operation["location"]
        assert os.path.dirname(location) == target
        metadata, _ = read_metadata(location)
        assert metadata["kind"] == "savepoint" and metadata["job_id"] == job_id
        assert {e["uid"] for e in metadata["operators"].values()} >= {"numbers", "count"}

        # a savepoint that fails: no target, and no state.savepoints.dir
        status, body = _http("POST", f"{url}/jobs/{job_id}/savepoints", {})
        assert status == 202
        cause = _wait_trigger(url, job_id, body["request-id"])["failure-cause"]
        assert cause["class"] == "flowrun.core.runtime.job_manager.JobExecutionError"
        assert (
            "no savepoint directory: give one, or set state.savepoints.dir"
            in (cause["stack-trace"])
        )

        # errors, in Flink's {"errors": [...]} shape
        other = "0" * 32
        assert _http("GET", f"{url}/jobs/{other}") == (404, {"errors": [f"Job {other} not found"]})
        assert _http("PATCH", f"{url}/jobs/{other}?mode=cancel")[0] == 404
        assert _http("GET", f"{url}/nothing") == (404, {"errors": ["Not found: /nothing"]})
        status, body = _http("GET", f"{url}/jobs/{job_id}/savepoints/nope")
        assert status == 404 and "no savepoint operation with trigger id nope" in body["errors"][0]
        status, body = _http("POST", f"{url}/jobs/{job_id}/savepoints", raw=b"{not json")
        assert status == 400 and body["errors"][0].startswith("Request body is not valid JSON")
        status, body = _http("POST", f"{url}/jobs/{job_id}/savepoints", {"cancel-job": "yes"})
        assert (status, body) == (
            400,
            {"errors": ["field 'cancel-job' must be bool (or null), got \"yes\""]},
        )
        status, body = _http("POST", f"{url}/jobs/{job_id}/savepoints", {"target": "/x"})
        assert status == 400 and "unknown field(s) ['target']" in body["errors"][0]
        status, body = _http("POST", f"{url}/jobs/{job_id}/savepoints", [1])
        assert status == 400 and "must be a JSON object, got list" in body["errors"][0]
        status, body = _http("POST", f"{url}/jobs/{job_id}/stop", {"drain": True})
        assert status == 400 and "drain=true" in body["errors"][0]
        status, body = _http("DELETE", f"{url}/jobs")
        assert status == 405 and body["errors"] == ["Method DELETE is not allowed here; use GET"]
        status, body = _http("PATCH", f"{url}/jobs/{job_id}?mode=stop")
        assert status == 400 and "mode='stop' is not supported" in body["errors"][0]
        assert _http("GET", f"{url}/jobs/{job_id}")[1]["state"] == "RUNNING"

        # cancel
        assert _http("PATCH", f"{url}/jobs/{job_id}?mode=cancel") == (202, {})
        code, _out, err = run.wait(30)
    finally:
        taken.close()
    assert code == 130, err
    assert err.splitlines()[:2] == [
        f"flowrun: rest.port {port} is in use; job {job_id} serves its REST API on port "
        f"{url.rsplit(':', 1)[1]} instead",
        f"flowrun: REST API of job {job_id} at {url}",
    ]
    assert "cancelled through the REST API" in err
    assert wait_gone(run.mark) == []
    assert not os.listdir(tmp_path / "jobs"), "the registry entry was not removed"
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{url}/jobs", timeout=5)


def test_stop_and_cancel_job_through_the_api(tmp_path):
    # stop-with-savepoint: the job ends FINISHED and `flowrun run` prints the path
    run, job_id, url = _start(tmp_path, "rest.port=0")
    _wait_checkpoint(url, job_id)
    status, body = _http(
        "POST", f"{url}/jobs/{job_id}/stop", {"targetDirectory": str(tmp_path / "stop")}
    )
    assert status == 202
    location = _wait_trigger(url, job_id, body["request-id"])["location"]
    code, out, err = run.wait(30)
    assert code == 0, err
    assert out.splitlines()[-1] == f"Savepoint completed. Path: {location}"
    assert read_metadata(location)[0]["kind"] == "savepoint"
    assert wait_gone(run.mark) == []

    # cancel-job=true: a savepoint, then the job is cancelled
    run, job_id, url = _start(tmp_path, "rest.port=0")
    status, body = _http(
        "POST",
        f"{url}/jobs/{job_id}/savepoints",
        {"target-directory": str(tmp_path / "cancel"), "cancel-job": True},
    )
    assert status == 202
    location = _wait_trigger(url, job_id, body["request-id"])["location"]
    code, out, err = run.wait(30)
    assert code == 130, err
    assert "cancelled after a savepoint" in err
    assert "Savepoint completed" not in out
    assert read_metadata(location)[0]["job_id"] == job_id
    assert wait_gone(run.mark) == []


def test_registry_forgets_jobs_whose_job_manager_died(tmp_path, monkeypatch):
    monkeypatch.setenv(JOBS_DIR_ENV, str(tmp_path))
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from flowrun.core.runtime.job_registry import register_job\n"
            "register_job('a' * 32, 'doomed', 'http://127.0.0.1:1')\n"
            "print('ok', flush=True)\n"
            "time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline() == "ok\n"
        assert [(e.job_id, e.name, e.pid) for e in list_jobs()] == [("a" * 32, "doomed", child.pid)]
    finally:
        child.kill()
        child.wait()
    assert find_job("a" * 32) is None
    assert list_jobs() == []
    assert os.listdir(tmp_path) == []

    # a live pid that belongs to another process than the one that registered (recycled pid)
    register_job("b" * 32, "recycled", "http://127.0.0.1:1")
    path = tmp_path / ("b" * 32 + ".json")
    entry = json.loads(path.read_text())
    entry["pid_started"] -= 3600
    path.write_text(json.dumps(entry))
    assert list_jobs() == [] and not path.exists()

    # garbage in the directory is dropped, not fatal
    (tmp_path / ("c" * 32 + ".json")).write_text("{half")
    assert list_jobs() == [] and os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match="job id must be"):
        register_job("../escape", "x", "http://127.0.0.1:1")


def test_a_bad_rest_address_fails_the_job_with_a_clear_message(tmp_path):
    run = CliRun(
        ["run", JOB, "-D", "rest.address=203.0.113.1", "--", "10", "0"],
        env={JOBS_DIR_ENV: str(tmp_path)},
    )
    code, _out, err = run.wait(30)
    assert code == 1
    assert "cannot serve the REST API on 203.0.113.1:8081 (rest.address, rest.port)" in err
    assert wait_gone(run.mark) == []


@pytest.mark.parametrize(
    "name",
    [
        "flowrun.core.runtime.rest_server",
        "flowrun.core.runtime.job_registry",
        "flowrun.cli.rest_client",
        "flowrun.cli.errors",
        "flowrun.cli.savepoint_tools",
    ],
)
def test_docstring_examples(name, tmp_path, monkeypatch):
    monkeypatch.setenv(JOBS_DIR_ENV, str(tmp_path))
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
