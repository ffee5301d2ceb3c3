"""Experiment ``attention`` (E6): one causal multi-head attention layer on in-context regression of
piecewise-linear functions; its heads compressed by moment matching vs random heads."""

from __future__ import annotations

import torch

from harness.config import Config
from harness.data import load_task
from harness.experiments.common import ArmResult, OnRecord, Seeds
from harness.experiments.units import run_units
from harness.models import init_attention

# Evaluation holds about heads * tokens * head_dim * 3 floats per example; keep a chunk near this.
EVAL_FLOATS = 1 << 24


def run(
    config: Config, arms: tuple[str, ...], device: torch.device, on_record: OnRecord | None = None
) -> dict[str, ArmResult]:
    seeds = Seeds.of(config)
    data = load_task(config.task, seeds.data)
    model = config.model
    layer = init_attention(
        model.heads,
        model.head_dim,
        token_dim=1,
        outputs=data.n_outputs,
        seed=seeds.init,
        init=model.init,
        init_range=model.init_range,
    )
    chunk_rows = max(1, EVAL_FLOATS // (model.heads * data.n_inputs * model.head_dim * 3))
    return run_units(config, data, layer, arms, device, on_record, chunk_rows)
