"""Where running jobs can be found from another shell: one small JSON file per job.

A flowrun job runs inside the ``flowrun run`` process (its JobManager), and its REST port may
differ from ``rest.port`` (several jobs on one machine each need their own). So that
``flowrun list``, ``flowrun cancel <job-id>`` and friends find a job by its id alone, every
JobManager writes ``<job_id>.json`` into :func:`registry_dir` while it runs::

    {"job_id": "...", "name": "...", "pid": 1234, "pid_started": 1700000000.12,
     "url": "http://127.0.0.1:8081", "started": 1700000000123}

Entries are written atomically (a temporary file renamed into place), so a reader never sees
half of one, and removed when the job ends. A JobManager killed with ``kill -9`` cannot remove
its entry: :func:`list_jobs` checks that the process is alive *and* is the same process (its
start time, so a recycled pid does not revive a dead job) and deletes stale entries.

The directory is ``flowrun-jobs-<uid>`` under the default of ``io.tmp.dirs`` (the system's
temporary directory), per user so that users do not see or clash with each other's jobs;
``FLOWRUN_JOBS_DIR`` overrides it (isolated test runs, containers sharing a volume).

Example::

    >>> import os, tempfile
    >>> os.environ["FLOWRUN_JOBS_DIR"] = tempfile.mkdtemp()
    >>> path = register_job("a" * 32, "my job", "http://127.0.0.1:8081")
    >>> [(e.job_id[:4], e.name, e.pid == os.getpid()) for e in list_jobs()]
    [('aaaa', 'my job', True)]
    >>> find_job("a" * 32).url
    'http://127.0.0.1:8081'
    >>> unregister_job("a" * 32); list_jobs()
    []
    >>> del os.environ["FLOWRUN_JOBS_DIR"]
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from dataclasses import asdict, dataclass

from .. import config as cfg

__all__ = [
    "JOBS_DIR_ENV",
    "JobEntry",
    "find_job",
    "list_jobs",
    "register_job",
    "registry_dir",
    "unregister_job",
]

JOBS_DIR_ENV = "FLOWRUN_JOBS_DIR"
"""Environment variable that overrides the registry directory."""

_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_SUFFIX = ".json"


@dataclass(frozen=True)
class JobEntry:
    """One running job as registered by its JobManager."""

    job_id: str
    name: str
    pid: int
    url: str
    started: int  #: start time, ms since the epoch
    pid_started: float = 0.0  #: the JobManager process's start time (psutil create_time)


def registry_dir() -> str:
    """The directory of the registry entries (created on demand, mode 0700)."""
    override = os.environ.get(JOBS_DIR_ENV)
    if override:
        return override
    return os.path.join(cfg.WORKING_DIR.default, f"flowrun-jobs-{os.getuid()}")


def _check_job_id(job_id: str) -> str:
    if not isinstance(job_id, str) or not _JOB_ID.match(job_id):
        raise ValueError(
            f"job id must be letters, digits, '.', '_' or '-' (at most 128), got {job_id!r}"
        )
    return job_id


def _process_start(pid: int) -> float | None:
    """The start time of process ``pid``, or None when there is no such (live) process."""
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc.create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def register_job(job_id: str, name: str, url: str, started: int | None = None) -> str:
    """Announce this process's job; returns the entry's path. Replaces an entry of the same id."""
    _check_job_id(job_id)
    directory = registry_dir()
    os.makedirs(directory, mode=0o700, exist_ok=True)
    pid = os.getpid()
    entry = JobEntry(
        job_id=job_id,
        name=name,
        pid=pid,
        url=url,
        started=int(time.time() * 1000) if started is None else int(started),
        pid_started=_process_start(pid) or 0.0,
    )
    path = os.path.join(directory, job_id + _SUFFIX)
    fd, tmp = tempfile.mkstemp(prefix=f".{job_id}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(asdict(entry), out)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def unregister_job(job_id: str) -> None:
    """Remove this process's entry of ``job_id`` (not one another process registered since)."""
    _check_job_id(job_id)
    path = os.path.join(registry_dir(), job_id + _SUFFIX)
    entry = _read(path)
    if entry is not None and entry.pid != os.getpid():
        return
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _read(path: str) -> JobEntry | None:
    try:
        with open(path) as f:
            raw = json.load(f)
        return JobEntry(
            job_id=str(raw["job_id"]),
            name=str(raw["name"]),
            pid=int(raw["pid"]),
            url=str(raw["url"]),
            started=int(raw["started"]),
            pid_started=float(raw.get("pid_started", 0.0)),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _alive(entry: JobEntry) -> bool:
    started = _process_start(entry.pid)
    if started is None:
        return False
    # A recycled pid belongs to a process started after the entry's JobManager.
    return not entry.pid_started or abs(started - entry.pid_started) < 1.0


def list_jobs() -> list[JobEntry]:
    """The registered jobs whose JobManager still runs, oldest first.

    Entries of dead JobManagers (``kill -9``) and unreadable entries are deleted on the way.
    """
    directory = registry_dir()
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    jobs = []
    for name in names:
        if not name.endswith(_SUFFIX) or name.startswith("."):
            continue
        path = os.path.join(directory, name)
        entry = _read(path)
        if entry is None or not _alive(entry):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            continue
        jobs.append(entry)
    jobs.sort(key=lambda e: (e.started, e.job_id))
    return jobs


def find_job(job_id: str) -> JobEntry | None:
    """The running job with this id, or None."""
    if not isinstance(job_id, str) or not _JOB_ID.match(job_id):
        return None
    path = os.path.join(registry_dir(), job_id + _SUFFIX)
    entry = _read(path)
    if entry is None:
        return None
    if not _alive(entry):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        return None
    return entry
