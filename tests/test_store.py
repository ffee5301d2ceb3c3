"""The results store and run_config: atomic files, statuses, skipping finished runs, the table."""

import json

import pandas as pd
import pytest

from harness.config import parse_config
from harness.errors import UsageError
from harness.experiments import run_config
from harness.experiments import runner
from harness.tracking import begin_run, is_finished, read_status, rebuild_table, run_dir
from harness.tracking.store import write_json

REQUIRED = ["run_id", "experiment", "arm", "seed", "d", "d_eff", "width", "width_eff", "k", "train.optimizer", "train.lr",
            "steps", "test_loss", "train_loss", "compress_seconds", "train_seconds", "moment_error", "status"]
TINY_WIDTH = {"experiment": "width", "task": {"name": "teacher", "n_train": 100, "n_test": 50}, "model": {"width": 30},
              "compression": {"k": 1, "size": 10},
              "train": {"optimizer": "sgd", "lr": 0.01, "steps": 10, "batch_size": 20, "eval_every": 5}}


def test_run_config_writes_every_file_and_the_table(tmp_path):
    config = parse_config(TINY_WIDTH)
    records = run_config(config, tmp_path)
    assert [r.status for r in records] == ["done"] * 4 and not any(r.skipped for r in records)
    for record in records:
        folder = run_dir(tmp_path, record.run_id)
        assert sorted(p.name for p in folder.iterdir()) == ["config.json", "metrics.jsonl", "status.json", "summary.json"]
        assert json.loads((folder / "config.json").read_text())["config"]["model"]["width"] == 30
        lines = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in lines] == [0, 5, 10]
        assert {"step", "epoch", "train_loss", "test_loss"} <= set(lines[0])
        assert read_status(tmp_path, record.run_id) == "done"
    table = pd.read_parquet(tmp_path / "runs.parquet")
    assert len(table) == 4 and set(REQUIRED) <= set(table.columns)
    assert {"train.lr", "task.name", "compression.size", "model.width"} <= set(table.columns)
    moment = table.set_index("arm").loc["moment"]
    assert moment["width_eff"] == 10 and moment["width"] == 30 and moment["steps"] == 10 and moment["k"] == 1
    assert moment["train.optimizer"] == "sgd" and moment["test_loss"] > 0 and moment["moment_error"] < 1e-10
    assert moment["max_train_gap"] >= 0
    assert not list(tmp_path.rglob("*.tmp"))


def test_finished_runs_are_never_run_again_and_others_are(tmp_path, monkeypatch):
    config = parse_config({**TINY_WIDTH, "arms": ["original", "moment"]})
    first = run_config(config, tmp_path)
    summary = run_dir(tmp_path, first[1].run_id) / "summary.json"
    before = summary.stat().st_mtime_ns
    # a stale 'running' status (a worker that died) is not finished
    begin_run(tmp_path, first[0].run_id, "original", {})
    assert not is_finished(tmp_path, first[0].run_id)
    calls = []
    real = runner.RUNNERS["width"]
    monkeypatch.setitem(runner.RUNNERS, "width", lambda cfg, arms, device, on_record: calls.append(arms) or real(cfg, arms, device, on_record))
    second = run_config(config, tmp_path)
    assert calls == [("original",)]
    assert [(r.arm, r.skipped) for r in second] == [("original", False), ("moment", True)]
    assert summary.stat().st_mtime_ns == before
    assert run_config(config, tmp_path, force=True)[1].skipped is False


def test_an_experiment_that_raises_marks_its_runs_failed_without_escaping(tmp_path, monkeypatch):
    def broken(config, arms, device, on_record):
        on_record(arms[0], {"step": 0, "train_loss": 1.0, "test_loss": 1.0})
        raise RuntimeError("boom")

    monkeypatch.setitem(runner.RUNNERS, "width", broken)
    config = parse_config({**TINY_WIDTH, "arms": ["original", "moment"]})
    records = run_config(config, tmp_path)
    assert [r.status for r in records] == ["failed", "failed"] and records[0].error == "RuntimeError: boom"
    status = json.loads((run_dir(tmp_path, records[0].run_id) / "status.json").read_text())
    assert status["status"] == "failed" and "Traceback" in status["error"]
    table = pd.read_parquet(tmp_path / "runs.parquet")
    assert list(table["status"]) == ["failed", "failed"]
    monkeypatch.undo()
    assert [r.status for r in run_config(config, tmp_path)] == ["done", "done"]  # failed runs are run again


def test_a_usage_error_is_recorded_and_raised(tmp_path):
    config = parse_config({"experiment": "data", "task": {"name": "mnist", "n_train": 10, "n_test": 10,
                                                          "data_root": str(tmp_path / "nothing")},
                           "train": {"steps": 1}})
    with pytest.raises(UsageError, match="task.download: true"):
        run_config(config, tmp_path)
    assert set(pd.read_parquet(tmp_path / "runs.parquet")["status"]) == {"failed"}


def test_divergence_is_a_result_not_a_crash(tmp_path):
    config = parse_config({**TINY_WIDTH, "arms": ["original"],
                           "train": {"optimizer": "gd", "lr": 1e4, "steps": 50, "eval_every": 5}})
    (record,) = run_config(config, tmp_path)
    assert record.status == "diverged" and is_finished(tmp_path, record.run_id)
    row = pd.read_parquet(tmp_path / "runs.parquet").iloc[0]
    assert row["status"] == "diverged" and pd.isna(row["test_loss"])
    again = run_config(config, tmp_path)[0]
    assert again.skipped and again.status == "diverged"


def test_observers_see_start_records_and_finish(tmp_path):
    events = []

    class Recorder:
        def run_started(self, run_id, arm, config):
            events.append(("start", arm, config["model.width"]))

        def run_logged(self, run_id, record):
            events.append(("log", record["step"]))

        def run_finished(self, run_id, status, summary):
            events.append(("finish", status, summary["width_eff"]))

    run_config(parse_config({**TINY_WIDTH, "arms": ["moment"]}), tmp_path, observers=[Recorder()])
    assert events == [("start", "moment", 30), ("log", 0), ("log", 5), ("log", 10), ("finish", "done", 10)]


def test_table_is_rebuilt_from_the_folders_whatever_their_state(tmp_path):
    run_config(parse_config({**TINY_WIDTH, "arms": ["original"]}), tmp_path)
    begin_run(tmp_path, "width-moment-000000000000", "moment", {"experiment": "width", "seed": 0, "arms": ["moment"],
                                                                 "model": {"width": 30}})
    write_json(run_dir(tmp_path, "odd") / "config.json", {"run_id": "odd", "arm": "x", "config": {"model": {"width": "wide"}}})
    (tmp_path / "runs.parquet").unlink()
    table = rebuild_table(tmp_path).set_index("run_id")
    assert table.loc["width-moment-000000000000", "status"] == "running"
    assert table.loc["width-moment-000000000000", "model.width"] == "30"  # a mixed column is stored as text
    assert pd.read_parquet(tmp_path / "runs.parquet").shape[0] == 3
