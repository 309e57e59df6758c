"""The REST API of a running job: Flink's endpoints and field names, served from the JobManager.

A job must be reachable from another shell while it runs: to look at it (``flowrun list``,
``curl .../jobs/<id>``), to take a savepoint, to stop it with one, or to cancel it. Flink's
JobManager serves this on ``rest.address:rest.port``; so does flowrun's, with the standard
library's threaded HTTP server (a request is a few hundred microseconds of JSON, no
dependency is worth it). Every handler only calls the JobManager's thread-safe methods
(:meth:`~flowrun.core.runtime.job_manager.JobManager.overview`, ``trigger_savepoint``,
``cancel``), so the supervision loop is never blocked by a client.

Endpoints (as Flink 1.15's, trimmed to what flowrun has):

=========================================  =================================================
``GET /jobs``                              ``{"jobs": [{"id": ..., "status": ...}]}``
``GET /jobs/overview``                     ``{"jobs": [<overview>]}``
``GET /jobs/<id>``                         the overview (jid, name, state, vertices, ...)
``GET /jobs/<id>/checkpoints``             ``{"counts": {...}, "latest": {"completed": ...}}``
``POST /jobs/<id>/savepoints``             body ``{"target-directory", "cancel-job"}`` -> 202
                                           ``{"request-id": <trigger id>}``
``GET /jobs/<id>/savepoints/<trigger id>`` ``{"status": {"id": "IN_PROGRESS"|"COMPLETED"},
                                           "operation": {"location"} | {"failure-cause"}}``
``POST /jobs/<id>/stop``                   body ``{"targetDirectory", "drain"}`` -> 202
                                           ``{"request-id"}`` (status: the savepoints URL)
``PATCH /jobs/<id>?mode=cancel``           202 ``{}``
=========================================  =================================================

Errors are Flink's ``{"errors": [...]}`` with 404 (unknown job, trigger or path), 400 (bad JSON
or fields), 405 (method) and 413 (body too large).

**Deviation from Flink**: when ``rest.port`` is taken (several flowrun jobs on one machine, each
with its own JobManager), the server falls back to a free port and says so on stderr instead of
failing the job; clients find the actual URL through the job registry
(:mod:`flowrun.core.runtime.job_registry`). ``rest.port: 0`` always picks a free port.

Example (a stand-in for the JobManager; the real one is wired in by :class:`JobEndpoint`)::

    >>> import json, urllib.request
    >>> from flowrun.core.config import Configuration
    >>> class FakeJob:
    ...     job_id, status = "f" * 32, "RUNNING"
    ...     config = Configuration({"rest.port": 0})
    ...     def overview(self):
    ...         return {"jid": self.job_id, "name": "demo", "state": self.status}
    >>> server = start_rest_server(FakeJob(), announce=False)
    >>> with urllib.request.urlopen(server.url + "/jobs") as response:
    ...     json.load(response)
    {'jobs': [{'id': 'ffffffffffffffffffffffffffffffff', 'status': 'RUNNING'}]}
    >>> server.shutdown()
"""

from __future__ import annotations

import concurrent.futures
import errno
import json
import socket
import sys
import threading
import time
import traceback
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .. import config as cfg

__all__ = ["JobEndpoint", "RestServer", "RestServerError", "start_rest_server"]

MAX_BODY_BYTES = 1 << 20
_RESULT_GRACE_S = 5.0  #: how long shutdown waits for a client to fetch a job-ending result


class RestServerError(RuntimeError):
    """The REST endpoint cannot be served (bad ``rest.address``, no free port)."""


class _RequestError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Trigger:
    """One savepoint request (also stop and cancel-with-savepoint) and its outcome."""

    __slots__ = ("future", "ends_job", "fetched")

    def __init__(self, future: concurrent.futures.Future, ends_job: bool) -> None:
        self.future = future
        self.ends_job = ends_job
        self.fetched = threading.Event()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True  # only TIME_WAIT leftovers; a live listener still conflicts
    job: Any
    triggers: dict[str, _Trigger]
    lock: threading.Lock


