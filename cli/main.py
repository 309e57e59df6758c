"""The ``flowrun`` command.

``flowrun run job.py -p 4 -D execution.buffer-timeout=0`` runs a PyFlink-style
job script: the script's ``env.execute()`` picks up ``-p`` and every ``-D`` as
its context configuration (as ``flink run`` does), and the JobManager runs in
this process. ``--plan`` prints the chained job graph instead of running it.
``flowrun config`` lists every configuration key with its default.

A running job is reachable from another shell through its REST API (Flink's
commands and flags)::

    flowrun run -d job.py                    # detached: prints the job id, returns
    flowrun run -s <savepoint> job.py        # resume from a savepoint (-n: allow dropped state)
    flowrun list                             # running jobs: start, id, name, status, REST URL
    flowrun savepoint <job-id> [<dir>]       # take a savepoint
    flowrun stop -p <dir> <job-id>           # stop with a savepoint
    flowrun cancel [-s [<dir>]] <job-id>     # cancel (after a savepoint with -s)
    flowrun savepoint -d <path>              # dispose of a savepoint
    flowrun savepoint inspect <path> [--state <uid-or-name>/<state>] [--limit N]
    flowrun savepoint diff <path> job.py [-p N] [-- job args]

Exit codes: 0 success; 1 job failed, or a command about a job or savepoint
failed (unknown job id, no such path, not a savepoint; ``savepoint diff``: the
restore would be refused); 2 bad command line or job file; 130 cancelled.
"""

from __future__ import annotations

import argparse
import os
import runpy
import subprocess
import sys
import time
import traceback
import uuid

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flowrun", description="Run dataflow jobs written against the PyFlink DataStream API."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a job script")
    run.add_argument("job", help="path of the job's Python file")
    run.add_argument("-p", "--parallelism", type=int, default=None, help="default parallelism")
    run.add_argument(
        "-D",
        dest="dynamic",
        action="append",
        default=[],
        metavar="key=value",
        help="set a configuration key (repeatable); see 'flowrun config'",
    )
    run.add_argument("--plan", action="store_true", help="print the chained job graph, do not run")
    run.add_argument(
        "-s",
        "--fromSavepoint",
        dest="from_savepoint",
        metavar="path",
        help="restore the job from this savepoint or retained checkpoint",
    )
    run.add_argument(
        "-n",
        "--allowNonRestoredState",
        "--allow-non-restored-state",
        dest="allow_non_restored",
        action="store_true",
        help="restore even if the savepoint holds state of an operator the job no longer has",
    )
    run.add_argument(
        "-d",
        "--detached",
        action="store_true",
        help="run in the background: print the job id and return once the job runs",
    )
    run.epilog = "Arguments after -- are passed to the job script (sys.argv[1:])."
    sub.add_parser("config", help="list every configuration key with its default")
    sub.add_parser("list", help="list the running jobs of this machine")
    cancel = sub.add_parser("cancel", help="cancel a running job")
    cancel.add_argument("job_id", nargs="?", help="the job's id (see 'flowrun list')")
    cancel.add_argument(
        "-s",
        "--withSavepoint",
        dest="savepoint_dir",
        nargs="?",
        const="",
        default=None,
        metavar="dir",
        help="take a savepoint first (into dir, else state.savepoints.dir)",
    )
    stop = sub.add_parser("stop", help="stop a running job with a savepoint")
    stop.add_argument("job_id", nargs="?", help="the job's id (see 'flowrun list')")
    stop.add_argument(
        "-p",
        "--savepointPath",
        "--savepoint-path",
        dest="savepoint_dir",
        nargs="?",
        const="",
        default=None,
        metavar="dir",
        help="directory of the savepoint (default: state.savepoints.dir of the job)",
    )
    savepoint = sub.add_parser(
        "savepoint",
        help="take or dispose of a savepoint; 'savepoint inspect' and 'savepoint diff' read one",
    )
    savepoint.add_argument("job_id", nargs="?", help="the job's id (see 'flowrun list')")
    savepoint.add_argument("target", nargs="?", help="savepoint directory (default: the job's)")
    savepoint.add_argument("-d", "--dispose", metavar="path", help="delete this savepoint")
    savepoint.epilog = (
        "Also: 'flowrun savepoint inspect <path> [--state <uid-or-name>/<state>] [--limit N]' "
        "and 'flowrun savepoint diff <path> job.py [-p N] [-- job args]'."
    )
    return parser


def _inspect_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flowrun savepoint inspect",
        description="Print the operators and states of a savepoint, or one state's rows.",
    )
    parser.add_argument("path", help="savepoint directory, its _metadata, or a checkpoint")
    parser.add_argument(
        "--state", metavar="operator/state", help="print this state: <uid-or-operator-name>/<name>"
    )
    parser.add_argument(
        "--limit", type=int, default=50, help="rows of --state to print (default 50; 0: all)"
    )
    return parser


