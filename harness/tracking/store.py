"""The results store: one folder per run, and ``runs.parquet`` rebuilt from the folders.

    DIR/runs/<run_id>/config.json    {"run_id", "arm", "config": the full configuration}
                      status.json    {"status", "started", "finished", "error", "host", "pid"}
                      metrics.jsonl  one JSON record per evaluation (step, epoch, train_loss, ...)
                      summary.json   the run's row: identity, measured columns, flattened config
                      wandb.json     what W&B holds of the run (harness/tracking/wandb_mirror.py)
                      checkpoints/   step-<step>.pt: at most two, while the run is unfinished
                                     (harness/train/checkpoint.py)
    DIR/runs.parquet                 one row per run folder (any status)
    DIR/slurm/                       a sweep's Slurm arrays (harness/sweep/slurm.py): jobs.json lists
                                     their ids; submitit's scripts, pickles and task logs beside it

This module is the only one that knows this layout: every other module reads and writes a run
folder through the functions here.

Every file is written whole under a temporary name and renamed into place (os.replace), so a
reader sees the old file or the new one, never half of either. ``status.json`` is the authority:
a run starts as ``running`` (written after config.json, before any result) and becomes ``done``,
``diverged`` or ``failed`` only after its metrics and summary are in place. ``done`` and
``diverged`` runs are finished results and are never run again; ``failed`` and stale ``running``
ones are. A record that cannot be trusted (a status.json that does not parse, a finished status
without a readable summary.json, as a copy cut short leaves) is not finished: it reads as
``failed`` and is run again. The table is a cache: ``rebuild_table`` recreates it from the folders
at any time.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from harness.config import flatten
from harness.errors import UsageError

if TYPE_CHECKING:
    import pandas as pd

STATUSES = ("running", "done", "failed", "diverged")
FINISHED = ("done", "diverged")
TABLE = "runs.parquet"


def runs_dir(out: str | Path) -> Path:
    return Path(out) / "runs"


def run_dir(out: str | Path, run_id: str) -> Path:
    return runs_dir(out) / run_id


def table_path(out: str | Path) -> Path:
    return Path(out) / TABLE


def config_path(out: str | Path, run_id: str) -> Path:
    return run_dir(out, run_id) / "config.json"


def status_path(out: str | Path, run_id: str) -> Path:
    return run_dir(out, run_id) / "status.json"


def summary_path(out: str | Path, run_id: str) -> Path:
    return run_dir(out, run_id) / "summary.json"


def metrics_path(out: str | Path, run_id: str) -> Path:
    return run_dir(out, run_id) / "metrics.jsonl"


def wandb_state_path(out: str | Path, run_id: str) -> Path:
    return run_dir(out, run_id) / "wandb.json"


def checkpoint_dir(out: str | Path, run_id: str) -> Path:
    return run_dir(out, run_id) / "checkpoints"


def checkpoint_path(out: str | Path, run_id: str, step: int) -> Path:
    return checkpoint_dir(out, run_id) / f"step-{step:09d}.pt"


def checkpoint_step(path: Path) -> int:
    """The step a ``checkpoint_path`` file name holds; -1 for a name that holds none."""
    try:
        return int(path.stem.removeprefix("step-"))
    except ValueError:
        return -1


def checkpointed_step(out: str | Path, run_id: str) -> int:
    """The step of the run's newest checkpoint (0 without one): where it resumes."""
    return max([0, *(checkpoint_step(path) for path in checkpoint_dir(out, run_id).glob("step-*.pt"))])


def slurm_dir(out: str | Path) -> Path:
    return Path(out) / "slurm"


def slurm_jobs_path(out: str | Path) -> Path:
    return slurm_dir(out) / "jobs.json"


def is_results_folder(out: str | Path) -> bool:
    return runs_dir(out).is_dir()


def run_ids(out: str | Path) -> list[str]:
    """The run folders' names, sorted (none when ``out`` has no runs/)."""
    return sorted(p.name for p in runs_dir(out).glob("*/"))


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a uniquely named temporary file and os.replace."""
    write_atomic_with(path, lambda tmp: tmp.write_text(text))


def write_atomic_with(path: Path, write: Callable[[Path], object]) -> None:
    """``write(tmp)`` to a uniquely named temporary file beside ``path``, then os.replace it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, value) -> None:
    write_atomic(path, json.dumps(value, indent=1, default=str, allow_nan=False) + "\n")


def read_json(path: Path):
    return json.loads(path.read_text())


