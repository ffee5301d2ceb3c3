"""Mirror finished runs and sweep tables to Weights & Biases, never at the expense of local results.

The local results store is the source of truth; W&B is a view of it. Every function here catches
its own failures, warns, and returns False: a missing key, no network or a W&B bug can cost a
dashboard, never a result. Offline mode (the default) writes ``wandb/offline-run-*`` folders that
``wandb sync`` uploads later.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path

from harness.config import flatten
from harness.tracking import store

MODES = ("offline", "online", "disabled")


def forget_inherited_service() -> None:
    """Drop a W&B service address inherited from a parent process.

    ``wandb.init`` exports ``WANDB_SERVICE`` (``version-PID-transport-address``) so that its own
    children share its service; a polyscale process started by such a parent (a notebook, a test
    runner, a sweep coordinator) would try that service even after the parent has shut it down,
    and every W&B call would fail. A process that did not start the service starts its own.
    """
    service = os.environ.get("WANDB_SERVICE", "")
    parts = service.split("-")
    if service and (len(parts) < 2 or parts[1] != str(os.getpid())):
        del os.environ["WANDB_SERVICE"]


def mirror_run(out: Path, run_id: str, *, mode: str, project: str, group: str, wandb_dir: Path | None = None) -> bool:
    """Log one finished run of the results folder ``out`` as the W&B run whose id is the run id
    (resumable, so a re-mirror updates the same run). job_type is the run's arm; config is the
    flattened configuration; history is the run's metrics; summary is its summary (harness/tracking/store.py)."""
    if mode == "disabled":
        return True
    try:
        import wandb

        identity = store.read_identity(out, run_id)
        if identity is None:
            raise ValueError(f"{store.config_path(out, run_id)} is missing or does not parse")
        config = {**flatten(identity["config"]), "arm": identity["arm"]}
        summary = store.read_summary(out, run_id)
        status = store.read_status(out, run_id)
        run = wandb.init(
            project=project,
            id=run_id,
            name=run_id,
            group=group,
            job_type=str(identity["arm"]),
            config=config,
            mode=mode,
            dir=str(wandb_dir) if wandb_dir else None,
            resume="allow",
            reinit="finish_previous",
            settings=wandb.Settings(silent=True, init_timeout=60),
        )
        records, problem = store.read_metrics(out, run_id)
        if problem:
            warnings.warn(problem, stacklevel=2)
        for row in records:
            run.log({k: v for k, v in row.items() if k != "step"}, step=int(row.get("step", 0)))
        run.summary.update({**summary, "status": status or summary.get("status")})
        run.finish()
        return True
    except Exception as exc:  # W&B must never cost a local result
        _warn(f"run {run_id}", exc)
        return False


def mirror_table(
    name: str,
    table,
    *,
    mode: str,
    project: str,
    group: str,
    job_type: str = "sweep",
    images: Mapping[str, Path] | None = None,
    wandb_dir: Path | None = None,
) -> bool:
    """Log a pandas DataFrame (the runs table, a fit table) and optional images as one W&B run."""
    if mode == "disabled":
        return True
    try:
        import wandb

        run = wandb.init(
            project=project,
            id=name,
            name=name,
            group=group,
            job_type=job_type,
            mode=mode,
            dir=str(wandb_dir) if wandb_dir else None,
            resume="allow",
            reinit="finish_previous",
            settings=wandb.Settings(silent=True, init_timeout=60),
        )
        payload = {"table": wandb.Table(dataframe=table.astype(str) if len(table) else table)}
        for key, path in (images or {}).items():
            payload[key] = wandb.Image(str(path))
        run.log(payload)
        run.summary.update({"rows": len(table)})
        run.finish()
        return True
    except Exception as exc:
        _warn(name, exc)
        return False


def resolve_mode(requested: str | None) -> str:
    """--wandb wins, then WANDB_MODE, then offline (no server is assumed)."""
    mode = requested or os.environ.get("WANDB_MODE") or "offline"
    if mode == "dryrun":
        mode = "offline"
    if mode not in MODES:
        from harness.errors import UsageError

        raise UsageError(f"--wandb: expected one of {', '.join(MODES)}; got {mode!r}")
    return mode


def _warn(what: str, exc: Exception) -> None:
    warnings.warn(
        f"W&B mirror of {what} failed ({type(exc).__name__}: {exc}); local results are unaffected", stacklevel=3
    )