def _diff_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flowrun savepoint diff",
        description="Show how a savepoint's state maps onto a (changed) job, without running it.",
    )
    parser.add_argument("path", help="savepoint directory, its _metadata, or a checkpoint")
    parser.add_argument("job", help="path of the job's Python file")
    parser.add_argument("-p", "--parallelism", type=int, default=None, help="default parallelism")
    parser.add_argument(
        "-D", dest="dynamic", action="append", default=[], metavar="key=value", help="config key"
    )
    parser.add_argument(
        "-n",
        "--allowNonRestoredState",
        "--allow-non-restored-state",
        dest="allow_non_restored",
        action="store_true",
        help="judge the restore as with flowrun run -n",
    )
    parser.epilog = "Arguments after -- are passed to the job script. Exit 1: restore refused."
    return parser


def _fail(message: str, code: int = 2) -> int:
    sys.stderr.write(f"flowrun: error: {message}\n")
    return code


def _configuration(args: argparse.Namespace) -> tuple[object | None, int | None]:
    """The context configuration from -p and -D (and -s/-n of run); (None, exit code) when bad."""
    from flowrun.core.config import ConfigurationError, parse_dynamic_properties

    if args.parallelism is not None and args.parallelism < 1:
        return None, _fail(f"-p must be a positive integer, got {args.parallelism}")
    try:
        conf = parse_dynamic_properties(args.dynamic)
        if args.parallelism is not None:
            conf.set("parallelism.default", args.parallelism)
        if getattr(args, "from_savepoint", None):
            conf.set("execution.savepoint.path", args.from_savepoint)
        if getattr(args, "allow_non_restored", False):
            conf.set("execution.savepoint.ignore-unclaimed-state", True)
    except (ConfigurationError, ValueError) as exc:
        return None, _fail(str(exc))
    return conf, None


def _exec_script(job: str, shown: str, script_args: list[str]) -> int | None:
    """Run the job script as ``__main__``; an exit code when it ended badly, else None."""
    from flowrun.core.config import ConfigurationError
    from flowrun.core.graph.stream_graph import GraphError
    from flowrun.core.runtime.job_manager import JobCancelledError, JobExecutionError

    sys.argv = [job, *script_args]
    sys.path.insert(0, os.path.dirname(job))
    try:
        runpy.run_path(job, run_name="__main__")
    except JobCancelledError as exc:
        sys.stderr.write(f"flowrun: {exc}\n")
        return 130
    except KeyboardInterrupt:
        sys.stderr.write("flowrun: cancelled by Ctrl-C\n")
        return 130
    except JobExecutionError as exc:
        sys.stderr.write(f"flowrun: job failed\n{exc}\n")
        return 1
    except (GraphError, ConfigurationError) as exc:
        sys.stderr.write(f"flowrun: invalid job {shown}: {exc}\n")
        return 2
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException as exc:
        tb = "".join(traceback.format_exception(exc)).rstrip()
        sys.stderr.write(
            f"flowrun: the job script {shown} raised {type(exc).__name__}: {exc}\n{tb}\n"
        )
        return 2
    return None


def _run(args: argparse.Namespace) -> int:
    if args.detached and not args.plan:
        return _run_detached(args)
    # Start the fork server first: it imports pyarrow while the job script loads.
    from flowrun.core.runtime.forkserver import get_fork_server

    get_fork_server()
    from flowrun.core.environment import _Context

    conf, code = _configuration(args)
    if conf is None:
        return code
    job = os.path.abspath(args.job)
    if not os.path.isfile(job):
        return _fail(f"job file {args.job} does not exist")
    _Context.config = conf
    _Context.plan_only = args.plan
    code = _exec_script(job, args.job, args.args)
    if code is not None:
        return code
    if args.plan:
        if not _Context.plans:
            return _fail(f"{args.job} defined no job (it never called env.execute())")
        print("\n\n".join(_Context.plans))
    return 0


# -- detached runs -------------------------------------------------------------------------


