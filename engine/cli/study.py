"""``python -m engine study plan|run FILE`` and ``python -m engine reproduce``.

    python -m engine study plan studies/ex1_architecture.toml            # cells, cached / missing, time estimate
    python -m engine study run studies/ex1_architecture.toml             # train what is missing (Ctrl-C safe)
    python -m engine study run FILE --executor ray --address HOST:6379   # on an existing Ray cluster
    python -m engine reproduce --quick --out report.md                   # the reference study, and its report
"""
from __future__ import annotations

import argparse
import os
import sys

from engine.cli.common import add_store_flag, open_store
from engine.study.ray_executor import RAY_ADDRESS_ENV


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="study TOML file")
    parser.add_argument("--quick", action="store_true", help="apply the file's [quick] table (fewer seeds, epochs)")
    parser.add_argument("--workers", type=int, default=None,
                        help="parallel training processes [default: one per CPU core]")
    add_store_flag(parser)


def _device_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="auto: CUDA when there is a GPU (stacks then run one after the other in this "
                             "process), else CPU training processes [default: auto]")


def add_study_commands(commands) -> None:
    study = commands.add_parser("study", help="plan or run a study (a factorial sweep declared in TOML)",
                                description="A study is a TOML file: a base config, factors to vary, seeds, and "
                                            "the metric that picks the winner. See engine/study/spec.py.")
    sub = study.add_subparsers(dest="study_command", required=True, metavar="SUBCOMMAND")

    plan = sub.add_parser("plan", help="show the cells, what the store already has, and an estimate of the rest")
    _common(plan)
    plan.add_argument("--no-estimate", action="store_true", help="skip the time estimate (no calibration run)")
    plan.set_defaults(func=cmd_plan)

    run = sub.add_parser("run", help="train the missing cells (stop with Ctrl-C; run again to resume)")
    _common(run)
    run.add_argument("--executor", default="local", choices=("local", "ray"),
                     help="local: training processes on this machine; ray: tasks on a Ray cluster "
                          "[default: local]")
    run.add_argument("--address", default=os.environ.get(RAY_ADDRESS_ENV) or None,
                     help="Ray cluster address, as `ray start --head` printed it (e.g. HOST:6379 or "
                          f"ray://HOST:10001); see docs/cluster.md [default: ${RAY_ADDRESS_ENV}, else a local Ray]")
    run.add_argument("--retries", type=int, default=None,
                     help="ray: how many times a stack lost with its node is sent again to the remaining nodes "
                          "[default: 2]")
    _device_flag(run)
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.set_defaults(func=cmd_run)

    rep = commands.add_parser("reproduce", help="run the reference study (studies/ex*.toml) and write the report",
                              description="Runs every study of studies/ (exercises 1-4), then writes a markdown "
                                          "table: each line of the reference results beside the value measured "
                                          "here, and the study's findings (declared in the study files) with a "
                                          "verdict each. Prints each study's expected training time first; "
                                          "resumable: a rerun trains only the missing runs.")
    rep.add_argument("--quick", action="store_true", help="fewer epochs, seeds and cells: a few minutes on 2 cores")
    rep.add_argument("--out", default=None, help="report file [default: reports/reproduce.md, or "
                                                 "reports/reproduce-quick.md with --quick, in the store]")
    rep.add_argument("--only", default=None, metavar="STUDIES",
                     help="train only these studies (comma-separated names or prefixes, e.g. ex1,ex4); the report "
                          "still covers every study, marking what the store lacks as not run")
    rep.add_argument("--studies", default=None, help="folder of the study files [default: studies/]")
    rep.add_argument("--workers", type=int, default=None, help="parallel training processes [default: one per core]")
    rep.add_argument("--report-only", action="store_true", help="build the report from the store; train nothing")
    _device_flag(rep)
    rep.add_argument("--quiet", action="store_true", help="no progress bars")
    add_store_flag(rep)
    rep.set_defaults(func=cmd_reproduce)


def cmd_plan(args: argparse.Namespace) -> int:
    from engine.study.plan import format_plan, make_plan
    from engine.study.spec import load_study
    _check_workers(args.workers)
    spec = load_study(args.file, quick=args.quick)
    plan = make_plan(spec, open_store(args), workers=args.workers, estimate=not args.no_estimate)
    print(format_plan(plan))
    return 0


def _check_device(device: str) -> None:
    from engine.study.spec import StudyError
    from engine.train import resolve_device
    try:
        resolve_device(device)
    except ValueError as e:
        raise StudyError(f"--device: {e}") from None


def _check_workers(workers: int | None) -> None:
    from engine.study.spec import StudyError
    if workers is not None and workers < 1:
        raise StudyError(f"--workers must be >= 1, got {workers}")


def cmd_run(args: argparse.Namespace) -> int:
    from engine.study.executor import format_result, run_study
    from engine.study.spec import StudyError, load_study
    _check_workers(args.workers)
    if args.executor == "local":
        _check_device(args.device)
    if args.retries is not None and args.retries < 0:
        raise StudyError(f"--retries must be >= 0, got {args.retries}")
    spec = load_study(args.file, quick=args.quick)
    store = open_store(args, writing="run a study")
    result = run_study(spec, store, executor=args.executor, workers=args.workers, device=args.device,
                       address=args.address if args.executor == "ray" else None, retries=args.retries,
                       show_progress=not args.quiet)
    print(format_result(result))
    if result.interrupted:
        return 130
    return 0 if result.ok else 1


def cmd_reproduce(args: argparse.Namespace) -> int:
    from engine.study.reproduce import reproduce
    _check_workers(args.workers)
    _check_device(args.device)
    store = open_store(args)
    code = reproduce(store, quick=args.quick, out=args.out, studies_dir=args.studies, workers=args.workers,
                     device=args.device, show_progress=not args.quiet, train=not args.report_only,
                     only=args.only)
    sys.stdout.flush()
    return code
