"""Sweeps on a real Slurm cluster through submitit (harness/sweep/slurm.py).

The cluster tests need a Slurm that answers `sinfo` (`.ci/slurm-cluster start` starts a one-node one
on this machine; `.ci/run` does so before `make test`) and skip with the reason otherwise. Every
polyscale process they start, Slurm's tasks included (sbatch passes the environment on), loads
HOOK as ``sitecustomize``: it notes each evaluation record a run logs (run id, step, process) in
$MARKER, and with $SLOW_RECORD_SECONDS set pauses there, so that a run is still training when the
test requeues or cancels its task. The bad-input tests need no cluster.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

from harness.cli import main
from harness.config.launcher import LauncherSpec
from harness.config.sweep_spec import load_sweep
from harness.errors import UsageError
from harness.sweep.launch import jobs
from harness.sweep.options import SweepOptions
from harness.sweep.queue import OUTCOME, RUN_ID, RunQueue
from tests.test_sweep_run import assert_complete, polyscale, statuses, wait_for, write_spec

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "sweeps" / "smoke.yaml"
SHORTER = ["--set", "train.steps=50"]  # the smoke sweep's 48 runs, a third of its steps each
HOOK = """
import json, os, time

if os.environ.get("MARKER"):
    import harness.experiments.runner as runner

    train = runner.run_arms

    def run_arms(config, arms=None, *, device=None, on_record=None):
        pause = float(os.environ.get("SLOW_RECORD_SECONDS") or 0)
        def noted(arm, record):
            if on_record is not None:
                on_record(arm, record)
            with open(os.environ["MARKER"], "a") as marker:
                marker.write(json.dumps([runner.run_id(config, arm), record.get("step"), os.getpid()]) + "\\n")
            time.sleep(pause)
        return train(config, arms, device=device, on_record=noted)

    runner.run_arms = run_arms
"""


def cluster_problem() -> str | None:
    """Why no Slurm cluster can run the tests here, or None."""
    if shutil.which("sinfo") is None:
        return "sinfo is not on PATH (no Slurm here; `.ci/slurm-cluster start` installs and starts one)"
    try:
        done = subprocess.run(["sinfo", "--noheader", "--format=%P %a"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer in 20 s"
    if done.returncode != 0 or "up" not in done.stdout:
        lines = (done.stderr or done.stdout).strip().splitlines()
        return (
            f"no Slurm partition is up ({lines[-1] if lines else 'sinfo printed nothing'}); run .ci/slurm-cluster start"
        )
    return None


PROBLEM = cluster_problem()
needs_cluster = pytest.mark.skipif(PROBLEM is not None, reason=f"no Slurm cluster: {PROBLEM}")


@pytest.fixture
def marker(tmp_path, monkeypatch) -> Path:
    """The processes the test starts (and their Slurm tasks) note their runs' records here."""
    (tmp_path / "hook").mkdir()
    (tmp_path / "hook" / "sitecustomize.py").write_text(HOOK)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path / "hook"), str(ROOT)]))
    path = tmp_path / "marker.jsonl"
    monkeypatch.setenv("MARKER", str(path))
    return path


def records(marker: Path) -> list[tuple[str, int, int]]:
    """(run id, step, process) of each record logged so far."""
    if not marker.exists():
        return []
    return [tuple(json.loads(line)) for line in marker.read_text().splitlines() if line.endswith("]")]


def array_of(output: str) -> str:
    found = re.search(r"submitted Slurm array (\d+)", output)
    assert found, output
    return found.group(1)


def active(array: str) -> bool:
    done = subprocess.run(["squeue", "--noheader", "--array", f"--jobs={array}"], capture_output=True, text=True)
    return done.returncode == 0 and bool(done.stdout.strip())


def squeue_state(job: str) -> str:
    done = subprocess.run(["squeue", "--noheader", f"--jobs={job}", "--format=%T"], capture_output=True, text=True)
    return done.stdout.strip()


