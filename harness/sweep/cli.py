"""``polyscale sweep | worker | status | cancel | collect``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
from collections import Counter
from pathlib import Path

from harness.config.launcher import LAUNCHERS
from harness.errors import UsageError
from harness.redact import redact
from harness.sweep.options import add_arguments, from_args
from harness.sweep.storage import STORAGE_ENV

SWEEP_EPILOG = """\
A sweep file is a run configuration plus `grid:` (cartesian product over dotted keys), `zip:`
(lists varied together), `seeds:` (a count or a list) and an optional `name:`. Each
configuration x arm is one run, named by a hash of its configuration: finished runs are never
run again, so the same command resumes an interrupted sweep.

`tune:` searches hyperparameters first, with Optuna's TPE per cell on a validation split drawn
from the training distribution (never the test split); the final runs use each cell's best
values. Every trial is kept in RESULTS/tune/ (runs.parquet, best.json). For example:
  tune:
    params: {train.lr: {low: 1.0e-4, high: 0.1, log: true}}
    trials: 20
    per: [task.n_train]        # one search per value (default: per grid/zip cell)

Stopping: Ctrl-C, SIGTERM or SIGUSR1 (Slurm's --signal) are passed on to the workers, which
checkpoint their runs and hand them back to the queue; the sweep then exits 75 (130 after Ctrl-C)
and the same command resumes. A worker that has not stopped $POLYSCALE_STOP_SECONDS (default 20)
after the signal hands its runs back unfinished and exits anyway; a second Ctrl-C does so at once.

On a Slurm cluster (--launcher slurm, or a `launcher:` block in the sweep file; docs/cluster.md)
the sweep is queued and one job array of --workers tasks is submitted through submitit, each task a
`polyscale worker`; the command returns with the array's id (or, with --wait, watches it to the
end). The queue must be reachable from every node: PostgreSQL, or a journal file on a shared
filesystem (--shared-fs). Tasks near their --time limit, preempted or requeued checkpoint their
runs and resume them once requeued.

examples:
  polyscale sweep sweeps/smoke.yaml --dry-run           # the table of runs, nothing runs
  polyscale sweep sweeps/smoke.yaml --workers 2         # results/smoke/, W&B offline
  polyscale sweep sweeps/e4.yaml --storage postgresql://user@db-host/polyscale
  polyscale worker --storage postgresql://user@db-host/polyscale --sweep e4   # on another machine
  polyscale sweep sweeps/e4.yaml --launcher slurm --partition gpu --gpus-per-task 1 --time 4:00:00 \\
      --workers 8 --storage postgresql://user@db-host/polyscale               # a Slurm array of 8
  polyscale sweep sweeps/smoke.yaml --launcher slurm --wait     # one node: the journal file will do
"""

WORKER_EPILOG = """\
A worker claims one job at a time (a configuration with its arms, or several compatible ones
trained as one batched model), runs it into --out and claims the next, until nothing is waiting
or running in the queue. Any number of workers on any machines that reach the same --storage can
share a sweep; `polyscale sweep` fills the queue. A worker whose heartbeat stops for --grace
seconds is taken for dead and its job is queued again (if it was only paused, it finds out when it
resumes and drops that job: each run is recorded once).

exit status: 0 when the queue is drained; 75 (EX_TEMPFAIL: preempted, run again to resume) after
SIGTERM or SIGUSR1, once its runs are checkpointed and handed back to the queue; 130 after Ctrl-C.
It stops at the latest $POLYSCALE_STOP_SECONDS (default 20) after the signal, or at a second Ctrl-C.

examples:
  polyscale sweep sweeps/e4.yaml --storage postgresql://user@db-host/polyscale   # machine A
  polyscale worker --sweep e4 --storage postgresql://user@db-host/polyscale      # machine B
  POLYSCALE_STORAGE=postgresql://user@db-host/polyscale polyscale worker --sweep e4 --device cuda:1
  polyscale worker --sweep smoke --no-batch      # one more local worker on results/smoke/queue.journal
then, on machine A, merge B's results (unless --out is a shared folder):
  rsync -a machine-b:polyscale/results/e4/ results/e4-from-b/
  polyscale collect results/e4 --from results/e4-from-b
