"""The sweep queue on every storage it supports, PostgreSQL included (skipped only if unreachable)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections import Counter

import pytest

from harness.errors import UsageError
from harness.redact import redact
from harness.sweep.queue import JobRecord, RunQueue
from harness.sweep.storage import open_storage

POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


def postgres_reachable() -> bool:
    try:
        import psycopg2

        psycopg2.connect(POSTGRES_URL, connect_timeout=3).close()
        return True
    except Exception:
        return False


@pytest.fixture(params=["journal", "sqlite", "postgresql"])
def storage_url(request, tmp_path):
    if request.param == "journal":
        return str(tmp_path / "queue.journal")
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'queue.db'}"
    if not postgres_reachable():
        pytest.skip(f"no PostgreSQL server reachable at {POSTGRES_URL} (trust auth expected)")
    return POSTGRES_URL


def unique_sweep() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


def test_enqueue_skips_runs_already_waiting_and_claims_each_once(storage_url):
    queue = RunQueue(storage_url, unique_sweep())
    assert queue.enqueue([(r, {"arm": r}) for r in "abc"]) == ["a", "b", "c"]
    assert queue.enqueue([("b", {}), ("d", {"arm": "d"})]) == ["d"]
    claimed = []
    while (claim := queue.claim()) is not None:
        claimed.append(claim.run_id)
        assert claim.payload == {"arm": claim.run_id} and claim.attempt == 1
        queue.finish(claim, "done")
    assert sorted(claimed) == ["a", "b", "c", "d"]
    assert not queue.busy()
    assert queue.counts() == Counter(done=4)


def test_claim_matching_takes_only_wanted_waiting_runs_in_queue_order_each_once(storage_url):
    queue = RunQueue(storage_url, unique_sweep())
    queue.enqueue([(f"r{i}", {"width": i % 3}) for i in range(9)])  # widths 0 1 2 0 1 2 0 1 2
    first = queue.claim_matching(lambda payload: payload["width"] == 1, 2)
    assert [c.run_id for c in first] == ["r1", "r4"] and all(c.attempt == 1 for c in first)
    rest = queue.claim_matching(lambda payload: payload["width"] == 1, 5)
    assert [c.run_id for c in rest] == ["r7"]  # r1 and r4 are running: not taken twice
    assert queue.claim_matching(lambda payload: True, 0) == []
    assert queue.counts() == Counter(waiting=6, running=3)
    others = RunQueue(storage_url, queue.sweep)  # another worker sees them running
    assert {c.run_id for c in others.claim_matching(lambda payload: True, 10)} == {f"r{i}" for i in (0, 2, 3, 5, 6, 8)}
    assert queue.claim() is None


def test_the_latest_attempt_of_each_run_and_where_its_results_went(storage_url):
    sweep = unique_sweep()
    here = RunQueue(storage_url, sweep, results_at="machine-a:/results/x")
    there = RunQueue(storage_url, sweep, results_at="machine-b:/results/x")
    here.enqueue([(r, {}) for r in "abcd"])
    a = here.claim()
    here.finish(a, "failed", error="boom")
    here.retry(a)  # its second attempt, waiting, supersedes the failure
    there.finish(there.claim(), "done")  # b
    assert here.claim().run_id == "c"  # left running
    d = here.claim()
    here.finish(d, "failed", error="bang")
    assert here.latest() == {
        "a": JobRecord("waiting"),
        "b": JobRecord("done", "machine-b:/results/x"),
        "c": JobRecord("running"),
        "d": JobRecord("failed", "machine-a:/results/x"),
    }


def test_a_run_whose_worker_stopped_beating_is_queued_again(storage_url):
    queue = RunQueue(storage_url, unique_sweep(), grace_seconds=0.5)
    queue.enqueue([("x", {"n": 1}), ("y", {"n": 2})])
    dead = queue.claim()  # this worker "dies": no heartbeat, no finish
    alive = queue.claim()
    queue.beat(alive.trial_id)
    time.sleep(0.8)
    queue.beat(alive.trial_id)
    assert queue.requeue_stale() == [dead.run_id]
    assert queue.requeue_stale() == []  # only once
    again = queue.claim()
    assert again.run_id == dead.run_id and again.trial_id != dead.trial_id
    assert again.payload == dead.payload and again.attempt == dead.attempt
    queue.finish(again, "done")
    queue.finish(alive, "done")
    queue.finish(dead, "done")  # the zombie comes back: warned, not raised
    assert queue.counts() == Counter(done=2, lost=1)


def test_a_released_run_is_waiting_again_at_once_as_the_same_attempt(storage_url):
    queue = RunQueue(storage_url, unique_sweep())
    queue.enqueue([("x", {"n": 1}), ("y", {"n": 2})])
    first, second = queue.claim(), queue.claim()
    assert queue.release(first) is True
    assert queue.counts() == Counter(preempted=1, waiting=1, running=1)
    again = queue.claim()
    assert (again.run_id, again.attempt, again.payload) == ("x", first.attempt, {"n": 1})
    assert again.trial_id != first.trial_id
    assert queue.release(first) is False  # already handed back: nothing is queued twice
    assert queue.counts() == Counter(preempted=1, running=2)
    queue.finish(again, "done")
    queue.finish(second, "done")
    assert queue.latest()["x"].state == "done"


def test_a_claim_taken_over_after_a_stall_is_no_longer_renewed_or_released(storage_url):
    queue = RunQueue(storage_url, unique_sweep(), grace_seconds=0.5)
    queue.enqueue([("x", {})])
    stalled = queue.claim()
    assert queue.renew(stalled) is True
    time.sleep(0.8)  # longer than the grace period without a beat
    assert RunQueue(storage_url, queue.sweep, grace_seconds=0.5).requeue_stale() == ["x"]
    assert queue.renew(stalled) is False
    assert queue.release(stalled) is False
    assert queue.counts() == Counter(lost=1, waiting=1)  # queued again once, by the taker


def test_failures_keep_their_error_message(storage_url):
    queue = RunQueue(storage_url, unique_sweep())
    queue.enqueue([("bad", {"k": 1})])
    claim = queue.claim()
    queue.finish(claim, "failed", error="Traceback ...\nValueError: boom")
    assert queue.failures() == {"bad": "Traceback ...\nValueError: boom"}
    queue.retry(claim)
    second = queue.claim()
    assert (second.run_id, second.attempt, second.payload) == ("bad", 2, {"k": 1})


CLAIMER = """
import sys, time
from harness.sweep.queue import RunQueue
queue = RunQueue(sys.argv[1], sys.argv[2])
while (claim := queue.claim()) is not None:
    print(claim.run_id, flush=True)
    time.sleep(0.01)
    queue.finish(claim, "done")
