"""``polyscale sweep``: queue what the results store lacks, start workers, watch, summarise.

The coordinator never runs a model itself. It enqueues every run of the sweep that the store does
not hold as finished, starts N worker processes (``polyscale worker``; one GPU each when there are
several), shows a progress bar over the runs' training steps until the queue is drained, then
rebuilds the results table and prints a summary. Each worker streams its runs to W&B as they
train; the coordinator mirrors the finished runs that W&B lacks (after a crash) before and after.
Ctrl-C, SIGTERM or SIGUSR1 are forwarded to the workers, which checkpoint and hand their runs
back (harness/preempt.py); what finished is kept, and running the same command again completes
the rest. No worker outlives its coordinator.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from tqdm import tqdm

from harness import preempt
from harness.config import TRAINING_EXPERIMENTS
from harness.config.sweep_spec import Sweep
from harness.redact import redact
from harness.sweep.batching import per_worker_batch
from harness.sweep.execute import job_id
from harness.sweep.options import SweepOptions, worker_command
from harness.sweep.queue import JobRecord, RunQueue
from harness.tracking import wandb_mirror
from harness.tracking.store import (
    FINISHED,
    checkpointed_step,
    error_line,
    finished_status,
    is_alive,
    progress,
    read_status,
    read_summary,
    rebuild_table,
    table_path,
)

# How a run of the sweep ended, as the report counts it. A run the queue says was finished (or
# failed) by a worker whose results folder is not this one is counted "... elsewhere".
FINISHED_HERE = ("done", "diverged", "skipped (finished before)")
FINISHED_ELSEWHERE = "finished elsewhere"
# How long past their own stop deadline the coordinator waits for its workers to hand their jobs
# back before it kills them: a release is a few storage writes.
STOP_MARGIN_SECONDS = 10.0


def launch(sweep: Sweep, options: SweepOptions, workers: int = 1) -> Counter:
    """Run every unfinished run of the sweep with ``workers`` local worker processes; return the
    final tally of outcomes (``complete`` says whether this results folder now holds them all)."""
    out = options.out
    before, pending, _ = enqueue(sweep, options, f"{workers} worker(s)")
    if pending:
        batch = options.batch_models
        if batch is None:
            configs = {job_id(run.config): run.config for run in pending}
            batch = per_worker_batch(list(configs.values()), workers, options.device)
        per_worker = dataclasses.replace(options, storage=options.storage_url, batch_models=batch)
        processes: list[subprocess.Popen] = []
        with in_care(processes) as stopped_by:
            processes += start_workers(sweep.name, per_worker, workers)
            watch(sweep, out, processes, before)
        if stopped_by:
            done = sum(finished_status(out, r.run_id) is not None for r in sweep.runs)
            raise preempt.Preempted(
                f"stopped by {stopped_by[0]}: {done} of {len(sweep.runs)} runs finished and kept; "
                "run the same command again to complete the rest"
            )
    return conclude(sweep, options, before)


def enqueue(sweep: Sweep, options: SweepOptions, workers: str) -> tuple[dict, list, RunQueue]:
    """Write the manifest and queue the runs the results folder does not hold finished, saying so
    (``workers``: who will run them); the finished status of each run before, the pending runs and
    the queue."""
    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    storage = options.storage_url
    write_manifest(sweep, out, storage, options.wandb_project)
    before = {run.run_id: finished_status(out, run.run_id) for run in sweep.runs}
    pending = [run for run in sweep.runs if before[run.run_id] is None]
    queue = RunQueue(storage, sweep.name, grace_seconds=options.grace_seconds)
    mirror_missing(out, options, sweep.name)
    queue.enqueue(jobs(pending))
    print(
        f"sweep {sweep.name}: {len(sweep.runs)} runs, {len(sweep.runs) - len(pending)} already finished, "
        f"{len(pending)} to run with {workers}; queue {redact(storage)}",
        flush=True,
    )
    return before, pending, queue


def conclude(sweep: Sweep, options: SweepOptions, before: dict) -> Counter:
    """Once the workers are gone: rebuild the table, mirror to W&B what it lacks, print and return
    the tally of how each run ended."""
    out = options.out
    queue = RunQueue(options.storage_url, sweep.name, grace_seconds=options.grace_seconds)
    table = rebuild_table(out)
    mirror_missing(out, options, sweep.name)
    ends = run_ends(sweep, out, before, queue.latest())
    if all(where is None for _, where in ends.values()):  # else the table lacks runs held elsewhere
        wandb_mirror.mirror_table(
            f"sweep-{sweep.name}",
            table,
            mode=options.wandb_mode,
            project=options.wandb_project,
            group=sweep.name,
            wandb_dir=wandb_mirror.wandb_root(out),
        )
    return report(sweep.name, out, ends, queue)


def mirror_missing(out: Path, options: SweepOptions, group: str) -> None:
    """Mirror the finished runs of ``out`` that W&B lacks (a crash came before their mirror)."""
    count = wandb_mirror.mirror_missing(out, mode=options.wandb_mode, project=options.wandb_project, group=group)
    if count:
        print(f"W&B: mirrored {count} finished run(s) it lacked", flush=True)


def complete(tally: Counter) -> bool:
    """Whether every run counted in ``tally`` is finished in this results folder."""
    return all(what in FINISHED_HERE for what in tally)


def jobs(runs) -> list[tuple[str, dict]]:
    """The runs grouped into jobs: one per configuration, carrying its config and its arms' run ids.

    A job is what a worker claims: the arms of one configuration run together, sharing data, the
    initial network and (width) the reference original, as ``run_config`` does.
    """
    grouped: dict[str, dict] = {}
    for run in runs:
        job = grouped.setdefault(job_id(run.config), {"config": run.raw, "runs": {}})
        job["runs"][run.arm] = run.run_id
    return list(grouped.items())


def start_workers(sweep_name: str, options: SweepOptions, workers: int) -> list[subprocess.Popen]:
    """``workers`` worker processes with ``options``; GPUs are spread over them, CPU threads divided
    among them."""
    threads = worker_threads(options.threads, workers)
    processes = []
    for device in assign_devices(options.device, workers):
        argv, env = worker_command(dataclasses.replace(options, device=device, threads=threads))
        # TQDM_DISABLE: the workers' step bars would overwrite the coordinator's
        env = {**os.environ, **env, "OMP_NUM_THREADS": str(threads), "WANDB_SILENT": "true", "TQDM_DISABLE": "1"}
        env[preempt.PARENT_ENV] = str(os.getpid())  # a worker stops when its coordinator is gone
        command = [sys.executable, "-m", "harness.cli", "worker", "--sweep", sweep_name, "--quiet", *argv]
        processes.append(subprocess.Popen(command, env=env))
    return processes


def assign_devices(requested: str, workers: int) -> list[str]:
    """One device string per worker: with several GPUs, worker i gets cuda:(i mod count)."""
    if requested in ("auto", "cuda"):
        import torch

        count = torch.cuda.device_count()
        if count > 1:
            return [f"cuda:{i % count}" for i in range(workers)]
    return [requested] * workers


class Polled(Protocol):
    """What ``watch`` waits for: a worker process, or anything else that says when it has ended."""

    def poll(self) -> int | None: ...


def watch(sweep: Sweep, out: Path, workers: Sequence[Polled], before: dict) -> None:
    """A progress bar over the training steps of the sweep's runs (finished runs count all their
    steps, running ones the step of their last record), with an ETA and the runs' counts beside
    it, until every worker has exited (``poll`` is not None)."""
    totals = {run.run_id: run_steps(run.config) for run in sweep.runs}
    finished: dict[str, float | None] = {}  # a finished run stays finished: read once
    steps, _ = tally_steps(out, totals, before, finished)  # steps done before: no part of the ETA's rate
    with tqdm(
        total=sum(totals.values()), initial=steps, unit="step", unit_scale=True, desc=sweep.name, dynamic_ncols=True
    ) as bar:
        while True:
            steps, postfix = tally_steps(out, totals, before, finished)
            bar.update(steps - bar.n)
            bar.set_postfix_str(postfix)
            if all(worker.poll() is not None for worker in workers):
                return
            time.sleep(1.0)


def tally_steps(
    out: Path, totals: dict[str, int], before: dict, finished: dict[str, float | None] | None = None
) -> tuple[int, str]:
    """The training steps done of runs with ``totals`` steps each, and a line with the runs' counts
    and the test losses of the runs finished during this sweep. ``finished`` (run id -> its test
    loss, None for a run finished before or without one) is filled in as runs finish, so that a
    caller that tallies again reads only the unfinished runs' files."""
    finished = {} if finished is None else finished
    steps, unfinished = 0, Counter()
    for rid, total in totals.items():
        status = None if rid in finished else read_status(out, rid)
        if status in FINISHED:
            loss = read_summary(out, rid).get("test_loss") if before[rid] is None else None
            finished[rid] = loss if isinstance(loss, (int, float)) and math.isfinite(loss) else None
        if rid in finished:
            steps += total
            continue
        if status == "running" and is_alive(out, rid) is False:
            # Its process is gone (a stopped sweep, an earlier session): what it keeps is its newest
            # checkpoint, not its last record, so that the bar does not step back when it resumes.
            status = "interrupted"
            steps += min(checkpointed_step(out, rid), total)
        elif status == "running":
            steps += min(progress(out, rid)[0] or 0, total)
        unfinished[status] += 1
    losses = [loss for loss in finished.values() if loss is not None]
    postfix = f"runs {len(finished)} done, {unfinished['running']} running, {unfinished['failed']} failed"
    postfix += f", {unfinished['interrupted']} interrupted" if unfinished["interrupted"] else ""
    return steps, postfix + (f"; test loss best {min(losses):.4g} worst {max(losses):.4g}" if losses else "")


