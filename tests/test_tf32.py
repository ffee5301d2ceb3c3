"""TF32: float32 CUDA matrix products in TensorFloat-32 only when ``train.tf32`` asks, whatever the
process was set to, and the setting a run got in its results row."""

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from harness.cli import main
from harness.config import TrainConfig, flatten, parse_config
from harness.device import float32_matmuls, tf32_in_effect
from harness.experiments import runner
from harness.train import Arm, BatchSampler, mean_loss, squared_error, train_side_by_side


@pytest.fixture
def process_allows_tf32():
    """The process set to TF32 (as a library or a user's start-up code may leave it)."""
    previous = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = previous


class _FlagRecorder(nn.Linear):
    """A linear model that notes the TF32 flags each time it runs."""

    def __init__(self) -> None:
        super().__init__(2, 1, dtype=torch.float64)
        self.seen: list[tuple[bool, bool]] = []

    def forward(self, x):
        self.seen.append((torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32))
        return super().forward(x)


@pytest.mark.parametrize("tf32", [False, True])
def test_training_and_evaluation_run_with_the_runs_own_tf32_setting(process_allows_tf32, tf32):
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = not tf32
    model = _FlagRecorder()
    x, y = torch.randn(8, 2, dtype=torch.float64), torch.randn(8, 1, dtype=torch.float64)
    arm = Arm("a", model, x, y, BatchSampler(np.ones(8), 4, "proportional", seed=0))

    def evaluate(live):
        return {a.name: {"train_loss": mean_loss(squared_error, a.model(a.x), a.y)} for a in live}

    train = TrainConfig(optimizer="sgd", lr=0.1, steps=4, batch_size=4, eval_every=2, tf32=tf32)
    train_side_by_side([arm], train, 4, squared_error, evaluate, epoch_size=8)
    assert len(model.seen) == 4 + 3 and set(model.seen) == {(tf32, tf32)}
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (not tf32, not tf32)


def test_float32_matmuls_restores_the_previous_setting_after_an_error(process_allows_tf32):
    with pytest.raises(RuntimeError), float32_matmuls(False):
        assert not torch.backends.cuda.matmul.allow_tf32
        raise RuntimeError("inside")
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32


def test_tf32_takes_effect_only_in_float32_on_a_cuda_device_with_tf32_units(monkeypatch):
    capability = {"cuda:0": (8, 0), "cuda:1": (7, 5)}
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device: capability[str(device)])
    ampere, turing = torch.device("cuda:0"), torch.device("cuda:1")
    assert tf32_in_effect(ampere, torch.float32, True)
    assert not tf32_in_effect(ampere, torch.float32, False)
    assert not tf32_in_effect(ampere, torch.float64, True)
    assert not tf32_in_effect(turing, torch.float32, True)
    assert not tf32_in_effect(torch.device("cpu"), torch.float32, True)


def test_a_cpu_runs_row_records_the_request_and_no_tf32_column(tmp_path):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(
        "experiment: width\ntask: {name: teacher, n_train: 60, n_test: 30}\nmodel: {width: 12}\n"
        "compression: {k: 1, size: 6}\ntrain: {steps: 2, batch_size: 20, eval_every: 1, tf32: true}\n"
        "arms: [original]\n"
    )
    out = tmp_path / "results"
    assert main(["run", str(spec), "--out", str(out), "--device", "cpu"]) == 0
    row = pd.read_parquet(out / "runs.parquet").iloc[0]
    assert bool(row["train.tf32"]) is True and "tf32" not in row  # asked for; a CPU has no TF32


@pytest.mark.parametrize(
    ("tf32", "dtype", "got"), [(True, "float32", True), (False, "float32", False), (True, "float64", False)]
)
def test_a_cuda_runs_row_records_whether_it_got_tf32(monkeypatch, tf32, dtype, got):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device: (9, 0))
    config = parse_config({"experiment": "data", "train": {"steps": 2, "tf32": tf32, "dtype": dtype}})
    flat = flatten(config)
    row = runner._row(config, "original", "id", "done", {}, torch.device("cuda", 0), flat)
    assert row["tf32"] is got and row["train.tf32"] is tf32 and row["device"] == "cuda:0"
