"""Read results tables and turn their runs into series: per group, the seeds at each distinct x.

A source is a results folder (``runs.parquet`` inside, per-run files under ``runs/<run_id>/``), a
Parquet or CSV file, or ``wandb:ENTITY/PROJECT`` (read through ``wandb.Api``, online only).
Seeds at one x are replicates: a series keeps every run's log loss and which x it belongs to, so
fits use the per-x means and the bootstrap resamples seeds within each x.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from harness.errors import UsageError
from harness.tracking.store import TABLE, is_results_folder, table_path

WANDB_PREFIX = "wandb:"
X_CANDIDATES = ("d_eff", "width_eff", "d", "width")
MIN_DISTINCT_X = 3
# Plain columns that older results tables repeated a configuration value in, and the dotted
# column that holds it (harness/experiments/runner.py writes only the dotted one).
COPIED_COLUMNS = {"lr": "train.lr", "optimizer": "train.optimizer", "m": "task.input_dim"}


@dataclass(frozen=True)
class Source:
    """A loaded runs table; ``name`` is the sweep's name (folder or W&B project), ``results_dir`` holds runs/<id>/."""

    table: pd.DataFrame
    name: str
    description: str
    results_dir: Path | None
    default_out: Path


@dataclass(frozen=True)
class Series:
    """The runs of one group: distinct x (J,) ascending, each run's x index (N,) and log loss (..., N).

    A leading batch axis on ``log_y`` holds many data sets with the same design (used to calibrate).
    """

    group: dict
    label: str
    x: np.ndarray
    run_x: np.ndarray
    log_y: np.ndarray

    @cached_property
    def n(self) -> np.ndarray:
        """Seeds at each x."""
        return np.bincount(self.run_x, minlength=len(self.x)).astype(float)

    @cached_property
    def x_ref(self) -> float:
        return float(self.x[0])

    @cached_property
    def t(self) -> np.ndarray:
        """ln(x / x_ref), the coordinate the forms are fitted in."""
        return np.log(self.x / self.x_ref)

    @cached_property
    def indicator(self) -> np.ndarray:
        """(N, J) one-hot of each run's x."""
        return np.eye(len(self.x))[self.run_x]

    def means(self, log_y: np.ndarray | None = None) -> np.ndarray:
        """Mean log loss at each x, (..., J)."""
        return (self.log_y if log_y is None else log_y) @ self.indicator / self.n


def read_source(spec: str | os.PathLike) -> Source:
    """Load a results folder, a .parquet/.csv table or ``wandb:ENTITY/PROJECT``."""
    text = str(spec)
    if text.startswith(WANDB_PREFIX):
        return _read_wandb(text[len(WANDB_PREFIX) :])
    path = Path(text)
    if path.is_dir():
        for table_file in (table_path(path), path / "runs.csv"):
            if table_file.is_file():
                table = _read_table(table_file)
                return Source(table, path.resolve().name, str(table_file), path, path / "analysis")
        raise UsageError(f"{path}: no {TABLE} (or runs.csv) in this folder")
    if not path.exists():
        raise UsageError(f"{path}: no such file or folder")
    table = _read_table(path)
    results_dir = path.parent if is_results_folder(path.parent) else None
    return Source(table, path.resolve().parent.name, str(path), results_dir, path.parent / f"{path.stem}-analysis")