"""


def test_two_worker_processes_share_the_queue_without_duplicates(storage_url):
    sweep = unique_sweep()
    run_ids = [f"run{i:02d}" for i in range(30)]
    RunQueue(storage_url, sweep).enqueue([(r, {}) for r in run_ids])
    workers = [
        subprocess.Popen([sys.executable, "-c", CLAIMER, storage_url, sweep], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [w.communicate(timeout=180)[0].split() for w in workers]
    assert all(w.returncode == 0 for w in workers)
    assert sorted(outputs[0] + outputs[1]) == run_ids  # every run once, none twice
    assert all(outputs), "both workers should have taken part"


def test_storage_errors_are_one_line_and_hide_the_password():
    with pytest.raises(UsageError) as caught:
        open_storage("postgresql://alice:s3cr3t@127.0.0.1:1/nowhere")
    assert "s3cr3t" not in str(caught.value) and "alice:***@" in str(caught.value)


def test_redact_hides_only_the_password():
    assert redact("postgresql://u:p%40ss@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert redact("sqlite:///tmp/x.db") == "sqlite:///tmp/x.db"
    assert redact("journal:/tmp/q.journal") == "journal:/tmp/q.journal"


def test_redact_hides_a_password_with_a_raw_at_sign_whole():
    assert redact("postgresql://user:p@ss@host/db") == "postgresql://user:***@host/db"
    message = "--storage postgresql://u:a@b@c@h:5432/db: cannot open"
    assert redact(message) == "--storage postgresql://u:***@h:5432/db: cannot open"
    assert redact("postgresql://user@host/db") == "postgresql://user@host/db"


def test_a_raw_at_sign_in_the_password_is_read_as_part_of_the_password():
    with pytest.raises(UsageError) as caught:
        open_storage("postgresql://alice:p@ss-word@127.0.0.1:1/nowhere")
    message = str(caught.value)
    assert "ss-word" not in message and "alice:***@127.0.0.1:1/nowhere" in message
    assert 'at "127.0.0.1", port 1' in message  # the host it tried is the one after the last "@"


@pytest.mark.skipif(not postgres_reachable(), reason=f"no PostgreSQL server reachable at {POSTGRES_URL}")
def test_a_password_with_a_raw_at_sign_connects():
    url = POSTGRES_URL.replace("postgres@", "postgres:p@ss@")  # trust auth ignores the password
    queue = RunQueue(url, unique_sweep())
    assert queue.enqueue([("a", {})]) == ["a"]


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path, monkeypatch):
    """A process killed while it held the journal's lock leaves the lock behind; the next one waits
    the grace period, then takes it over. With a relative journal path it used to spin for ever:
    optuna reads the lock's age through the link, whose relative target it could not find."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("harness.sweep.storage.STALE_LOCK_SECONDS", 1)
    RunQueue("results/q/queue.journal", "q").enqueue([("a", {"arm": "a"})])
    journal = tmp_path / "results" / "q" / "queue.journal"
    (tmp_path / "results" / "q" / "queue.journal.lock").symlink_to(journal)  # as a killed holder leaves it
    done = []
    thread = threading.Thread(target=lambda: done.append(RunQueue("results/q/queue.journal", "q").claim()), daemon=True)
    thread.start()
    thread.join(timeout=30)
    assert done and done[0] is not None and done[0].run_id == "a"