def ensure_writable(out: str | Path) -> None:
    """Create the results folder ``out`` if need be; a one-line UsageError unless files can be made in it."""
    out = Path(out)
    try:
        runs_dir(out).mkdir(parents=True, exist_ok=True)
        for folder in (out, runs_dir(out)):
            with tempfile.TemporaryFile(dir=folder):
                pass
    except OSError as exc:
        raise UsageError(f"{out}: the results folder is not writable ({exc.strerror or exc})") from None


def read_identity(out: str | Path, run_id: str) -> dict | None:
    """config.json: {"run_id", "arm", "config"}, or None when it is missing or does not parse."""
    return _read_object(config_path(out, run_id))


def read_status(out: str | Path, run_id: str) -> str | None:
    """The run's status: running, done, diverged or failed; None when it has no readable status.json.

    A done or diverged run without a readable summary.json reads as failed (it is run again).
    """
    record = _read_object(status_path(out, run_id)) or {}
    status = record.get("status")
    if status not in STATUSES:
        return None
    if status in FINISHED and _read_object(summary_path(out, run_id)) is None:
        return "failed"
    return status


def finished_status(out: str | Path, run_id: str) -> str | None:
    """done or diverged for a run whose result is recorded whole (never run it again), else None."""
    status = read_status(out, run_id)
    return status if status in FINISHED else None


def is_finished(out: str | Path, run_id: str) -> bool:
    """True for a run whose result is recorded (done or diverged): never run it again."""
    return finished_status(out, run_id) is not None


def record_problem(out: str | Path, run_id: str) -> str | None:
    """Why a run's record cannot be trusted, for a run that has one: its status.json does not parse,
    or it says done or diverged without a readable summary.json. None for a sound (or no) record."""
    if not status_path(out, run_id).exists():
        return None
    record = _read_object(status_path(out, run_id))
    if record is None:
        return "status.json does not parse"
    status = record.get("status")
    if status not in STATUSES:
        return f"status.json has status {status!r}, not one of {', '.join(STATUSES)}"
    if status in FINISHED:
        if not summary_path(out, run_id).exists():
            return f"status {status} but no summary.json"
        if _read_object(summary_path(out, run_id)) is None:
            return "summary.json does not parse"
    return None


def is_alive(out: str | Path, run_id: str) -> bool | None:
    """Whether a ``running`` run's process still exists (``process_alive`` of the host and pid in its
    status.json). False for a run that is not running, or whose process is gone (killed, stopped: it
    resumes when run again); None when another host runs it, which this one cannot tell."""
    record = _read_object(status_path(out, run_id)) or {}
    if record.get("status") != "running":
        return False
    return process_alive(record.get("host"), record.get("pid"))