class _Server6(_Server):
    address_family = socket.AF_INET6


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    """The whole request body (read once, first: an unread body would garble keep-alive)."""
    length_text = handler.headers.get("Content-Length")
    if not length_text:
        return b""
    try:
        length = int(length_text)
    except ValueError:
        length = -1
    if length < 0:
        handler.close_connection = True
        raise _RequestError(400, f"bad Content-Length header {length_text!r}")
    if length > MAX_BODY_BYTES:
        handler.close_connection = True
        raise _RequestError(413, f"request body of {length} bytes exceeds {MAX_BODY_BYTES}")
    return handler.rfile.read(length) if length else b""


def _parse_json(raw: bytes) -> dict:
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _RequestError(400, f"Request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise _RequestError(400, f"Request body must be a JSON object, got {type(body).__name__}")
    return body


def _check_fields(body: dict, allowed: dict[str, tuple[type, ...]]) -> None:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise _RequestError(
            400, f"unknown field(s) {unknown} in the request body; expected {sorted(allowed)}"
        )
    for name, types in allowed.items():
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, types) or (bool not in types and isinstance(value, bool)):
            expected = " or ".join(t.__name__ for t in types)
            raise _RequestError(
                400, f"field {name!r} must be {expected} (or null), got {json.dumps(value)}"
            )