def run_steps(config) -> int:
    """A run's share of the progress bar: its optimiser steps (1 for a run that does not train)."""
    return config.total_steps() if config.experiment in TRAINING_EXPERIMENTS else 1


@contextmanager
def in_care(workers: list[subprocess.Popen]) -> Iterator[list[str]]:
    """While the block runs, a stop signal (SIGTERM, SIGUSR1, Ctrl-C) is forwarded to the workers
    (a signal sent to the whole process group reaches them twice: they stop once) and named in the
    yielded list; after the first, workers still there once their own deadline
    (harness/preempt.py) and a margin have passed are killed. On leaving, no worker is left running:
    the rest are stopped the same way."""
    names: list[str] = []
    first = threading.Event()

    def forward(signum: int, frame) -> None:
        names.append(signal.Signals(signum).name)
        preempt.received(names[-1])
        for worker in workers:
            if worker.poll() is None:
                # Ctrl-C in a terminal reaches the workers too (one process group); passed on as
                # SIGTERM, it is not a second Ctrl-C (which means: stop now).
                worker.send_signal(signal.SIGTERM if signum == signal.SIGINT else signum)
        first.set()

    def reap() -> None:
        first.wait()
        _stop_workers(workers, signal_first=False)

    # The reaper starts here, not in the handler (a handler may run while the main thread holds a
    # lock that starting a thread needs).
    threading.Thread(target=reap, name="reap-workers", daemon=True).start()
    previous = {number: signal.signal(number, forward) for number in preempt.STOP_SIGNALS}
    try:
        yield names
    finally:
        _stop_workers(workers, signal_first=not names)
        for number, handler in previous.items():
            signal.signal(number, handler)


