"""The results store: one folder per run, and ``runs.parquet`` rebuilt from the folders.

    DIR/runs/<run_id>/config.json    {"run_id", "arm", "config": the full configuration}
                      status.json    {"status", "started", "finished", "error", "host", "pid"}
                      metrics.jsonl  one JSON record per evaluation (step, epoch, train_loss, ...)
                      summary.json   the run's row: identity, measured columns, flattened config
    DIR/runs.parquet                 one row per run folder (any status)

Every file is written whole under a temporary name and renamed into place (os.replace), so a
reader sees the old file or the new one, never half of either. ``status.json`` is the authority:
a run starts as ``running`` (written after config.json, before any result) and becomes ``done``,
``diverged`` or ``failed`` only after its metrics and summary are in place. ``done`` and
``diverged`` runs are finished results and are never run again; ``failed`` and stale ``running``
ones are. The table is a cache: ``rebuild_table`` recreates it from the folders at any time.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from harness.config import flatten

STATUSES = ("running", "done", "failed", "diverged")
FINISHED = ("done", "diverged")
TABLE = "runs.parquet"


def run_dir(out: str | Path, run_id: str) -> Path:
    return Path(out) / "runs" / run_id


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a uniquely named temporary file and os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, value) -> None:
    write_atomic(path, json.dumps(value, indent=1, default=str, allow_nan=False) + "\n")


def read_json(path: Path):
    return json.loads(path.read_text())


def read_status(out: str | Path, run_id: str) -> str | None:
    """The run's status, or None when it has no (readable) status.json."""
    try:
        return read_json(run_dir(out, run_id) / "status.json")["status"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def is_finished(out: str | Path, run_id: str) -> bool:
    """True for a run whose result is recorded (done or diverged): never run it again."""
    return read_status(out, run_id) in FINISHED


def begin_run(out: str | Path, run_id: str, arm: str, config: dict) -> None:
    """Record a run as started: config.json, then status ``running``; stale results are removed."""
    folder = run_dir(out, run_id)
    write_json(folder / "config.json", {"run_id": run_id, "arm": arm, "config": config})
    write_json(folder / "status.json", {"status": "running", "started": _now(), "finished": None, "error": None,
                                        "host": socket.gethostname(), "pid": os.getpid()})
    for stale in ("summary.json", "metrics.jsonl"):
        (folder / stale).unlink(missing_ok=True)


def write_metrics(out: str | Path, run_id: str, records: list[dict]) -> None:
    """(Re)write metrics.jsonl with every record so far."""
    lines = "".join(json.dumps(r, default=str, allow_nan=False) + "\n" for r in records)
    write_atomic(run_dir(out, run_id) / "metrics.jsonl", lines)


def end_run(out: str | Path, run_id: str, status: str, metrics: list[dict], summary: dict, error: str | None = None) -> None:
    """Write the metrics and summary, then the final status (last, so a finished run is whole)."""
    if status not in STATUSES or status == "running":
        raise ValueError(f"a run ends done, diverged or failed; got {status!r}")
    folder = run_dir(out, run_id)
    write_metrics(out, run_id, metrics)
    write_json(folder / "summary.json", {**summary, "status": status})
    previous = _read_or_empty(folder / "status.json")
    write_json(folder / "status.json", {**previous, "status": status, "finished": _now(), "error": error})


def rebuild_table(out: str | Path) -> pd.DataFrame:
    """Rebuild DIR/runs.parquet from every run folder and return it (empty folder: empty table).

    A run with a summary.json contributes its summary; one without (running, failed early) its
    identity and flattened config. The status always comes from status.json.
    """
    rows = []
    for folder in sorted((Path(out) / "runs").glob("*/")):
        try:
            identity = read_json(folder / "config.json")
        except (OSError, ValueError):
            continue
        status = _read_or_empty(folder / "status.json").get("status", "running")
        summary = _read_or_empty(folder / "summary.json")
        if not summary:
            config = identity["config"]
            summary = {**flatten(config), "run_id": identity["run_id"], "arm": identity["arm"]}
            summary.pop("arms", None)
        rows.append({**summary, "status": status})
    table = pd.DataFrame(rows)
    for column in table.columns[table.dtypes == object]:
        kinds = {type(v) for v in table[column] if v is not None and not (isinstance(v, float) and pd.isna(v))}
        if len(kinds - {int, float}) and len(kinds) > 1:
            table[column] = table[column].map(lambda v: None if v is None else str(v))
    tmp = Path(out) / f".{TABLE}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        table.to_parquet(tmp, index=False)
        os.replace(tmp, Path(out) / TABLE)
    finally:
        tmp.unlink(missing_ok=True)
    return table


def _read_or_empty(path: Path) -> dict:
    try:
        return read_json(path)
    except (OSError, ValueError):
        return {}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