_SAVEPOINT_FIELDS: dict[str, tuple[type, ...]] = {
    "target-directory": (str,),
    "cancel-job": (bool,),
    "formatType": (str,),
    "triggerId": (str,),
}
_STOP_FIELDS: dict[str, tuple[type, ...]] = {
    "targetDirectory": (str,),
    "drain": (bool,),
    "formatType": (str,),
    "triggerId": (str,),
}


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "flowrun"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib's name
        pass  # stderr belongs to the job; a request log there would drown its messages

    # -- responses ------------------------------------------------------------------
    def _send(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _dispatch(self, method: str) -> None:
        try:
            self._raw = _read_body(self)
            status, body = self._route(method)
        except _RequestError as exc:
            status, body = exc.status, {"errors": [str(exc)]}
        except Exception as exc:  # a bug must answer 500, not drop the connection
            status = 500
            body = {"errors": [f"Internal server error: {type(exc).__name__}: {exc}"]}
        self._send(status, body)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_PATCH(self) -> None:  # noqa: N802
        self._dispatch("PATCH")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")

    # -- routing --------------------------------------------------------------------
    def _route(self, method: str) -> tuple[int, Any]:
        url = urlsplit(self.path)
        parts = [p for p in url.path.split("/") if p]
        query = parse_qs(url.query)
        job = self.server.job
        if parts == ["jobs"]:
            self._only(method, "GET")
            return 200, {"jobs": [{"id": job.job_id, "status": job.status}]}
        if parts == ["jobs", "overview"]:
            self._only(method, "GET")
            return 200, {"jobs": [job.overview()]}
        if len(parts) >= 2 and parts[0] == "jobs":
            if parts[1] != job.job_id:
                raise _RequestError(404, f"Job {parts[1]} not found")
            rest = parts[2:]
            if not rest:
                if method == "PATCH":
                    return self._cancel(query)
                self._only(method, "GET", "PATCH")
                return 200, job.overview()
            if rest == ["checkpoints"]:
                self._only(method, "GET")
                return 200, _checkpoint_stats(job.overview().get("checkpoints") or {})
            if rest == ["savepoints"]:
                self._only(method, "POST")
                return self._trigger_savepoint(_parse_json(self._raw))
            if len(rest) == 2 and rest[0] == "savepoints":
                self._only(method, "GET")
                return self._savepoint_status(rest[1])
            if rest == ["stop"]:
                self._only(method, "POST")
                return self._stop(_parse_json(self._raw))
        raise _RequestError(404, f"Not found: {url.path}")

    def _only(self, method: str, *allowed: str) -> None:
        if method not in allowed:
            raise _RequestError(
                405, f"Method {method} is not allowed here; use {' or '.join(allowed)}"
            )

    # -- actions --------------------------------------------------------------------
    def _cancel(self, query: dict[str, list[str]]) -> tuple[int, Any]:
        mode = (query.get("mode") or ["cancel"])[-1]
        if mode != "cancel":
            raise _RequestError(
                400, f"mode={mode!r} is not supported; use mode=cancel (stop: POST .../stop)"
            )
        self.server.job.cancel("cancelled through the REST API")
        return 202, {}

    def _trigger_savepoint(self, body: dict) -> tuple[int, Any]:
        _check_fields(body, _SAVEPOINT_FIELDS)
        target = body.get("target-directory")
        cancel = bool(body.get("cancel-job"))
        job = self.server.job
        future = job.trigger_savepoint(target, stop=False)
        if cancel:
            outer: concurrent.futures.Future = concurrent.futures.Future()
            outer.set_running_or_notify_cancel()

            def then_cancel(done: concurrent.futures.Future) -> None:
                error = done.exception()
                if error is not None:
                    outer.set_exception(error)
                    return
                job.cancel("cancelled after a savepoint")
                outer.set_result(done.result())

            future.add_done_callback(then_cancel)
            future = outer
        return 202, {"request-id": self._register(future, ends_job=cancel, body=body)}

    def _stop(self, body: dict) -> tuple[int, Any]:
        _check_fields(body, _STOP_FIELDS)
        if body.get("drain"):
            raise _RequestError(
                400,
                "drain=true (emit MAX_WATERMARK before stopping) is not supported by flowrun; "
                "stop with drain=false",
            )
        future = self.server.job.trigger_savepoint(body.get("targetDirectory"), stop=True)
        return 202, {"request-id": self._register(future, ends_job=True, body=body)}

    def _register(self, future: concurrent.futures.Future, ends_job: bool, body: dict) -> str:
        trigger_id = body.get("triggerId") or uuid.uuid4().hex
        with self.server.lock:
            if trigger_id in self.server.triggers:
                future.cancel()
                raise _RequestError(400, f"trigger id {trigger_id} was already used")
            self.server.triggers[trigger_id] = _Trigger(future, ends_job)
        return trigger_id

    def _savepoint_status(self, trigger_id: str) -> tuple[int, Any]:
        with self.server.lock:
            trigger = self.server.triggers.get(trigger_id)
        if trigger is None:
            raise _RequestError(
                404,
                f"There is no savepoint operation with trigger id {trigger_id} for job "
                f"{self.server.job.job_id}",
            )
        future = trigger.future
        if not future.done():
            return 200, {"status": {"id": "IN_PROGRESS"}}
        trigger.fetched.set()
        error = future.exception()
        if error is None:
            return 200, {"status": {"id": "COMPLETED"}, "operation": {"location": future.result()}}
        return 200, {
            "status": {"id": "COMPLETED"},
            "operation": {
                "failure-cause": {
                    "class": f"{type(error).__module__}.{type(error).__qualname__}",
                    "stack-trace": "".join(traceback.format_exception(error)).rstrip(),
                }
            },
        }


def _checkpoint_stats(checkpoints: dict) -> dict:
    """Flink's ``CheckpointingStatistics`` shape from the JobManager's overview part."""
    completed = int(checkpoints.get("completed", 0))
    failed = int(checkpoints.get("failed", 0))
    in_progress = int(checkpoints.get("in_progress", 0))
    return {
        "enabled": bool(checkpoints.get("enabled", False)),
        "counts": {
            "restored": 0,
            "total": completed + failed + in_progress,
            "in_progress": in_progress,
            "completed": completed,
            "failed": failed,
        },
        "latest": {"completed": checkpoints.get("latest")},
    }


class RestServer:
    """A running REST endpoint of one job; :meth:`shutdown` stops it."""

    def __init__(self, httpd: _Server, thread: threading.Thread, address: str) -> None:
        self._httpd = httpd
        self._thread = thread
        self.address = address
        self.port: int = httpd.server_address[1]

    @property
    def url(self) -> str:
        host = self.address
        if host in ("", "0.0.0.0"):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    def shutdown(self, grace_s: float = _RESULT_GRACE_S) -> None:
        """Stop serving; first give clients up to ``grace_s`` to fetch the result of a stop or
        cancel-with-savepoint that ended the job (they poll for it; the job is ending)."""
        deadline = time.monotonic() + grace_s
        with self._httpd.lock:
            waiting = [t for t in self._httpd.triggers.values() if t.ends_job and t.future.done()]
        for trigger in waiting:
            trigger.fetched.wait(max(0.0, deadline - time.monotonic()))
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def _bind(address: str, port: int) -> _Server:
    server_class = _Server6 if ":" in address else _Server
    return server_class((address, port), _Handler)


def start_rest_server(job: Any, announce: bool = True) -> RestServer:
    """Serve the REST API of ``job`` (a JobManager) on ``rest.address:rest.port``.

    A taken port falls back to a free one, with a line on stderr (see the module docstring);
    ``announce`` prints ``flowrun: REST API of job <id> at <url>`` on stderr.
    """
    conf = job.config
    address = conf.get(cfg.REST_ADDRESS)
    port = conf.get(cfg.REST_PORT)
    try:
        httpd = _bind(address, port)
    except (OSError, OverflowError) as exc:
        if port == 0 or getattr(exc, "errno", None) != errno.EADDRINUSE:
            raise RestServerError(
                f"cannot serve the REST API on {address}:{port} (rest.address, rest.port): "
                f"{getattr(exc, 'strerror', None) or exc}"
            ) from exc
        httpd = _bind(address, 0)
        sys.stderr.write(
            f"flowrun: rest.port {port} is in use; job {job.job_id} serves its REST API on "
            f"port {httpd.server_address[1]} instead\n"
        )
    httpd.job = job
    httpd.triggers = {}
    httpd.lock = threading.Lock()
    thread = threading.Thread(
        target=httpd.serve_forever,
        kwargs={"poll_interval": 0.02},  # shutdown() waits up to this long
        name=f"flowrun-rest-{job.job_id[:8]}",
        daemon=True,
    )
    thread.start()
    server = RestServer(httpd, thread, address)
    if announce:
        sys.stderr.write(f"flowrun: REST API of job {job.job_id} at {server.url}\n")
        sys.stderr.flush()
    return server


class JobEndpoint:
    """What makes a running JobManager reachable: its REST server and its registry entry.

    ``JobManager.run()`` calls :meth:`start` when the job starts and :meth:`close` when it ends
    (whatever the outcome); :meth:`close` is idempotent and safe without :meth:`start`.
    """

    def __init__(self, job: Any) -> None:
        self.job = job
        self.server: RestServer | None = None
        self._registered = False

    def start(self) -> None:
        from .job_manager import JobExecutionError
        from .job_registry import register_job

        try:
            self.server = start_rest_server(self.job)
        except RestServerError as exc:
            raise JobExecutionError(str(exc)) from exc
        register_job(
            self.job.job_id,
            self.job.job_name,
            self.server.url,
            started=getattr(self.job, "start_time_ms", None),
        )
        self._registered = True

    def close(self) -> None:
        from .job_registry import unregister_job

        if self._registered:
            self._registered = False
            try:
                unregister_job(self.job.job_id)
            except OSError:
                pass
        server, self.server = self.server, None
        if server is not None:
            server.shutdown()