def node_state() -> str:
    done = subprocess.run(["sinfo", "--noheader", "--format=%T"], capture_output=True, text=True)
    return done.stdout.strip()


def accounting(array: str, timeout: float = 60.0) -> list[tuple[str, str]] | None:
    """(task, state) rows of ``sacct`` for the array, each requeue of a task a row of its own;
    None where the cluster keeps no accounting database. slurmctld reports a job's end to
    slurmdbd asynchronously, so on a busy machine sacct can still show RUNNING for a task that
    squeue no longer lists: the rows are read again until none is pending or running (up to
    ``timeout`` seconds; then the last read)."""
    command = ["sacct", "--noheader", "--parsable2", "--allocations", "--duplicates", f"--jobs={array}"]
    start = time.monotonic()
    while True:
        done = subprocess.run([*command, "--format=JobID,State"], capture_output=True, text=True)
        if done.returncode != 0:
            return None
        rows = [tuple(line.split("|")) for line in done.stdout.splitlines() if line]
        if not any(state in ("PENDING", "RUNNING") for _, state in rows) or time.monotonic() - start > timeout:
            return rows
        time.sleep(1.0)


def run_outcomes(results: Path, name: str) -> Counter:
    queue = RunQueue(str(results / "queue.journal"), name)
    return Counter((t.user_attrs[RUN_ID], t.user_attrs.get(OUTCOME)) for t in queue.study.get_trials())