def _run_detached(args: argparse.Namespace) -> int:
    """Start ``flowrun run`` (without -d) in a new session, its output in a log file; return
    once the job is registered (its REST API is up), printing Flink's submission line."""
    from flowrun.core import config as cfg
    from flowrun.core.runtime.job_registry import find_job

    conf, code = _configuration(args)
    if conf is None:
        return code
    job = os.path.abspath(args.job)
    if not os.path.isfile(job):
        return _fail(f"job file {args.job} does not exist")
    job_id = uuid.uuid4().hex
    log_dir = conf.get(cfg.WORKING_DIR)
    log_path = os.path.join(log_dir, f"flowrun-{job_id}.log")
    command = [sys.executable, "-m", "flowrun.cli.main", "run", job]
    if args.parallelism is not None:
        command += ["-p", str(args.parallelism)]
    for pair in args.dynamic:
        command += ["-D", pair]
    if args.from_savepoint:
        command += ["-s", args.from_savepoint]
    if args.allow_non_restored:
        command.append("-n")
    command += ["--", *args.args]
    env = dict(os.environ, FLOWRUN_JOB_ID=job_id)
    try:
        os.makedirs(log_dir, exist_ok=True)
        log = open(log_path, "ab")
    except OSError as exc:
        return _fail(f"cannot write the job's log {log_path}: {exc.strerror or exc}", 1)
    with log:
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    print(f"Output of the job goes to {log_path}", flush=True)
    while True:
        if find_job(job_id) is not None:
            print(f"Job has been submitted with JobID {job_id}", flush=True)
            return 0
        returncode = proc.poll()
        if returncode is not None:
            break
        time.sleep(0.02)
    try:
        with open(log_path, encoding="utf-8", errors="replace") as f:
            output = f.read()
    except OSError:
        output = ""
    if f"REST API of job {job_id}" in output:  # it ran, and ended between two looks
        print(f"Job has been submitted with JobID {job_id}", flush=True)
        print(f"Job {job_id} has already ended (exit code {returncode}).", flush=True)
        return 0
    tail = "\n".join(output.rstrip().splitlines()[-20:])
    if returncode == 0:
        return _fail(f"{args.job} defined no job (it never called env.execute())\n{tail}".rstrip())
    sys.stderr.write(
        f"flowrun: error: the job did not start (exit code {returncode}); its output:\n{tail}\n"
    )
    return returncode if returncode > 0 else 1


# -- commands on running jobs --------------------------------------------------------------


def _job_and_dir(args: argparse.Namespace, command: str) -> tuple[str, str | None]:
    """Flink's rule for an optional-valued flag: ``-s <job-id>`` alone means no directory."""
    from .errors import CliError

    job_id, directory = args.job_id, args.savepoint_dir
    if job_id is None and directory:
        job_id, directory = directory, None
    if not job_id:
        raise CliError(f"{command}: missing the job id (see 'flowrun list')", code=2)
    return job_id, directory or None


def _list() -> int:
    import datetime as dt

    from flowrun.core.runtime.job_registry import list_jobs

    from .errors import CliError
    from .rest_client import request

    jobs = list_jobs()
    if not jobs:
        print("No running jobs.")
        return 0
    print("------------------ Running/Restarting Jobs -------------------")
    for entry in jobs:
        try:
            status, body = request(entry, "GET", f"/jobs/{entry.job_id}")
            state = body.get("state", "UNKNOWN") if status == 200 else "UNKNOWN"
        except CliError:
            state = "UNREACHABLE"
        started = dt.datetime.fromtimestamp(entry.started / 1000).strftime("%d.%m.%Y %H:%M:%S")
        print(f"{started} : {entry.job_id} : {entry.name} ({state}) {entry.url}")
    print("--------------------------------------------------------------")
    return 0


def _accepted(entry, status: int, body, what: str) -> None:
    from .errors import CliError
    from .rest_client import errors_of

    if status != 202:
        raise CliError(f"{what} of job {entry.job_id} was refused ({status}): {errors_of(body)}")


def _cancel(args: argparse.Namespace) -> int:
    from .rest_client import find_running_job, request, wait_for_savepoint, wait_until_gone

    with_savepoint = args.savepoint_dir is not None
    job_id, directory = _job_and_dir(args, "cancel")
    entry = find_running_job(job_id)
    if not with_savepoint:
        print(f"Cancelling job {job_id}.", flush=True)
        status, body = request(entry, "PATCH", f"/jobs/{job_id}?mode=cancel")
        _accepted(entry, status, body, "cancel")
        wait_until_gone(entry)
        print(f"Cancelled job {job_id}.")
        return 0
    where = directory or "the default savepoint directory"
    print(f"Cancelling job {job_id} with savepoint to {where}.", flush=True)
    status, body = request(
        entry,
        "POST",
        f"/jobs/{job_id}/savepoints",
        {"target-directory": directory, "cancel-job": True},
    )
    _accepted(entry, status, body, "cancel with savepoint")
    path = wait_for_savepoint(entry, body["request-id"])
    wait_until_gone(entry)
    print(f"Cancelled job {job_id}. Savepoint stored in {path}.")
    return 0


