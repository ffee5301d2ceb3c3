"""The sweep's view of the results store and of ``run_config``: the one seam to the run engine."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from harness.config import Config, canonical
from harness.experiments.runner import run_config, run_configs
from harness.tracking import FINISHED, read_status, rebuild_table, run_dir

__all__ = ["execute_job", "execute_jobs", "finished_status", "job_id", "rebuild_table", "run_summary", "store_status"]


def job_id(config: Config) -> str:
    """``<experiment>-<12 hex>``: one configuration, all its arms (the unit a worker claims)."""
    text = json.dumps(canonical(config), sort_keys=True, separators=(",", ":"))
    return f"{config.experiment}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def execute_job(config: Config, arms: list[str], out: Path, device: str) -> dict[str, str]:
    """Run the given arms of one configuration into the store; return each run id's status.

    Arms already finished in the store are skipped by ``run_config`` (a run never runs twice).
    """
    config = dataclasses.replace(config, device=device, out=str(out))
    return {record.run_id: record.status for record in run_config(config, out, arms=arms)}


def execute_jobs(jobs: list[tuple[Config, list[str]]], out: Path, device: str) -> list[dict[str, str] | Exception]:
    """``execute_job`` of several configurations, their compatible models trained as one batched
    model; each job's statuses, or the exception that stopped it (its runs are recorded failed)."""
    jobs = [(dataclasses.replace(config, device=device, out=str(out)), arms) for config, arms in jobs]
    results = run_configs(jobs, out)
    return [result if isinstance(result, Exception) else {r.run_id: r.status for r in result} for result in results]


def store_status(out: Path, run_id: str) -> str | None:
    """running, done, diverged, failed, or None when the run has never started."""
    return read_status(out, run_id)


def finished_status(out: Path, run_id: str) -> str | None:
    """done or diverged for a finished run (never to be run again), else None."""
    status = read_status(out, run_id)
    return status if status in FINISHED else None


def run_summary(out: Path, run_id: str) -> dict:
    try:
        return json.loads((run_dir(out, run_id) / "summary.json").read_text())
    except (OSError, ValueError):
        return {}
