"""``polyscale sweep``: queue what the results store lacks, start workers, watch, summarise.

The coordinator never runs a model itself. It enqueues every run of the sweep that the store does
not hold as finished, starts N worker processes (``polyscale worker``; one GPU each when there are
several), shows a progress bar until the queue is drained, then rebuilds the results table and
prints a summary. Ctrl-C stops the workers; what finished is kept, and running the same command
again completes the rest.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from harness.sweep.batching import per_worker_batch
from harness.sweep.execute import job_id
from harness.sweep.queue import RunQueue
from harness.sweep.spec import Sweep
from harness.redact import redact
from harness.tracking import wandb_mirror
from harness.tracking.store import error_line, finished_status, read_status, read_summary, rebuild_table, table_path

STORAGE_ENV = "POLYSCALE_STORAGE"


@dataclass(frozen=True)
class LaunchOptions:
    out: Path
    storage: str | None = None
    workers: int = 1
    device: str = "auto"
    wandb_mode: str = "offline"
    wandb_project: str = "polyscale"
    retries: int = 1
    grace_seconds: float = 20.0
    batch_models: int | None = None  # compatible jobs a worker trains at once; None: auto, 1: off
    threads: int | None = None  # CPU threads per worker; None: $OMP_NUM_THREADS, else cores / workers


def default_storage(out: Path) -> str:
    """A journal file inside the results folder: many local processes, no server."""
    return str(out / "queue.journal")


def launch(sweep: Sweep, options: LaunchOptions) -> Counter:
    """Run every unfinished run of the sweep; return the final tally of outcomes."""
    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    storage = options.storage or default_storage(out)
    write_manifest(sweep, out, storage)
    before = {run.run_id: finished_status(out, run.run_id) for run in sweep.runs}
    pending = [run for run in sweep.runs if before[run.run_id] is None]
    queue = RunQueue(storage, sweep.name, grace_seconds=options.grace_seconds)
    queue.enqueue(jobs(pending))
    print(f"sweep {sweep.name}: {len(sweep.runs)} runs, {len(sweep.runs) - len(pending)} already finished, "
          f"{len(pending)} to run with {options.workers} worker(s); queue {redact(storage)}", flush=True)
    if pending:
        batch = options.batch_models
        if batch is None:
            configs = {job_id(run.config): run.config for run in pending}
            batch = per_worker_batch(list(configs.values()), options.workers, options.device)
        workers = start_workers(sweep.name, storage, options, batch)
        try:
            watch(sweep, out, workers, before)
        except KeyboardInterrupt:
            stop(workers)
            done = sum(finished_status(out, r.run_id) is not None for r in sweep.runs)
            print(f"\ninterrupted: {done} of {len(sweep.runs)} runs finished and kept; "
                  "run the same command again to complete the rest", file=sys.stderr)
            raise
    table = rebuild_table(out)
    wandb_mirror.mirror_table(
        f"sweep-{sweep.name}", table, mode=options.wandb_mode, project=options.wandb_project,
        group=sweep.name, wandb_dir=out,
    )
    return report(sweep, out, before, queue)


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


def start_workers(sweep_name: str, storage: str, options: LaunchOptions,
                  batch_models: int | None = None) -> list[subprocess.Popen]:
    """Worker processes; GPUs are spread over them, CPU threads divided among them.

    ``batch_models``: passed on as ``--batch-models`` (None: each worker's own auto)."""
    devices = assign_devices(options.device, options.workers)
    threads = worker_threads(options.threads, options.workers)
    env = {**os.environ, STORAGE_ENV: storage, "OMP_NUM_THREADS": str(threads), "WANDB_SILENT": "true"}
    workers = []
    for device in devices:
        command = [
            sys.executable, "-m", "harness.cli", "worker", "--sweep", sweep_name, "--out", str(options.out),
            "--device", device, "--wandb", options.wandb_mode, "--wandb-project", options.wandb_project,
            "--retries", str(options.retries), "--grace", str(options.grace_seconds), "--quiet",
            *(["--batch-models", str(batch_models)] if batch_models is not None else []),
        ]
        workers.append(subprocess.Popen(command, env=env))
    return workers


def assign_devices(requested: str, workers: int) -> list[str]:
    """One device string per worker: with several GPUs, worker i gets cuda:(i mod count)."""
    if requested in ("auto", "cuda"):
        import torch

        count = torch.cuda.device_count()
        if count > 1:
            return [f"cuda:{i % count}" for i in range(workers)]
    return [requested] * workers


def watch(sweep: Sweep, out: Path, workers: list[subprocess.Popen], before: dict) -> None:
    """A progress bar over the sweep's runs until every worker has exited."""
    ids = [run.run_id for run in sweep.runs]
    finished_before = sum(status is not None for status in before.values())
    with tqdm(total=len(ids), initial=finished_before, unit="run", desc=sweep.name, dynamic_ncols=True) as bar:
        while True:
            statuses = {rid: finished_status(out, rid) for rid in ids}
            done = sum(status is not None for status in statuses.values())
            bar.update(done - bar.n)
            losses = [read_summary(out, rid).get("test_loss") for rid, s in statuses.items() if s == "done" and before[rid] is None]
            losses = [loss for loss in losses if isinstance(loss, (int, float)) and math.isfinite(loss)]
            failed = sum(read_status(out, rid) == "failed" for rid in ids)
            bar.set_postfix_str(
                (f"best {min(losses):.4g} worst {max(losses):.4g}" if losses else "") + (f" failed {failed}" if failed else "")
            )
            if all(worker.poll() is not None for worker in workers):
                return
            time.sleep(1.0)


def stop(workers: list[subprocess.Popen]) -> None:
    """Interrupt the workers (a terminal's Ctrl-C reaches them already) and wait for them."""
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGINT)
    for worker in workers:
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()


def report(sweep: Sweep, out: Path, before: dict, queue: RunQueue) -> Counter:
    """Print the summary: finished now, finished before (skipped), failed with error heads."""
    tally: Counter = Counter()
    for run in sweep.runs:
        status = read_status(out, run.run_id) or "not started"
        tally["skipped (finished before)" if before[run.run_id] is not None else status] += 1
    print(f"sweep {sweep.name}: " + ", ".join(f"{count} {what}" for what, count in sorted(tally.items())))
    for job, error in sorted(queue.failures().items()):
        print(f"  failed {job}: {error_line(error) or 'no error message'}")
    print(f"results: {table_path(out)}")
    return tally


def write_manifest(sweep: Sweep, out: Path, storage: str) -> None:
    """out/sweep.json: the sweep's name, source, storage (redacted) and run ids, for status/collect."""
    manifest = {
        "name": sweep.name,
        "source": str(sweep.source),
        "storage": redact(storage),
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
