"""Stopping on signals and stalls, with real processes: SIGTERM/SIGUSR1/Ctrl-C hand the jobs back
and exit with the documented code, no worker outlives its coordinator, and a worker that stalled
past the grace period records nothing of the job another worker took over.

Every polyscale process a test starts loads HOOK (as ``sitecustomize``): with $SLOW_RECORD_SECONDS
set it sleeps at each evaluation, so a run is still training when the signal comes however fast
the machine; with $MARKER set it writes down each run trained to the end, recorded and mirrored.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from harness import preempt
from harness.config import run_id as run_id_of
from harness.config.sweep_spec import load_sweep
from harness.sweep.launch import jobs
from harness.sweep.queue import RunQueue
from harness.tracking.store import is_alive, write_json
from tests.test_sweep_run import assert_complete, polyscale, statuses, wait_for, write_spec

STEPS = 300
HOOK = """
import json, os, time

if os.environ.get("SLOW_RECORD_SECONDS") or os.environ.get("MARKER"):
    import harness.experiments.runner as runner
    import harness.tracking.wandb_mirror as wandb_mirror

    def note(what, run_id):
        if os.environ.get("MARKER"):
            with open(os.environ["MARKER"], "a") as marker:
                marker.write(json.dumps([what, run_id, os.getpid()]) + "\\n")

    def counted(what, function, run_ids):
        def wrapper(*args, **kwargs):
            result = function(*args, **kwargs)
            for run_id in run_ids(args, result):
                note(what, run_id)
            return result
        return wrapper

    train = runner.run_arms

    def run_arms(config, arms=None, *, device=None, on_record=None):
        pause = float(os.environ.get("SLOW_RECORD_SECONDS") or 0)
        def slowly(arm, record):
            time.sleep(pause)
            if on_record is not None:
                on_record(arm, record)
        result = train(config, arms, device=device, on_record=slowly)
        for arm in result:
            note("trained", runner.run_id(config, arm))
        return result

    runner.run_arms = run_arms
    runner.end_run = counted("recorded", runner.end_run, lambda args, result: [args[1]])
    wandb_mirror.mirror_run = counted("mirrored", wandb_mirror.mirror_run, lambda args, result: [args[1]])
"""


@pytest.fixture(autouse=True)
def hooked(tmp_path, monkeypatch):
    """Processes started by the test load HOOK, train slowly, and stop at the latest half a second
    after a signal whether or not training checks the request."""
    (tmp_path / "hook").mkdir()
    (tmp_path / "hook" / "sitecustomize.py").write_text(HOOK)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path / "hook"), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("SLOW_RECORD_SECONDS", "0.5")  # a job trains about 16 s: still training when signalled
    monkeypatch.setenv(preempt.STOP_SECONDS_ENV, "0.5")


def alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie waiting for a parent that no longer cares."""
    try:
        os.kill(pid, 0)
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (ProcessLookupError, FileNotFoundError):
        return False
    return state != "Z"


def training_pids(results: Path) -> set[int]:
    """The processes (workers) running a run that has begun training (its first metrics are written)."""
    pids = set()
    for folder in (results / "runs").glob("*/"):
        try:
            record = json.loads((folder / "status.json").read_text())
        except (OSError, ValueError):
            continue
        if record["status"] == "running" and (folder / "metrics.jsonl").exists():
            pids.add(record["pid"])
    return pids


def queue_counts(results: Path, name: str) -> Counter:
    return RunQueue(str(results / "queue.journal"), name).counts()


def test_is_alive_tells_a_running_run_with_a_live_process_from_a_dead_or_finished_one(tmp_path):
    gone = subprocess.Popen([sys.executable, "-I", "-c", "pass"])
    gone.wait()
    cases = {
        "live": ("running", socket.gethostname(), os.getpid(), True),
        "dead": ("running", socket.gethostname(), gone.pid, False),
        "elsewhere": ("running", "another-host", os.getpid(), None),
        "finished": ("done", socket.gethostname(), os.getpid(), False),
    }
    for run_id, (status, host, pid, _) in cases.items():
        write_json(tmp_path / "runs" / run_id / "status.json", {"status": status, "host": host, "pid": pid})
    assert {run_id: is_alive(tmp_path, run_id) for run_id in cases} == {k: v[3] for k, v in cases.items()}
    assert is_alive(tmp_path, "never-started") is False