@needs_cluster
def test_the_smoke_sweep_through_a_slurm_array_runs_every_run_once_and_sacct_shows_the_array(tmp_path):
    dry = polyscale("sweep", str(SMOKE), *SHORTER, "--dry-run", cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    expected = {line.split()[0] for line in dry.stdout.splitlines()[1:-1]}
    sweep = load_sweep(SMOKE, SHORTER[1:])
    assert expected == {run.run_id for run in sweep.runs}
    done = polyscale("sweep", str(SMOKE), *SHORTER, "--launcher", "slurm", "--workers", "2", "--wait", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    array = array_of(done.stdout)
    results = tmp_path / "results" / "smoke"
    assert_complete(results, expected)  # every run of the dry run, once
    outcomes = run_outcomes(results, "smoke")
    assert {job for job, outcome in outcomes if outcome == "done"} == {job for job, _ in jobs(sweep.runs)}
    assert all(count == 1 for count in outcomes.values())  # no job ran twice
    rows = accounting(array)
    print("sacct:", rows)
    if rows is not None:
        assert sorted(rows) == [(f"{array}_0", "COMPLETED"), (f"{array}_1", "COMPLETED")]
    status = polyscale("status", str(results), cwd=tmp_path)
    assert f"slurm array {array} (2 tasks, debug): 2 COMPLETED" in status.stdout or rows is None, status.stdout


# How a running task is sent back to the queue: by Slurm (preemption, an operator), or by submitit
# when the task nears its time limit (Slurm's SIGUSR2, which scancel --signal sends sooner)
REQUEUES = {
    "scontrol requeue": lambda job: ["scontrol", "requeue", job],
    "time limit": lambda job: ["scancel", "--signal=USR2", job],
}


@needs_cluster
@pytest.mark.parametrize("how", REQUEUES)
def test_a_running_task_requeued_resumes_its_runs_from_their_checkpoints(tmp_path, marker, monkeypatch, how):
    spec = write_spec(tmp_path, "requeue", steps=300, sizes=(128,), seeds=1)
    expected = {run.run_id for run in load_sweep(spec).runs}
    monkeypatch.setenv("SLOW_RECORD_SECONDS", "0.5")  # about 8 s a run: still training when requeued
    submitted = polyscale("sweep", str(spec), "--launcher", "slurm", "--no-batch", cwd=tmp_path)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    array = array_of(submitted.stdout)
    wait_for(lambda: any(step >= 60 for _, step, _ in records(marker)))
    subprocess.run(REQUEUES[how](array), check=True)  # one task: submitit submits a plain job
    # Slurm holds a requeued job back for two minutes (its BeginTime), so that it never starts with
    # the credential it had before (revoked as the last one ends, to the second): sooner here, once
    # that one has ended and a few seconds have passed
    wait_for(lambda: squeue_state(array) == "PENDING" and node_state() == "idle", timeout=120, every=0.5)
    subprocess.run(["scontrol", "update", f"jobid={array}", "starttime=now+5"], check=True)
    wait_for(lambda: not active(array), timeout=300, every=1.0)
    results = tmp_path / "results" / "requeue"
    assert_complete(results, expected)
    lives = {}  # the steps each process logged, per run, in order
    for rid, step, pid in records(marker):
        lives.setdefault(rid, {}).setdefault(pid, []).append(step)
    for rid in expected:
        first, second = lives[rid].values()  # the task before and after its requeue
        assert first[0] == 0 and first == sorted(first)
        # resumed from the checkpoint written when the requeue stopped it: on from the next record
        assert second[0] == first[-1] + 20, (first, second)
        assert second[-1] == 300
    rows = accounting(array)
    print("sacct:", rows)
    if rows is not None:
        assert [state for _, state in rows] == ["REQUEUED", "COMPLETED"], rows


@needs_cluster
def test_scancel_of_the_array_then_the_same_command_completes_the_rest(tmp_path, marker, monkeypatch):
    spec = write_spec(tmp_path, "cancel", steps=300, sizes=(96, 128), seeds=1)
    expected = {run.run_id for run in load_sweep(spec).runs}
    command = ["sweep", str(spec), "--launcher", "slurm", "--no-batch", "--grace", "5"]
    monkeypatch.setenv("SLOW_RECORD_SECONDS", "0.5")
    submitted = polyscale(*command, cwd=tmp_path)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    array = array_of(submitted.stdout)
    results = tmp_path / "results" / "cancel"
    wait_for(lambda: any(step >= 40 for _, step, _ in records(marker)))
    cancelled = polyscale("cancel", str(results), cwd=tmp_path)
    assert cancelled.returncode == 0 and f"cancelled Slurm array(s) {array}" in cancelled.stdout, cancelled.stderr
    wait_for(lambda: not active(array), timeout=120, every=1.0)
    finished = sum(status == "done" for status in statuses(results).values())
    assert finished < len(expected), "cancelled too late"
    again = polyscale("cancel", str(results), cwd=tmp_path)
    assert "no Slurm array of it is pending or running" in again.stdout
    monkeypatch.delenv("SLOW_RECORD_SECONDS")
    rerun = polyscale(*command, "--wait", cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert_complete(results, expected)
    assert f"{finished} already finished, {len(expected) - finished} to run" in rerun.stdout, rerun.stdout
    assert len(json.loads((results / "slurm" / "jobs.json").read_text())["arrays"]) == 2
    status = polyscale("status", str(results), cwd=tmp_path)
    rows = accounting(array)
    print("sacct:", rows)
    if rows is not None:
        assert [state.split()[0] for _, state in rows] == ["CANCELLED"], rows
        assert f"slurm array {array} (1 tasks, debug): 1 CANCELLED" in status.stdout, status.stdout


@needs_cluster
def test_a_partition_that_does_not_exist_is_one_line_naming_those_there_before_anything_is_submitted(tmp_path):
    done = polyscale("sweep", str(SMOKE), "--launcher", "slurm", "--partition", "nosuch", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "polyscale sweep: error: --partition nosuch: no such partition on this cluster (it has: debug)"
    )
    assert not (tmp_path / "results").exists()


def test_no_sbatch_on_path_is_one_line_before_anything_is_written(tmp_path):
    (tmp_path / "bin").mkdir()
    env = {**os.environ, "PATH": str(tmp_path / "bin"), "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "harness.cli", "sweep", str(SMOKE), "--launcher", "slurm"]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "sbatch is not on PATH" in done.stderr, done.stderr
    assert not (tmp_path / "results").exists()


@pytest.fixture
def two_nodes(monkeypatch):
    """A cluster, as the Slurm launcher sees it, whose partition gpu has two nodes, neither this one."""
    from harness.sweep import slurm

    monkeypatch.setattr(slurm.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(slurm, "partitions", lambda: ({"gpu": ["node1", "node2"], "debug": ["node1"]}, "gpu"))
    return slurm


def test_a_journal_file_queue_for_a_multi_node_array_is_one_line_before_anything_is_submitted(
    tmp_path, two_nodes, capsys
):
    out = tmp_path / "results"
    assert main(["sweep", str(SMOKE), "--launcher", "slurm", "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "queue.journal" in error and "postgresql://" in error, error
    assert "partition gpu (node1, node2)" in error and not out.exists()
    options = SweepOptions(out=out)
    with pytest.raises(UsageError, match="partition debug"):  # one node, but not this machine
        two_nodes.check_cluster(LauncherSpec(name="slurm", partition="debug"), options)
    # a queue every node reaches: PostgreSQL, or a journal on a filesystem that they all see
    postgres = SweepOptions(out=out, storage="postgresql://user@db/polyscale")
    assert two_nodes.check_cluster(LauncherSpec(name="slurm"), postgres) == "gpu"
    assert two_nodes.check_cluster(LauncherSpec(name="slurm", shared_fs=True), options) == "gpu"


@pytest.mark.parametrize(
    "block, message",
    [
        ("{name: pbs}", r"s\.yaml: launcher\.name: expected one of local, slurm, got 'pbs'$"),
        ("{name: slurm, gpus: 1}", r"s\.yaml: launcher\.gpus: unknown key \(expected one of name, partition"),
        ("{time: 'soon'}", r"s\.yaml: launcher\.time: expected minutes or \[D-\]HH:MM\[:SS\], got 'soon'$"),
        ("{mem: 16GB}", r"s\.yaml: launcher\.mem: expected megabytes or a size like 16G, got '16GB'$"),
        ("{tasks: 0}", r"s\.yaml: launcher\.tasks: expected an integer >= 1, got 0$"),
        ("{sbatch: [exclusive]}", r"s\.yaml: launcher\.sbatch: expected sbatch options such as --constraint=a100"),
    ],
)
def test_a_bad_launcher_block_names_the_file_and_the_key(tmp_path, block, message):
    spec = tmp_path / "s.yaml"
    spec.write_text(SMOKE.read_text() + f"launcher: {block}\n")
    with pytest.raises(UsageError, match=message):
        load_sweep(spec)


def test_the_launcher_block_and_the_flags_make_one_set_of_options_and_leave_the_run_ids_alone(tmp_path):
    from harness.cli import build_parser
    from harness.sweep.cli import launcher_of

    spec = tmp_path / "s.yaml"
    block = """\
        launcher:
          name: slurm
          partition: gpu
          time: "1-02:30:00"
          gpus_per_task: 1
          mem: 16G
          tasks: 8
          sbatch: ["--constraint=a100", "--exclusive"]
    """
    spec.write_text(SMOKE.read_text() + textwrap.dedent(block))
    sweep = load_sweep(spec)
    assert [run.run_id for run in sweep.runs] == [run.run_id for run in load_sweep(SMOKE).runs]
    args = build_parser().parse_args(["sweep", str(spec), "--time", "90", "--workers", "2", "--sbatch=--nice=10"])
    assert launcher_of(sweep, args) == LauncherSpec(
        name="slurm",
        partition="gpu",
        time=90,
        gpus_per_task=1,
        mem="16G",
        tasks=2,
        sbatch=("--constraint=a100", "--exclusive", "--nice=10"),
    )
    assert sweep.launcher.time == 24 * 60 + 150
