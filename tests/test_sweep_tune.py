"""``tune:``: validation on load, the validation split, the search, its resumption, and the final runs."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pandas as pd
import pytest

from harness.config import TaskConfig, run_id
from harness.config.sweep_spec import load_sweep
from harness.data import load_task
from harness.errors import UsageError
from harness.sweep.tune import tune_sweep, tuning_cells

SPEC = """\
    name: tuned
    experiment: data
    arms: [original, moment]
    task: {name: teacher, n_test: 300}
    model: {width: 10}
    compression: {k: 2, size: "4*d^0.5"}
    train: {optimizer: adamw, lr: 0.003, steps: 30, batch_size: 32, eval_every: 15}
    grid:
      task.n_train: [96, 160]
    seeds: 2
"""
TUNE = """\
    tune:
      params:
        train.lr: {low: 1.0e-4, high: 0.3, log: true}
      trials: 3
      arm: original
"""


def write(tmp_path, text: str):
    path = tmp_path / "tuned.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_the_validation_split_is_extra_training_distribution_points_not_the_test_split():
    held = load_task(TaskConfig(name="teacher", n_train=100, n_test=50, validation=0.2), seed=3)
    longer = load_task(TaskConfig(name="teacher", n_train=120, n_test=50), seed=3)
    assert held.x_train.shape[0] == 100 and held.x_test.shape[0] == 20
    np.testing.assert_array_equal(held.x_train, longer.x_train[:100])
    np.testing.assert_array_equal(held.x_test, longer.x_train[100:])
    np.testing.assert_array_equal(held.y_test, longer.y_train[100:])  # noisy labels, as in training
    assert not np.isin(held.x_test, longer.x_test).any()


@pytest.mark.parametrize(
    "block, message",
    [
        ("tune: 5\n", r"tuned.yaml: tune: expected a mapping"),
        ("tune:\n      trials: 3\n", r"tune.params: expected a mapping"),
        (
            "tune:\n      params: {train.lr: {low: 1, high: 0.1}}\n      trials: 3\n",
            r"tune.params.train.lr: expected numbers low < high",
        ),
        (
            "tune:\n      params: {train.lr: {low: 0, high: 0.1, log: true}}\n      trials: 3\n",
            r"a log range needs low > 0",
        ),
        (
            "tune:\n      params: {train.lrr: {low: 0.1, high: 0.2}}\n      trials: 3\n",
            r"tune.params.train.lrr: 0.1 makes a bad configuration \(.*unknown key \(did you mean train.lr\?\)\)",
        ),
        (
            "tune:\n      params: {train.optimizer: {choices: [adam, lion]}}\n      trials: 3\n",
            r"tune.params.train.optimizer: 'lion' makes a bad configuration",
        ),
        (
            "tune:\n      params: {task.n_train: {low: 10, high: 20, int: true}}\n      trials: 3\n",
            r"tune.params.task.n_train: also varied by grid",
        ),
        (
            "tune:\n      params: {train.lr: {low: 0.1, high: 0.2}}\n      trials: 0\n",
            r"tune.trials: expected a positive integer",
        ),
        (
            "tune:\n      params: {train.lr: {low: 0.1, high: 0.2}}\n      trials: 2\n      arm: kmeans\n",
            r"tune.arm: expected one of this sweep's arms \(original, moment\)",
        ),
        (
            "tune:\n      params: {train.lr: {low: 0.1, high: 0.2}}\n      trials: 2\n      per: [model.width]\n",
            r"tune.per: expected a list of grid/zip keys \(task.n_train\)",
        ),
        (
            "tune:\n      params: {train.lr: {low: 0.1, high: 0.2}}\n      trials: 2\n      validation: 1.5\n",
            r"tune.validation: expected a fraction in \(0, 1\)",
        ),
        (
            "tune:\n      params: {train.lr: {low: 0.1, high: 0.2}}\n      trials: 2\n      budget: 9\n",
            r"tune.budget: unknown key",
        ),
    ],
)
def test_bad_tune_blocks_give_one_line_errors_naming_the_key(tmp_path, block, message):
    with pytest.raises(UsageError, match=message) as caught:
        load_sweep(write(tmp_path, SPEC + "    " + block))
    assert "\n" not in str(caught.value)


def test_tuning_picks_each_cells_best_trial_resumes_and_fixes_the_final_runs(tmp_path):
    sweep = load_sweep(write(tmp_path, SPEC + TUNE))
    out = tmp_path / "results"
    storage = str(out / "queue.journal")
    assert [(cell.values, cell.arm) for cell in tuning_cells(sweep)] == [
        ((("task.n_train", 96),), "original"),
        ((("task.n_train", 160),), "original"),
    ]

    tuned, best = tune_sweep(sweep, out, storage, device="cpu")

    trials = pd.read_parquet(out / "tune" / "runs.parquet")
    assert len(trials) == 2 * 3 and set(trials["arm"]) == {"original"} and set(trials["status"]) == {"done"}
    assert set(trials["task.validation"]) == {0.2} and set(trials["seed"]) == {0}
    chosen = json.loads((out / "tune" / "best.json").read_text())["cells"]
    for cell, result in zip(chosen, best):
        rows = trials[trials["task.n_train"] == cell["cell"]["task.n_train"]]
        winner = rows.loc[rows["test_loss"].idxmin()]
        assert cell["params"]["train.lr"] == pytest.approx(winner["train.lr"], rel=1e-12)
        assert cell["test_loss"] == pytest.approx(winner["test_loss"], rel=1e-12)
        assert result.params == cell["params"]

    lr_of = {cell["cell"]["task.n_train"]: cell["params"]["train.lr"] for cell in chosen}
    assert len(tuned.runs) == len(sweep.runs)
    for before, after in zip(sweep.runs, tuned.runs):
        assert after.arm == before.arm and after.config.seed == before.config.seed
        assert after.config.train.lr == lr_of[after.config.task.n_train]  # the arm shares the original's best
        assert after.config.task.validation == 0.0  # final runs are measured on the test split
        assert after.run_id == run_id(after.config, after.arm) != before.run_id

    again, _ = tune_sweep(sweep, out, storage, device="cpu")  # a rerun adds no trial, changes nothing
    assert len(pd.read_parquet(out / "tune" / "runs.parquet")) == len(trials)
    assert [run.run_id for run in again.runs] == [run.run_id for run in tuned.runs]


def test_cells_may_be_keyed_by_list_values(tmp_path):
    text = SPEC.replace("    arms: [original, moment]\n", "").replace(
        "    grid:\n      task.n_train: [96, 160]\n",
        "    zip:\n      arms: [[original], [original, moment]]\n      task.n_train: [96, 160]\n",
    )
    sweep = load_sweep(write(tmp_path, text + TUNE.replace("      arm: original\n", "")))
    cells = [(dict(cell.values), cell.arm) for cell in tuning_cells(sweep)]
    assert cells == [
        ({"arms": ["original"], "task.n_train": 96}, "original"),
        ({"arms": ["original", "moment"], "task.n_train": 160}, "original"),
        ({"arms": ["original", "moment"], "task.n_train": 160}, "moment"),
    ]
