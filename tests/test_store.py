"""The results store and run_config: atomic files, statuses, skipping finished runs, the table."""

import importlib
import json
import os
import shutil
import tempfile
import traceback
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
import yaml

from harness.cli import build_parser, main
from harness.config import parse_config
from harness.errors import UsageError
from harness.experiments import run_config, runner
from harness.tracking import begin_run, is_finished, read_status, rebuild_table, run_dir
from harness.tracking.store import (
    copy_finished,
    end_run,
    error_line,
    finished_status,
    metrics_path,
    read_metrics,
    read_summary,
    record_problem,
    run_error,
    run_ids,
    status_path,
    summary_path,
    table_path,
    write_json,
    write_metrics,
)

REQUIRED = [
    "run_id",
    "experiment",
    "arm",
    "seed",
    "d",
    "d_eff",
    "width",
    "width_eff",
    "k",
    "train.optimizer",
    "train.lr",
    "steps",
    "test_loss",
    "train_loss",
    "compress_seconds",
    "train_seconds",
    "moment_error",
    "status",
]
TINY_WIDTH = {
    "experiment": "width",
    "task": {"name": "teacher", "n_train": 100, "n_test": 50},
    "model": {"width": 30},
    "compression": {"k": 1, "size": 10},
    "train": {"optimizer": "sgd", "lr": 0.01, "steps": 10, "batch_size": 20, "eval_every": 5},
}


def test_run_config_writes_every_file_and_the_table(tmp_path):
    config = parse_config(TINY_WIDTH)
    records = run_config(config, tmp_path)
    assert [r.status for r in records] == ["done"] * 5 and not any(r.skipped for r in records)
    for record in records:
        folder = run_dir(tmp_path, record.run_id)
        assert sorted(p.name for p in folder.iterdir()) == [
            "config.json",
            "metrics.jsonl",
            "status.json",
            "summary.json",
        ]
        assert json.loads((folder / "config.json").read_text())["config"]["model"]["width"] == 30
        lines = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in lines] == [0, 5, 10]
        assert {"step", "epoch", "train_loss", "test_loss"} <= set(lines[0])
        assert read_status(tmp_path, record.run_id) == "done"
    table = pd.read_parquet(tmp_path / "runs.parquet")
    assert len(table) == 5 and set(REQUIRED) <= set(table.columns)
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
    monkeypatch.setitem(
        runner.RUNNERS,
        "width",
        lambda cfg, arms, device, on_record: calls.append(arms) or real(cfg, arms, device, on_record),
    )
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
    config = parse_config(
        {
            "experiment": "data",
            "task": {"name": "mnist", "n_train": 10, "n_test": 10, "data_root": str(tmp_path / "nothing")},
            "train": {"steps": 1},
        }
    )
    with pytest.raises(UsageError, match="task.download: true"):
        run_config(config, tmp_path)
    assert set(pd.read_parquet(tmp_path / "runs.parquet")["status"]) == {"failed"}


def test_divergence_is_a_result_not_a_crash(tmp_path):
    config = parse_config(
        {**TINY_WIDTH, "arms": ["original"], "train": {"optimizer": "gd", "lr": 1e4, "steps": 50, "eval_every": 5}}
    )
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
    begin_run(
        tmp_path,
        "width-moment-000000000000",
        "moment",
        {"experiment": "width", "seed": 0, "arms": ["moment"], "model": {"width": 30}},
    )
    write_json(
        run_dir(tmp_path, "odd") / "config.json", {"run_id": "odd", "arm": "x", "config": {"model": {"width": "wide"}}}
    )
    (tmp_path / "runs.parquet").unlink()
    table = rebuild_table(tmp_path).set_index("run_id")
    assert table.loc["width-moment-000000000000", "status"] == "running"
    assert table.loc["width-moment-000000000000", "model.width"] == "30"  # a mixed column is stored as text
    assert pd.read_parquet(tmp_path / "runs.parquet").shape[0] == 3


