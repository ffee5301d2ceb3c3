"""Synthetic truth for the analysis tests: laws with known parameters, seeds with known noise, and
small results folders laid out like a sweep's (runs.parquet + runs/<run_id>/...)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.forms import log_model
from analysis.load import Series

# Noise of one seed in log loss, as our sweeps show (a few percent).
SEED_SD = 0.03


def power_law(x, A=2.0, alpha=0.3):
    return A * np.asarray(x, float) ** -alpha


def power_law_offset(x, L0=0.5, A=2.0, alpha=0.5):
    return L0 + A * np.asarray(x, float) ** -alpha


def stretched_exp(x, L0=0.2, A=3.0, b=0.5, gamma=0.3):
    return L0 + A * np.exp(-b * np.asarray(x, float) ** gamma)


def nested_theta_law(theta, x):
    """Loss of the nested family with internal parameters theta = (L0, c, a, gamma) at x (x_ref = x[0])."""
    x = np.asarray(x, float)
    return np.exp(log_model(np.asarray(theta, float), np.log(x / x[0])))


def draws(
    loss: np.ndarray, x: np.ndarray, seeds: int, n_draws: int, rng: np.random.Generator, sd: float = SEED_SD
) -> Series:
    """n_draws independent data sets of `seeds` runs at each x around the law `loss` (J,), as one batched Series."""
    run_x = np.repeat(np.arange(len(x)), seeds)
    log_y = np.log(loss)[run_x][None, :] + rng.normal(0.0, sd, (n_draws, len(run_x)))
    return Series({}, "synthetic", np.asarray(x, float), run_x, log_y)


def runs_table(
    laws: dict, x: np.ndarray, seeds: int, rng: np.random.Generator, sd: float = SEED_SD, x_col: str = "d"
) -> pd.DataFrame:
    """One row per run: arm, seed, x and test_loss with log-normal seed noise, status done."""
    rows = []
    for arm, law in laws.items():
        for xi in x:
            for seed in range(seeds):
                loss = float(law(xi)) * float(np.exp(rng.normal(0.0, sd)))
                rows.append(
                    {
                        "run_id": f"{arm}-{int(xi)}-{seed}",
                        "experiment": "E4a",
                        "arm": arm,
                        "seed": seed,
                        x_col: float(xi),
                        "test_loss": loss,
                        "status": "done",
                    }
                )
    return pd.DataFrame(rows)


def results_folder(root: Path, table: pd.DataFrame, failed: int = 0, trajectories: bool = True) -> Path:
    """Write a results folder: runs.parquet and runs/<id>/{config,status,summary}.json (+ metrics.jsonl).

    The last `failed` runs are marked failed with an error in status.json and no loss.
    """
    table = table.copy()
    if failed:
        table.loc[table.index[-failed:], "status"] = "failed"
        table.loc[table.index[-failed:], "test_loss"] = np.nan
    root.mkdir(parents=True, exist_ok=True)
    table.to_parquet(root / "runs.parquet")
    for _, run in table.iterrows():
        folder = root / "runs" / run["run_id"]
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps({"arm": run["arm"], "seed": int(run["seed"])}))
        status = {"status": run["status"]}
        if run["status"] == "failed":
            status["error"] = (
                f'Traceback (most recent call last):\n  File "train.py", line 1, in <module>\n'
                f"RuntimeError: diverged in {run['run_id']}\n"
            )
        (folder / "status.json").write_text(json.dumps(status))
        (folder / "summary.json").write_text(
            json.dumps({"test_loss": None if pd.isna(run["test_loss"]) else run["test_loss"]})
        )
        if trajectories and run["status"] == "done":
            final = run["test_loss"]
            lines = [
                {
                    "step": s,
                    "epoch": s / 10,
                    "train_loss": final * (1 + np.exp(-s / 50)),
                    "test_loss": final * (1 + 2 * np.exp(-s / 50)),
                }
                for s in range(0, 301, 50)
            ]
            (folder / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return root
