"""The worker loop: claim a job (one configuration, its unfinished arms), run it, record it, repeat.

Any number of workers, on any machines that reach the same storage, can run this loop on one
sweep. A worker keeps going while any run is waiting or running anywhere (a run whose worker died
comes back to the queue after the grace period), and stops when the queue is drained.

Stopping (harness/preempt.py): after a stop signal, training checkpoints and raises ``Preempted``;
the worker hands its claims back to the queue (``RunQueue.release``: waiting again at once) and
the signal's ``Preempted`` leaves ``work``. A run whose claim was lost to another worker while
this one stalled is neither recorded nor mirrored here (``may_record``).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from contextlib import ExitStack

from harness import preempt
from harness.config import Config, parse_config
from harness.config import run_id as id_of_run
from harness.errors import UsageError
from harness.sweep.batching import batch_limit, claim_compatible
from harness.sweep.options import SweepOptions
from harness.sweep.queue import Claim, Heartbeat, RunQueue
from harness.tracking import wandb_mirror
from harness.tracking.observers import installed
from harness.tracking.store import finished_status, run_error

logger = logging.getLogger(__name__)

POLL_SECONDS = 2.0  # between looks at a queue whose runs are all taken by others
# How long a stop that ends the process waits for another thread's write to the queue to end:
# longer than a write takes on a starved CPU, short enough that an unreachable queue can't keep
# a stopped worker alive.
WRITE_WAIT_SECONDS = 30.0


class HeldClaims:
    """The claims a worker holds now, so that a stop can hand them back from any thread."""

    def __init__(self, queue: RunQueue) -> None:
        self.queue = queue
        self._claims: dict[int, Claim] = {}
        self._lock = threading.Lock()
        # Held while runs are requeued and claimed, until the claims are held here: a stop from
        # another thread waits for it, so it never misses a claim just taken.
        self.claiming = threading.Lock()

    def hold(self, claims: list[Claim]) -> None:
        with self._lock:
            self._claims.update((claim.trial_id, claim) for claim in claims)

    def let_go(self, claim: Claim) -> None:
        with self._lock:
            self._claims.pop(claim.trial_id, None)

    def release(self, claim: Claim) -> None:
        """Hand one claim back to the queue (nothing if it is no longer this worker's).

        Held until it is back: a stop from another thread meanwhile (``stop_now``) still finds it
        and hands it back itself, and the queue lets only one of the two do it."""
        self.queue.release(claim)
        self.let_go(claim)

    def release_all(self) -> int:
        """Hand every held claim back; how many went back by this call."""
        with self._lock:
            claims, self._claims = list(self._claims.values()), {}
        return sum(self.queue.release(claim) for claim in claims)


def stop_now(held: HeldClaims, quiet: bool = False) -> None:
    """The worker's ``on_overdue`` (harness/preempt.py): training did not stop in time after a
    signal, so hand the claims back and end the process at once (its runs stay unfinished and
    run again; nothing half-written is ever read as finished)."""
    try:
        held.claiming.acquire(timeout=10.0)  # kept until the end: no claim is taken after this
        count = held.release_all()
        if not quiet:
            print(f"worker: stopped by {preempt.signalled()}; {count} job(s) went back to the queue", file=sys.stderr)
    finally:
        sys.stderr.flush()
        # Not in the middle of another thread's write: ending it half done would lose a hand-back
        # already under way, and would leave a journal file's lock held for every other process.
        with held.queue.writes_held(timeout=WRITE_WAIT_SECONDS):
            os._exit(preempt.exit_code())


def work(queue: RunQueue, options: SweepOptions, held: HeldClaims | None = None) -> dict[str, int]:
    """Run claimed runs until the queue is drained; return how many ended in each outcome.

    Raises ``Preempted`` after a stop signal, once the claims are handed back.
    """
    held = held or HeldClaims(queue)
    tally: dict[str, int] = {}
    while True:
        if preempt.signalled():
            raise preempt.Preempted(f"stopped by {preempt.signalled()}")
        with held.claiming:  # a stop waits: a run is never half requeued or claimed but not held
            queue.requeue_stale()
            claim = queue.claim()
            claims = [claim] if claim else []
            if claim and options.batch_models != 1:
                claims += claim_compatible(queue, claim, batch_limit(options.batch_models, claim, options.device))
            held.hold(claims)
        if claim is None:
            if not queue.busy():
                return tally
            time.sleep(POLL_SECONDS)  # others are running: one may die and come back
            continue
        if preempt.signalled():  # came while claiming: nothing has started, hand the claims back
            held.release_all()
            continue
        try:
            outcomes = (
                [run_claim(queue, claim, options, held)]
                if len(claims) == 1
                else run_batch(queue, claims, options, held)
            )
        except preempt.Preempted:
            if preempt.signalled():
                raise
            continue  # only a lost claim stopped the training: the others went back; go on
        finally:
            for claimed in claims:
                held.let_go(claimed)
            preempt.clear()  # a lost claim's request ends with its job (a signal's stays)
        for outcome in outcomes:
            tally[outcome] = tally.get(outcome, 0) + 1


def recorder(beats: dict[str, Heartbeat], out) -> Callable[[str], bool]:
    """``may_record`` for the runner: a run is recorded only while its claim is still this
    worker's and no other worker has recorded it meanwhile."""

    def may_record(run_id: str) -> bool:
        beat = beats.get(run_id)
        if beat is not None and not beat.still_ours():
            return False
        if finished_status(out, run_id) is not None:
            logger.warning("run %s: recorded by another worker meanwhile; this result is dropped", run_id)
            return False
        return True

    return may_record


def queued_config(claim: Claim) -> Config:
    """The configuration a claimed job was queued with, checked to name the runs it was queued as.

    A job queued before a default changed (compression.round_fraction's) has a configuration
    that names other runs today: training it would record them under ids nobody planned, so it
    fails instead, in one line that says how to queue it afresh.
    """
    config = parse_config(claim.payload["config"], f"queued job {claim.run_id}")
    for arm, queued in claim.payload["runs"].items():
        if (today := id_of_run(config, arm)) != queued:
            raise UsageError(
                f"queued job {claim.run_id}: its configuration names run {today} today, not {queued}: a default "
                "changed since it was queued; queue it afresh (for a journal queue: delete the queue file and run "
                "the sweep again: finished runs are kept, unfinished ones resume from their checkpoints)"
            )
    return config


def run_claim(queue: RunQueue, claim: Claim, options: SweepOptions, held: HeldClaims | None = None) -> str:
    """Run the unfinished arms of one claimed configuration and close the claim.

    The outcome is ``failed`` if any arm failed (the job is retried; its finished arms are kept),
    ``skipped`` if the store already had every arm, ``lost`` if another worker took the claim
    over meanwhile, else ``done``. A stop hands the claim back: after a signal ``Preempted``
    is raised; after a lost claim's stop request the outcome is ``lost``.
    """
    from harness.sweep.execute import execute_job

    held = held or HeldClaims(queue)
    arms = [arm for arm, rid in claim.payload["runs"].items() if finished_status(options.out, rid) is None]
    if not arms:
        queue.finish(claim, "skipped")
        return "skipped"
    error, stopped = None, None
    with Heartbeat(queue, claim, options.heartbeat_seconds) as beat:
        may_record = recorder(dict.fromkeys(claim.payload["runs"].values(), beat), options.out)
        try:
            config = queued_config(claim)
            statuses = execute_job(config, arms, options.out, options.device, may_record, options.keep_checkpoints)
        except preempt.Preempted as exc:
            stopped = exc
        except Exception:  # e.g. a missing dataset: recorded in the run folders; the sweep goes on
            statuses, error = {}, traceback.format_exc()
    if stopped is not None:
        _hand_back(held, [claim], [beat])
        if preempt.signalled():
            raise stopped
        return "lost" if beat.lost else "handed back"  # a lost claim's stop request, not a signal
    return _close(queue, claim, statuses, error, options, lost=beat.lost)


def run_batch(queue: RunQueue, claims: list[Claim], options: SweepOptions, held: HeldClaims | None = None) -> list[str]:
    """``run_claim`` for several compatible claimed jobs, their models trained as one batched model
    (harness/sweep/batching.py); each claim keeps its own heartbeat, outcome and retry."""
    from harness.sweep.execute import execute_jobs

    held = held or HeldClaims(queue)
    outcomes: dict[int, str] = {}
    jobs, running = [], []
    for claim in claims:
        arms = [arm for arm, rid in claim.payload["runs"].items() if finished_status(options.out, rid) is None]
        if not arms:
            queue.finish(claim, "skipped")
            outcomes[claim.trial_id] = "skipped"
            continue
        try:
            jobs.append((queued_config(claim), arms))
            running.append(claim)
        except Exception:
            outcomes[claim.trial_id] = _close(queue, claim, {}, traceback.format_exc(), options)
    with ExitStack() as beating:
        beats = [beating.enter_context(Heartbeat(queue, claim, options.heartbeat_seconds)) for claim in running]
        owners = {rid: beat for claim, beat in zip(running, beats) for rid in claim.payload["runs"].values()}
        try:
            may_record = recorder(owners, options.out)
            results = (
                execute_jobs(jobs, options.out, options.device, may_record, options.keep_checkpoints) if jobs else []
            )
        except preempt.Preempted as exc:
            results = [exc] * len(jobs)
        except Exception:
            results = [traceback.format_exc()] * len(jobs)
    stopped = [
        (claim, beat) for claim, beat, result in zip(running, beats, results) if isinstance(result, preempt.Preempted)
    ]
    for claim, beat, result in zip(running, beats, results):
        if isinstance(result, preempt.Preempted):
            continue
        if isinstance(result, Exception):
            result = "".join(traceback.format_exception(result))
        if isinstance(result, str):
            outcomes[claim.trial_id] = _close(queue, claim, {}, result, options, lost=beat.lost)
        else:
            outcomes[claim.trial_id] = _close(queue, claim, result, None, options, lost=beat.lost)
    if stopped:
        _hand_back(held, [claim for claim, _ in stopped], [beat for _, beat in stopped])
        if preempt.signalled():
            raise next(result for result in results if isinstance(result, preempt.Preempted))
        for claim, beat in stopped:  # a lost claim's stop request stopped the whole batch
            outcomes[claim.trial_id] = "lost" if beat.lost else "handed back"
    return [outcomes[claim.trial_id] for claim in claims]


def _hand_back(held: HeldClaims, claims: list[Claim], beats: list[Heartbeat]) -> None:
    """After a stop: claims still this worker's go back to the queue; lost ones are another's."""
    for claim, beat in zip(claims, beats):
        if beat.lost:
            held.let_go(claim)
        else:
            held.release(claim)


def _close(
    queue: RunQueue,
    claim: Claim,
    statuses: dict[str, str],
    error: str | None,
    options: SweepOptions,
    *,
    lost: bool = False,
) -> str:
    """Mirror the job's runs recorded here (unless a live mirror streamed them already), then finish
    (and maybe retry) its claim; return the outcome. A lost claim (its trial was closed by the
    worker that took the job over) is left alone."""
    if error and not lost:
        logger.error("job %s failed (attempt %d):\n%s", claim.run_id, claim.attempt, error)
    streamed = any(isinstance(observer, wandb_mirror.LiveMirror) for observer in installed())
    for run_id, status in statuses.items():
        if status in ("done", "diverged") and not streamed:
            wandb_mirror.mirror_run(
                options.out,
                run_id,
                mode=options.wandb_mode,
                project=options.wandb_project,
                group=queue.sweep,
            )
    if lost or "lost" in statuses.values():
        return "lost"
    failed = [rid for rid, status in statuses.items() if status == "failed"]
    if failed and error is None:
        error = "; ".join(f"{rid}: {run_error(options.out, rid) or 'no error message'}" for rid in failed)
    outcome = "failed" if error or failed else "done"
    queue.finish(claim, outcome, error)
    if outcome == "failed" and claim.attempt <= options.retries:
        queue.retry(claim)
    return outcome
