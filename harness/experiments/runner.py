"""Running configurations: in memory (``run_arms``, ``run_one``) or into the results store (``run_config``).

``run_arms`` is pure: the same configuration gives the same numbers on a CPU, and it touches no
files. ``run_config`` is what ``polyscale run`` and the sweep orchestrator call: it skips arms
whose runs are already finished (done or diverged), records the rest in the store (status
``running`` first, results, then the final status) and refreshes runs.parquet. Divergence is a
result (status ``diverged``); an exception inside an experiment marks its runs ``failed`` with the
traceback and does not escape, except a UsageError (a missing dataset, a task too small), which
is recorded and re-raised because every other run of the configuration would meet it too.

Training checkpoints into each unfinished run's folder (harness/train/checkpoint.py) and an
unfinished run resumes from its newest sound checkpoint (``force``: from step 0). A run stopped on
request (``preempt.Preempted``) stays ``running``, its metrics so far written: it is not finished,
so the next run_config resumes it. A finished run's checkpoints are removed (``keep_checkpoints``:
all but the newest).
"""

from __future__ import annotations

import functools
import logging
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from harness import preempt
from harness.config import TRAINING_EXPERIMENTS, Config, flatten, run_id, to_dict
from harness.device import pick_device, tf32_in_effect
from harness.errors import UsageError
from harness.experiments import attention, data, runtime, symmetric, width
from harness.experiments.common import ArmResult, OnRecord, dtype_of
from harness.tracking import (
    RunObserver,
    begin_run,
    end_run,
    error_line,
    finished_status,
    installed,
    rebuild_table,
    record_problem,
    write_metrics,
)
from harness.train import checkpoint, run_together

RUNNERS = {
    "width": width.run,
    "data": data.run,
    "attention": attention.run,
    "symmetric": symmetric.run,
    "runtime": runtime.run,
}
# Columns every row has (None where they do not apply), before the arm's extras and the config.
# Plain names are what a run measured or used, dotted ones (config's ``flatten``) what it was
# configured with; a plain column never copies a configuration value: ``d`` and ``width`` are the
# original's size as loaded and built (``width`` counts heads in the attention experiment), ``k``
# is None for the uncompressed original arm, ``steps`` counts epochs in steps.
COLUMNS = (
    "run_id",
    "experiment",
    "arm",
    "seed",
    "status",
    "d",
    "d_eff",
    "width",
    "width_eff",
    "k",
    "steps",
    "test_loss",
    "train_loss",
    "compress_seconds",
    "train_seconds",
    "moment_error",
)
METRICS_EVERY_SECONDS = 10.0  # how often a running run's metrics are rewritten
logger = logging.getLogger(__name__)


@dataclass
class RunRecord:
    """What ``run_config`` did with one arm: its run id, status and results-table row."""

    run_id: str
    arm: str
    status: str
    row: dict = field(default_factory=dict)
    skipped: bool = False
    error: str | None = None


def run_arms(
    config: Config,
    arms: Sequence[str] | None = None,
    *,
    device: torch.device | str | None = None,
    on_record: OnRecord | None = None,
) -> dict[str, ArmResult]:
    """Run the given arms (default: the config's) of one configuration side by side, in memory."""
    arms = tuple(arms) if arms else config.arm_names
    for arm in arms:
        run_id(config, arm)  # raises for an arm the experiment does not have
    if not isinstance(device, torch.device):
        device = pick_device(device if device is not None else config.device)
    return RUNNERS[config.experiment](config, arms, device, on_record)


def run_one(config: Config, arm: str, *, device: torch.device | str | None = None) -> ArmResult:
    """One run: one arm of one seed of one configuration (a compressed width arm trains the
    original alongside as its reference; see harness/experiments/units.py)."""
    return run_arms(config, (arm,), device=device)[arm]


def run_config(
    config: Config,
    out: str | Path | None = None,
    *,
    arms: Sequence[str] | None = None,
    force: bool = False,
    observers: Sequence[RunObserver] = (),
    refresh_table: bool = True,
    keep_checkpoints: bool = False,
    may_record: Callable[[str], bool] | None = None,
) -> list[RunRecord]:
    """Run and record the unfinished arms of ``config`` into the store at ``out`` (default config.out).

    Finished runs (done or diverged) are skipped unless ``force``. Returns one RunRecord per arm.
    ``refresh_table=False`` leaves runs.parquet alone (a sweep can call ``rebuild_table`` once:
    each rebuild reads every run folder). A run that ``may_record(run_id)`` refuses at its end (a
    sweep worker whose claim another worker took over) is not recorded: its status is ``lost``.
    """
    out = Path(out if out is not None else config.out)
    observers = (*observers, *installed())
    device = pick_device(config.device)
    ids = {arm: run_id(config, arm) for arm in (tuple(arms) if arms else config.arm_names)}
    records = {
        arm: RunRecord(rid, arm, status, skipped=True)
        for arm, rid in ids.items()
        if not force and (status := finished_status(out, rid))
    }
    pending = tuple(arm for arm in ids if arm not in records)
    for arm in pending:
        if problem := record_problem(out, ids[arm]):
            logger.warning("%s: not finished (%s); running it again", ids[arm], problem)
    for group in _training_calls(out, pending, ids, force):
        records.update(
            _run_pending(config, out, group, ids, device, observers, refresh_table, force, keep_checkpoints, may_record)
        )
    if refresh_table:
        rebuild_table(out)
    return [records[arm] for arm in ids]


