"""Sweep specs: a base run configuration plus ``grid:``, ``zip:``, ``seeds:`` and ``tune:``.

A sweep file is a run configuration (the schema of ``harness.config.schema``) with a few extra
top-level keys::

    name: smoke                  # the sweep's name (default: the file's stem)
    experiment: data             # ... any run configuration keys: the base of every run
    grid:                        # cartesian product over dotted keys
      task.n_train: [256, 512, 1024]
    zip:                         # lists varied together (all of one length)
      compression.size: [16, 23, 32]
      train.lr: [0.003, 0.002, 0.001]
    seeds: 3                     # a count (0, 1, 2) or a list of seeds
    tune:                        # optional: Optuna TPE per cell on a validation split
      params:                    #   dotted keys: a range (log-uniform with log: true) or choices
        train.lr: {low: 1.0e-4, high: 0.1, log: true}
        train.batch_size: {choices: [32, 64]}
      trials: 20                 #   per cell (and arm)
      per: [task.n_train]        #   grid/zip keys making a cell (default: all of them)
      arm: original              #   tune this arm, give its best to every arm (default: each its own)
      validation: 0.2            #   fraction of n_train drawn extra to evaluate on (default 0.2)
      seed: 0                    #   the seed trials run at (default: the first of seeds)
      metric: test_loss          #   the summary column minimised (in a trial: on the validation split)
    launcher:                    # optional: where the workers run (harness/config/launcher.py)
      name: slurm                #   local (default) or slurm, with partition, time, gpus_per_task, ...

Every (grid cell x zip row x seed) is one configuration; every arm of it one run, named by
``harness.config.run_id``. Errors name the file and the key. Tuning itself (``harness.sweep.tune``)
happens when the sweep runs: the final runs' ids follow from the values it finds. This module
imports nothing of ``harness.sweep`` or ``harness.experiments``, so both (``polyscale sweep`` and
``polyscale run`` of a sweep file) read sweep files without importing each other.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.config.identity import run_id
from harness.config.launcher import LauncherSpec, parse_launcher
from harness.config.loader import apply_overrides, coerce, read_yaml, with_values
from harness.config.parse import parse_config
from harness.config.schema import Config
from harness.errors import UsageError

SWEEP_KEYS = ("name", "grid", "zip", "seeds", "tune", "launcher")
TUNE_KEYS = ("params", "trials", "per", "arm", "validation", "seed", "metric")
RANGE_KEYS = ("low", "high", "log", "int")


@dataclass(frozen=True)
class TunedParam:
    """One searched key: a range [low, high] (log-uniform if ``log``, integers if ``integer``) or
    a list of ``choices``."""

    key: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    choices: tuple | None = None

    def examples(self) -> tuple:
        """Values that must all give valid configurations (checked on load)."""
        return self.choices if self.choices is not None else (self.low, self.high)


@dataclass(frozen=True)
class TuneSpec:
    """The ``tune:`` block, validated (see the module docstring for the meaning of each field)."""

    params: tuple[TunedParam, ...]
    trials: int
    per: tuple[str, ...]
    arm: str | None
    validation: float
    seed: int
    metric: str


@dataclass(frozen=True)
class PlannedRun:
    """One run of a sweep: its id, its arm, its configuration, and the varied values that made it."""

    run_id: str
    arm: str
    config: Config
    raw: dict = field(repr=False)  # the configuration as nested data (what a worker rebuilds it from)
    varied: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Sweep:
    """An expanded sweep: its name, the varied keys, and every run in a stable order."""

    name: str
    source: Path
    varied_keys: tuple[str, ...]
    runs: tuple[PlannedRun, ...]
    tune: TuneSpec | None = None
    launcher: LauncherSpec = LauncherSpec()
    base: dict = field(default_factory=dict, repr=False)  # the base configuration, overrides applied

    def by_id(self) -> dict[str, PlannedRun]:
        return {run.run_id: run for run in self.runs}


def load_sweep(path: str | Path, overrides: tuple[str, ...] | list[str] = ()) -> Sweep:
    """Read, validate and expand a sweep file; ``overrides`` (``key=value``) apply to the base."""
    path = Path(path)
    documents = read_yaml(path)
    if len(documents) > 1:
        raise UsageError(f"{path.name}: a sweep file is one YAML document; this one has {len(documents)}")
    if not documents or not isinstance(documents[0], dict):
        raise UsageError(f"{path.name}: expected a mapping of keys to values")
    return expand_sweep(documents[0], path, overrides)


def expand_sweep(raw: dict, path: Path, overrides=()) -> Sweep:
    """The runs of a sweep given as nested data (as read from ``path``)."""
    name = str(raw.get("name") or path.stem)
    if not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise UsageError(f"{path.name}: name: use letters, digits, '-', '_' or '.'; got {name!r}")
    base = {key: value for key, value in raw.items() if key not in SWEEP_KEYS}
    base, _ = apply_overrides(base, list(overrides))
    grid = _mapping_of_lists(raw.get("grid"), "grid", path)
    zipped = _mapping_of_lists(raw.get("zip"), "zip", path)
    lengths = {len(values) for values in zipped.values()}
    if len(lengths) > 1:
        detail = ", ".join(f"{key} has {len(values)}" for key, values in zipped.items())
        raise UsageError(f"{path.name}: zip: the lists must have one length ({detail})")
    seeds = _seeds(raw.get("seeds"), base, path)
    for key in (*grid, *zipped):
        if key in ("seed",):
            raise UsageError(f"{path.name}: grid/zip: vary the seed with 'seeds:', not {key}")
    overlap = set(grid) & set(zipped)
    if overlap:
        raise UsageError(f"{path.name}: {sorted(overlap)[0]}: in both grid and zip")

    zip_rows = [dict(zip(zipped, row)) for row in zip(*zipped.values())] if zipped else [{}]
    cells = [dict(zip(grid, values)) for values in itertools.product(*grid.values())] if grid else [{}]
    runs: list[PlannedRun] = []
    seen: dict[str, dict] = {}
    for cell in cells:
        for zip_row in zip_rows:
            for seed in seeds:
                varied = {**cell, **zip_row, "seed": seed}
                data = with_values(base, varied, path.name)
                label = ", ".join(f"{k}={v}" for k, v in varied.items())
                config = parse_config(data, f"{path.name} [{label}]")
                ids = {arm: run_id(config, arm) for arm in config.arm_names}
                if all(rid in seen for rid in ids.values()):
                    rid = next(iter(ids.values()))
                    raise UsageError(
                        f"{path.name}: [{label}] and [{', '.join(f'{k}={v}' for k, v in seen[rid].items())}] "
                        f"give the same run {rid}: a varied key changes nothing that identifies a run"
                    )
                # An arm that does not read the varied key (compression.imp_budget for all but imp)
                # is one run, shared by the configurations: planned once.
                for arm, rid in ids.items():
                    if rid not in seen:
                        seen[rid] = varied
                        runs.append(PlannedRun(run_id=rid, arm=arm, config=config, raw=data, varied=varied))
    tune = None
    if raw.get("tune") is not None:
        tune = parse_tune(
            raw["tune"], path, base, cells=(*grid, *zipped), first_seed=seeds[0], arms=runs[0].config.arm_names
        )
    launcher = parse_launcher(raw["launcher"], f"{path.name}: launcher") if raw.get("launcher") else LauncherSpec()
    return Sweep(
        name=name,
        source=path,
        varied_keys=(*grid, *zipped, "seed"),
        runs=tuple(runs),
        tune=tune,
        launcher=launcher,
        base=base,
    )


def parse_tune(
    raw: Any, path: Path, base: dict, *, cells: tuple[str, ...], first_seed: int, arms: tuple[str, ...]
) -> TuneSpec:
    """The validated ``tune:`` block; every searched value is checked against the run schema."""
    where = f"{path.name}: tune"
    if not isinstance(raw, dict):
        raise UsageError(f"{where}: expected a mapping with params and trials")
    for key in raw:
        if key not in TUNE_KEYS:
            raise UsageError(f"{where}.{key}: unknown key (expected one of {', '.join(TUNE_KEYS)})")
    params_raw = raw.get("params")
    if not isinstance(params_raw, dict) or not params_raw:
        raise UsageError(f"{where}.params: expected a mapping of dotted keys to ranges or choices")
    params = tuple(_tuned_param(str(key), value, f"{where}.params.{key}") for key, value in params_raw.items())
    trials = _number(raw.get("trials"), int)
    if trials is None or trials < 1:
        raise UsageError(f"{where}.trials: expected a positive integer, got {raw.get('trials')!r}")
    per = raw.get("per", list(cells))
    if not isinstance(per, list) or any(key not in cells for key in per):
        raise UsageError(
            f"{where}.per: expected a list of grid/zip keys ({', '.join(cells) or 'none here'}), got {per!r}"
        )
    arm = raw.get("arm")
    if arm is not None and arm not in arms:
        raise UsageError(f"{where}.arm: expected one of this sweep's arms ({', '.join(arms)}), got {arm!r}")
    validation = _number(raw.get("validation", 0.2), float)
    if validation is None or not 0 < validation < 1:
        raise UsageError(f"{where}.validation: expected a fraction in (0, 1), got {raw.get('validation')!r}")
    seed = _number(raw.get("seed", first_seed), int)
    if seed is None or seed < 0:
        raise UsageError(f"{where}.seed: expected a non-negative integer, got {raw.get('seed')!r}")
    metric = raw.get("metric", "test_loss")
    if not isinstance(metric, str):
        raise UsageError(f"{where}.metric: expected a column name, got {metric!r}")
    for param in params:
        if param.key in cells or param.key == "seed":
            raise UsageError(
                f"{where}.params.{param.key}: also varied by grid/zip/seeds; tune a key the sweep keeps fixed"
            )
        for value in param.examples():
            try:
                parse_config(with_values(base, {param.key: value, "task.validation": validation}, path.name), "tune")
            except UsageError as exc:
                detail = str(exc).split(": ", 1)[-1]
                raise UsageError(
                    f"{where}.params.{param.key}: {value!r} makes a bad configuration ({detail})"
                ) from None
    return TuneSpec(params, trials, tuple(per), arm, validation, seed, metric)


def _tuned_param(key: str, value: Any, where: str) -> TunedParam:
    if not isinstance(value, dict):
        raise UsageError(
            f"{where}: expected {{low: L, high: H}} (optionally log: true, int: true) or {{choices: [...]}}"
        )
    if "choices" in value:
        choices = value["choices"]
        if len(value) != 1 or not isinstance(choices, list) or not choices:
            raise UsageError(f"{where}: choices: expected a non-empty list and nothing else, got {value!r}")
        return TunedParam(key, choices=tuple(choices))
    unknown = set(value) - set(RANGE_KEYS)
    if unknown:
        raise UsageError(f"{where}.{sorted(unknown)[0]}: unknown key (expected low, high, log, int or choices)")
    low, high = _number(value.get("low"), float), _number(value.get("high"), float)
    if low is None or high is None or not low < high:
        given = f"low={value.get('low')!r}, high={value.get('high')!r}"
        raise UsageError(f"{where}: expected numbers low < high, got {given}")
    log, integer = bool(value.get("log", False)), bool(value.get("int", False))
    if log and low <= 0:
        raise UsageError(f"{where}: a log range needs low > 0, got {low!r}")
    return TunedParam(
        key, float(low) if not integer else int(low), float(high) if not integer else int(high), log, integer
    )


def _mapping_of_lists(value: Any, key: str, path: Path) -> dict[str, list]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UsageError(f"{path.name}: {key}: expected a mapping of dotted keys to lists")
    for name, values in value.items():
        if not isinstance(values, list) or not values:
            raise UsageError(f"{path.name}: {key}.{name}: expected a non-empty list of values, got {values!r}")
    return {str(name): list(values) for name, values in value.items()}


def _seeds(value: Any, base: dict, path: Path) -> list[int]:
    if value is None:
        seed = base.get("seed", 0)
        number = _number(seed, int)
        return [seed if number is None else number]  # a seed that is no number: parse_config says so
    if isinstance(value, list):
        seeds = [_number(s, int) for s in value]
        if not seeds or any(s is None or s < 0 for s in seeds):
            raise UsageError(f"{path.name}: seeds: expected non-negative integers, got {value!r}")
        if len(set(seeds)) != len(seeds):
            raise UsageError(f"{path.name}: seeds: a seed is listed twice: {value}")
        return seeds
    count = _number(value, int)
    if count is None:
        raise UsageError(f"{path.name}: seeds: expected a count or a list of integers, got {value!r}")
    if count < 1:
        raise UsageError(f"{path.name}: seeds: a count must be at least 1, got {value}")
    return list(range(count))


def _number(value: Any, kind: type) -> int | float | None:
    """``value`` read as the run schema reads a number of type ``kind`` (a quoted number is that
    number); None when it is not one."""
    try:
        return coerce(value, kind)
    except TypeError:
        return None
