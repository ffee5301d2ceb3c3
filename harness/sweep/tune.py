"""Run a sweep's ``tune:`` block: Optuna's TPE per cell (and arm) on a validation split.

Every trial is a run of its own: the cell's configuration at the trial's values, at the tuning
seed, with ``task.validation`` > 0, so it is evaluated on extra points from the training
distribution and never on the test split, and its run id differs from every final run's. Trials
are kept in RESULTS/tune/ (runs.parquet lists them all, with their values as config columns).
Each (cell, arm) has an Optuna study on the sweep's storage, so stopping and rerunning the sweep
resumes the search where it stopped. The final runs then take each cell's best values; their run
ids follow from them, and ``best.json`` records what was chosen and why.

Trials run one after another in the sweep's own process: TPE proposes each from those before it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

import optuna
from tqdm import tqdm

from harness.config import parse_config, run_id, with_values
from harness.config.sweep_spec import PlannedRun, Sweep, TunedParam, TuneSpec
from harness.errors import UsageError
from harness.experiments.runner import run_config
from harness.sweep.storage import open_storage
from harness.tracking.store import read_summary, rebuild_table, table_path

TUNE_FOLDER = "tune"
FINISHED_STATES = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL)


@dataclass(frozen=True)
class Cell:
    """One tuned (cell, arm): the cell's values of ``tune.per``, the arm searched, its base data."""

    values: tuple[tuple[str, object], ...]
    arm: str
    raw: dict

    @property
    def label(self) -> str:
        return ", ".join(f"{key}={value}" for key, value in self.values) or "all runs"

    def study_name(self, sweep: str) -> str:
        return f"{sweep}.tune.{self.arm}.{json.dumps(dict(self.values), sort_keys=True, default=str)}"


@dataclass(frozen=True)
class Best:
    """The outcome of one (cell, arm): the best values, their metric, and the trials behind it."""

    cell: Cell
    params: dict
    value: float
    run_id: str
    trials: int
    failed: int


def tuning_cells(sweep: Sweep) -> list[Cell]:
    """The (cell, arm) pairs to tune, in the sweep's order; a cell's data is its first run's."""
    spec = _spec(sweep)
    cells: dict[str, Cell] = {}
    for run in sweep.runs:
        values, arm = _cell_of(run, spec)
        cells.setdefault(_key(values, arm), Cell(values, arm, run.raw))
    return list(cells.values())


def _cell_of(run: PlannedRun, spec: TuneSpec) -> tuple[tuple[tuple[str, object], ...], str]:
    """The cell (its values of ``tune.per``) and the tuned arm whose best values ``run`` takes."""
    return tuple((key, run.varied[key]) for key in spec.per), spec.arm or run.arm


def _key(values: tuple, arm: str) -> str:
    """A cell's dictionary key: its values may be lists (a zip of arms), which do not hash."""
    return json.dumps([values, arm], default=str)


def tune_sweep(sweep: Sweep, out: Path, storage_url: str, device: str = "auto") -> tuple[Sweep, list[Best]]:
    """Search every cell (resuming finished trials), write ``best.json``; return the final sweep."""
    spec = _spec(sweep)
    cells = tuning_cells(sweep)
    storage = open_storage(storage_url)
    folder = out / TUNE_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(
        f"tune {sweep.name}: {len(cells)} cell(s) x {spec.trials} trials of "
        f"{', '.join(p.key for p in spec.params)} on a {spec.validation:g} validation split; trials in {folder}",
        flush=True,
    )
    results = []
    with tqdm(total=len(cells) * spec.trials, unit="trial", desc=f"tune {sweep.name}", dynamic_ncols=True) as bar:
        for number, cell in enumerate(cells):
            study = optuna.create_study(
                study_name=cell.study_name(sweep.name),
                storage=storage,
                direction="minimize",
                load_if_exists=True,
                sampler=optuna.samplers.TPESampler(seed=spec.seed * 1000 + number),
            )
            results.append(_search(study, cell, spec, folder, device, bar))
            rebuild_table(folder)
    write_best(folder / "best.json", results, spec)
    return apply_best(sweep, results), results