def error_line(error: str | None) -> str:
    """The line that says what went wrong: the last non-empty line of an error (of a traceback, the
    exception and its message); "" for none."""
    lines = [line.strip() for line in (error or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def run_error(out: str | Path, run_id: str) -> str:
    """The error line of a failed run: its record's problem, else that of the error in status.json."""
    problem = record_problem(out, run_id)
    if problem:
        return problem
    error = (_read_object(status_path(out, run_id)) or {}).get("error")
    return error_line(error if isinstance(error, str) else None)


def read_summary(out: str | Path, run_id: str) -> dict:
    """summary.json (the run's table row), or {} when it is missing or does not parse."""
    return _read_object(summary_path(out, run_id)) or {}


def read_metrics(out: str | Path, run_id: str) -> tuple[list[dict], str | None]:
    """metrics.jsonl's records, in order ([] without the file), and a line naming the file and what
    was wrong with it, or None.

    A line that is not a JSON object (a run killed mid-write) is skipped, and so is a record whose
    step is not a number; any other value that is not a number is read as None, the way the file
    records a non-finite value.
    """
    path = metrics_path(out, run_id)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return [], None
    records, skipped, blanked = [], 0, []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict) or not _is_number(record.get("step", 0)):
            skipped += bool(line.strip())
            continue
        for key, value in record.items():
            if value is not None and not _is_number(value):
                blanked.append(f"{key}={value!r} (line {number})")
                record[key] = None
        records.append(record)
    problems = [f"{skipped} unreadable line(s) skipped"] if skipped else []
    if blanked:
        problems.append(f"not a number, read as missing: {', '.join(blanked[:3])}{' ...' if len(blanked) > 3 else ''}")
    return records, f"{path}: {'; '.join(problems)}" if problems else None


def progress(out: str | Path, run_id: str) -> tuple[int | None, float | None]:
    """The step and test loss of the last record in metrics.jsonl ((None, None) without one), read
    from the file's tail only: a watcher calls this for every running run, every second."""
    try:
        with metrics_path(out, run_id).open("rb") as file:
            file.seek(max(0, file.seek(0, os.SEEK_END) - 4096))
            lines = file.read().decode(errors="replace").splitlines()
    except OSError:
        return None, None
    for line in reversed(lines):
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line cut by the 4 KiB window or by a kill mid-write
        if isinstance(record, dict) and _is_number(record.get("step")):
            loss = record.get("test_loss")
            return int(record["step"]), float(loss) if _is_number(loss) else None
    return None, None


def process_alive(host: object, pid: object) -> bool | None:
    """Whether process ``pid`` of ``host`` is alive: True or False on this host, None on another
    host or for a pid that is not a number."""
    if host != socket.gethostname() or not isinstance(pid, int):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by another user
    return True


def read_wandb_state(out: str | Path, run_id: str) -> dict:
    """wandb.json ({} when missing or unreadable): what W&B holds of the run."""
    return _read_object(wandb_state_path(out, run_id)) or {}


def write_wandb_state(out: str | Path, run_id: str, state: dict) -> None:
    write_json(wandb_state_path(out, run_id), state)


def begin_run(out: str | Path, run_id: str, arm: str, config: dict) -> None:
    """Record a run as started: config.json, then status ``running``; stale results are removed."""
    write_json(config_path(out, run_id), {"run_id": run_id, "arm": arm, "config": config})
    write_json(
        status_path(out, run_id),
        {
            "status": "running",
            "started": _now(),
            "finished": None,
            "error": None,
            "host": socket.gethostname(),
            "pid": os.getpid(),
        },
    )
    for stale in (summary_path(out, run_id), metrics_path(out, run_id)):
        stale.unlink(missing_ok=True)


def write_metrics(out: str | Path, run_id: str, records: list[dict]) -> None:
    """(Re)write metrics.jsonl with every record so far."""
    lines = "".join(json.dumps(r, default=str, allow_nan=False) + "\n" for r in records)
    write_atomic(metrics_path(out, run_id), lines)


def end_run(
    out: str | Path, run_id: str, status: str, metrics: list[dict], summary: dict, error: str | None = None
) -> None:
    """Write the metrics and summary, then the final status (last, so a finished run is whole)."""
    if status not in STATUSES or status == "running":
        raise ValueError(f"a run ends done, diverged or failed; got {status!r}")
    write_metrics(out, run_id, metrics)
    write_json(summary_path(out, run_id), {**summary, "status": status})
    previous = _read_object(status_path(out, run_id)) or {}
    write_json(status_path(out, run_id), {**previous, "status": status, "finished": _now(), "error": error})


def copy_finished(source: str | Path, out: str | Path) -> int:
    """Copy into ``out`` the finished runs of the results folder ``source`` that ``out`` does not
    hold finished (an unfinished copy there is replaced); return how many were copied."""
    copied = 0
    for run_id in run_ids(source):
        if finished_status(source, run_id) and not finished_status(out, run_id):
            target = run_dir(out, run_id)
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(run_dir(source, run_id), target)
            copied += 1
    return copied


def rebuild_table(out: str | Path) -> pd.DataFrame:
    """Rebuild DIR/runs.parquet from every run folder and return it (empty folder: empty table).

    A run with a summary.json contributes its summary; one without (running, failed early) its
    identity and flattened config. The status always comes from status.json (``read_status``;
    running when it has none).
    """
    import pandas as pd  # here, not at the top: the command line's parsers import the store

    rows = []
    for run_id in run_ids(out):
        identity = read_identity(out, run_id)
        if identity is None:
            continue
        status = read_status(out, run_id) or "running"
        summary = read_summary(out, run_id)
        if not summary:
            config = identity["config"]
            summary = {**flatten(config), "run_id": identity["run_id"], "arm": identity["arm"]}
            summary.pop("arms", None)
        rows.append({**summary, "status": status})
    table = pd.DataFrame(rows)
    for column in [c for c in table.columns if pd.api.types.is_object_dtype(table[c])]:
        kinds = {type(v) for v in table[column] if v is not None and not (isinstance(v, float) and pd.isna(v))}
        if len(kinds - {int, float}) and len(kinds) > 1:
            table[column] = table[column].map(lambda v: None if v is None else str(v))
    path = table_path(out)
    tmp = path.with_name(f".{TABLE}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        table.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return table


def _read_object(path: Path) -> dict | None:
    """The JSON object in ``path``; None when the file is missing, unreadable or not one JSON object."""
    try:
        value = read_json(path)
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _is_number(value) -> bool:
    return isinstance(value, (int, float))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
