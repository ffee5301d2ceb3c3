"""Sweep specs: a base run configuration plus ``grid:``, ``zip:``, ``seeds:`` and ``tune:``.

A sweep file is a run configuration (the schema of ``harness.config``) with a few extra top-level
keys::

    name: smoke                  # the sweep's name (default: the file's stem)
    experiment: data             # ... any run configuration keys: the base of every run
    grid:                        # cartesian product over dotted keys
      task.n_train: [256, 512, 1024]
    zip:                         # lists varied together (all of one length)
      compression.size: [16, 23, 32]
      train.lr: [0.003, 0.002, 0.001]
    seeds: 3                     # a count (0, 1, 2) or a list of seeds
    tune:                        # optional: see harness.sweep.tune
      ...

Every (grid cell x zip row x seed) is one configuration; every arm of it one run, named by
``harness.config.run_id``. Errors name the file and the key.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.config import Config, apply_overrides, parse_config, run_id
from harness.errors import UsageError

SWEEP_KEYS = ("name", "grid", "zip", "seeds", "tune")


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
    tune: dict | None = None

    def by_id(self) -> dict[str, PlannedRun]:
        return {run.run_id: run for run in self.runs}


def load_sweep(path: str | Path, overrides: tuple[str, ...] | list[str] = ()) -> Sweep:
    """Read, validate and expand a sweep file; ``overrides`` (``key=value``) apply to the base."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise UsageError(f"{path.name}: not valid YAML{f' (line {mark.line + 1})' if mark else ''}") from None
    if not isinstance(raw, dict):
        raise UsageError(f"{path.name}: expected a mapping of keys to values")
    return expand_sweep(raw, path, overrides)


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
                data = _with_values(base, varied, path)
                label = ", ".join(f"{k}={v}" for k, v in varied.items())
                config = parse_config(data, f"{path.name} [{label}]")
                for arm in config.arm_names:
                    rid = run_id(config, arm)
                    if rid in seen:
                        raise UsageError(
                            f"{path.name}: [{label}] and [{', '.join(f'{k}={v}' for k, v in seen[rid].items())}] "
                            f"give the same run {rid}: a varied key changes nothing that identifies a run"
                        )
                    seen[rid] = varied
                    runs.append(PlannedRun(run_id=rid, arm=arm, config=config, raw=data, varied=varied))
    tune = raw.get("tune")
    if tune is not None and not isinstance(tune, dict):
        raise UsageError(f"{path.name}: tune: expected a mapping")
    return Sweep(name=name, source=path, varied_keys=(*grid, *zipped, "seed"), runs=tuple(runs), tune=tune)


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
        return [int(base.get("seed", 0))]
    if isinstance(value, bool) or not isinstance(value, (int, list)):
        raise UsageError(f"{path.name}: seeds: expected a count or a list of integers, got {value!r}")
    if isinstance(value, int):
        if value < 1:
            raise UsageError(f"{path.name}: seeds: a count must be at least 1, got {value}")
        return list(range(value))
    if not value or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value):
        raise UsageError(f"{path.name}: seeds: expected non-negative integers, got {value!r}")
    if len(set(value)) != len(value):
        raise UsageError(f"{path.name}: seeds: a seed is listed twice: {value}")
    return list(value)


def _with_values(base: dict, values: dict, path: Path) -> dict:
    """A deep copy of ``base`` with each dotted key set (values are kept as their YAML types)."""
    data = json.loads(json.dumps(base))
    for key, value in values.items():
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise UsageError(f"{path.name}: {key}: {part} is not a section")
            node = child
        node[leaf] = value
    return data
