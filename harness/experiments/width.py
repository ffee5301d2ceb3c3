"""Experiment ``width`` (E3, E4b): a ReLU MLP and its compressed, random and magnitude-pruned twins."""

from __future__ import annotations

import torch

from harness.config import Config
from harness.data import load_task
from harness.experiments.common import ArmResult, OnRecord, Seeds
from harness.experiments.units import run_units
from harness.models import init_mlp
from harness.train.losses import chunk_rows_for


def run(
    config: Config, arms: tuple[str, ...], device: torch.device, on_record: OnRecord | None = None
) -> dict[str, ArmResult]:
    seeds = Seeds.of(config)
    data = load_task(config.task, seeds.data)
    model = config.model
    sizes = [data.n_inputs] + [model.width] * model.depth + [data.n_outputs]
    original = init_mlp(sizes, seed=seeds.init, init=model.init, init_range=model.init_range)
    return run_units(config, data, original, arms, device, on_record, chunk_rows_for(model.width))