def _stop_workers(workers: list[subprocess.Popen], *, signal_first: bool) -> None:
    """Wait for the workers to stop (sending SIGTERM first if asked), killing those still there
    after their stop deadline and a margin."""
    if signal_first:
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + preempt.stop_seconds() + STOP_MARGIN_SECONDS
    for worker in workers:
        try:
            worker.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def run_ends(sweep: Sweep, out: Path, before: dict, latest: dict[str, JobRecord]) -> dict[str, tuple[str, str | None]]:
    """How each run ended, and for a run finished in another results folder, which one
    (``host:folder``, or "" if its worker did not say); None for the others.

    The results folder decides for the runs it holds; for the others the queue's latest attempt at
    their job says whether a worker writing to another folder finished them, failed them or has
    them still (``latest`` of ``RunQueue``).
    """
    ends = {}
    for run in sweep.runs:
        if before[run.run_id] is not None:
            ends[run.run_id] = ("skipped (finished before)", None)
            continue
        status = read_status(out, run.run_id)
        record = latest.get(job_id(run.config))
        if status in ("done", "diverged") or record is None:
            ends[run.run_id] = (status or "not started", None)
        elif record.state in ("done", "diverged", "skipped"):
            ends[run.run_id] = (FINISHED_ELSEWHERE, record.results_at or "")
        elif record.state in ("waiting", "running"):
            ends[run.run_id] = ("still " + record.state + " in the queue", None)
        else:  # failed, interrupted: this folder has the record if one of its workers ran it
            ends[run.run_id] = (status or f"{record.state} elsewhere", None)
    return ends


def report(name: str, out: Path, ends: dict[str, tuple[str, str | None]], queue: RunQueue) -> Counter:
    """Print the summary: finished now, finished before (skipped), failed with error heads, and
    the runs that workers wrote to other results folders, with how to bring them here."""
    tally = Counter(what for what, _ in ends.values())
    print(f"sweep {name}: " + ", ".join(f"{count} {what}" for what, count in sorted(tally.items())))
    for job, error in sorted(queue.failures().items()):
        print(f"  failed {job}: {error_line(error) or 'no error message'}")
    elsewhere = Counter(where for _, where in ends.values() if where is not None)
    if elsewhere:
        print(f"  {sum(elsewhere.values())} runs are not in {out}: workers wrote them to other results folders:")
        for where, count in sorted(elsewhere.items()):
            print(f"    {where or '(a worker that did not say where)'}: {count} runs")
        print(
            f"  copy each folder to this machine and merge it with `polyscale collect {out} --from FOLDER`, "
            "then run this command again to log the W&B table"
        )
    print(f"results: {table_path(out)}")
    return tally


def write_manifest(sweep: Sweep, out: Path, storage: str, wandb_project: str) -> None:
    """out/sweep.json: the sweep's name, source, storage (redacted), W&B project and run ids, for
    status/collect."""
    manifest = {
        "name": sweep.name,
        "source": str(sweep.source),
        "storage": redact(storage),
        "wandb_project": wandb_project,
        "varied": list(sweep.varied_keys),
        "runs": [{"run_id": r.run_id, "arm": r.arm, **r.varied} for r in sweep.runs],
    }
    tmp = out / "sweep.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=1))
    tmp.replace(out / "sweep.json")


def worker_threads(requested: int | None, workers: int) -> int:
    """CPU threads per worker: --threads, else $OMP_NUM_THREADS, else the cores divided among workers."""
    if requested:
        return requested
    inherited = os.environ.get("OMP_NUM_THREADS", "")
    if inherited.isdigit() and int(inherited) > 0:
        return int(inherited)
    return max(1, (os.cpu_count() or 1) // workers)
