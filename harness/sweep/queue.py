"""A sweep's work queue kept in an Optuna study, so workers on any machine can share it.

Each pending run is one trial in state WAITING that carries its run id in ``user_attrs``. A worker
claims one with Optuna's own atomic WAITING -> RUNNING transition (row locks on an RDB, the
journal's lock on a journal file), so two workers never get the same trial. While a run executes,
its worker stamps a heartbeat into the trial; a RUNNING trial whose heartbeat is older than the
grace period belongs to a dead worker and is failed and queued again. Heartbeats live in user
attributes rather than Optuna's RDB-only heartbeat table so that journal files, SQLite and
PostgreSQL behave the same.

The queue only says who runs what. Whether a run is finished is decided by the results store
(``status.json`` = done), so a lost queue can always be rebuilt from the folder.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

from harness import preempt
from harness.sweep.storage import open_storage

RUN_ID = "run_id"
PAYLOAD = "payload"
ATTEMPT = "attempt"
HEARTBEAT = "heartbeat"
OUTCOME = "outcome"
ERROR = "error"
RESULTS_AT = "results_at"

# Trials end COMPLETE for a run that finished (done or diverged: both are results), FAIL for a
# run that raised, or for one taken from a dead worker.
_FINISHED = (TrialState.COMPLETE, TrialState.FAIL)

optuna.logging.set_verbosity(optuna.logging.WARNING)
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Claim:
    """A run this worker now owns: its id, Optuna's trial id, which attempt this is (1-based), and
    the payload it was queued with (what a worker needs to run it: configuration and arm)."""

    run_id: str
    trial_id: int
    attempt: int
    payload: dict


@dataclass(frozen=True)
class JobRecord:
    """The latest attempt at a queued job: waiting, running or its outcome, and, once finished,
    where its worker wrote the results (``host:folder``; None if the worker did not say)."""

    state: str
    results_at: str | None = None


def _one_writer(method):
    """Run a method that writes to the queue under the queue object's write lock (``writes_held``)."""

    @functools.wraps(method)
    def locked(self: RunQueue, *args, **kwargs):
        with self._writing:
            return method(self, *args, **kwargs)

    return locked