def _read_table(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            return without_copied_columns(pd.read_parquet(path))
        if suffix == ".csv":
            return without_copied_columns(pd.read_csv(path))
    except Exception as exc:  # pyarrow and the CSV parser raise many types; all mean "unreadable"
        raise UsageError(
            f"{path}: cannot read table ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        ) from exc
    raise UsageError(f"{path}: unknown table format {suffix or '(no suffix)'}; use .parquet or .csv")


def _read_wandb(project_path: str) -> Source:
    if project_path.count("/") != 1 or not all(project_path.split("/")):
        raise UsageError(f"wandb:{project_path}: expected wandb:ENTITY/PROJECT")
    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode in ("offline", "disabled", "dryrun"):
        raise UsageError(f"wandb:{project_path}: reading runs from W&B needs online mode (WANDB_MODE is {mode})")
    try:
        import wandb

        runs = list(wandb.Api().runs(project_path))
    except Exception as exc:  # network, auth and API errors all end here
        raise UsageError(f"wandb:{project_path}: cannot read runs ({type(exc).__name__}: {exc})") from exc
    rows = []
    for run in runs:
        row = {k: v for k, v in dict(run.config).items() if np.isscalar(v)}
        row.update({k: v for k, v in dict(run.summary).items() if np.isscalar(v) and not k.startswith("_")})
        row.setdefault("run_id", run.id)
        row.setdefault(
            "status",
            "done" if run.state == "finished" else "failed" if run.state in ("failed", "crashed") else run.state,
        )
        rows.append(row)
    if not rows:
        raise UsageError(f"wandb:{project_path}: the project has no runs")
    project = project_path.split("/")[1]
    return Source(
        without_copied_columns(pd.DataFrame(rows)),
        project,
        f"W&B project {project_path}",
        None,
        Path(f"{project}-analysis"),
    )


def without_copied_columns(table: pd.DataFrame) -> pd.DataFrame:
    """An older results table with the columns of a current one: each plain column of COPIED_COLUMNS
    dropped where its dotted column is present and agrees with it on every row that sets it (a
    table whose ``lr`` means something else keeps it)."""
    copies = []
    for plain, dotted in COPIED_COLUMNS.items():
        if plain in table.columns and dotted in table.columns:
            rows = table[plain].notna()
            if (table.loc[rows, plain] == table.loc[rows, dotted]).all():
                copies.append(plain)
    return table.drop(columns=copies)


def choose_x(table: pd.DataFrame, by: list[str]) -> str:
    """The first of d_eff, width_eff, d, width that varies within a group: the default x column."""
    missing = [c for c in by if c not in table.columns]
    if missing:
        raise UsageError(
            f"missing grouping column(s) {', '.join(repr(c) for c in missing)} (has: "
            f"{', '.join(map(str, table.columns))})"
        )
    for col in X_CANDIDATES:
        if col in table.columns:
            spread = table.groupby(by, dropna=False)[col].nunique() if by else pd.Series([table[col].nunique()])
            if (spread > 1).any():
                return col
    raise UsageError(
        f"no --x given and none of {', '.join(X_CANDIDATES)} varies within a group; name the x column with --x"
    )


def done_runs(table: pd.DataFrame) -> pd.DataFrame:
    """The runs to fit: status 'done' when the table has a status column, else all."""
    return table[table["status"] == "done"] if "status" in table.columns else table


def fittable_runs(table: pd.DataFrame, source: str = "table") -> pd.DataFrame:
    """``done_runs``; a UsageError with the count of each status when there are none."""
    runs = done_runs(table)
    if runs.empty:
        if "status" in table.columns and len(table):
            counts = table["status"].fillna("(none)").astype(str).value_counts()
            found = ", ".join(f"{n} {status}" for status, n in counts.items())
            raise UsageError(f"{source}: no run has status 'done', so there is nothing to fit ({found})")
        raise UsageError(f"{source}: the table has no runs")
    return runs


def clean_runs(
    table: pd.DataFrame, columns: list[str], by: list[str], source: str = "table"
) -> tuple[pd.DataFrame, list[str]]:
    """The done runs with finite values in ``columns`` (made float), and notes on what was dropped.

    Raises UsageError (one line) for a missing column, a non-positive value (fits are in log space)
    or no run left.
    """
    missing = [c for c in [*columns, *by] if c not in table.columns]
    if missing:
        raise UsageError(
            f"{source}: missing column(s) {', '.join(repr(c) for c in missing)} (has: "
            f"{', '.join(map(str, table.columns))})"
        )
    notes: list[str] = []
    runs = fittable_runs(table, source)
    if len(runs) < len(table):
        notes.append(f"{len(table) - len(runs)} of {len(table)} runs are not 'done' and are not fitted")
    values = {c: pd.to_numeric(runs[c], errors="coerce").to_numpy(float) for c in columns}
    finite = np.ones(len(runs), dtype=bool)
    for col, v in values.items():
        bad = np.isfinite(v) & (v <= 0)
        if bad.any():
            where = f", run {runs['run_id'].iloc[np.argmax(bad)]}" if "run_id" in runs.columns else ""
            raise UsageError(
                f"{source}: column {col!r} has {int(bad.sum())} non-positive value(s) (min {v[bad].min():.4g}{where}); "
                "fits are in log space and need values > 0"
            )
        finite &= np.isfinite(v)
    if not finite.all():
        notes.append(
            f"{int((~finite).sum())} done runs have a missing or non-finite {' or '.join(columns)} and are skipped"
        )
    runs = runs.assign(**values)[finite]
    if runs.empty:
        raise UsageError(f"{source}: no done runs with finite {' and '.join(columns)}")
    return runs, notes


def groups(runs: pd.DataFrame, by: list[str]):
    """(group dict, label, rows) for each group of the runs; label 'all' without grouping."""
    parts = runs.groupby(by, dropna=False, sort=True) if by else [((), runs)]
    for key, part in parts:
        key = key if isinstance(key, tuple) else (key,)
        group = {col: _plain(v) for col, v in zip(by, key)}
        yield group, "/".join(str(v) for v in group.values()) or "all", part


def make_series(
    table: pd.DataFrame, x: str, y: str, by: list[str], source: str = "table"
) -> tuple[list[Series], list[str]]:
    """Validate the columns and split the done runs into series; returns them and notes on what was dropped.

    Raises UsageError (one line) for missing columns, non-positive x or y, or no group with enough x.
    """
    runs, notes = clean_runs(table, [x, y], by, source)
    series: list[Series] = []
    for group, label, part in groups(runs, by):
        xs, run_x = np.unique(part[x].to_numpy(), return_inverse=True)
        if len(xs) < MIN_DISTINCT_X:
            notes.append(
                f"group {label}: only {len(xs)} distinct {x} value(s); at least {MIN_DISTINCT_X} are needed, skipped"
            )
            continue
        series.append(Series(group, label, xs, run_x.ravel(), np.log(part[y].to_numpy())))
    if not series:
        raise UsageError(f"{source}: too few points: no group has {MIN_DISTINCT_X} or more distinct {x} values")
    return series, notes


def seed_table(series: list[Series], x: str, y: str) -> pd.DataFrame:
    """Per (group, x): the grouping columns and the group's label (as in fits.csv), x, seeds, mean,
    median and sd of y, and mean and sd of log y."""
    frames = []
    for s in series:
        df = pd.DataFrame({"_j": s.run_x, "log_y": s.log_y, "y": np.exp(s.log_y)})
        agg = df.groupby("_j").agg(
            n_seeds=("y", "size"),
            mean=("y", "mean"),
            median=("y", "median"),
            sd=("y", "std"),
            mean_log=("log_y", "mean"),
            sd_log=("log_y", "std"),
        )
        agg = agg.rename(columns={"mean": f"{y}_mean", "median": f"{y}_median", "sd": f"{y}_sd"})
        clash = [col for col in s.group if col in agg.columns]
        if clash:
            names = ", ".join(map(repr, clash))
            raise UsageError(f"grouping column(s) {names} have the name of a column of seeds.csv; rename them")
        keys = pd.DataFrame({**s.group, "label": s.label, x: s.x[agg.index]}, index=agg.index)
        frames.append(keys.join(agg))
    return pd.concat(frames, ignore_index=True)


def _plain(value):
    """numpy scalars to Python ones, so groups serialise to JSON."""
    return value.item() if isinstance(value, np.generic) else value