def test_a_run_that_may_not_be_recorded_leaves_no_result_and_the_others_are_recorded(tmp_path):
    from harness.experiments.runner import run_config
    from harness.tracking.store import read_status, summary_path

    config = load_sweep(write_spec(tmp_path, "hook", steps=20, sizes=(96,), seeds=1)).runs[0].config
    kept, dropped = (run_id_of(config, arm) for arm in config.arm_names)
    asked = []
    records = run_config(config, tmp_path / "out", may_record=lambda rid: asked.append(rid) or rid != dropped)
    assert sorted(asked) == sorted([kept, dropped])
    assert {r.run_id: r.status for r in records} == {kept: "done", dropped: "lost"}
    assert read_status(tmp_path / "out", kept) == "done"
    assert read_status(tmp_path / "out", dropped) == "running" and not summary_path(tmp_path / "out", dropped).exists()


def test_sigusr1_makes_a_worker_hand_its_job_back_and_exit_75_and_the_rerun_completes_it(tmp_path, monkeypatch):
    name = "preempt"
    spec = write_spec(tmp_path, name, steps=STEPS, sizes=(128,), seeds=1)
    sweep = load_sweep(spec)
    results = tmp_path / "results" / name
    RunQueue(str(results / "queue.journal"), name).enqueue(jobs(sweep.runs))
    worker = polyscale("worker", "--sweep", name, "--no-batch", cwd=tmp_path, background=True)
    wait_for(lambda: worker.pid in training_pids(results))
    os.kill(worker.pid, signal.SIGUSR1)  # what Slurm's --signal sends
    output, _ = worker.communicate(timeout=120)
    assert worker.returncode == preempt.EXIT_PREEMPTED, output
    assert "went back to the queue" in output and "Traceback" not in output
    assert queue_counts(results, name) == Counter(preempted=1, waiting=1)  # back, waiting, not failed
    assert not any(is_alive(results, run.run_id) for run in sweep.runs)
    monkeypatch.delenv("SLOW_RECORD_SECONDS")
    rerun = polyscale("worker", "--sweep", name, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert set(statuses(results).values()) == {"done"} and len(statuses(results)) == len(sweep.runs)


def test_sigterm_to_a_sweep_stops_its_workers_says_so_once_and_the_same_command_completes_it(tmp_path, monkeypatch):
    name = "term"
    spec = write_spec(tmp_path, name, steps=STEPS, sizes=(96, 128), seeds=1)
    expected = {run.run_id for run in load_sweep(spec).runs}
    results = tmp_path / "results" / name
    sweep = polyscale("sweep", str(spec), "--workers", "2", "--no-batch", cwd=tmp_path, background=True)
    wait_for(lambda: len(training_pids(results)) == 2)
    workers = training_pids(results)
    sweep.send_signal(signal.SIGTERM)  # the coordinator alone, as timeout, Slurm or Kubernetes send it
    output, _ = sweep.communicate(timeout=120)
    assert sweep.returncode == preempt.EXIT_PREEMPTED, output
    assert output.count("stopped by SIGTERM") == 1 and "Traceback" not in output
    assert not any(alive(pid) for pid in workers)  # none left behind
    assert queue_counts(results, name) == Counter(preempted=2, waiting=2)
    status = polyscale("status", str(results), cwd=tmp_path)
    assert "running" not in status.stdout and "interrupted" in status.stdout, status.stdout
    monkeypatch.delenv("SLOW_RECORD_SECONDS")
    rerun = polyscale("sweep", str(spec), "--workers", "2", cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert_complete(results, expected)


def test_ctrl_c_stops_a_sweep_with_one_message_and_no_traceback(tmp_path):
    name = "ctrlc"
    spec = write_spec(tmp_path, name, steps=STEPS, sizes=(96, 128), seeds=1)
    results = tmp_path / "results" / name
    sweep = polyscale("sweep", str(spec), "--workers", "2", "--no-batch", cwd=tmp_path, background=True)
    wait_for(lambda: len(training_pids(results)) == 2)
    workers = training_pids(results)
    os.killpg(sweep.pid, signal.SIGINT)  # what a terminal sends to its foreground process group
    output, _ = sweep.communicate(timeout=120)
    assert sweep.returncode == preempt.EXIT_INTERRUPTED, output
    messages = [line for line in output.splitlines() if line.strip() and "%|" not in line]  # no bar
    assert messages[0].startswith(f"sweep {name}: ") and len(messages) == 2, output  # one message
    assert "stopped by SIGINT" in messages[1] and "run the same command again" in messages[1]
    assert not any(alive(pid) for pid in workers)
    assert queue_counts(results, name) == Counter(preempted=2, waiting=2)
    assert "running" not in polyscale("status", str(results), cwd=tmp_path).stdout


def test_workers_of_a_sweep_killed_with_9_hand_their_jobs_back_and_exit(tmp_path):
    name = "orphans"
    spec = write_spec(tmp_path, name, steps=STEPS, sizes=(96, 128), seeds=1)
    results = tmp_path / "results" / name
    sweep = polyscale("sweep", str(spec), "--workers", "2", "--no-batch", cwd=tmp_path, background=True)
    wait_for(lambda: len(training_pids(results)) == 2)
    workers = training_pids(results)
    sweep.kill()  # the coordinator alone, not its process group
    sweep.communicate(timeout=60)
    wait_for(lambda: not any(alive(pid) for pid in workers), timeout=120)
    assert queue_counts(results, name) == Counter(preempted=2, waiting=2)


@pytest.fixture(scope="module")
def stalled(tmp_path_factory):
    """Worker A claims the job and is paused (SIGSTOP) while training, past the grace period;
    worker B takes the job over; A resumes (SIGCONT). Returns the runs' ids, the marker's lines,
    the workers' pids, exit codes and outputs, the queue's counts and the runs' statuses.

    Tried twice: in about one run in three on a loaded CPU, B has not taken the job over after
    minutes (not yet understood; a SIGSTOP landing inside A's write to the journal file is the
    suspect). Each try is a fresh queue and results folder, and the assertions are on the try that
    completed."""
    try:
        return _stall(tmp_path_factory.mktemp("stall"), takeover_seconds=90.0)
    except AssertionError:
        return _stall(tmp_path_factory.mktemp("stall"), takeover_seconds=240.0)


def _stall(tmp_path: Path, takeover_seconds: float) -> dict:
    name = "stall"
    spec = write_spec(tmp_path, name, steps=STEPS, sizes=(128,), seeds=1)
    run_ids = {run.run_id for run in load_sweep(spec).runs}
    results = tmp_path / "results" / name
    RunQueue(str(results / "queue.journal"), name).enqueue(jobs(load_sweep(spec).runs))
    (tmp_path / "hook").mkdir()
    (tmp_path / "hook" / "sitecustomize.py").write_text(HOOK)
    marker = tmp_path / "marker.jsonl"
    path = os.pathsep.join([str(tmp_path / "hook"), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path, "MARKER": str(marker), "WANDB_MODE": "disabled"}

    def start(**extra: str) -> subprocess.Popen:
        argv = [sys.executable, "-m", "harness.cli", "worker", "--sweep", name, "--grace", "2", "--no-batch"]
        return subprocess.Popen(
            argv, cwd=tmp_path, env={**env, **extra}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )

    first, second = start(SLOW_RECORD_SECONDS="0.2"), None
    try:
        wait_for(lambda: first.pid in training_pids(results))
        first.send_signal(signal.SIGSTOP)
        second = start()
        took_over = lambda: second.pid in training_pids(results) or second.poll() is not None  # noqa: E731
        wait_for(took_over, timeout=takeover_seconds)  # B took over
        first.send_signal(signal.SIGCONT)
        outputs = [worker.communicate(timeout=300)[0] for worker in (first, second)]
    finally:
        for worker in (first, second):
            if worker is not None and worker.poll() is None:
                worker.send_signal(signal.SIGCONT)
                worker.kill()
    lines = [json.loads(line) for line in marker.read_text().splitlines()]
    return {
        "run_ids": run_ids,
        "lines": lines,
        "pids": (first.pid, second.pid),
        "returncodes": (first.returncode, second.returncode),
        "outputs": outputs,
        "counts": queue_counts(results, name),
        "statuses": statuses(results),
    }


def test_a_worker_stalled_past_the_grace_period_records_and_mirrors_nothing_of_the_job_it_lost(stalled):
    assert stalled["returncodes"] == (0, 0), stalled["outputs"]
    first, second = stalled["pids"]
    for what in ("recorded", "mirrored"):
        done = Counter(run_id for kind, run_id, _ in stalled["lines"] if kind == what)
        assert done == Counter(dict.fromkeys(stalled["run_ids"], 1)), (what, stalled["lines"])
    assert {pid for kind, _, pid in stalled["lines"] if kind != "trained"} == {second}
    assert stalled["counts"] == Counter(lost=1, done=1)
    assert set(stalled["statuses"].values()) == {"done"}
    assert "1 lost" in stalled["outputs"][0]


def test_a_worker_stalled_past_the_grace_period_stops_training_the_job_it_lost(stalled):
    trained = Counter(run_id for kind, run_id, _ in stalled["lines"] if kind == "trained")
    assert trained == Counter(dict.fromkeys(stalled["run_ids"], 1)), stalled["lines"]


def test_a_stop_signal_that_comes_while_another_is_noted_is_noted_too_without_a_deadlock(monkeypatch):
    """A second signal's handler runs inside the first one's, here at the worst moment: while the
    first holds the lock of the stop event (Slurm's SIGUSR2 to every process of a task, then
    submitit's SIGUSR1). Both are noted, the stop is asked for once, and nothing waits forever."""
    import threading

    class Interrupted(threading.Event):
        def set(self) -> None:
            with self._cond:
                if not nested:
                    nested.append(True)
                    preempt.received("SIGUSR1")  # the second handler, inside the first
                self._flag = True
                self._cond.notify_all()

    nested: list[bool] = []
    for name, value in (("_stop", Interrupted()), ("_signalled", threading.Event()), ("_overdue", threading.Event())):
        monkeypatch.setattr(preempt, name, value)
    monkeypatch.setattr(preempt, "_signals", [])
    monkeypatch.setattr(preempt, "_reason", [])
    noting = threading.Thread(target=preempt.received, args=("SIGUSR2",), daemon=True)
    noting.start()
    noting.join(timeout=10)
    assert not noting.is_alive(), "deadlocked noting the second signal"
    assert nested and preempt._signals == ["SIGUSR2", "SIGUSR1"]
    assert preempt.stop_requested() and preempt.stop_reason() == "SIGUSR2" and preempt.signalled() == "SIGUSR2"
    assert not preempt._overdue.is_set()  # only a second Ctrl-C means: stop now


HAND_BACK_CUT_SHORT = """
import sys, threading, time
from harness.sweep.queue import RunQueue
from harness.sweep.worker import HeldClaims, stop_now

queue = RunQueue(sys.argv[1], "cut")
queue.enqueue([("run-a", {})])
held = HeldClaims(queue)
claim = queue.claim()
held.hold([claim])
write = queue.storage.set_trial_state_values
inside = threading.Event()

def slow_write(*args, **kwargs):  # a starved CPU: the hand-back's state change takes a while
    inside.set()
    time.sleep(1.0)
    return write(*args, **kwargs)

queue.storage.set_trial_state_values = slow_write
threading.Thread(target=held.release, args=(claim,)).start()  # training stopped: the main thread hands back
inside.wait()
stop_now(held, quiet=True)  # the stop's deadline passes meanwhile and ends the process
"""


def test_a_stop_that_ends_the_process_waits_for_a_hand_back_under_way(tmp_path):
    """The worker's main thread is handing its job back (its trial marked preempted, not yet
    failed and queued again) when the stop's deadline ends the process from another thread: the
    job still ends up back in the queue, once, as an uninterrupted hand-back leaves it."""
    journal = tmp_path / "queue.journal"
    done = subprocess.run([sys.executable, "-c", HAND_BACK_CUT_SHORT, str(journal)], capture_output=True, text=True)
    assert done.returncode == preempt.exit_code(), done.stderr
    assert RunQueue(str(journal), "cut").counts() == Counter(preempted=1, waiting=1)
    assert not Path(f"{journal}.lock").exists()  # no lock left for the next process to wait out
