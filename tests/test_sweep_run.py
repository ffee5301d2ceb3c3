"""Sweeps end to end, in subprocesses as users run them: crashes, several workers, PostgreSQL, W&B."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from harness.config.sweep_spec import load_sweep
from harness.sweep.launch import jobs
from harness.sweep.queue import OUTCOME, RUN_ID, RunQueue
from tests.test_sweep_queue import POSTGRES_URL, postgres_reachable, unique_sweep
from tests.wandb_records import offline_run

SPEC = """\
    name: {name}
    experiment: data
    arms: [original, moment]
    task: {{name: teacher, n_train: 128, n_test: 400}}
    model: {{width: 12}}
    compression: {{k: 2, size: "4*d^0.5"}}
    train: {{optimizer: adamw, lr: 0.003, steps: {steps}, batch_size: 32, eval_every: 20}}
    grid:
      task.n_train: {sizes}
    seeds: {seeds}
"""


def write_spec(folder: Path, name: str, steps: int = 40, sizes=(96, 128, 160), seeds: int = 2) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(textwrap.dedent(SPEC.format(name=name, steps=steps, sizes=list(sizes), seeds=seeds)))
    return path


def polyscale(
    *args: str, cwd: Path, wandb: str = "disabled", **kwargs
) -> subprocess.Popen | subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": wandb, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "harness.cli", *args]
    if kwargs.pop("background", False):
        return subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, **kwargs)


def statuses(results: Path) -> dict[str, str]:
    out = {}
    for folder in (results / "runs").glob("*/"):
        try:
            out[folder.name] = json.loads((folder / "status.json").read_text())["status"]
        except (OSError, ValueError):
            out[folder.name] = "unreadable"
    return out


def wait_for(predicate, timeout: float = 240.0, every: float = 0.2) -> None:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError("timed out waiting")
        time.sleep(every)


def assert_complete(results: Path, expected_ids: set[str]) -> pd.DataFrame:
    table = pd.read_parquet(results / "runs.parquet")
    assert sorted(table["run_id"]) == sorted(expected_ids)  # every run, exactly once
    assert set(table["status"]) == {"done"}
    for run_id in expected_ids:
        folder = results / "runs" / run_id
        assert (folder / "summary.json").exists() and (folder / "metrics.jsonl").exists()
    return table


def test_a_killed_sweep_loses_nothing_finished_and_the_same_command_completes_it(tmp_path):
    spec = write_spec(tmp_path, "crash")
    expected = {run.run_id for run in load_sweep(spec).runs}
    results = tmp_path / "results" / "crash"
    first = polyscale("sweep", str(spec), "--grace", "2", "--no-batch", cwd=tmp_path, background=True)
    wait_for(lambda: sum(s == "done" for s in statuses(results).values()) >= 2)
    os.killpg(first.pid, signal.SIGKILL)  # the coordinator and its workers, mid-sweep
    first.wait()
    killed = statuses(results)
    assert any(s != "done" for s in killed.values()) or len(killed) < len(expected), "killed too late to test"
    for run_id, status in killed.items():  # a finished run is whole; nothing half-written says done
        if status == "done":
            assert (results / "runs" / run_id / "summary.json").exists()
    second = polyscale("sweep", str(spec), "--grace", "2", cwd=tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    finished_before = sum(s == "done" for s in killed.values())
    assert f"{finished_before} already finished" in second.stdout
    assert_complete(results, expected)
    third = polyscale("sweep", str(spec), cwd=tmp_path)  # nothing left: nothing runs again
    assert f"{len(expected)} already finished, 0 to run" in third.stdout


@pytest.mark.skipif(not postgres_reachable(), reason=f"no PostgreSQL server reachable at {POSTGRES_URL}")
def test_two_workers_on_postgresql_run_every_run_once_and_never_leak_the_password(tmp_path):
    name = unique_sweep()
    spec = write_spec(tmp_path, name)
    expected = {run.run_id for run in load_sweep(spec).runs}
    secret = "s3cret-Passw0rd"
    url = POSTGRES_URL.replace("postgres@", f"postgres:{secret}@")  # trust auth ignores it
    done = polyscale("sweep", str(spec), "--workers", "2", "--storage", url, cwd=tmp_path, wandb="offline")
    assert done.returncode == 0, done.stdout + done.stderr
    results = tmp_path / "results" / name
    assert_complete(results, expected)
    queue = RunQueue(POSTGRES_URL, name)
    outcomes = Counter((t.user_attrs[RUN_ID], t.user_attrs.get(OUTCOME)) for t in queue.study.get_trials())
    job_ids = {job for job, _ in jobs(load_sweep(spec).runs)}
    assert {job for job, outcome in outcomes if outcome == "done"} == job_ids
    assert all(count == 1 for count in outcomes.values())  # no job ran twice
    workers = {json.loads((results / "runs" / rid / "status.json").read_text())["pid"] for rid in expected}
    assert len(workers) == 2  # both workers took part
    assert secret not in done.stdout + done.stderr
    for path in results.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), f"password leaked into {path}"


def test_a_worker_killed_mid_run_has_its_job_redone_by_another(tmp_path):
    name = "takeover"
    spec = write_spec(tmp_path, name, steps=600, sizes=(128,), seeds=2)
    sweep = load_sweep(spec)
    results = tmp_path / "results" / name
    storage = str(results / "queue.journal")
    RunQueue(storage, name).enqueue(jobs(sweep.runs))
    victim = polyscale("worker", "--sweep", name, "--grace", "2", "--no-batch", cwd=tmp_path, background=True)
    wait_for(lambda: "running" in statuses(results).values())
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    rescuer = polyscale("worker", "--sweep", name, "--grace", "2", cwd=tmp_path)
    assert rescuer.returncode == 0, rescuer.stdout + rescuer.stderr
    assert set(statuses(results).values()) == {"done"}
    assert len(statuses(results)) == len(sweep.runs)
    assert RunQueue(storage, name).counts()["lost"] == 1


def test_offline_wandb_has_one_run_per_polyscale_run_with_group_job_type_and_summary(tmp_path):
    spec = write_spec(tmp_path, "wb", sizes=(128,), seeds=1)
    sweep = load_sweep(spec)
    done = polyscale("sweep", str(spec), "--wandb", "offline", cwd=tmp_path, wandb="offline")
    assert done.returncode == 0, done.stdout + done.stderr
    results = tmp_path / "results" / "wb"
    for run in sweep.runs:
        logged = offline_run(results, run.run_id)
        summary = json.loads((results / "runs" / run.run_id / "summary.json").read_text())
        assert (logged["group"], logged["job_type"]) == ("wb", run.arm)
        assert logged["summary"]["test_loss"] == pytest.approx(summary["test_loss"])
        assert logged["config"]["train.lr"] == 0.003 and logged["config"]["arm"] == run.arm
        assert len(logged["history"]) == len((results / "runs" / run.run_id / "metrics.jsonl").read_text().splitlines())
    assert offline_run(results, "sweep-wb")["job_type"] == "sweep"


def test_a_truncated_summary_is_run_again_by_the_next_sweep_which_says_so(tmp_path):
    spec = write_spec(tmp_path, "cut", sizes=(96,), seeds=1)
    assert polyscale("sweep", str(spec), "--no-batch", "--device", "cpu", cwd=tmp_path).returncode == 0
    results = tmp_path / "results" / "cut"
    first = pd.read_parquet(results / "runs.parquet").set_index("run_id")
    cut = sorted(first.index)[0]
    summary = results / "runs" / cut / "summary.json"
    summary.write_text(summary.read_text()[:40])  # a copy cut short
    status = polyscale("status", str(results), cwd=tmp_path)
    assert "2 runs: 1 done, 1 failed" in status.stdout and f"failed {cut}: summary.json does not parse" in status.stdout
    second = polyscale("sweep", str(spec), "--no-batch", "--device", "cpu", cwd=tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "1 already finished, 1 to run" in second.stdout
    assert f"{cut}: not finished (summary.json does not parse); running it again" in second.stderr
    again = assert_complete(results, set(first.index)).set_index("run_id")
    assert again.loc[cut, "test_loss"] == first.loc[cut, "test_loss"]  # the same run, run again on a CPU


def test_status_and_collect(tmp_path):
    spec = write_spec(tmp_path, "small", sizes=(96,), seeds=1)
    assert polyscale("sweep", str(spec), cwd=tmp_path).returncode == 0
    status = polyscale("status", "results/small", cwd=tmp_path)
    assert "results/small: 2 runs: 2 done" in status.stdout
    merged = polyscale("collect", "results/merged", "--from", "results/small", cwd=tmp_path)
    assert merged.returncode == 0 and "2 runs (2 copied in)" in merged.stdout
    assert len(pd.read_parquet(tmp_path / "results/merged/runs.parquet")) == 2
    bad = polyscale("status", "results/nowhere", cwd=tmp_path)
    assert bad.returncode == 2 and "not a results folder" in bad.stderr and "Traceback" not in bad.stderr


def test_a_coordinator_whose_runs_another_machine_did_says_where_they_are_and_how_to_collect(
    tmp_path, monkeypatch, capsys
):
    import harness.sweep.launch as launch
    from harness.sweep.options import SweepOptions
    from harness.tracking import wandb_mirror

    spec = write_spec(tmp_path, unique_sweep(), sizes=(96,), seeds=2)
    sweep = load_sweep(spec)
    here, there = tmp_path / "here", tmp_path / "there"
    storage = str(tmp_path / "shared.journal")  # as a PostgreSQL URL would be: one queue, two machines
    log = (tmp_path / "worker.log").open("w")

    def the_other_machines_worker(name, options, workers):  # this machine's own finds nothing left
        command = [
            sys.executable,
            "-m",
            "harness.cli",
            "worker",
            "--sweep",
            name,
            "--out",
            str(there),
            "--storage",
            storage,
            "--quiet",
        ]
        env = {**os.environ, "WANDB_MODE": "disabled"}
        return [subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)]

    monkeypatch.setattr(launch, "start_workers", the_other_machines_worker)
    tables = []
    monkeypatch.setattr(wandb_mirror, "mirror_table", lambda name, table, **kwargs: tables.append(len(table)))
    options = SweepOptions(out=here, storage=storage, wandb_mode="disabled")
    tally = launch.launch(sweep, options)
    printed = capsys.readouterr().out
    assert tally == Counter({"finished elsewhere": len(sweep.runs)}) and not launch.complete(tally)
    assert f"{socket.gethostname()}:{there.resolve()}: {len(sweep.runs)} runs" in printed
    assert f"polyscale collect {here} --from FOLDER" in printed and "not started" not in printed
    assert tables == []  # no W&B table of a folder that lacks the runs
    assert set(statuses(there).values()) == {"done"} and statuses(here) == {}

    merged = polyscale("collect", str(here), "--from", str(there), cwd=tmp_path)
    assert merged.returncode == 0, merged.stdout + merged.stderr
    tally = launch.launch(sweep, options)  # the same command again: everything is here now
    assert tally == Counter({"skipped (finished before)": len(sweep.runs)}) and launch.complete(tally)
    assert tables == [len(sweep.runs)]
    assert_complete(here, {run.run_id for run in sweep.runs})


def test_a_run_failed_by_another_machine_is_reported_failed_and_the_sweep_exits_1(tmp_path):
    from harness.sweep.launch import complete, run_ends
    from harness.sweep.queue import JobRecord

    sweep = load_sweep(write_spec(tmp_path, "mixed", sizes=(96, 128), seeds=1))
    job_of = {run_id: job for job, payload in jobs(sweep.runs) for run_id in payload["runs"].values()}
    first, second = sorted(set(job_of.values()))
    latest = {first: JobRecord("failed", "machine-b:/r"), second: JobRecord("waiting")}
    ends = run_ends(sweep, tmp_path / "empty", {run.run_id: None for run in sweep.runs}, latest)
    expected = {
        rid: ("failed elsewhere", None) if job == first else ("still waiting in the queue", None)
        for rid, job in job_of.items()
    }
    assert ends == expected
    assert not complete(Counter(what for what, _ in ends.values()))


@pytest.mark.parametrize("command", ["status", "collect", "worker"])
def test_help_has_examples_and_explains_every_argument(command):
    import argparse

    from harness.cli import build_parser

    parsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    parser = parsers[command]
    assert "examples:\n  polyscale " in parser.format_help()
    for action in parser._actions:
        assert action.help, f"polyscale {command}: {action.dest} has no help"