class RunQueue:
    """Pending runs of one sweep, stored as trials of the Optuna study named after the sweep.

    ``results_at`` (``host:folder``) is recorded with each run this queue object finishes, so that
    a coordinator on another machine can say where the results are.

    The threads of a process that share a queue object (a worker's main thread, its heartbeats, a
    stop that hands the claims back) write one method at a time, so that a hand-back's three
    writes are never interleaved with, or cut short by, another thread's (``writes_held``).
    """

    def __init__(
        self, storage_url: str, sweep: str, *, grace_seconds: float = 120.0, results_at: str | None = None
    ) -> None:
        self.storage = open_storage(storage_url)
        self.sweep = sweep
        self.grace_seconds = grace_seconds
        self.results_at = results_at
        self.study = optuna.create_study(study_name=sweep, storage=self.storage, load_if_exists=True)
        self._study_id = self.storage.get_study_id_from_name(sweep)
        self._writing = threading.RLock()

    @contextlib.contextmanager
    def writes_held(self, timeout: float):
        """A block in which no other thread of this process writes to the queue: entered once a
        write under way has ended, or after ``timeout`` seconds if it has not (a hung storage)."""
        acquired = self._writing.acquire(timeout=timeout)
        try:
            yield
        finally:
            if acquired:
                self._writing.release()

    @_one_writer
    def enqueue(self, runs: Iterable[tuple[str, dict]], *, attempt: int = 1) -> list[str]:
        """Queue each ``(run_id, payload)`` not already waiting or running; return the ids queued."""
        active = self._active_run_ids()
        queued = []
        for run_id, payload in runs:
            if run_id in active:
                continue
            self._add(run_id, payload, attempt)
            active.add(run_id)
            queued.append(run_id)
        return queued

    def _add(self, run_id: str, payload: dict, attempt: int) -> None:
        attrs = {RUN_ID: run_id, PAYLOAD: payload, ATTEMPT: attempt}
        self.study.enqueue_trial({}, user_attrs=attrs, skip_if_exists=False)

    def claim(self) -> Claim | None:
        """Take one waiting run (atomically), or None when nothing is waiting."""
        claims = self.claim_matching(lambda payload: True, 1)
        return claims[0] if claims else None

    @_one_writer
    def claim_matching(self, wanted: Callable[[dict], bool], limit: int) -> list[Claim]:
        """Take up to ``limit`` waiting runs whose payload ``wanted`` accepts, in queue order.

        Each is taken with Optuna's atomic WAITING -> RUNNING state change, which only one
        process can win (the same step as ``Study``'s own pop of a waiting trial), and beaten for
        at once, so it is claimed, finished and retried on its own.
        """
        claims: list[Claim] = []
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            if len(claims) >= limit:
                break
            if not wanted(trial.user_attrs.get(PAYLOAD, {})):
                continue
            trial_id = self._trial_id(trial)
            try:
                if not self.storage.set_trial_state_values(trial_id, state=TrialState.RUNNING):
                    continue  # another worker took it first
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
            self.beat(trial_id)
            attrs = trial.user_attrs
            claims.append(Claim(attrs[RUN_ID], trial_id, int(attrs.get(ATTEMPT, 1)), attrs.get(PAYLOAD, {})))
        return claims

    @_one_writer
    def retry(self, claim: Claim) -> None:
        """Queue a failed run again as its next attempt."""
        self._add(claim.run_id, claim.payload, claim.attempt + 1)

    @_one_writer
    def beat(self, trial_id: int) -> None:
        """Record that the worker owning this trial is alive."""
        self.storage.set_trial_user_attr(trial_id, HEARTBEAT, time.time())

    @_one_writer
    def renew(self, claim: Claim) -> bool:
        """Beat for a claim and say whether it is still this worker's: False once its trial was
        closed by another (taken as stale after a stall longer than the grace period, and queued
        again), so the run is someone else's now."""
        try:
            self.beat(claim.trial_id)
        except optuna.exceptions.UpdateFinishedTrialError:
            return False
        return self.storage.get_trial(claim.trial_id).state == TrialState.RUNNING

    @_one_writer
    def release(self, claim: Claim) -> bool:
        """Hand a claimed run back unfinished (its worker was stopped): the trial ends FAIL with
        outcome ``preempted`` and the run is queued again at once as the same attempt (a stop is
        not a failure). False if the claim was no longer this worker's."""
        try:
            self.storage.set_trial_user_attr(claim.trial_id, OUTCOME, "preempted")
            self.storage.set_trial_state_values(claim.trial_id, state=TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            return False  # taken as stale meanwhile: whoever took it queued it again
        self._add(claim.run_id, claim.payload, claim.attempt)
        return True

    @_one_writer
    def finish(self, claim: Claim, outcome: str, error: str | None = None) -> None:
        """Close a claimed run with its outcome: done, diverged or skipped (COMPLETE), failed (FAIL).

        If the trial was meanwhile taken as stale (a long stall), it is left as it is: the result
        is in the store, and whoever claims the re-queued run finds it done there.
        """
        state = TrialState.COMPLETE if outcome in ("done", "diverged", "skipped") else TrialState.FAIL
        try:
            self.storage.set_trial_user_attr(claim.trial_id, OUTCOME, outcome)
            if self.results_at:
                self.storage.set_trial_user_attr(claim.trial_id, RESULTS_AT, self.results_at)
            if error:
                self.storage.set_trial_user_attr(claim.trial_id, ERROR, error[-2000:])
            self.storage.set_trial_state_values(
                claim.trial_id, state=state, values=None if state == TrialState.FAIL else [0.0]
            )
        except optuna.exceptions.UpdateFinishedTrialError:
            logger.warning("run %s: its trial was already closed as stale; the result is kept", claim.run_id)

    @_one_writer
    def requeue_stale(self) -> list[str]:
        """Fail the RUNNING trials whose heartbeat is older than the grace period; queue them again.

        Safe to call from every worker at once: only the caller whose state change succeeds
        queues the run again.
        """
        now = time.time()
        requeued = []
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            last = trial.user_attrs.get(HEARTBEAT, trial.datetime_start.timestamp() if trial.datetime_start else now)
            if now - float(last) <= self.grace_seconds:
                continue
            trial_id = self._trial_id(trial)
            if self._beaten_since(trial_id, float(last)):
                continue  # its owner came back since the list was read
            try:
                self.storage.set_trial_user_attr(trial_id, OUTCOME, "lost")
                changed = self.storage.set_trial_state_values(trial_id, state=TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # its owner finished after all, or another worker took it first
            if changed:
                run_id = trial.user_attrs[RUN_ID]
                self._add(run_id, trial.user_attrs.get(PAYLOAD, {}), int(trial.user_attrs.get(ATTEMPT, 1)))
                requeued.append(run_id)
        return requeued

    def busy(self) -> bool:
        """Whether any run is still waiting or running (a worker with nothing to claim keeps
        watching while others run: a dead one's run may come back)."""
        states = (TrialState.WAITING, TrialState.RUNNING)
        return bool(self.study.get_trials(deepcopy=False, states=states))

    def counts(self) -> Counter:
        """How many trials are waiting, running, and finished by outcome."""
        tally: Counter = Counter()
        for trial in self.study.get_trials(deepcopy=False):
            if trial.state in _FINISHED:
                tally[trial.user_attrs.get(OUTCOME, trial.state.name.lower())] += 1
            else:
                tally[trial.state.name.lower()] += 1
        return tally

    def failures(self) -> dict[str, str]:
        """Error message of each run whose latest attempt failed (a later success clears it)."""
        latest: dict[str, tuple[str | None, str]] = {}
        for trial in sorted(self.study.get_trials(deepcopy=False, states=_FINISHED), key=lambda t: t.number):
            latest[trial.user_attrs[RUN_ID]] = (trial.user_attrs.get(OUTCOME), trial.user_attrs.get(ERROR, ""))
        return {run_id: error for run_id, (outcome, error) in latest.items() if outcome == "failed"}

    def latest(self) -> dict[str, JobRecord]:
        """Each queued run's latest attempt (a re-queued run's new trial supersedes the old one)."""
        records: dict[str, JobRecord] = {}
        for trial in self.study.get_trials(deepcopy=False):  # in trial-number order
            attrs = trial.user_attrs
            state = trial.state.name.lower()
            if trial.state in _FINISHED:
                state = attrs.get(OUTCOME, state)
            records[attrs[RUN_ID]] = JobRecord(state, attrs.get(RESULTS_AT))
        return records

    def heartbeats(self) -> dict[str, float]:
        """Seconds since the last heartbeat of each run id (of the payload's runs) held by a running trial."""
        now, ages = time.time(), {}
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            beat = float(trial.user_attrs.get(HEARTBEAT, now))
            for run_id in trial.user_attrs.get(PAYLOAD, {}).get("runs", {}).values():
                ages[run_id] = now - beat
        return ages

    def _trial_id(self, trial: optuna.trial.FrozenTrial) -> int:
        """The storage's id of a trial listed by the study (through the storage's public lookup)."""
        return self.storage.get_trial_id_from_study_id_trial_number(self._study_id, trial.number)

    def _beaten_since(self, trial_id: int, last: float) -> bool:
        """Whether the trial got a newer heartbeat than ``last`` (read afresh from the storage)."""
        return float(self.storage.get_trial(trial_id).user_attrs.get(HEARTBEAT, last)) > last

    def _active_run_ids(self) -> set[str]:
        states = (TrialState.WAITING, TrialState.RUNNING)
        return {t.user_attrs[RUN_ID] for t in self.study.get_trials(deepcopy=False, states=states)}


class Heartbeat:
    """Beats for a claimed trial from a background thread while the run executes, and finds out
    when the claim is lost: its trial was taken as stale by another worker (this one stalled, e.g.
    paused or swapped out, longer than the grace period). Then the run is another worker's: the
    heartbeat asks training to stop (``harness.preempt``) and ``still_ours`` says False, so that
    the run is not recorded or mirrored a second time."""

    def __init__(self, queue: RunQueue, claim: Claim, interval: float) -> None:
        self._queue, self._claim, self._interval = queue, claim, interval
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{claim.run_id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def lost(self) -> bool:
        return self._lost.is_set()

    def still_ours(self) -> bool:
        """Whether the claim is still this worker's, asked of the queue now (a storage error
        counts as yes: an unreachable queue must not cost a result)."""
        if not self.lost:
            try:
                if not self._queue.renew(self._claim):
                    self._mark_lost()
            except Exception as exc:
                logger.warning("heartbeat for %s failed: %s", self._claim.run_id, exc)
        return not self.lost

    def _mark_lost(self) -> None:
        if not self._lost.is_set():
            self._lost.set()
            logger.warning(
                "job %s: another worker took it over while this one stalled; it is dropped here", self._claim.run_id
            )
            preempt.request_stop(f"lost claim {self._claim.run_id}")

    def _loop(self) -> None:
        while not self._stop.wait(self._interval) and self.still_ours():
            pass
