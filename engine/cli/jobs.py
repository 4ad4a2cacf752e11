"""``python -m engine jobs ...``: the job queue from a terminal (the dashboard's Launch page uses the same queue).

    python -m engine jobs ls [--all]                     queued and running jobs (--all: finished ones too)
    python -m engine jobs show JOB                       one job's record as JSON
    python -m engine jobs submit --config run.toml       queue one run   (or --study FILE [--quick] for a study)
    python -m engine jobs cancel JOB | requeue JOB
    python -m engine jobs prune [--keep-days D] [--keep N]   remove finished jobs past their retention
    python -m engine jobs supervisor [--max-running N]   run the supervisor in the foreground (one per store;
                                                         `jobs worker` is its old name)
    python -m engine jobs machine                        what this machine can train on

engine/cli/__init__.py's build_parser() calls ``add_job_commands(subparsers)``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from engine.cli.common import add_store_flag, open_store, store_root


def _queue(args: argparse.Namespace):
    from engine.jobs.queue import JobQueue
    return JobQueue(store_root(args))


def _line(job) -> str:
    pct = f"{100 * job.fraction:3.0f}%"
    return f"{job.id}  {job.state:<11} {pct}  {job.label}" + (f"  ({job.error})" if job.error else "")


def cmd_ls(args: argparse.Namespace) -> int:
    from engine.jobs.queue import ACTIVE_STATES
    queue = _queue(args)
    jobs = queue.jobs(None if args.all else ACTIVE_STATES)
    sup = queue.supervisor()
    print(f"supervisor: {'pid ' + str(sup.get('pid')) if sup else 'not running'}", file=sys.stderr)
    for job in jobs:
        print(_line(job))
    if not jobs:
        print("no jobs" + ("" if args.all else " queued or running (--all shows finished ones)"), file=sys.stderr)
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    """Remove finished jobs (record and log) past their retention; queued and running jobs stay."""
    from engine.jobs.limits import load_retention
    retention = load_retention(args.keep_days, args.keep)
    removed = _queue(args).prune(retention)
    print(f"pruned {len(removed)} finished job(s) (keeping the newest {retention.keep}, none older than "
          f"{retention.max_age_days:g} days)" + (": " + " ".join(removed) if removed else ""))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    print(json.dumps(_queue(args).require(args.job).to_dict(), indent=2, sort_keys=True))
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from engine.config import RunConfig

    from engine.jobs.service import ensure_supervisor
    if bool(args.config) == bool(args.study):
        print("error: give --config FILE (one run) or --study FILE (a study)", file=sys.stderr)
        return 2
    open_store(args, writing="queue a job")  # a read-only store fails here with one line
    queue = _queue(args)
    if args.config:
        submitted = queue.submit("run", [RunConfig.from_toml(args.config)], device=args.device,
                                 timeout_s=args.timeout_s, client_token=args.token)
    else:
        from engine.study.spec import load_study
        spec = load_study(args.study, quick=args.quick)
        submitted = queue.submit("study", spec.configs(), study=spec.study_name, device=args.device,
                                 timeout_s=args.timeout_s, client_token=args.token)
    job = submitted.job
    print(f"{'queued' if submitted.created else 'already submitted'}: {_line(job)}")
    if not args.no_supervisor:
        ensure_supervisor(queue.root)
    if args.wait:
        while job.active:
            time.sleep(1.0)
            job = queue.require(job.id)
            print(f"\r{_line(job)}", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
        return 0 if job.state == "completed" else 1
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    print(_line(_queue(args).cancel(args.job)))
    return 0


def cmd_requeue(args: argparse.Namespace) -> int:
    from engine.jobs.service import ensure_supervisor
    queue = _queue(args)
    print(_line(queue.requeue(args.job)))
    ensure_supervisor(queue.root)
    return 0


def cmd_supervisor(args: argparse.Namespace) -> int:
    from engine.jobs.supervisor import run_supervisor
    return run_supervisor(args, str(store_root(args)))


def cmd_machine(args: argparse.Namespace) -> int:
    from engine.jobs.device import machine_info
    from engine.jobs.limits import default_max_running, load_limits
    info = machine_info()
    print("\n".join(info.describe()))
    running = default_max_running(len(info.cuda), info.mps, info.cpu_cores)
    limits = load_limits(probe=False, max_running=None)
    print(f"default: {running} job(s) at once, {limits.max_queued} queued at most, {limits.timeout_s:g} s "
          "wall-clock limit per job (see engine/jobs/limits.py for the environment variables)")
    return 0


def add_job_commands(commands) -> None:
    from engine.jobs.supervisor import add_supervisor_flags

    jobs = commands.add_parser("jobs", help="the job queue the dashboard launches into: ls, submit, cancel, supervisor",
                               description="Queue runs and studies for the store's supervisor process, which trains "
                                           "them outside any terminal or dashboard session.")
    sub = jobs.add_subparsers(dest="jobs_command", required=True, metavar="ACTION")

    p = sub.add_parser("ls", help="queued and running jobs")
    p.add_argument("--all", action="store_true", help="finished jobs too")
    add_store_flag(p)
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser("show", help="one job's record as JSON")
    p.add_argument("job")
    add_store_flag(p)
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("submit", help="queue one run (--config) or a study (--study)")
    p.add_argument("--config", help="TOML file with config fields")
    p.add_argument("--study", help="study spec TOML file")
    p.add_argument("--quick", action="store_true", help="the study's [quick] variant")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N, mps")
    p.add_argument("--timeout-s", type=float, default=None, help="wall-clock limit of the job in seconds "
                                                                 "[default: $ABLATION_LAB_JOB_TIMEOUT_S, else 6 h]")
    p.add_argument("--token", default=None, help="idempotency token: the same submission with the same token "
                                                 "queues once")
    p.add_argument("--wait", action="store_true", help="wait until the job ends; exit 0 when it completed")
    p.add_argument("--no-supervisor", "--no-worker", dest="no_supervisor", action="store_true",
                   help="do not start the supervisor")
    add_store_flag(p)
    p.set_defaults(func=cmd_submit)

    for name, fn, text in (("cancel", cmd_cancel, "cancel a queued or running job"),
                           ("requeue", cmd_requeue, "queue an interrupted, failed, cancelled or timed-out job again")):
        p = sub.add_parser(name, help=text)
        p.add_argument("job")
        add_store_flag(p)
        p.set_defaults(func=fn)

    p = sub.add_parser("prune", help="remove finished jobs and their logs past their retention",
                       description=cmd_prune.__doc__ + " The supervisor does the same between jobs.")
    p.add_argument("--keep-days", type=float, default=None,
                   help="remove finished jobs older than this [default: $ABLATION_LAB_JOBS_KEEP_DAYS, else 14]")
    p.add_argument("--keep", type=int, default=None,
                   help="keep at most this many finished jobs [default: $ABLATION_LAB_JOBS_KEEP, else 200]")
    add_store_flag(p)
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser("supervisor", aliases=["worker"], help="run the store's supervisor in the foreground")
    add_supervisor_flags(p)
    add_store_flag(p)
    p.set_defaults(func=cmd_supervisor)

    p = sub.add_parser("machine", help="what this machine can train on, and the default limits")
    p.set_defaults(func=cmd_machine)
