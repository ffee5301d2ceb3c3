"""Mirror finished runs and sweep tables to Weights & Biases, never at the expense of local results.

The local results store is the source of truth; W&B is a view of it. Every function here catches
its own failures, warns, and returns False: a missing key, no network or a W&B bug can cost a
dashboard, never a result. Offline mode (the default) writes ``wandb/offline-run-*`` folders that
``wandb sync`` uploads later.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import warnings
from collections.abc import Mapping
from pathlib import Path

from harness.config import flatten
from harness.tracking import store

MODES = ("offline", "online", "disabled")
MAX_OPEN_RUNS = 64  # W&B runs one process streams at once (about 6 open files each)
INIT_TIMEOUT_SECONDS = 60.0
FINISH_TIMEOUT_SECONDS = 60.0


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


def mirror_run(out: Path, run_id: str, *, mode: str, project: str, group: str) -> bool:
    """Log one finished run of the results folder ``out`` as the W&B run whose id is the run id:
    job_type is the run's arm, config the flattened configuration, history the run's metrics that
    W&B does not hold yet (wandb.json), summary its summary (harness/tracking/store.py). A run
    marked mirrored is left alone; the mark is written once ``finish()`` has returned. A run whose
    W&B session a live process on this host holds (this one's ``finish()`` past its time, another
    worker's stream) is left to it: False."""
    state = store.read_wandb_state(out, run_id)
    if mode == "disabled" or state.get("mirrored"):
        return True
    if _owner_alive(state):
        return False
    session = None
    try:
        identity = store.read_identity(out, run_id)
        if identity is None:
            raise ValueError(f"{store.config_path(out, run_id)} is missing or does not parse")
        config = {**flatten(identity["config"]), "arm": identity["arm"]}
        session = _Session.open(out, run_id, str(identity["arm"]), config, mode=mode, project=project, group=group)
        records, problem = store.read_metrics(out, run_id)
        if problem:
            warnings.warn(problem, stacklevel=2)
        for record in records:
            session.log(record)
        status = store.read_status(out, run_id)
        summary = store.read_summary(out, run_id)
        return session.close({**summary, "status": status or summary.get("status")}, mirrored=True)
    except Exception as exc:  # W&B must never cost a local result
        _warn(f"run {run_id}", exc)
        if session is not None:
            session.drop()
        return False


def mirror_missing(out: Path, *, mode: str, project: str, group: str) -> int:
    """Mirror every finished run of ``out`` that is not marked mirrored (a crash came between its
    end and its W&B ``finish()``), unless a live process on this host holds its session; return how
    many were mirrored."""
    if mode == "disabled":
        return 0
    mirrored = 0
    for run_id in store.run_ids(out):
        if store.read_wandb_state(out, run_id).get("mirrored") or not store.finished_status(out, run_id):
            continue
        mirrored += mirror_run(out, run_id, mode=mode, project=project, group=group)
    return mirrored


class LiveMirror:
    """A run observer that streams each run to its own W&B run while it trains (every model of a
    batched stack too), and marks it mirrored when it ends finished.

    A resumed or re-run run continues the W&B run of its id and logs only the steps W&B does not
    hold (wandb.json). A session that ends with steps missing (a run resumed from a checkpoint
    streams only the steps after it) is dropped and the run mirrored whole from the store. Every
    W&B failure warns and stops that run's stream; at most ``max_open`` runs stream at once (the
    others are mirrored when they end), and each ``finish()`` is given ``finish_timeout`` seconds.
    """

    def __init__(
        self,
        out: Path,
        *,
        mode: str,
        project: str,
        group: str,
        max_open: int = MAX_OPEN_RUNS,
        finish_timeout: float = FINISH_TIMEOUT_SECONDS,
    ) -> None:
        self.out, self.mode, self.project, self.group = Path(out), mode, project, group
        self.max_open, self.finish_timeout = max_open, finish_timeout
        self._sessions: dict[str, _Session] = {}

    def run_started(self, run_id: str, arm: str, config: dict) -> None:
        if self.mode == "disabled" or len(self._sessions) >= self.max_open:
            return
        try:
            self._sessions[run_id] = _Session.open(
                self.out,
                run_id,
                arm,
                {**config, "arm": arm},
                mode=self.mode,
                project=self.project,
                group=self.group,
                finish_timeout=self.finish_timeout,
            )
        except Exception as exc:
            _warn(f"run {run_id}", exc)

    def run_logged(self, run_id: str, record: dict) -> None:
        session = self._sessions.get(run_id)
        if session is None:
            return
        try:
            session.log(record)
        except Exception as exc:
            _warn(f"run {run_id}", exc)
            self._sessions.pop(run_id).drop()

    def run_finished(self, run_id: str, status: str, summary: dict) -> None:
        session = self._sessions.pop(run_id, None)
        finished = status in store.FINISHED
        if session is not None:
            try:
                records, _ = store.read_metrics(self.out, run_id)
                if session.holds(records):
                    session.close({**summary, "status": status}, mirrored=finished)
                    return
                session.drop()
            except Exception as exc:  # e.g. a finish() past its time: the next sweep, worker or collect mirrors it
                _warn(f"run {run_id}", exc)
                session.drop()
                return
        if finished:
            mirror_run(self.out, run_id, mode=self.mode, project=self.project, group=self.group)


class _Session:
    """One W&B run open in this process for one run of the store, and the steps it logged.

    wandb.json records the W&B run folder while it is open (with this process), and the last step
    W&B holds for sure once ``finish()`` returned: data sent before a kill -9 may never reach the
    files, so an open session whose process is gone is removed (offline) and its steps logged again.
    """

    def __init__(self, out: Path, run_id: str, run, after: int, finish_timeout: float) -> None:
        self.out, self.run_id, self.run = out, run_id, run
        self.after = after  # W&B holds every step up to this one
        self.logged: list[int] = []
        self.finish_timeout = finish_timeout
        self.finishing = False

    @classmethod
    def open(
        cls,
        out: Path,
        run_id: str,
        arm: str,
        config: dict,
        *,
        mode: str,
        project: str,
        group: str,
        finish_timeout: float = FINISH_TIMEOUT_SECONDS,
    ) -> _Session:
        import wandb

        state = store.read_wandb_state(out, run_id)
        _remove_stale(state)
        root = wandb_root(out)
        if root is not None:
            root.mkdir(parents=True, exist_ok=True)
        run = wandb.init(
            project=project,
            id=run_id,
            name=run_id,
            group=group,
            job_type=arm,
            config=config,
            mode=mode,
            dir=str(root) if root is not None else None,
            resume="allow",
            reinit="create_new",
            # finish_timeout also bounds the finish of runs left open at exit (W&B's atexit hook)
            settings=wandb.Settings(
                silent=True, init_timeout=INIT_TIMEOUT_SECONDS, finish_timeout=FINISH_TIMEOUT_SECONDS
            ),
        )
        after = max(int(state.get("step", -1)), int(run.starting_step or 0) - 1)
        store.write_wandb_state(
            out,
            run_id,
            {
                "step": after,
                "session": str(Path(run.settings.sync_dir).resolve()),
                "host": socket.gethostname(),
                "pid": os.getpid(),
            },
        )
        return cls(out, run_id, run, after, finish_timeout)

    def log(self, record: dict) -> None:
        step = int(record.get("step", 0))
        if step <= max(self.after, self.logged[-1] if self.logged else -1):
            return  # W&B holds it already (a resumed or re-run run)
        self.run.log({k: v for k, v in record.items() if k != "step"}, step=step)
        self.logged.append(step)

    def holds(self, records: list[dict]) -> bool:
        """Whether this session logged every step of ``records`` that W&B lacked before it."""
        return self.logged == [int(r.get("step", 0)) for r in records if int(r.get("step", 0)) > self.after]

    def close(self, summary: dict, *, mirrored: bool) -> bool:
        """Write the summary and finish (in bounded time); record the steps W&B now holds, and the
        mirrored mark, only once ``finish()`` returned. True when it did."""
        self.run.summary.update(summary)
        self.finishing = True
        if not _finish(self.run, self.finish_timeout):
            raise TimeoutError(f"finish() did not return within {self.finish_timeout:g} s")
        step = self.logged[-1] if self.logged else self.after
        store.write_wandb_state(self.out, self.run_id, {"step": step, "session": None, "mirrored": mirrored})
        return True

    def drop(self) -> None:
        """After a failure: finish without recording anything and remove what offline mode wrote of
        this session. A session whose ``finish()`` was already started is left to it (and to the
        next reconcile); this never raises."""
        if self.finishing:
            return
        self.finishing = True
        try:
            _finish(self.run, self.finish_timeout)
            _remove_offline(self.run.settings.sync_dir)
            store.write_wandb_state(self.out, self.run_id, {"step": self.after, "session": None})
        except Exception as exc:
            _warn(f"run {self.run_id}", exc)


def wandb_root(out: Path) -> Path | None:
    """Where W&B writes (its ``wandb/`` folder goes inside): None when $WANDB_DIR is set (W&B reads
    it), else the results folder."""
    return None if os.environ.get("WANDB_DIR") else Path(out)


def _finish(run, timeout: float) -> bool:
    """``run.finish()`` in a daemon thread, waited for at most ``timeout`` seconds (a hung upload
    must not hold training); True when it returned without error."""
    errors: list[BaseException] = []

    def finish() -> None:
        try:
            run.finish()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=finish, name="wandb-finish", daemon=True)
    thread.start()
    thread.join(timeout)
    if errors:
        raise errors[0]
    return not thread.is_alive()


def _owner_alive(state: dict) -> bool:
    """Whether a live process on this host (this one included) has the recorded session open."""
    return bool(state.get("session")) and store.process_alive(state.get("host"), state.get("pid")) is True


def _remove_stale(state: dict) -> None:
    """Remove the offline folder of a session that never finished (its process is gone), whose
    records cannot be trusted to be whole; online sessions are the server's to keep."""
    if state.get("session") and not _owner_alive(state):
        _remove_offline(state["session"])


def _remove_offline(folder: str) -> None:
    """Remove an offline run folder (``offline-run-<time>-<id>``, never anything else)."""
    if Path(folder).name.startswith("offline-run-") and Path(folder).is_dir():
        shutil.rmtree(folder, ignore_errors=True)


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
            reinit="create_new",  # runs streaming in this process stay open
            settings=wandb.Settings(silent=True, init_timeout=INIT_TIMEOUT_SECONDS),
        )
        payload = {"table": wandb.Table(dataframe=table.astype(str) if len(table) else table)}
        for key, path in (images or {}).items():
            payload[key] = wandb.Image(str(path))
        run.log(payload)
        run.summary.update({"rows": len(table)})
        return _finish(run, FINISH_TIMEOUT_SECONDS)
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