"""

STATUS_EPILOG = """\
A running run is listed with its step, its last test loss and, given the queue, its heartbeat's
age; a run marked running whose process on this host is gone is counted interrupted (run it again).
The Slurm arrays submitted for RESULTS (--launcher slurm) are listed with their tasks' states.

examples:
  polyscale status results/smoke        # runs by status; running and failed runs one a line
  polyscale status --storage results/smoke/queue.journal --sweep smoke      # the queue alone
  polyscale status results/e4 --storage postgresql://user@db-host/polyscale --sweep e4
"""

CANCEL_EPILOG = """\
Each task's worker checkpoints its runs and hands them back to the queue (Slurm sends SIGTERM);
the finished runs are kept, and the same `polyscale sweep` command submits a new array that
completes the rest.

examples:
  polyscale cancel results/e4           # scancel the arrays of results/e4 still pending or running
  polyscale status results/e4           # their tasks' states, beside the runs'
"""

COLLECT_EPILOG = """\
examples:
  polyscale collect results/smoke       # rebuild results/smoke/runs.parquet from its run folders
  rsync -a machine-b:polyscale/results/e4/ results/e4-from-b/
  polyscale collect results/e4 --from results/e4-from-b results/e4-from-c
A run already finished in RESULTS is kept; a finished run of a --from folder replaces an
unfinished (failed, interrupted) one of the same id. Finished runs that W&B lacks (a crash came
before their mirror) are mirrored ($WANDB_MODE, offline by default).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    sweep = subparsers.add_parser(
        "sweep",
        help="run every run of a sweep file (resumable, parallel)",
        description="Expand a sweep file and run everything the results folder does not hold yet.",
        epilog=SWEEP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sweep.add_argument("spec", type=Path, metavar="SPEC.yaml")
    sweep.add_argument("--out", type=Path, help="results folder (default: results/<sweep name>)")
    sweep.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a base configuration key (repeatable)",
    )
    sweep.add_argument("--dry-run", action="store_true", help="print the runs and their count, run nothing")
    sweep.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes on this machine, or with --launcher slurm the array's tasks (default 1)",
    )
    add_arguments(sweep)
    add_launcher_arguments(sweep)
    sweep.set_defaults(handler=run_sweep)

    worker = subparsers.add_parser(
        "worker",
        help="join a sweep's queue from any machine",
        description="Claim and run a sweep's queued runs until the queue is drained. Results go to --out\n"
        "(a shared folder, or this machine's own, merged later with `polyscale collect`).",
        epilog=WORKER_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    worker.add_argument("--sweep", required=True, help="the sweep's name (its `name:`, or its file's stem)")
    worker.add_argument("--out", type=Path, help="results folder (default: results/<sweep name>)")
    worker.add_argument("--quiet", action="store_true", help=argparse.SUPPRESS)
    add_arguments(worker)
    worker.set_defaults(handler=run_worker)

    status = subparsers.add_parser(
        "status",
        help="counts and failures of a results folder or a queue",
        description="Runs by status in RESULTS (and in the queue with --storage/--sweep), with failures.",
        epilog=STATUS_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    status.add_argument(
        "results",
        type=Path,
        nargs="?",
        metavar="RESULTS",
        help="a results folder (one with runs/ inside, e.g. results/smoke)",
    )
    status.add_argument("--storage", help=f"the queue's storage URL, as given to `polyscale sweep` (or ${STORAGE_ENV})")
    status.add_argument("--sweep", help="the sweep's name, to count its queued runs (with --storage)")
    status.set_defaults(handler=run_status)

    cancel = subparsers.add_parser(
        "cancel",
        help="end the Slurm arrays of a sweep",
        description="scancel the Slurm arrays that `polyscale sweep --launcher slurm` submitted for RESULTS.",
        epilog=CANCEL_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cancel.add_argument("results", type=Path, metavar="RESULTS", help="the sweep's results folder")
    cancel.set_defaults(handler=run_cancel)

    collect = subparsers.add_parser(
        "collect",
        help="rebuild runs.parquet from the run folders (merging other folders)",
        description="Rebuild RESULTS/runs.parquet from RESULTS/runs/*; with --from, first copy in the\n"
        "finished runs of other results folders (e.g. from workers on other machines).",
        epilog=COLLECT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    collect.add_argument(
        "results", type=Path, metavar="RESULTS", help="the results folder to rebuild (created if missing)"
    )
    collect.add_argument(
        "--from",
        dest="sources",
        type=Path,
        nargs="+",
        default=[],
        metavar="FOLDER",
        help="results folders whose finished runs are copied into RESULTS first",
    )
    collect.set_defaults(handler=run_collect)


def add_launcher_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of a sweep's ``launcher:`` block (harness/config/launcher.py); they win over it."""
    group = parser.add_argument_group("launcher (or a `launcher:` block in the sweep file)")
    group.add_argument(
        "--launcher", choices=LAUNCHERS, default=None, help="local worker processes (default) or a Slurm array"
    )
    group.add_argument("--partition", help="Slurm partition (default: the cluster's default)")
    group.add_argument("--account", help="Slurm account to charge")
    group.add_argument("--qos", help="Slurm quality of service")
    group.add_argument("--time", help="each task's time limit: minutes or [D-]HH:MM[:SS] (default: the partition's)")
    group.add_argument("--gpus-per-task", type=int, metavar="N", help="GPUs of each task (default none)")
    group.add_argument("--cpus-per-task", type=int, metavar="N", help="CPUs of each task (default 1)")
    group.add_argument("--mem", help="memory of each task's node share, as sbatch --mem (e.g. 16G)")
    group.add_argument("--array-parallelism", type=int, metavar="N", help="at most N tasks at once")
    group.add_argument(
        "--sbatch",
        action="append",
        default=None,
        metavar="OPTION",
        help="a further sbatch option, e.g. --sbatch=--constraint=a100 (repeatable)",
    )
    group.add_argument(
        "--shared-fs",
        action="store_true",
        default=None,
        help="RESULTS (and a journal-file queue) is on a filesystem every node sees",
    )
    group.add_argument(
        "--wait", action="store_true", help="with --launcher slurm: watch the array to the end, then report"
    )


def launcher_of(sweep, args: argparse.Namespace):
    """The sweep file's ``launcher:`` with the command line's flags applied (they win)."""
    from harness.config.launcher import with_options

    flags = {
        "name": args.launcher,
        "partition": args.partition,
        "account": args.account,
        "qos": args.qos,
        "time": args.time,
        "gpus_per_task": args.gpus_per_task,
        "cpus_per_task": args.cpus_per_task,
        "mem": args.mem,
        "tasks": args.workers,
        "array_parallelism": args.array_parallelism,
        "shared_fs": args.shared_fs,
        "sbatch": args.sbatch,
    }
    return with_options(sweep.launcher, flags, "command line: launcher")


def run_sweep(args: argparse.Namespace) -> int:
    from harness.config.sweep_spec import load_sweep
    from harness.tracking.store import ensure_writable

    sweep = load_sweep(args.spec, args.overrides)
    out = args.out or Path("results") / sweep.name
    launcher = launcher_of(sweep, args)
    if args.dry_run:
        print_plan(sweep)
        if sweep.tune is not None:
            from harness.sweep.tune import print_tuning

            print_tuning(sweep)
        return 0
    _check_counts(args)
    if args.wait and launcher.name != "slurm":
        raise UsageError("--wait: only with --launcher slurm (a local sweep always waits)")
    options = from_args(args, out)
    if launcher.name == "slurm":
        from harness.sweep import slurm

        partition = slurm.check_cluster(launcher, options)  # before anything is written or submitted
    ensure_writable(out)
    _set_threads(args.threads)  # for the tuning trials, which run in this process
    if sweep.tune is not None:
        from harness.sweep.tune import tune_sweep

        sweep, _ = tune_sweep(sweep, out, options.storage_url, args.device)
    if launcher.name == "slurm":
        return slurm.launch(sweep, options, launcher, partition, args.wait)
    from harness.sweep.launch import complete, launch

    tally = launch(sweep, options, args.workers or 1)
    return 0 if complete(tally) else 1


def run_worker(args: argparse.Namespace) -> int:
    from harness import preempt
    from harness.sweep.queue import RunQueue
    from harness.sweep.worker import HeldClaims, stop_now, work
    from harness.tracking.store import ensure_writable

    _check_counts(args)
    _set_threads(args.threads)
    options = from_args(args, Path("results") / args.sweep)
    ensure_writable(options.out)
    storage = options.storage_url
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    queue = RunQueue(
        storage,
        args.sweep,
        grace_seconds=options.grace_seconds,
        results_at=f"{socket.gethostname()}:{options.out.resolve()}",
    )
    held = HeldClaims(queue)
    parent = os.environ.get(preempt.PARENT_ENV, "")
    preempt.stop_on_signals(lambda: stop_now(held, quiet=args.quiet), int(parent) if parent.isdigit() else None)
    from harness.tracking import install
    from harness.tracking.wandb_mirror import LiveMirror, mirror_missing

    wandb = {"mode": options.wandb_mode, "project": options.wandb_project, "group": args.sweep}
    mirror_missing(options.out, **wandb)
    install(LiveMirror(options.out, **wandb))  # each run streams to W&B as it trains
    try:
        tally = work(queue, options, held)
    except preempt.Preempted as exc:
        if not args.quiet:  # a coordinator's workers: the coordinator says it once
            print(f"worker on {args.sweep}: {exc}; its jobs went back to the queue", file=sys.stderr)
        return preempt.exit_code()
    if not args.quiet:
        print(
            f"worker done on {redact(storage)} / {args.sweep}: "
            + (", ".join(f"{n} {k}" for k, n in tally.items()) or "nothing to do")
        )
    return 0


def run_status(args: argparse.Namespace) -> int:
    from harness.tracking.store import is_alive, is_results_folder, read_status, run_error, run_ids, slurm_jobs_path

    storage = args.storage or os.environ.get(STORAGE_ENV)
    if args.results is None and not (storage and args.sweep):
        raise UsageError("give a RESULTS folder, or --storage URL and --sweep NAME")
    if (args.storage or args.sweep) and not (storage and args.sweep):
        raise UsageError("the queue needs both --storage URL and --sweep NAME")
    queue = None
    if storage and args.sweep:
        from harness.sweep.queue import RunQueue

        queue = RunQueue(storage, args.sweep)
    elif args.results is not None and (recorded := _recorded_queue(args.results)):
        from harness.sweep.queue import RunQueue

        try:  # for the heartbeats only (its counts print with --storage): without them if it fails
            queue = RunQueue(*recorded)
        except Exception as exc:
            print(f"(no heartbeats: the queue {recorded[0]} does not open: {exc})", file=sys.stderr)
    if args.results is not None:
        if not is_results_folder(args.results):
            raise UsageError(f"{args.results}: not a results folder (no runs/ inside)")
        manifest = args.results / "sweep.json"
        expected = [r["run_id"] for r in json.loads(manifest.read_text())["runs"]] if manifest.exists() else None
        ids = expected or run_ids(args.results)
        statuses = {rid: read_status(args.results, rid) or "not started" for rid in ids}
        for rid in [rid for rid, status in statuses.items() if status == "running"]:
            if is_alive(args.results, rid) is False:
                statuses[rid] = "interrupted"  # its process is gone: the next sweep or worker resumes it
        counts = Counter(statuses.values())
        print(f"{args.results}: {len(ids)} runs: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
        beats = queue.heartbeats() if queue is not None else {}
        for rid, status in sorted(statuses.items()):
            if status == "running":
                print(f"  running {rid}: {_running_line(args.results, rid, beats.get(rid))}")
            elif status == "interrupted":
                print(f"  interrupted {rid}: its process is gone; the next sweep or worker resumes it")
            elif status == "failed":
                print(f"  failed {rid}: {run_error(args.results, rid)}")
    if args.results is not None and slurm_jobs_path(args.results).exists():
        from harness.sweep.slurm import status_lines

        for line in status_lines(args.results):
            print(line)
    if queue is not None and storage and args.sweep:
        counts = queue.counts()
        print(
            f"queue {redact(storage)} / {args.sweep}: "
            + (", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "empty")
        )
    return 0


def _running_line(out: Path, run_id: str, heartbeat_age: float | None) -> str:
    """Step/total, last test loss and heartbeat age (when the queue says) of a running run."""
    from harness.config import TRAINING_EXPERIMENTS, parse_config
    from harness.tracking.store import progress, read_identity

    step, loss = progress(out, run_id)
    identity = read_identity(out, run_id)
    total = None
    if identity is not None:
        try:
            config = parse_config(identity["config"], f"{out}/runs/{run_id}/config.json")
            total = config.total_steps() if config.experiment in TRAINING_EXPERIMENTS else None
        except (UsageError, KeyError, TypeError):
            pass
    parts = [f"step {'?' if step is None else step}/{'?' if total is None else total}"]
    parts.append(f"test loss {loss:.4g}" if loss is not None else "no test loss yet")
    if heartbeat_age is not None:
        parts.append(f"heartbeat {heartbeat_age:.0f}s ago")
    return ", ".join(parts)


def run_cancel(args: argparse.Namespace) -> int:
    from harness.sweep.slurm import cancel, recorded_arrays

    if not recorded_arrays(args.results):
        raise UsageError(f"{args.results}: no Slurm array was submitted for it (no slurm/jobs.json)")
    cancelled = cancel(args.results)
    if not cancelled:
        print(f"{args.results}: no Slurm array of it is pending or running")
        return 0
    print(
        f"cancelled Slurm array(s) {', '.join(cancelled)}: their workers checkpoint and hand their runs back; "
        "the same `polyscale sweep` command completes the rest"
    )
    return 0


def run_collect(args: argparse.Namespace) -> int:
    from harness.tracking.store import copy_finished, ensure_writable, is_results_folder, rebuild_table, table_path
    from harness.tracking.wandb_mirror import mirror_missing, resolve_mode

    for source in args.sources:
        if not is_results_folder(source):
            raise UsageError(f"--from {source}: not a results folder (no runs/ inside)")
    ensure_writable(args.results)
    copied = sum(copy_finished(source, args.results) for source in args.sources)
    table = rebuild_table(args.results)
    print(f"{table_path(args.results)}: {len(table)} runs" + (f" ({copied} copied in)" if args.sources else ""))
    manifest = _read_manifest(args.results)
    mirrored = mirror_missing(
        args.results,
        mode=resolve_mode(None),
        project=manifest.get("wandb_project", "polyscale"),
        group=manifest.get("name", args.results.name),
    )
    if mirrored:
        print(f"W&B: mirrored {mirrored} finished run(s) it lacked")
    return 0


def _recorded_queue(out: Path) -> tuple[str, str] | None:
    """The storage and sweep name that RESULTS/sweep.json records, when they can be opened as they
    are: not a redacted password, and a journal file that exists."""
    manifest = _read_manifest(out)
    storage, name = manifest.get("storage"), manifest.get("name")
    if not (isinstance(storage, str) and isinstance(name, str)) or "***" in storage:
        return None
    if "://" not in storage and not Path(storage).is_file():
        return None
    return storage, name


def _read_manifest(out: Path) -> dict:
    """RESULTS/sweep.json (written by ``polyscale sweep``), or {} without a readable one."""
    try:
        manifest = json.loads((out / "sweep.json").read_text())
    except (OSError, ValueError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


def print_plan(sweep) -> None:
    """The table of runs a sweep expands to, and the count."""
    keys = list(sweep.varied_keys)
    header = ["run_id", "arm", *keys]
    rows = [[r.run_id, r.arm, *[str(r.varied.get(k, "")) for k in keys]] for r in sweep.runs]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))
    configs = len({json.dumps(r.varied, sort_keys=True, default=str) for r in sweep.runs})
    print(f"{len(sweep.runs)} runs ({configs} configurations x arms) in sweep {sweep.name}")


def _check_counts(args) -> None:
    workers = getattr(args, "workers", None)
    if workers is not None and workers < 1:
        raise UsageError(f"--workers must be at least 1; got {args.workers}")
    if args.retries < 0:
        raise UsageError(f"--retries must be >= 0; got {args.retries}")
    if args.grace <= 0:
        raise UsageError(f"--grace must be positive; got {args.grace}")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be at least 1; got {args.threads}")
    if args.batch_models is not None and args.batch_models < 1:
        raise UsageError(f"--batch-models must be at least 1; got {args.batch_models}")


def _set_threads(threads: int | None) -> None:
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
