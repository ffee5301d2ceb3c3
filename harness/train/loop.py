"""Train several models side by side: the same number of steps, the same schedule, and batches
from a sampler that arms either share (one generator, so one index sequence for all: the width
experiments) or hold each (twins seeded alike: the data experiments, whose arms have different
training sets). An arm whose training loss turns NaN/inf at an evaluation stops there with status
``diverged``; the others go on. Nothing here raises on divergence.

``train_side_by_side`` is the one entry. Outside ``run_together`` each arm takes its steps through
its own torch.optim optimizer (``train_one_by_one``); inside, the call is handed over
(harness/train/handoff.py) and trained with the other tasks' calls, same-shape MLPs stacked
(harness/train/batched.py). Both paths run ``run_steps``: the step loop, evaluation cadence,
learning rate recorded, divergence, time accounting and final statuses are this module's.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import nn
from tqdm import tqdm

from harness.config import TrainConfig
from harness.train import handoff
from harness.train.losses import LossFn
from harness.train.optim import make_optimizer, make_schedule, schedule_factor
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


@dataclass
class SideBySide:
    """The arguments of one ``train_side_by_side`` call."""

    arms: list[Arm]
    train: TrainConfig
    steps: int
    loss_fn: LossFn
    evaluate: Evaluate
    epoch_size: int
    on_record: OnRecord | None = None
    description: str = ""

    def record(self, step: int) -> None:
        """Evaluate the running arms after ``step`` steps and append one record each (step, epoch,
        lr, then the evaluation's values; non-finite values as null). An arm whose training loss is
        not finite is marked diverged."""
        live = [arm for arm in self.arms if arm.status == "running"]
        if not live:
            return
        results = self.evaluate(live)
        per_step = self.train.batch_size if self.train.batch_size is not None else self.epoch_size
        epoch = step * per_step / self.epoch_size  # examples seen, in units of the original training set
        lr = self.train.lr * schedule_factor(self.train, self.steps)(step)  # as make_schedule's LambdaLR has it
        for arm in live:
            entry = {"step": step, "epoch": epoch, "lr": lr}
            entry.update(results[arm.name])
            if not math.isfinite(entry["train_loss"]):
                arm.status = "diverged"
            entry = {key: _finite_or_none(value) for key, value in entry.items()}
            arm.history.append(entry)
            if self.on_record is not None:
                self.on_record(arm.name, entry)


class Stepper(Protocol):
    """Takes one optimiser step for some arms: one arm through torch.optim, or a stack of MLPs."""

    @property
    def arms(self) -> list[Arm]:
        """The running arms it steps (empty once all have diverged)."""

    @property
    def device(self) -> torch.device:
        """Where its tensors are (a CUDA step is synchronised before its time is taken)."""

    def step(self, step: int, batches: dict[int, tuple]) -> None:
        """Step ``step`` (from 1) of every arm, each on its sampler's batch ``batches[id(sampler)]``."""

    def drop_diverged(self) -> None:
        """Forget the arms marked diverged at the evaluation just made."""


def train_side_by_side(
    arms: list[Arm],
    train: TrainConfig,
    steps: int,
    loss_fn: LossFn,
    evaluate: Evaluate,
    *,
    epoch_size: int,
    on_record: OnRecord | None = None,
    description: str = "",
) -> None:
    """Run ``steps`` optimiser steps on every arm, evaluating at step 0, every ``eval_every`` and the end.

    ``epoch_size`` is the original training set's size: a record's ``epoch`` counts examples seen
    in units of it, for every arm alike. Inside ``run_together`` the call waits to be trained with
    the other tasks' calls (harness/train/batched.py says how closely those records match these).
    """
    call = SideBySide(arms, train, steps, loss_fn, evaluate, epoch_size, on_record, description)
    if handoff.current() is None:
        train_one_by_one(call)
    else:
        handoff.park(call)


def train_one_by_one(call: SideBySide) -> None:
    """The call's arms, each stepped through its own torch.optim optimizer and schedule."""
    run_steps([call], [_OneArm(arm, call) for arm in call.arms], call.description)


def run_steps(calls: Sequence[SideBySide], steppers: Sequence[Stepper], description: str) -> None:
    """The step loop of calls with one number of steps and evaluation interval, their arms stepped by
    ``steppers``: each sampler drawn once per step (arms sharing one see one batch), each stepper's
    time shared equally among its arms, evaluations at step 0, every ``eval_every`` and the last."""
    steps, eval_every = calls[0].steps, calls[0].train.eval_every
    if any((call.steps, call.train.eval_every) != (steps, eval_every) for call in calls):
        raise ValueError("run_steps: the calls must share steps and train.eval_every")

    def record(step: int) -> None:
        for call in calls:
            call.record(step)
        for stepper in steppers:
            stepper.drop_diverged()

    record(0)
    for step in tqdm(range(1, steps + 1), desc=description, disable=None, leave=False, mininterval=1.0):
        live = [stepper for stepper in steppers if stepper.arms]
        if not live:
            break
        batches: dict[int, tuple] = {}
        for stepper in live:
            for arm in stepper.arms:
                if id(arm.sampler) not in batches:
                    batches[id(arm.sampler)] = arm.sampler.next()
        for stepper in live:
            arms = stepper.arms
            start = time.perf_counter()
            stepper.step(step, batches)
            if stepper.device.type == "cuda":
                torch.cuda.synchronize(stepper.device)
            share = (time.perf_counter() - start) / len(arms)
            for arm in arms:
                arm.seconds += share
        if step % eval_every == 0 or step == steps:
            record(step)
    for call in calls:
        for arm in call.arms:
            if arm.status == "running":
                arm.status = "done"


class _OneArm:
    """One arm stepped through torch.optim (the reference the stacked path is tested against)."""

    def __init__(self, arm: Arm, call: SideBySide) -> None:
        self.arm, self.loss_fn, self.divide = arm, call.loss_fn, call.train.divide_gradients
        self.optimizer = make_optimizer(arm.model.parameters(), call.train)
        self.schedule = make_schedule(self.optimizer, call.train, call.steps)

    @property
    def arms(self) -> list[Arm]:
        return [self.arm] if self.arm.status == "running" else []

    @property
    def device(self) -> torch.device:
        return self.arm.x.device

    def step(self, step: int, batches: dict[int, tuple]) -> None:
        arm = self.arm
        rows, loss_weights = batches[id(arm.sampler)]
        x, y = (arm.x, arm.y) if rows is None else (arm.x[rows], arm.y[rows])
        loss = (loss_weights.to(x.dtype) * self.loss_fn(arm.model(x), y)).sum()
        self.optimizer.zero_grad(set_to_none=False)
        loss.backward()
        if self.divide and hasattr(arm.model, "divide_gradients"):
            arm.model.divide_gradients()
        self.optimizer.step()
        self.schedule.step()

    def drop_diverged(self) -> None:
        """Nothing to drop: ``arms`` is empty once the arm has diverged."""


def _finite_or_none(value):
    """JSON has no NaN/inf: non-finite floats are recorded as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
