"""The sweep queue on every storage it supports, PostgreSQL included (skipped only if unreachable)."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections import Counter

import pytest

from harness.errors import UsageError
from harness.sweep.queue import RunQueue
from harness.redact import redact
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
