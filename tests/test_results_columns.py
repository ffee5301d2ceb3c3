"""The results table's columns: dotted names hold a run's configuration, plain names what it measured
or used, and no plain column repeats a configuration value; older tables, which did, read like
current ones."""

import warnings
from pathlib import Path

import pandas as pd
import pytest

from analysis.load import COPIED_COLUMNS, read_source, without_copied_columns
from harness.config import flatten, parse_config
from harness.experiments import run_config

PAPER = Path(__file__).resolve().parent.parent / "results" / "paper"
DATA = {
    "experiment": "data",
    "arms": ["original", "moment", "random"],
    "task": {"name": "teacher", "n_train": 256, "n_test": 100},
    "model": {"width": 12, "init": "uniform"},
    "compression": {"k": 2, "size": 40},
    "train": {"optimizer": "adamw", "lr": 0.001, "steps": 4, "batch_size": 128, "eval_every": 2},
}
SYMMETRIC = {
    "experiment": "symmetric",
    "task": {"name": "symmetric", "n_train": 400, "input_dim": 2},
    "compression": {"k": 3, "size": "0.2d"},
}
ATTENTION = {
    "experiment": "attention",
    "task": {"name": "piecewise", "n_train": 64, "n_test": 32},
    "model": {"heads": 30, "head_dim": 2},
    "compression": {"k": 1, "size": 10},
    "train": {"optimizer": "adam", "lr": 0.001, "steps": 2, "batch_size": 16, "eval_every": 1},
}


def fresh_table(raw: dict, out: Path) -> pd.DataFrame:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # size below N(m, k) in these tiny configurations
        run_config(parse_config(raw), out)
    return pd.read_parquet(out / "runs.parquet")


@pytest.mark.parametrize("raw", [DATA, SYMMETRIC, ATTENTION], ids=["data", "symmetric", "attention"])
def test_configuration_values_are_written_once_under_their_dotted_names(raw, tmp_path):
    table = fresh_table(raw, tmp_path)
    config = flatten(parse_config(raw))
    assert not set(COPIED_COLUMNS) & set(table.columns)
    for dotted in COPIED_COLUMNS.values():
        assert (table[dotted] == config[dotted]).all()


def test_plain_columns_that_look_like_copies_carry_their_own_values(tmp_path):
    data = fresh_table(DATA, tmp_path / "data").set_index("arm")
    assert pd.isna(data.loc["original", "k"]) and data.loc["original", "compression.k"] == 2
    assert data.loc["moment", "k"] == 2
    attention = fresh_table(ATTENTION, tmp_path / "attention").set_index("arm")
    assert (attention["width"] == 30).all() and (attention["model.width"] != 30).all()  # heads, not model.width
    epochs = fresh_table(
        {**DATA, "arms": ["original"], "train": {**DATA["train"], "steps": None, "epochs": 1}}, tmp_path / "epochs"
    )
    assert epochs["steps"].tolist() == [2] and epochs["train.steps"].isna().all()  # 256 examples, batches of 128


@pytest.mark.parametrize("folder, raw", [("e4a", DATA), ("e7", SYMMETRIC)])
def test_committed_tables_read_with_the_measured_columns_of_a_fresh_one(folder, raw, tmp_path):
    old = pd.read_parquet(PAPER / folder / "runs.parquet")
    assert set(COPIED_COLUMNS) & set(old.columns)  # written before the copies were dropped
    read = read_source(PAPER / folder).table
    fresh = fresh_table(raw, tmp_path)
    config_keys = set(flatten(parse_config(raw)))
    assert set(read.columns) - config_keys == set(fresh.columns) - config_keys
    assert list(read.columns) == [c for c in old.columns if c not in COPIED_COLUMNS]
    pd.testing.assert_frame_equal(read, old[list(read.columns)])


def test_a_plain_column_is_dropped_only_where_it_copies_its_dotted_one():
    copied = pd.DataFrame({"lr": [None, 0.1], "train.lr": [0.001, 0.1], "test_loss": [1.0, 2.0]})
    assert list(without_copied_columns(copied).columns) == ["train.lr", "test_loss"]
    different = pd.DataFrame({"lr": [0.2, 0.1], "train.lr": [0.001, 0.1]})
    assert list(without_copied_columns(different).columns) == ["lr", "train.lr"]
    alone = pd.DataFrame({"lr": [0.2, 0.1], "test_loss": [1.0, 2.0]})
    assert list(without_copied_columns(alone).columns) == ["lr", "test_loss"]