def _search(study: optuna.Study, cell: Cell, spec: TuneSpec, folder: Path, device: str, bar: tqdm) -> Best:
    finished = [t for t in study.get_trials(deepcopy=False) if t.state in FINISHED_STATES]
    bar.update(min(len(finished), spec.trials))
    while len(finished) < spec.trials:
        trial = study.ask()
        values = {param.key: suggest(trial, param) for param in spec.params}
        config = replace(trial_config(cell, values, spec), device=device)
        [record] = run_config(config, folder, arms=[cell.arm], refresh_table=False)
        value = read_summary(folder, record.run_id).get(spec.metric)
        trial.set_user_attr("run_id", record.run_id)
        trial.set_user_attr("status", record.status)
        if record.status == "done" and isinstance(value, (int, float)) and math.isfinite(value):
            study.tell(trial, float(value))
        else:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        finished.append(trial)
        bar.update(1)
        bar.set_postfix_str(f"{cell.arm} {cell.label}: best {_best_text(study)}")
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise UsageError(
            f"tune: every trial of {cell.arm} at {cell.label} failed or diverged; see {table_path(folder)}"
        )
    best = min(complete, key=lambda t: t.value)
    failed = sum(t.state == optuna.trial.TrialState.FAIL for t in study.get_trials(deepcopy=False))
    return Best(
        cell, dict(best.params), float(best.value), best.user_attrs.get("run_id", ""), len(complete) + failed, failed
    )


def suggest(trial: optuna.Trial, param: TunedParam):
    """The trial's value of one searched key (Optuna records it under the dotted key)."""
    if param.choices is not None:
        return trial.suggest_categorical(param.key, list(param.choices))
    if param.integer:
        return trial.suggest_int(param.key, int(param.low), int(param.high), log=param.log)
    return trial.suggest_float(param.key, param.low, param.high, log=param.log)


def trial_config(cell: Cell, values: dict, spec: TuneSpec):
    """The configuration a trial runs: the cell's, at these values, the tuning seed, on validation."""
    raw = with_values(
        cell.raw, {**values, "seed": spec.seed, "task.validation": spec.validation, "arms": [cell.arm]}, "tune"
    )
    return parse_config(raw, f"tune [{cell.arm} {cell.label}]")


def apply_best(sweep: Sweep, results: list[Best]) -> Sweep:
    """The sweep's runs at their cell's best values (new run ids; each arm its own configuration)."""
    spec = _spec(sweep)
    best = {_key(r.cell.values, r.cell.arm): r.params for r in results}
    runs = []
    for run in sweep.runs:
        values = best[_key(*_cell_of(run, spec))]
        raw = with_values(run.raw, {**values, "arms": [run.arm]}, sweep.source.name)
        config = parse_config(raw, f"{sweep.source.name} [tuned]")
        runs.append(PlannedRun(run_id(config, run.arm), run.arm, config, raw, {**run.varied, **values}))
    return replace(sweep, runs=tuple(runs), varied_keys=(*sweep.varied_keys, *(p.key for p in spec.params)))


def write_best(path: Path, results: list[Best], spec: TuneSpec) -> None:
    rows = [
        {
            "cell": dict(r.cell.values),
            "arm": r.cell.arm,
            "params": r.params,
            spec.metric: r.value,
            "best_trial_run_id": r.run_id,
            "trials": r.trials,
            "failed": r.failed,
        }
        for r in results
    ]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(
        json.dumps({"metric": spec.metric, "validation": spec.validation, "cells": rows}, indent=1, default=str)
    )
    tmp.replace(path)


def print_tuning(sweep: Sweep) -> None:
    """The tuning plan for --dry-run."""
    spec = _spec(sweep)
    cells = tuning_cells(sweep)
    searched = "; ".join(_describe(p) for p in spec.params)
    print(
        f"tune: {len(cells)} cell(s) ({', '.join(spec.per) or 'one cell'}) x {spec.trials} trials = "
        f"{len(cells) * spec.trials} trial runs of {'arm ' + spec.arm if spec.arm else 'each arm'}, "
        f"minimising {spec.metric} on a {spec.validation:g} validation split at seed {spec.seed}"
    )
    print(f"tune: searching {searched}; the final runs' ids are fixed by the best values")


def _describe(param: TunedParam) -> str:
    if param.choices is not None:
        return f"{param.key} in {list(param.choices)}"
    return (
        f"{param.key} in [{param.low:g}, {param.high:g}]{' log' if param.log else ''}{' int' if param.integer else ''}"
    )


def _best_text(study: optuna.Study) -> str:
    try:
        return f"{study.best_value:.4g}"
    except ValueError:
        return "none yet"


def _spec(sweep: Sweep) -> TuneSpec:
    if sweep.tune is None:
        raise ValueError(f"sweep {sweep.name} has no tune: block")
    return sweep.tune
