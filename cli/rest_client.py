"""The CLI's side of a running job's REST API: find the job, send a request, wait for results.

The CLI knows a job only by its id; :func:`find_running_job` looks it up in the job registry
(:mod:`flowrun.core.runtime.job_registry`), which holds the URL its JobManager actually serves
on. Requests are plain ``urllib`` with JSON bodies; every failure is a :class:`CliError` with
one line that says what went wrong, which ``flowrun`` prints as ``flowrun: error: ...``.

Example::

    >>> try:
    ...     find_running_job("0" * 32)
    ... except CliError as exc:
    ...     print(str(exc).split(" (")[0])
    no running job with id 00000000000000000000000000000000 on this machine
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

from flowrun.core.runtime.job_registry import JobEntry, find_job, list_jobs

from .errors import CliError

__all__ = [
    "CliError",
    "errors_of",
    "find_running_job",
    "request",
    "wait_for_savepoint",
    "wait_until_gone",
]

_TIMEOUT_S = 10.0  #: one HTTP request (the server answers in microseconds; this is a dead peer)
_POLL_S = 0.05


def find_running_job(job_id: str) -> JobEntry:
    """The registry entry of a running job, or :class:`CliError` naming the id."""
    entry = find_job(job_id)
    if entry is None:
        running = len(list_jobs())
        raise CliError(
            f"no running job with id {job_id} on this machine ({running} running; "
            "see 'flowrun list')"
        )
    return entry


def request(entry: JobEntry, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """``(status, json)`` of one request to the job's REST API (any HTTP status is returned)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(entry.url + path, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=_TIMEOUT_S) as response:
            return response.status, _json(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, _json(exc.read())
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CliError(
            f"job {entry.job_id} did not answer at {entry.url} ({reason}); it may have ended"
        ) from None


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else {}
    except ValueError:
        return {"errors": [raw.decode("utf-8", "replace")[:200]]}


def errors_of(body: Any) -> str:
    """The ``errors`` of a Flink REST error body as one line."""
    if isinstance(body, dict) and isinstance(body.get("errors"), list):
        return "; ".join(str(e) for e in body["errors"])
    return str(body)


def wait_for_savepoint(entry: JobEntry, trigger_id: str, timeout_s: float | None = None) -> str:
    """Poll a savepoint (or stop) trigger until it completes; its path, or :class:`CliError`
    with the cause's message."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    path = f"/jobs/{entry.job_id}/savepoints/{trigger_id}"
    while True:
        status, body = request(entry, "GET", path)
        if status != 200:
            raise CliError(f"savepoint of job {entry.job_id} failed: {errors_of(body)}")
        if body.get("status", {}).get("id") == "COMPLETED":
            operation = body.get("operation") or {}
            if "location" in operation:
                return operation["location"]
            raise CliError(
                f"savepoint of job {entry.job_id} failed: "
                + _cause_message(operation.get("failure-cause") or {})
            )
        if deadline is not None and time.monotonic() > deadline:
            raise CliError(f"savepoint of job {entry.job_id} did not complete in {timeout_s} s")
        time.sleep(_POLL_S)


def _cause_message(cause: dict) -> str:
    """The exception's message out of Flink's ``failure-cause`` (class + stack trace)."""
    cls = str(cause.get("class", ""))
    trace = str(cause.get("stack-trace", "")).strip()
    marker = f"{cls}: " if cls else ""
    at = trace.rfind(marker) if marker else -1
    if at >= 0:
        return trace[at + len(marker) :].strip()
    lines = trace.splitlines()
    return lines[-1] if lines else (cls or "unknown cause")


def wait_until_gone(entry: JobEntry, timeout_s: float = 60.0) -> bool:
    """Wait until the job's JobManager process has ended; False on timeout."""
    import psutil

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            proc = psutil.Process(entry.pid)
            if proc.status() == psutil.STATUS_ZOMBIE:
                return True
            if entry.pid_started and abs(proc.create_time() - entry.pid_started) >= 1.0:
                return True  # the pid was recycled: ours is gone
        except psutil.NoSuchProcess:
            return True
        time.sleep(_POLL_S)
    return False
