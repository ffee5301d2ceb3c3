"""Watching runs while they train: live W&B streams (resume, crash, cap, hung finish), the sweep's
step bar and ``polyscale status``'s running runs."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
from collections import Counter
from pathlib import Path

import pytest

from harness.config.sweep_spec import load_sweep
from harness.sweep import launch
from harness.sweep.options import SweepOptions
from harness.sweep.queue import RunQueue
from harness.tracking import store
from harness.tracking.wandb_mirror import LiveMirror, mirror_missing
from tests.test_sweep_run import polyscale, statuses, wait_for, write_spec
from tests.wandb_records import records

STEPS = (0, 10, 20, 30, 40, 50)


def sessions(wandb_dir: Path, run_id: str) -> list[dict]:
    """Each offline session of a run, oldest first: its history steps and its summary.

    W&B's service writes the file on its own schedule; a loaded machine can lag behind ``finish()``,
    so each file is read once it holds its exit record (or after a minute, as it is).
    """
    found = []
    paths = Path(wandb_dir).glob(f"wandb/offline-run-*-{run_id}*/run-{run_id}.wandb")
    for path in sorted(paths, key=lambda p: p.stat().st_mtime_ns):
        try:
            wait_for(lambda p=path: any(r.WhichOneof("record_type") == "exit" for r in records(p)), timeout=60)
        except AssertionError:
            pass
        steps, summary = [], {}
        for record in records(path):
            kind = record.WhichOneof("record_type")
            if kind == "history":
                items = {
                    item.key or ".".join(item.nested_key): json.loads(item.value_json) for item in record.history.item
                }
                steps.append(items["_step"])
            elif kind == "summary":
                summary.update(
                    {
                        item.key or ".".join(item.nested_key): json.loads(item.value_json)
                        for item in record.summary.update
                    }
                )
        found.append({"steps": steps, "summary": summary})
    return found


def logged_steps(wandb_dir: Path, run_id: str) -> Counter:
    return Counter(step for session in sessions(wandb_dir, run_id) for step in session["steps"])


def record(step: int) -> dict:
    return {"step": step, "train_loss": 1.0 / (step + 1), "test_loss": 2.0 / (step + 1)}


def begin(out: Path, run_id: str) -> None:
    store.begin_run(out, run_id, "moment", {"experiment": "width"})


def observer(out: Path, **kwargs) -> LiveMirror:
    return LiveMirror(out, mode="offline", project="polyscale-test", group="live", **kwargs)


# A first attempt at the run streams steps 0, 10, 20 and is killed (no finish()).
KILLED_ATTEMPT = """\
import os, sys
from pathlib import Path
from harness.tracking import store
from harness.tracking.wandb_mirror import LiveMirror
out, run_id = Path(sys.argv[1]), sys.argv[2]
store.begin_run(out, run_id, "moment", {"experiment": "width"})
live = LiveMirror(out, mode="offline", project="polyscale-test", group="live")
live.run_started(run_id, "moment", {"experiment": "width"})
for step in (0, 10, 20):
    live.run_logged(run_id, {"step": step, "train_loss": 1.0, "test_loss": 2.0})
os.kill(os.getpid(), 9)
"""


@pytest.mark.parametrize("first", ["killed", "failed"])
@pytest.mark.parametrize("resumed_from", [0, 30])
def test_a_resumed_run_has_each_step_once_in_the_offline_wandb_files(tmp_path, monkeypatch, first, resumed_from):
    """Attempt one streams 0..20 and is killed (its W&B session never finished) or fails (it did);
    attempt two streams from step 0 (a restart) or from 30 (a checkpoint at 20) to the end."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_DIR", raising=False)
    run_id = "abc123def456"
    if first == "killed":
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        env.pop("WANDB_SERVICE", None)
        done = subprocess.run([sys.executable, "-c", KILLED_ATTEMPT, str(tmp_path), run_id], env=env, timeout=300)
        assert done.returncode == -signal.SIGKILL
        assert store.read_wandb_state(tmp_path, run_id)["session"]  # left open by the kill
    else:
        begin(tmp_path, run_id)
        live = observer(tmp_path)
        live.run_started(run_id, "moment", {"experiment": "width"})
        for step in (0, 10, 20):
            live.run_logged(run_id, record(step))
        store.end_run(tmp_path, run_id, "failed", [record(s) for s in (0, 10, 20)], {}, error="boom")
        live.run_finished(run_id, "failed", {})
        assert logged_steps(tmp_path, run_id) == Counter({0: 1, 10: 1, 20: 1})
    begin(tmp_path, run_id)
    live = observer(tmp_path)
    live.run_started(run_id, "moment", {"experiment": "width"})
    for step in STEPS:
        if step >= resumed_from:
            live.run_logged(run_id, record(step))
    summary = {"test_loss": 2.0 / 51, "arm": "moment"}
    store.end_run(tmp_path, run_id, "done", [record(s) for s in STEPS], summary)
    live.run_finished(run_id, "done", summary)
    assert logged_steps(tmp_path, run_id) == Counter(dict.fromkeys(STEPS, 1))
    ends = [s["summary"]["status"] for s in sessions(tmp_path, run_id) if "status" in s["summary"]]
    assert ends == (["failed", "done"] if first == "failed" else ["done"])
    assert store.read_wandb_state(tmp_path, run_id)["mirrored"] is True
    assert mirror_missing(tmp_path, mode="offline", project="polyscale-test", group="live") == 0