def _stop(args: argparse.Namespace) -> int:
    from .rest_client import find_running_job, request, wait_for_savepoint, wait_until_gone

    job_id, directory = _job_and_dir(args, "stop")
    entry = find_running_job(job_id)
    print(f'Suspending job "{job_id}" with a savepoint.', flush=True)
    status, body = request(
        entry, "POST", f"/jobs/{job_id}/stop", {"targetDirectory": directory, "drain": False}
    )
    _accepted(entry, status, body, "stop")
    path = wait_for_savepoint(entry, body["request-id"])
    wait_until_gone(entry)
    print(f"Savepoint completed. Path: {path}")
    return 0


def _savepoint(args: argparse.Namespace) -> int:
    from .errors import CliError
    from .rest_client import find_running_job, request, wait_for_savepoint

    if args.dispose is not None:
        if args.job_id is not None:
            raise CliError("savepoint --dispose takes only the savepoint's path", code=2)
        return _dispose(args.dispose)
    if args.job_id is None:
        raise CliError("savepoint: missing the job id (see 'flowrun list')", code=2)
    entry = find_running_job(args.job_id)
    print(f"Triggering savepoint for job {args.job_id}.")
    print("Waiting for response...", flush=True)
    status, body = request(
        entry,
        "POST",
        f"/jobs/{args.job_id}/savepoints",
        {"target-directory": args.target, "cancel-job": False},
    )
    _accepted(entry, status, body, "savepoint")
    path = wait_for_savepoint(entry, body["request-id"])
    print(f"Savepoint completed. Path: {path}")
    print("You can resume your program from this savepoint with the run command.")
    return 0


def _dispose(path: str) -> int:
    from flowrun.core.runtime.checkpoint_storage import CheckpointStorageError, dispose_savepoint

    from .errors import CliError

    print(f"Disposing savepoint '{path}'.", flush=True)
    try:
        dispose_savepoint(path)
    except (CheckpointStorageError, ValueError) as exc:
        raise CliError(str(exc)) from None
    print(f"Savepoint '{path}' disposed.")
    return 0


# -- reading savepoints ---------------------------------------------------------------------


def _inspect(argv: list[str]) -> int:
    from .savepoint_tools import Savepoint, format_inspect, format_state

    args = _inspect_parser().parse_args(argv)
    if args.limit < 0:
        return _fail(f"--limit must be >= 0 (0 prints every row), got {args.limit}")
    savepoint = Savepoint(args.path)
    if args.state is None:
        print(format_inspect(savepoint))
    else:
        print(format_state(savepoint, args.state, args.limit))
    return 0


def _diff(argv: list[str], script_args: list[str]) -> int:
    from flowrun.core.environment import _Context

    from .savepoint_tools import Savepoint, diff_report

    args = _diff_parser().parse_args(argv)
    conf, code = _configuration(args)
    if conf is None:
        return code
    job = os.path.abspath(args.job)
    if not os.path.isfile(job):
        return _fail(f"job file {args.job} does not exist")
    savepoint = Savepoint(args.path)  # before running the script: a bad path fails fast
    _Context.config = conf
    _Context.plan_only = True
    code = _exec_script(job, args.job, script_args)
    if code is not None:
        return code
    if not _Context.job_graphs:
        return _fail(f"{args.job} defined no job (it never called env.execute())")
    if len(_Context.job_graphs) > 1:
        sys.stderr.write(
            f"flowrun: {args.job} defines {len(_Context.job_graphs)} jobs; comparing with the "
            f"first, '{_Context.job_graphs[0].job_name}'\n"
        )
    text, restorable = diff_report(savepoint, _Context.job_graphs[0], args.allow_non_restored)
    print(text)
    return 0 if restorable else 1


def _config() -> int:
    from flowrun.core.config import OPTIONS

    for key in sorted(OPTIONS):
        option = OPTIONS[key]
        print(f"{key} = {option.default!r}\n    {option.description}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    script_args: list[str] = []
    if "--" in argv:  # everything after -- belongs to the job script
        cut = argv.index("--")
        argv, script_args = argv[:cut], argv[cut + 1 :]
    from .errors import CliError

    try:
        if argv[:1] == ["savepoint"] and argv[1:2] == ["inspect"]:
            return _inspect(argv[2:])
        if argv[:1] == ["savepoint"] and argv[1:2] == ["diff"]:
            return _diff(argv[2:], script_args)
        args = _parser().parse_args(argv)
        args.args = script_args
        if args.command == "run":
            return _run(args)
        if args.command == "list":
            return _list()
        if args.command == "cancel":
            return _cancel(args)
        if args.command == "stop":
            return _stop(args)
        if args.command == "savepoint":
            return _savepoint(args)
        return _config()
    except CliError as exc:
        return _fail(str(exc), exc.code)
    except KeyboardInterrupt:
        sys.stderr.write("flowrun: interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
