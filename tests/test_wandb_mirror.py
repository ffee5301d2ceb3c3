"""The W&B mirror: what offline mode writes, and that a W&B failure never raises."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from harness.tracking import wandb_mirror
from harness.tracking.wandb_mirror import forget_inherited_service, mirror_run, mirror_table
from tests.wandb_records import offline_run


def make_run(folder, run_id="abc123def456"):
    run = folder / "runs" / run_id
    run.mkdir(parents=True)
    config = {"experiment": "width", "train": {"lr": 0.01}}
    (run / "config.json").write_text(json.dumps({"run_id": run_id, "arm": "moment", "config": config}))
    (run / "metrics.jsonl").write_text(
        "\n".join(json.dumps({"step": s, "train_loss": 1.0 / (s + 1), "test_loss": 2.0 / (s + 1)}) for s in (0, 10, 20))
    )
    (run / "summary.json").write_text(json.dumps({"test_loss": 2.0 / 21, "moment_error": 3e-16, "arm": "moment"}))
    (run / "status.json").write_text(json.dumps({"status": "done"}))
    return run


def test_offline_mirror_writes_the_run_with_its_id_group_config_history_and_summary(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    run = make_run(tmp_path)
    assert mirror_run(tmp_path, run.name, mode="offline", project="polyscale-test", group="smoke")
    logged = offline_run(tmp_path, run.name)
    assert logged["run_id"] == run.name
    assert logged["group"] == "smoke" and logged["job_type"] == "moment"
    assert logged["config"]["train.lr"] == 0.01 and logged["config"]["experiment"] == "width"
    assert [row["_step"] for row in logged["history"]] == [0, 10, 20]
    assert [row["test_loss"] for row in logged["history"]] == pytest.approx([2.0, 2.0 / 11, 2.0 / 21])
    assert logged["summary"]["test_loss"] == pytest.approx(2.0 / 21)
    assert logged["summary"]["moment_error"] == pytest.approx(3e-16)
    assert logged["summary"]["status"] == "done"


def test_a_failing_wandb_warns_and_returns_false(tmp_path, monkeypatch):
    import wandb

    def broken(*args, **kwargs):
        raise RuntimeError("no network")

    monkeypatch.setattr(wandb, "init", broken)
    run = make_run(tmp_path)
    with pytest.warns(UserWarning, match="W&B mirror of run abc123def456 failed .*no network.*local results"):
        assert mirror_run(tmp_path, run.name, mode="online", project="p", group="g") is False
    with pytest.warns(UserWarning, match="local results are unaffected"):
        assert mirror_table("sweep-g", pd.DataFrame({"a": [1]}), mode="online", project="p", group="g") is False


def test_disabled_mode_touches_nothing(tmp_path):
    run = make_run(tmp_path)
    assert mirror_run(tmp_path, run.name, mode="disabled", project="p", group="g")
    assert not (tmp_path / "wandb").exists()


def test_mode_resolution(monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert wandb_mirror.resolve_mode(None) == "offline"
    assert wandb_mirror.resolve_mode("online") == "online"
    from harness.errors import UsageError

    with pytest.raises(UsageError, match="--wandb"):
        wandb_mirror.resolve_mode("loud")


def test_an_inherited_wandb_service_is_forgotten_and_our_own_kept(monkeypatch):
    monkeypatch.setenv("WANDB_SERVICE", f"3-{os.getpid() + 1}-unix-/tmp/gone/socket")
    forget_inherited_service()
    assert "WANDB_SERVICE" not in os.environ
    own = f"3-{os.getpid()}-unix-/tmp/ours/socket"
    monkeypatch.setenv("WANDB_SERVICE", own)
    forget_inherited_service()
    assert os.environ["WANDB_SERVICE"] == own