def test_runs_past_the_cap_are_mirrored_when_they_end_and_each_batched_model_has_its_own_run(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_DIR", raising=False)
    ids = ["aaaaaaaaaaaa", "bbbbbbbbbbbb", "cccccccccccc"]
    live = observer(tmp_path, max_open=2)
    for run_id in ids:
        begin(tmp_path, run_id)
        live.run_started(run_id, "moment", {"experiment": "width"})
    streamed = [rid for rid in ids if store.read_wandb_state(tmp_path, rid).get("session")]
    assert streamed == ids[:2]
    for step in STEPS:
        for run_id in ids:
            live.run_logged(run_id, record(step))
    for run_id in ids:
        store.end_run(tmp_path, run_id, "done", [record(s) for s in STEPS], {"test_loss": 0.5})
        live.run_finished(run_id, "done", {"test_loss": 0.5})
    for run_id in ids:
        assert logged_steps(tmp_path, run_id) == Counter(dict.fromkeys(STEPS, 1)), run_id
        assert store.read_wandb_state(tmp_path, run_id)["mirrored"] is True


def test_a_hung_finish_costs_no_local_result_and_leaves_the_run_to_the_next_mirror(tmp_path, monkeypatch):
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_DIR", raising=False)
    release = threading.Event()
    real_finish = wandb.Run.finish

    def hung_finish(self, *args, **kwargs):
        release.wait()
        return real_finish(self, *args, **kwargs)

    monkeypatch.setattr(wandb.Run, "finish", hung_finish)
    run_id = "abc123def456"
    begin(tmp_path, run_id)
    live = observer(tmp_path, finish_timeout=0.2)
    live.run_started(run_id, "moment", {"experiment": "width"})
    for step in STEPS:
        live.run_logged(run_id, record(step))
    store.end_run(tmp_path, run_id, "done", [record(s) for s in STEPS], {"test_loss": 0.5})
    with pytest.warns(UserWarning, match="W&B mirror of run abc123def456 failed .*finish.*local results"):
        live.run_finished(run_id, "done", {"test_loss": 0.5})
    release.set()
    assert store.finished_status(tmp_path, run_id) == "done"
    assert store.read_summary(tmp_path, run_id)["test_loss"] == 0.5
    assert not store.read_wandb_state(tmp_path, run_id).get("mirrored")


def test_a_sweep_killed_mid_way_then_rerun_has_every_finished_run_once_in_the_offline_wandb_files(tmp_path):
    spec = write_spec(tmp_path, "wbcrash", steps=60, sizes=(96, 128), seeds=2)
    sweep = load_sweep(spec)
    results = tmp_path / "results" / "wbcrash"
    first = polyscale("sweep", str(spec), "--grace", "2", "--no-batch", cwd=tmp_path, wandb="offline", background=True)

    def streaming() -> list[str]:
        return [rid for rid in statuses(results) if store.read_wandb_state(results, rid).get("session")]

    # killed while a run streams: its W&B session never finishes, and the rerun must not repeat it
    wait_for(lambda: sum(s == "done" for s in statuses(results).values()) >= 2 and streaming())
    os.killpg(first.pid, signal.SIGKILL)  # the coordinator, its workers and their W&B services
    first.wait()
    assert len(statuses(results)) < len(sweep.runs) or "running" in statuses(results).values(), "killed too late"
    second = polyscale("sweep", str(spec), "--grace", "2", cwd=tmp_path, wandb="offline")
    assert second.returncode == 0, second.stdout + second.stderr
    for run in sweep.runs:
        metrics, _ = store.read_metrics(results, run.run_id)
        steps = [r["step"] for r in metrics]
        assert logged_steps(results, run.run_id) == Counter(dict.fromkeys(steps, 1)), run.run_id
        summaries = [s["summary"] for s in sessions(results, run.run_id) if "test_loss" in s["summary"]]
        assert summaries and all(
            s["test_loss"] == pytest.approx(store.read_summary(results, run.run_id)["test_loss"]) for s in summaries
        )


def test_the_sweep_bar_counts_the_steps_of_finished_and_running_runs(tmp_path):
    done, running, failed, waiting = "a" * 12, "b" * 12, "c" * 12, "d" * 12
    for run_id in (done, running, failed):
        begin(tmp_path, run_id)
    store.end_run(tmp_path, done, "done", [record(0)], {"test_loss": 0.25})
    store.write_metrics(tmp_path, running, [record(0), record(10), record(20)])
    with store.metrics_path(tmp_path, running).open("a") as file:
        file.write('{"step": 30, "test_lo')  # a record cut by a kill mid-write
    store.end_run(tmp_path, failed, "failed", [record(0), record(10)], {}, error="boom")
    totals = dict.fromkeys((done, running, failed, waiting), 40)
    steps, postfix = launch.tally_steps(tmp_path, totals, dict.fromkeys(totals))
    assert steps == 40 + 20
    assert postfix == "runs 1 done, 1 running, 1 failed; test loss best 0.25 worst 0.25"
    assert store.progress(tmp_path, running) == (20, pytest.approx(2.0 / 21))
    assert store.progress(tmp_path, waiting) == (None, None)


def test_the_sweep_bar_counts_an_interrupted_run_at_its_newest_checkpoint(tmp_path):
    # A run marked running whose process is gone resumes from its newest checkpoint (15 here), not
    # from its last record (30): the bar counts 15, so that it does not step back when it resumes.
    gone, fresh = "e" * 12, "f" * 12
    for run_id in (gone, fresh):
        begin(tmp_path, run_id)
        store.write_metrics(tmp_path, run_id, [record(0), record(10), record(20), record(30)])
    status = store.read_json(store.status_path(tmp_path, gone))
    store.write_json(store.status_path(tmp_path, gone), {**status, "pid": 2**22 + 1})  # above Linux's pid_max
    checkpoints = store.checkpoint_dir(tmp_path, gone)
    checkpoints.mkdir(parents=True)
    for step in (5, 15):
        store.checkpoint_path(tmp_path, gone, step).write_bytes(b"")
    assert store.is_alive(tmp_path, gone) is False and store.is_alive(tmp_path, fresh) is True
    steps, postfix = launch.tally_steps(tmp_path, dict.fromkeys((gone, fresh), 40), dict.fromkeys((gone, fresh)))
    assert steps == 15 + 30
    assert postfix == "runs 0 done, 1 running, 0 failed, 1 interrupted"


def test_workers_of_a_coordinator_draw_no_bars(tmp_path, monkeypatch):
    started = []
    monkeypatch.setattr(launch.subprocess, "Popen", lambda command, env: started.append(env))
    launch.start_workers("s", SweepOptions(out=tmp_path, threads=1), 2)
    assert [env["TQDM_DISABLE"] for env in started] == ["1", "1"]


STATUS_CONFIG = """\
    experiment: width
    task: {name: teacher, n_train: 100, n_test: 50}
    model: {width: 30}
    compression: {k: 1, size: 10}
    train: {optimizer: sgd, lr: 0.01, steps: 40, batch_size: 20, eval_every: 10}
"""


def test_status_lists_running_runs_with_step_and_loss_and_tells_dead_ones(tmp_path):
    import yaml

    config = yaml.safe_load(textwrap.dedent(STATUS_CONFIG))
    results = tmp_path / "results"
    live, dead = "a" * 12, "b" * 12
    for run_id in (live, dead):
        store.begin_run(results, run_id, "moment", config)
        store.write_metrics(results, run_id, [record(0), record(10)])
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # its pid names no process now
    status = json.loads(store.status_path(results, dead).read_text())
    store.write_json(store.status_path(results, dead), {**status, "pid": gone.pid})
    storage = str(tmp_path / "queue.journal")
    queue = RunQueue(storage, "st")
    queue.enqueue([("width-000000000000", {"config": config, "runs": {"moment": live}})])
    assert queue.claim() is not None  # claimed and beaten: its heartbeat is recent
    shown = polyscale("status", str(results), "--storage", storage, "--sweep", "st", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "2 runs: 1 interrupted, 1 running" in shown.stdout
    line = next(line for line in shown.stdout.splitlines() if line.startswith(f"  running {live}: "))
    assert re.fullmatch(rf"  running {live}: step 10/40, test loss {2.0 / 11:.4g}, heartbeat \d+s ago", line)
    assert f"interrupted {dead}:" in shown.stdout
    assert "queue " in shown.stdout and "1 running" in shown.stdout.split("queue ")[1]


def test_collect_mirrors_the_finished_runs_wandb_lacks_into_wandb_dir_once(tmp_path, monkeypatch):
    wandb_dir = tmp_path / "elsewhere"
    monkeypatch.setenv("WANDB_DIR", str(wandb_dir))
    results = tmp_path / "results"
    finished, failed = "a" * 12, "b" * 12
    for run_id in (finished, failed):
        begin(results, run_id)
    store.end_run(results, finished, "done", [record(s) for s in STEPS], {"test_loss": 0.5})
    store.end_run(results, failed, "failed", [record(0)], {}, error="boom")
    for attempt in range(2):
        collected = polyscale("collect", str(results), cwd=tmp_path, wandb="offline")
        assert collected.returncode == 0, collected.stderr
        assert ("W&B: mirrored 1 finished run(s) it lacked" in collected.stdout) == (attempt == 0)
    assert logged_steps(wandb_dir, finished) == Counter(dict.fromkeys(STEPS, 1))
    assert not sessions(wandb_dir, failed) and not (results / "wandb").exists()
    assert store.read_wandb_state(results, finished)["mirrored"] is True
