"""The sweep's seam to the run engine: jobs (one configuration, its arms) run through ``run_config``."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from harness.config import Config, canonical
from harness.experiments.runner import run_config, run_configs

__all__ = ["execute_job", "execute_jobs", "job_id"]


def job_id(config: Config) -> str:
    """``<experiment>-<12 hex>``: one configuration, all its arms (the unit a worker claims)."""
    text = json.dumps(canonical(config), sort_keys=True, separators=(",", ":"))
    return f"{config.experiment}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def execute_job(
    config: Config,
    arms: list[str],
    out: Path,
    device: str,
    may_record: Callable[[str], bool] | None = None,
    keep_checkpoints: bool = False,
) -> dict[str, str]:
    """Run the given arms of one configuration into the store; return each run id's status.

    Arms already finished in the store are skipped by ``run_config`` (a run never runs twice); a
    run that ``may_record`` refuses is not recorded (status ``lost``).
    """
    config = dataclasses.replace(config, device=device, out=str(out))
    records = run_config(config, out, arms=arms, may_record=may_record, keep_checkpoints=keep_checkpoints)
    return {record.run_id: record.status for record in records}


def execute_jobs(
    jobs: list[tuple[Config, list[str]]],
    out: Path,
    device: str,
    may_record: Callable[[str], bool] | None = None,
    keep_checkpoints: bool = False,
) -> list[dict[str, str] | Exception]:
    """``execute_job`` of several configurations, their compatible models trained as one batched
    model; each job's statuses, or the exception that stopped it (its runs are recorded failed)."""
    jobs = [(dataclasses.replace(config, device=device, out=str(out)), arms) for config, arms in jobs]
    results = run_configs(jobs, out, keep_checkpoints=keep_checkpoints, may_record=may_record)
    return [result if isinstance(result, Exception) else {r.run_id: r.status for r in result} for result in results]