def run_configs(
    jobs: Sequence[tuple[Config, Sequence[str] | None]],
    out: str | Path | None = None,
    *,
    observers: Sequence[RunObserver] = (),
    refresh_table: bool = True,
    keep_checkpoints: bool = False,
    may_record: Callable[[str], bool] | None = None,
) -> list[list[RunRecord] | Exception]:
    """``run_config`` of several (configuration, arms) at once, their compatible models trained as
    one batched model (harness/train/batched.py); each is recorded exactly as ``run_config`` records it.

    Returns each job's records, or the exception ``run_config`` raised for it (a UsageError, after
    recording its runs failed); an interrupt or ``preempt.Preempted`` is raised.
    """
    results = run_together(
        [
            functools.partial(
                run_config,
                config,
                out,
                arms=arms,
                observers=observers,
                refresh_table=False,
                keep_checkpoints=keep_checkpoints,
                may_record=may_record,
            )
            for config, arms in jobs
        ]
    )
    if refresh_table:
        rebuild_table(Path(out if out is not None else jobs[0][0].out))
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, Exception):
            raise result
    return results


def _training_calls(out: Path, pending: tuple[str, ...], ids: dict[str, str], force: bool) -> list[tuple[str, ...]]:
    """The pending arms as the training calls that run them: the arms that the newest sound
    checkpoint among their runs holds, then the others in a call of their own. An arm added to a
    configuration after its other arms were checkpointed (an imp arm added to a running sweep)
    then starts from step 0 apart, instead of taking the others back to step 0 with it."""
    if force or not pending:
        return [pending] if pending else []
    target = checkpoint.Target(out, {arm: ids[arm] for arm in pending})
    state = checkpoint.Checkpoints(target).latest(lambda state: None)
    held = tuple(arm for arm in pending if state is not None and arm in state.get("arms", {}))
    return [group for group in (held, tuple(arm for arm in pending if arm not in held)) if group]


def _run_pending(
    config: Config,
    out: Path,
    pending: tuple[str, ...],
    ids: dict[str, str],
    device: torch.device,
    observers: Sequence[RunObserver],
    refresh_table: bool,
    force: bool,
    keep_checkpoints: bool,
    may_record: Callable[[str], bool] | None = None,
) -> dict[str, RunRecord]:
    keep = may_record or (lambda rid: True)
    flat = {key: value for key, value in flatten(config).items() if key != "arms"}
    history = {arm: [] for arm in pending}
    written = {arm: 0.0 for arm in pending}
    for arm in pending:
        begin_run(out, ids[arm], arm, to_dict(config))
        for observer in observers:
            observer.run_started(ids[arm], arm, flat)

    def on_record(arm: str, record: dict) -> None:
        history[arm].append(record)
        if time.monotonic() - written[arm] > METRICS_EVERY_SECONDS:
            write_metrics(out, ids[arm], history[arm])
            written[arm] = time.monotonic()
        for observer in observers:
            observer.run_logged(ids[arm], record)

    def on_restore(arm: str, records: list[dict]) -> None:
        history[arm][:] = records

    runs = {arm: ids[arm] for arm in pending}
    resume = checkpoint.Target(out, runs, config.train.checkpoint_every, resume=not force, on_restore=on_restore)
    try:
        with checkpoint.writing_to(resume):
            results = run_arms(config, pending, device=device, on_record=on_record)
    except preempt.Preempted:
        for arm in pending:
            if keep(ids[arm]):  # a lost run's folder belongs to the worker that took it over
                write_metrics(out, ids[arm], history[arm])
        raise
    except BaseException as exc:
        message = str(exc) if isinstance(exc, UsageError) else traceback.format_exc()
        records = {}
        for arm in pending:
            if not keep(ids[arm]):
                records[arm] = RunRecord(ids[arm], arm, "lost")
                continue
            row = _row(config, arm, ids[arm], "failed", {}, device, flat)
            end_run(out, ids[arm], "failed", history[arm], row, error=message)
            for observer in observers:
                observer.run_finished(ids[arm], "failed", row)
            records[arm] = RunRecord(ids[arm], arm, "failed", row, error=error_line(message))
        if isinstance(exc, Exception) and not isinstance(exc, UsageError):
            return records
        if refresh_table:
            rebuild_table(out)
        raise
    records = {}
    for arm in pending:
        if not keep(ids[arm]):
            records[arm] = RunRecord(ids[arm], arm, "lost")
            continue
        result = results[arm]
        row = _row(config, arm, ids[arm], result.status, result.summary, device, flat)
        end_run(out, ids[arm], result.status, result.metrics, row)
        checkpoint.discard(out, ids[arm], keep_last=keep_checkpoints)
        for observer in observers:
            observer.run_finished(ids[arm], result.status, row)
        records[arm] = RunRecord(ids[arm], arm, result.status, row)
    return records


def _row(config: Config, arm: str, rid: str, status: str, summary: dict, device: torch.device, flat: dict) -> dict:
    """The run's results-table row: the fixed columns, the arm's measurements, the config (dotted)."""
    training = config.experiment in TRAINING_EXPERIMENTS
    row = dict.fromkeys(COLUMNS)
    row.update(
        run_id=rid,
        experiment=config.experiment,
        arm=arm,
        seed=config.seed,
        status=status,
        steps=config.total_steps() if training else None,
    )
    row.update(summary)
    row.update(flat)
    row["device"] = str(device)
    if training and device.type == "cuda":
        # Whether its float32 matrix products ran in TF32 (train.tf32 asks; the device may not have
        # it). Never on a CPU: CPU runs have no such column, as the tables written before it.
        row["tf32"] = tf32_in_effect(device, dtype_of(config), config.train.tf32)
    return row