def _damage(out, run_id, what):
    """Leave a run's record as an interrupted copy or write might: a file cut in half or missing."""
    if what == "truncated summary.json":
        path = summary_path(out, run_id)
        path.write_text(path.read_text()[: len(path.read_text()) // 2])
    elif what == "truncated status.json":
        path = status_path(out, run_id)
        path.write_text(path.read_text()[: len(path.read_text()) // 2])
    else:
        summary_path(out, run_id).unlink()


@pytest.mark.parametrize(
    "what, problem",
    [
        ("truncated summary.json", "summary.json does not parse"),
        ("truncated status.json", "status.json does not parse"),
        ("no summary.json", "status done but no summary.json"),
    ],
)
def test_a_damaged_record_is_not_finished_and_the_next_run_redoes_it_and_says_so(
    tmp_path, capsys, caplog, what, problem
):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump({**TINY_WIDTH, "arms": ["original", "moment"]}))
    out = tmp_path / "results"
    assert main(["run", str(spec), "--out", str(out), "--device", "cpu"]) == 0
    whole = pd.read_parquet(table_path(out)).set_index("run_id")
    damaged, intact = sorted(whole.index, key=lambda rid: "moment" not in rid)
    _damage(out, damaged, what)
    assert record_problem(out, damaged) == problem and record_problem(out, intact) is None
    assert not is_finished(out, damaged) and finished_status(out, damaged) is None
    assert read_status(out, damaged) == (None if "status" in what else "failed")
    assert run_error(out, damaged) == problem
    assert rebuild_table(out).set_index("run_id").loc[damaged, "status"] != "done"
    capsys.readouterr()
    caplog.clear()
    assert main(["run", str(spec), "--out", str(out), "--device", "cpu"]) == 0
    assert [r.getMessage() for r in caplog.records] == [f"{damaged}: not finished ({problem}); running it again"]
    printed = capsys.readouterr().out
    assert f"{intact}" in printed and "finished before: skipped" in printed.split(intact)[1].splitlines()[0]
    assert "finished before" not in printed.split(damaged)[1].splitlines()[0]
    again = pd.read_parquet(table_path(out)).set_index("run_id")
    assert again.loc[damaged, "status"] == "done" and is_finished(out, damaged) and record_problem(out, damaged) is None
    assert again.loc[damaged, "test_loss"] == whole.loc[damaged, "test_loss"]  # the same run, run again on a CPU


def test_the_error_line_is_the_exception_of_a_traceback():
    try:
        raise RuntimeError("the message\nover two lines")
    except RuntimeError:
        text = traceback.format_exc()
    assert text.startswith("Traceback (most recent call last):")
    assert error_line(text) == "over two lines" and error_line("  one line  \n\n \n") == "one line"
    assert error_line("") == "" and error_line(None) == ""


def test_a_failed_runs_error_line_is_read_from_its_record(tmp_path):
    begin_run(tmp_path, "r1", "original", {})
    end_run(tmp_path, "r1", "failed", [], {}, error='Traceback (most recent call last):\n  File "x"\nValueError: bad\n')
    begin_run(tmp_path, "r2", "original", {})
    end_run(tmp_path, "r2", "failed", [], {})
    assert run_error(tmp_path, "r1") == "ValueError: bad" and run_error(tmp_path, "r2") == ""
    assert run_error(tmp_path, "never") == "" and read_status(tmp_path, "never") is None


def test_metrics_are_read_with_bad_lines_skipped_and_bad_values_missing(tmp_path):
    begin_run(tmp_path, "r", "original", {})
    lines = [
        '{"step": 0, "test_loss": 1.5}',
        '{"step": 5, "test_loss": "nan?", "lr": 0.1}',
        "",
        "[1, 2]",
        '{"step": "ten", "test_loss": 1.0}',
        '{"step": 10, "test_loss": null}',
        '{"step": 15, "test_lo',
    ]
    metrics_path(tmp_path, "r").write_text("\n".join(lines))
    records, problem = read_metrics(tmp_path, "r")
    assert records == [
        {"step": 0, "test_loss": 1.5},
        {"step": 5, "test_loss": None, "lr": 0.1},
        {"step": 10, "test_loss": None},
    ]
    assert problem.startswith(f"{metrics_path(tmp_path, 'r')}: 3 unreadable line(s) skipped")
    assert "test_loss='nan?' (line 2)" in problem
    write_metrics(tmp_path, "r", records)
    assert read_metrics(tmp_path, "r") == (records, None)
    assert read_metrics(tmp_path, "never") == ([], None)


def test_copying_finished_runs_keeps_finished_ones_and_replaces_damaged_ones(tmp_path):
    source, target = tmp_path / "source", tmp_path / "target"
    for out, run_id, status in [
        (source, "a", "done"),
        (source, "b", "diverged"),
        (source, "c", "failed"),
        (source, "d", "done"),
        (target, "a", "done"),
        (target, "b", "done"),
    ]:
        begin_run(out, run_id, "original", {"model": {"width": len(str(out))}})
        end_run(out, run_id, status, [{"step": 0, "test_loss": 1.0}], {"run_id": run_id, "from": out.name})
    summary_path(target, "b").write_text('{"run_id": "b", "fr')
    assert copy_finished(source, target) == 2  # b (damaged in target) and d; a is kept, c is not finished
    assert run_ids(target) == ["a", "b", "d"]
    assert [read_summary(target, rid)["from"] for rid in ("a", "b", "d")] == ["target", "source", "source"]
    assert read_status(target, "b") == "diverged"
    assert copy_finished(source, target) == 0


@pytest.fixture
def shared_tmp():
    """A temporary folder any user may enter (pytest's tmp_path is private to its owner)."""
    folder = Path(tempfile.mkdtemp())
    folder.chmod(0o755)
    yield folder
    for path in [folder, *folder.rglob("*")]:
        if path.is_dir():
            path.chmod(0o755)
    shutil.rmtree(folder)


@contextmanager
def read_only(folder: Path):
    """``folder`` without write permission; a root process, which may write anyway, acts as nobody."""
    folder.chmod(0o555)
    root = os.geteuid() == 0
    if root:
        os.seteuid(65534)
    try:
        yield
    finally:
        if root:
            os.seteuid(0)
        folder.chmod(0o755)


def test_a_read_only_results_folder_is_one_line_naming_it(shared_tmp, capsys):
    build_parser()  # every command's module, and what `sweep` imports as it starts, are loaded now:
    for module in ("harness.config.sweep_spec", "harness.sweep.queue", "harness.sweep.worker"):
        importlib.import_module(module)  # the interpreter's own files may be out of nobody's reach
    spec = shared_tmp / "tiny.yaml"
    spec.write_text(yaml.safe_dump({**TINY_WIDTH, "name": "tiny", "seeds": 1}))
    locked = shared_tmp / "locked"
    (locked / "runs").mkdir(parents=True)
    source = shared_tmp / "source"
    begin_run(source, "r", "original", {})
    end_run(source, "r", "done", [], {"run_id": "r"})
    commands = {
        "run": ["run", str(spec), "--out", str(locked), "--device", "cpu"],
        "sweep": ["sweep", str(spec), "--out", str(locked / "new"), "--device", "cpu"],
        "worker": ["worker", "--sweep", "tiny", "--out", str(locked)],
        "collect": ["collect", str(locked), "--from", str(source)],
    }
    for command, argv in commands.items():
        capsys.readouterr()
        with read_only(locked):
            assert main(argv) == 2
        printed = capsys.readouterr()
        folder = locked / "new" if command == "sweep" else locked
        assert (
            printed.err
            == f"polyscale {command}: error: {folder}: the results folder is not writable (Permission denied)\n"
        )
        assert printed.out == ""
    assert sorted(p.name for p in locked.rglob("*")) == ["runs"]
