"""The ``flowrun`` command.

``flowrun run job.py -p 4 -D execution.buffer-timeout=0`` runs a PyFlink-style
job script: the script's ``env.execute()`` picks up ``-p`` and every ``-D`` as
its context configuration (as ``flink run`` does), and the JobManager runs in
this process. ``--plan`` prints the chained job graph instead of running it.
``flowrun config`` lists every configuration key with its default.

Exit codes: 0 success; 1 job failed (the cause is printed); 2 bad command line
or job file; 130 cancelled with Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys
import traceback

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
    run.epilog = "Arguments after -- are passed to the job script (sys.argv[1:])."
    sub.add_parser("config", help="list every configuration key with its default")
    return parser


def _fail(message: str, code: int = 2) -> int:
    sys.stderr.write(f"flowrun: error: {message}\n")
    return code


def _run(args: argparse.Namespace) -> int:
    # Start the fork server first: it imports pyarrow while the job script loads.
    from flowrun.core.runtime.forkserver import get_fork_server

    get_fork_server()
    from flowrun.core.config import ConfigurationError, parse_dynamic_properties
    from flowrun.core.environment import _Context
    from flowrun.core.graph.stream_graph import GraphError
    from flowrun.core.runtime.job_manager import JobCancelledError, JobExecutionError

    if args.parallelism is not None and args.parallelism < 1:
        return _fail(f"-p must be a positive integer, got {args.parallelism}")
    try:
        conf = parse_dynamic_properties(args.dynamic)
        if args.parallelism is not None:
            conf.set("parallelism.default", args.parallelism)
    except ConfigurationError as exc:
        return _fail(str(exc))
    except ValueError as exc:
        return _fail(str(exc))
    job = os.path.abspath(args.job)
    if not os.path.isfile(job):
        return _fail(f"job file {args.job} does not exist")
    _Context.config = conf
    _Context.plan_only = args.plan
    sys.argv = [job, *args.args]
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
        sys.stderr.write(f"flowrun: invalid job {args.job}: {exc}\n")
        return 2
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException as exc:
        tb = "".join(traceback.format_exception(exc)).rstrip()
        sys.stderr.write(
            f"flowrun: the job script {args.job} raised {type(exc).__name__}: {exc}\n{tb}\n"
        )
        return 2
    if args.plan:
        if not _Context.plans:
            return _fail(f"{args.job} defined no job (it never called env.execute())")
        print("\n\n".join(_Context.plans))
    return 0


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
    args = _parser().parse_args(argv)
    args.args = script_args
    if args.command == "run":
        return _run(args)
    return _config()


if __name__ == "__main__":
    sys.exit(main())
