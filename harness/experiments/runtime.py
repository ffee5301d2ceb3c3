"""Experiment ``runtime`` (E5): how long compressing d uniform points in [-1, 1]^m takes.

The objects are E1's (task ``symmetric``; its function is not evaluated). Each arm records the
compression's wall time (``compress_seconds``, validation and error measurement excluded), the
kept size and the moment error. On a CUDA device the moment arm's linear algebra runs there.
Each arm's method is run once untimed first (``warm_up_compression``). On a CPU the moment arm
runs torch on one thread (faster for its many small operations); k-means uses scikit-learn's
default threads.
"""

from __future__ import annotations

import torch

from harness.config import Config
from harness.data.symmetric import symmetric_problem
from harness.experiments.common import ArmResult, OnRecord, Seeds, compress_objects, warm_up_compression


def run(
    config: Config, arms: tuple[str, ...], device: torch.device, on_record: OnRecord | None = None
) -> dict[str, ArmResult]:
    seeds, task = Seeds.of(config), config.task
    objects, _ = symmetric_problem(task.n_train, task.input_dim, task.probes, seeds.data)
    warm_up_compression(arms, config.compression, task.input_dim, device)
    results = {}
    for arm in arms:
        result = compress_objects(objects, arm, config.compression, config.compression.size, seeds.compression, device)
        record = {
            "step": 0,
            "compress_seconds": result.seconds,
            "moment_error": result.moment_error,
            "d_eff": result.size,
        }
        if on_record is not None:
            on_record(arm, record)
        summary = {
            "d": len(objects),
            "d_eff": result.size,
            "k": config.compression.k,
            "compress_seconds": result.seconds,
            "moment_error": result.moment_error,
            "clamped": result.clamped,
        }
        results[arm] = ArmResult(arm, "done", [record], summary)
    return results
