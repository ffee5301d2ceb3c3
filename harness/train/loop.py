"""Train several models side by side: the same number of steps, the same schedule, and batches
from a sampler that arms either share (one generator, so one index sequence for all: the width
experiments) or hold each (twins seeded alike: the data experiments, whose arms have different
training sets). An arm whose training loss turns NaN/inf at an evaluation stops there with status
``diverged``; the others go on. Nothing here raises on divergence.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm import tqdm

from harness.config import TrainConfig
from harness.train.losses import LossFn
from harness.train.optim import make_optimizer, make_schedule
from harness.train.sampling import BatchSampler


@dataclass
class Arm:
    """One model being trained on its training set (x, y, weights) with its (possibly shared) sampler.

    The loop fills ``status`` (running -> done | diverged), ``history`` (one record per
    evaluation) and ``seconds`` (time in this arm's training steps, evaluation excluded).
    """

    name: str
    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    sampler: BatchSampler
    weights: torch.Tensor | None = None  # the training set's weights, for evaluation (None: equal)
    status: str = "running"
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0


# Given the arms still running, one record per arm name with at least train_loss and test_loss.
Evaluate = Callable[[list[Arm]], dict[str, dict]]
OnRecord = Callable[[str, dict], None]


def train_side_by_side(arms: list[Arm], train: TrainConfig, steps: int, loss_fn: LossFn, evaluate: Evaluate, *,
                       epoch_size: int, on_record: OnRecord | None = None, description: str = "") -> None:
    """Run ``steps`` optimiser steps on every arm, evaluating at step 0, every ``eval_every`` and the end.

    ``epoch_size`` is the original training set's size: a record's ``epoch`` counts examples seen
    in units of it, for every arm alike.
    """
    optimizers = {arm.name: make_optimizer(arm.model.parameters(), train) for arm in arms}
    schedules = {arm.name: make_schedule(optimizers[arm.name], train, steps) for arm in arms}
    per_step = train.batch_size if train.batch_size is not None else epoch_size

    def record(step: int) -> None:
        record_evaluation(arms, evaluate, step, step * per_step / epoch_size,
                          lambda arm: schedules[arm.name].get_last_lr()[0], on_record)

    record(0)
    for step in tqdm(range(1, steps + 1), desc=description, disable=None, leave=False, mininterval=1.0):
        live = [arm for arm in arms if arm.status == "running"]
        if not live:
            break
        batches: dict[int, tuple] = {}
        for arm in live:
            if id(arm.sampler) not in batches:
                batches[id(arm.sampler)] = arm.sampler.next()
            rows, loss_weights = batches[id(arm.sampler)]
            start = time.perf_counter()
            _step(arm, rows, loss_weights, loss_fn, optimizers[arm.name], train.divide_gradients)
            schedules[arm.name].step()
            if arm.x.is_cuda:
                torch.cuda.synchronize(arm.x.device)
            arm.seconds += time.perf_counter() - start
        if step % train.eval_every == 0 or step == steps:
            record(step)
    for arm in arms:
        if arm.status == "running":
            arm.status = "done"


def record_evaluation(arms: list[Arm], evaluate: Evaluate, step: int, epoch: float, lr_of: Callable[[Arm], float],
                      on_record: OnRecord | None) -> None:
    """Evaluate the running arms and append one record each (step, epoch, lr, then the evaluation's
    values; non-finite values as null). An arm whose training loss is not finite is marked diverged."""
    live = [arm for arm in arms if arm.status == "running"]
    if not live:
        return
    results = evaluate(live)
    for arm in live:
        entry = {"step": step, "epoch": epoch, "lr": lr_of(arm)}
        entry.update(results[arm.name])
        if not math.isfinite(entry["train_loss"]):
            arm.status = "diverged"
        entry = {key: _finite_or_none(value) for key, value in entry.items()}
        arm.history.append(entry)
        if on_record is not None:
            on_record(arm.name, entry)


def _step(arm: Arm, rows: torch.Tensor | None, loss_weights: torch.Tensor, loss_fn: LossFn,
          optimizer: torch.optim.Optimizer, divide: bool) -> None:
    x, y = (arm.x, arm.y) if rows is None else (arm.x[rows], arm.y[rows])
    loss = (loss_weights.to(x.dtype) * loss_fn(arm.model(x), y)).sum()
    optimizer.zero_grad(set_to_none=False)
    loss.backward()
    if divide and hasattr(arm.model, "divide_gradients"):
        arm.model.divide_gradients()
    optimizer.step()


def _finite_or_none(value):
    """JSON has no NaN/inf: non-finite floats are recorded as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
