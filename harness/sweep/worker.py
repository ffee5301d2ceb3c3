"""The worker loop: claim a job (one configuration, its unfinished arms), run it, record it, repeat.

Any number of workers, on any machines that reach the same storage, can run this loop on one
sweep. A worker keeps going while any run is waiting or running anywhere (a run whose worker died
comes back to the queue after the grace period), and stops when the queue is drained.
"""

from __future__ import annotations

import logging
import time
import traceback
from contextlib import ExitStack

from harness.config import parse_config
from harness.sweep.batching import batch_limit, claim_compatible
from harness.sweep.options import SweepOptions
from harness.sweep.queue import Claim, Heartbeat, RunQueue
from harness.tracking import wandb_mirror
from harness.tracking.store import finished_status, run_error

logger = logging.getLogger(__name__)

POLL_SECONDS = 2.0  # between looks at a queue whose runs are all taken by others


def work(queue: RunQueue, options: SweepOptions) -> dict[str, int]:
    """Run claimed runs until the queue is drained; return how many ended in each outcome."""
    tally: dict[str, int] = {}
    while True:
        queue.requeue_stale()
        claim = queue.claim()
        if claim is None:
            if not queue.busy():
                return tally
            time.sleep(POLL_SECONDS)  # others are running: one may die and come back
            continue
        claims = [claim]
        if options.batch_models != 1:
            claims += claim_compatible(queue, claim, batch_limit(options.batch_models, claim, options.device))
        try:
            outcomes = [run_claim(queue, claim, options)] if len(claims) == 1 else run_batch(queue, claims, options)
        except KeyboardInterrupt:
            # Close the claims so that a rerun queues the jobs at once (a kill -9 instead leaves
            # them to the heartbeat's grace period). Their unfinished runs are recorded as failed.
            for claimed in claims:
                queue.finish(claimed, "interrupted")
            raise
        for outcome in outcomes:
            tally[outcome] = tally.get(outcome, 0) + 1


def run_claim(queue: RunQueue, claim: Claim, options: SweepOptions) -> str:
    """Run the unfinished arms of one claimed configuration and close the claim.

    The outcome is ``failed`` if any arm failed (the job is retried; its finished arms are kept),
    ``skipped`` if the store already had every arm, else ``done``.
    """
    from harness.sweep.execute import execute_job

    arms = [arm for arm, rid in claim.payload["runs"].items() if finished_status(options.out, rid) is None]
    if not arms:
        queue.finish(claim, "skipped")
        return "skipped"
    error = None
    with Heartbeat(queue, claim, options.heartbeat_seconds):
        try:
            config = parse_config(claim.payload["config"], f"queued job {claim.run_id}")
            statuses = execute_job(config, arms, options.out, options.device)
        except Exception:  # e.g. a missing dataset: recorded in the run folders; the sweep goes on
            statuses, error = {}, traceback.format_exc()
    return _close(queue, claim, statuses, error, options)


def run_batch(queue: RunQueue, claims: list[Claim], options: SweepOptions) -> list[str]:
    """``run_claim`` for several compatible claimed jobs, their models trained as one batched model
    (harness/sweep/batching.py); each claim keeps its own heartbeat, outcome and retry."""
    from harness.sweep.execute import execute_jobs

    outcomes: dict[int, str] = {}
    jobs, running = [], []
    for claim in claims:
        arms = [arm for arm, rid in claim.payload["runs"].items() if finished_status(options.out, rid) is None]
        if not arms:
            queue.finish(claim, "skipped")
            outcomes[claim.trial_id] = "skipped"
            continue
        try:
            jobs.append((parse_config(claim.payload["config"], f"queued job {claim.run_id}"), arms))
            running.append(claim)
        except Exception:
            outcomes[claim.trial_id] = _close(queue, claim, {}, traceback.format_exc(), options)
    with ExitStack() as beating:
        for claim in running:
            beating.enter_context(Heartbeat(queue, claim, options.heartbeat_seconds))
        try:
            results = execute_jobs(jobs, options.out, options.device) if jobs else []
        except Exception:
            results = [traceback.format_exc()] * len(jobs)
    for claim, result in zip(running, results):
        if isinstance(result, Exception):
            result = "".join(traceback.format_exception(result))
        if isinstance(result, str):
            outcomes[claim.trial_id] = _close(queue, claim, {}, result, options)
        else:
            outcomes[claim.trial_id] = _close(queue, claim, result, None, options)
    return [outcomes[claim.trial_id] for claim in claims]


def _close(queue: RunQueue, claim: Claim, statuses: dict[str, str], error: str | None, options: SweepOptions) -> str:
    """Mirror the job's finished runs, then finish (and maybe retry) its claim; return the outcome."""
    if error:
        logger.error("job %s failed (attempt %d):\n%s", claim.run_id, claim.attempt, error)
    for run_id, status in statuses.items():
        if status in ("done", "diverged"):
            wandb_mirror.mirror_run(
                options.out,
                run_id,
                mode=options.wandb_mode,
                project=options.wandb_project,
                group=queue.sweep,
            )
    failed = [rid for rid, status in statuses.items() if status == "failed"]
    if failed and error is None:
        error = "; ".join(f"{rid}: {run_error(options.out, rid) or 'no error message'}" for rid in failed)
    outcome = "failed" if error or failed else "done"
    queue.finish(claim, outcome, error)
    if outcome == "failed" and claim.attempt <= options.retries:
        queue.retry(claim)
    return outcome
