"""Experiment ``data`` (E2, E4a): train one student on the full dataset and on its compressions.

Arms: ``original`` (all d points), ``moment`` (moment compression of the points (x_i, y_i), kept
points weighted), ``random`` (d' uniform points, weights d/d') and ``kmeans`` (weighted centroids).
Every arm starts from the same student initialisation and runs the same number of steps
(``Config.total_steps``: epochs count passes over the *original* d points), with its own sampler
seeded alike: "the same batch sequence length", since arms with different training sets cannot
see the same indices. Records carry ``train_loss`` (the arm's own weighted training loss),
``full_train_loss`` (on all d original points) and ``test_loss``.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from harness.compression import compress
from harness.config import Config
from harness.data import load_task
from harness.experiments.common import (
    ArmResult,
    OnRecord,
    Seeds,
    dtype_of,
    final_summary,
    method_of,
    moment_options,
    tensor,
)
from harness.models import init_mlp
from harness.train import (
    Arm,
    BatchSampler,
    accuracy,
    loss_for,
    mean_loss,
    predict,
    predict_together,
    train_side_by_side,
)
from harness.train.losses import chunk_rows_for


def run(
    config: Config, arms: tuple[str, ...], device: torch.device, on_record: OnRecord | None = None
) -> dict[str, ArmResult]:
    seeds, dtype, train = Seeds.of(config), dtype_of(config), config.train
    data = load_task(config.task, seeds.data)
    d, n_inputs = len(data.x_train), data.n_inputs
    model = config.model
    chunk_rows = chunk_rows_for(model.width)
    student = init_mlp(
        [n_inputs] + [model.width] * model.depth + [data.n_outputs],
        seed=seeds.init,
        init=model.init,
        init_range=model.init_range,
    )
    loss_fn = loss_for(data.classification)
    full_x, full_y = tensor(data.x_train, device, dtype), tensor(data.y_train, device, dtype)
    x_test, y_test = tensor(data.x_test, device, dtype), tensor(data.y_test, device, dtype)

    trained, facts = [], {}
    for arm in arms:
        if arm == "original":
            x, y, weights = data.x_train, data.y_train, np.ones(d)
            facts[arm] = {"d_eff": d, "k": None, "compress_seconds": None, "moment_error": None, "clamped": None}
        else:
            points = torch.as_tensor(data.objects, device=device) if arm == "moment" else data.objects
            result = compress(
                points,
                k=config.compression.k,
                size=config.compression.size,
                method=method_of(arm, config.compression),
                seed=seeds.compression,
                **moment_options(arm, config.compression),
            )
            if result.indices is not None:
                x, y = data.x_train[result.indices], data.y_train[result.indices]
            else:
                x, y = result.points[:, :n_inputs], result.points[:, n_inputs:]
            weights = result.weights
            facts[arm] = {
                "d_eff": result.size,
                "k": config.compression.k,
                "compress_seconds": result.seconds,
                "moment_error": result.moment_error,
                "clamped": result.clamped,
            }
        sampler = BatchSampler(weights, train.batch_size, train.sampling, seeds.batches, device)
        trained.append(
            Arm(
                arm,
                copy.deepcopy(student).to(device=device, dtype=dtype),
                tensor(x, device, dtype),
                tensor(y, device, dtype),
                sampler,
                weights=tensor(weights, device, torch.float64),
            )
        )

    def evaluate(live: list[Arm]) -> dict[str, dict]:
        records = {}
        # The test set and the full training set are every arm's: the arms (one student's copies)
        # are evaluated on them as one stack.
        models = [arm.model for arm in live]
        shared = zip(predict_together(models, full_x, chunk_rows), predict_together(models, x_test, chunk_rows))
        for arm, (full_out, test_out) in zip(live, shared):
            records[arm.name] = {
                "train_loss": mean_loss(loss_fn, predict(arm.model, arm.x, chunk_rows), arm.y, arm.weights),
                "full_train_loss": mean_loss(loss_fn, full_out, full_y),
                "test_loss": mean_loss(loss_fn, test_out, y_test),
            }
            if data.classification:
                records[arm.name]["test_accuracy"] = accuracy(test_out, y_test)
        return records

    train_side_by_side(
        trained,
        train,
        config.total_steps(),
        loss_fn,
        evaluate,
        epoch_size=d,
        on_record=on_record,
        description=f"data {'/'.join(arms)}",
    )
    results = {}
    for arm in trained:
        summary = {
            "d": d,
            "width": model.width,
            "width_eff": model.width,
            "train_seconds": arm.seconds,
            **facts[arm.name],
            **final_summary(arm.history),
        }
        last = arm.history[-1] if arm.history else {}
        summary["full_train_loss"] = last.get("full_train_loss")
        results[arm.name] = ArmResult(arm.name, arm.status, arm.history, summary)
    return results
