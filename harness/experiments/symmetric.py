"""Experiment ``symmetric`` (E1, E7): the error of a compressed permutation-symmetric function.

d objects and a few probes uniform in [-1, 1]^m; f = (1/d) sum_i mean_a g(<w_i, x_a>) with g the
sigmoid (E1) or 1/(A + .) (E7). Each arm compresses the objects (moment, random subset with
weights d/d', k-means) and records |f' - f|, its relative size, and the compression's time and
moment error. No training: one record per arm.
"""

from __future__ import annotations

import numpy as np
import torch

from harness.config import Config
from harness.data.symmetric import symmetric_problem, symmetric_value
from harness.experiments.common import ArmResult, OnRecord, Seeds, compress_objects, warm_up_compression


def run(
    config: Config, arms: tuple[str, ...], device: torch.device, on_record: OnRecord | None = None
) -> dict[str, ArmResult]:
    seeds, task = Seeds.of(config), config.task
    objects, probes = symmetric_problem(task.n_train, task.input_dim, task.probes, seeds.data)
    d = len(objects)
    exact = symmetric_value(task.function, objects, np.ones(d), probes, d, task.offset)
    warm_up_compression(arms, config.compression, task.input_dim, device)
    results = {}
    for arm in arms:
        result = compress_objects(objects, arm, config.compression, config.compression.size, seeds.compression, device)
        value = symmetric_value(task.function, result.points, result.weights, probes, d, task.offset)
        record = {
            "step": 0,
            "value": value,
            "exact": exact,
            "error": abs(value - exact),
            "relative_error": abs(value - exact) / abs(exact),
            "compress_seconds": result.seconds,
            "moment_error": result.moment_error,
            "d_eff": result.size,
        }
        if on_record is not None:
            on_record(arm, record)
        summary = {
            "d": d,
            "d_eff": result.size,
            "k": config.compression.k,
            "compress_seconds": result.seconds,
            "moment_error": result.moment_error,
            "clamped": result.clamped,
            "error": record["error"],
            "relative_error": record["relative_error"],
        }
        results[arm] = ArmResult(arm, "done", [record], summary)
    return results
