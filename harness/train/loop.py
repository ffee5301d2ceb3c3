"""Train several models side by side: the same number of steps, the same schedule, and batches
from a sampler that arms either share (one generator, so one index sequence for all: the width
experiments) or hold each (twins seeded alike: the data experiments, whose arms have different
training sets). An arm whose training loss turns NaN/inf at an evaluation stops there with status
``diverged``; the others go on. Nothing here raises on divergence.

``train_side_by_side`` is the one entry. Outside ``run_together`` each arm takes its steps through
its own torch.optim optimizer (``train_one_by_one``); inside, the call is handed over
(harness/train/handoff.py) and trained with the other tasks' calls, same-shape MLPs stacked
(harness/train/batched.py). Both paths run ``run_steps``: the step loop, evaluation cadence,
learning rate recorded, divergence, time accounting and final statuses are this module's, and so
are checkpoints (harness/train/checkpoint.py): a call made inside ``checkpoint.writing_to``
resumes from its newest sound checkpoint and writes new ones when due; on ``preempt.stop_requested``
every call writes one after the step and ``preempt.Preempted`` is raised.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import nn
from tqdm import tqdm

from harness import preempt
from harness.config import TrainConfig
from harness.device import float32_matmuls
from harness.train import checkpoint, handoff
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
logger = logging.getLogger(__name__)


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
    checkpoints: checkpoint.Checkpoints | None = None
    resume: dict | None = None  # the checkpoint it goes on from (``restore`` applies it)

    @property
    def start(self) -> int:
        """The step it goes on from: 0, or its checkpoint's."""
        return self.resume["step"] if self.resume is not None else 0

    def record(self, step: int) -> None:
        """Evaluate the running arms after ``step`` steps and append one record each (step, epoch,
        lr, then the evaluation's values; non-finite values as null). An arm whose training loss is
        not finite is marked diverged."""
        live = [arm for arm in self.arms if arm.status == "running"]
        if not live:
            return
        with float32_matmuls(self.train.tf32):
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
        """Where its tensors are (a CUDA step is timed by CUDA events: ``StepClock``)."""

    def step(self, step: int, batches: dict[int, tuple]) -> None:
        """Step ``step`` (from 1) of every arm, each on its sampler's batch ``batches[id(sampler)]``."""

    def drop_diverged(self) -> None:
        """Forget the arms marked diverged at the evaluation just made."""

    def optimizer_state(self, arm: Arm) -> dict:
        """One of its running arms' optimizer state, as either kind of stepper reads it:
        {"steps": updates taken, "state": {name: one tensor per parameter of ``arm.model``}}, the
        names those of harness/train/stacked_optim.py (so a run checkpointed in a stack can go
        on alone, and the other way round)."""

    def load_optimizer_states(self, states: list[dict]) -> None:
        """Go on from ``optimizer_state`` of each of its arms, in the order of ``arms``."""


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
    call = with_checkpoints(SideBySide(arms, train, steps, loss_fn, evaluate, epoch_size, on_record, description))
    if handoff.current() is None:
        train_one_by_one(call)
    else:
        handoff.park(call)


def with_checkpoints(call: SideBySide) -> SideBySide:
    """``call`` checkpointing into ``checkpoint.current()`` (if any), set to resume from its newest
    checkpoint that fits."""
    if (target := checkpoint.current()) is not None:
        call.checkpoints = checkpoint.Checkpoints(target)
        call.resume = call.checkpoints.latest(lambda state: _misfit(call, state))
    return call


def train_one_by_one(call: SideBySide) -> None:
    """The call's arms, each stepped through its own torch.optim optimizer and schedule."""
    restore(call)
    run_steps([call], [_OneArm(arm, call) for arm in call.arms], call.description)


def restore(call: SideBySide) -> None:
    """Put the call's arms (models, samplers, records, statuses, seconds) and the global RNGs back
    as its checkpoint has them, before its steppers are made."""
    state = call.resume
    if state is None:
        return
    for arm in call.arms:
        saved = state["arms"][arm.name]
        arm.model.load_state_dict(saved["model"])
        arm.sampler.load_state(saved["sampler"])
        arm.status, arm.history, arm.seconds = saved["status"], saved["history"], saved["seconds"]
        call.checkpoints.restored(arm.name, arm.history)
    checkpoint.set_rng_state(state["rng"])


def run_steps(calls: Sequence[SideBySide], steppers: Sequence[Stepper], description: str) -> None:
    """The step loop of calls with one number of steps and evaluation interval, their arms stepped by
    ``steppers``: each sampler drawn once per step (arms sharing one see one batch), each stepper's
    time shared equally among its arms, evaluations at step 0, every ``eval_every`` and the last.
    Calls restored from a checkpoint (all at one step) go on from there."""
    steps, eval_every, resumed_at = calls[0].steps, calls[0].train.eval_every, calls[0].start
    if any((call.steps, call.train.eval_every, call.start) != (steps, eval_every, resumed_at) for call in calls):
        raise ValueError("run_steps: the calls must share steps, train.eval_every and their start")

    def record(step: int) -> None:
        for call in calls:
            call.record(step)
        for stepper in steppers:
            stepper.drop_diverged()

    clock = StepClock()
    if resumed_at == 0:
        record(0)
    else:
        _load_optimizers(calls, steppers)
    steps_left = range(resumed_at + 1, steps + 1)
    for step in tqdm(steps_left, desc=description, disable=None, leave=False, mininterval=1.0, initial=resumed_at):
        live = [stepper for stepper in steppers if stepper.arms]
        if not live:
            break
        batches: dict[int, tuple] = {}
        for stepper in live:
            for arm in stepper.arms:
                if id(arm.sampler) not in batches:
                    batches[id(arm.sampler)] = arm.sampler.next()
        for stepper in live:
            with clock.timing(stepper):
                stepper.step(step, batches)
        if step % eval_every == 0 or step == steps:
            clock.settle()
            record(step)
        if step < steps:
            _checkpoint(calls, steppers, step, clock)
    clock.settle()
    for call in calls:
        for arm in call.arms:
            if arm.status == "running":
                arm.status = "done"


def _checkpoint(calls: Sequence[SideBySide], steppers: Sequence[Stepper], step: int, clock: StepClock) -> None:
    """Write the checkpoints due after ``step``; on a stop request, every call's, then stop."""
    stop = preempt.stop_requested()
    due = [call for call in calls if call.checkpoints is not None and (stop or call.checkpoints.due(step))]
    if due:
        clock.settle()  # the arms' seconds go into the checkpoint
    holders = {id(arm): stepper for stepper in steppers for arm in stepper.arms} if due else {}
    for call in due:
        call.checkpoints.write(_state(call, step, holders))
    if stop:
        raise preempt.Preempted(f"stopped after step {step} of {calls[0].steps}: {preempt.stop_reason()}")


def _state(call: SideBySide, step: int, holders: dict[int, Stepper]) -> dict:
    """What ``restore`` and ``_load_optimizers`` need to go on after ``step`` (tensors copied out of
    any stack, so that each holds its own values only)."""
    arms = {
        arm.name: {
            "model": {key: value.detach().clone() for key, value in arm.model.state_dict().items()},
            "sampler": arm.sampler.state(),
            "status": arm.status,
            "history": list(arm.history),
            "seconds": arm.seconds,
            "optimizer": holders[id(arm)].optimizer_state(arm) if id(arm) in holders else None,
        }
        for arm in call.arms
    }
    return {"step": step, "steps": call.steps, "arms": arms, "rng": checkpoint.rng_state()}


def _load_optimizers(calls: Sequence[SideBySide], steppers: Sequence[Stepper]) -> None:
    saved = {id(arm): call.resume["arms"][arm.name]["optimizer"] for call in calls for arm in call.arms}
    for stepper in steppers:
        if stepper.arms:
            stepper.load_optimizer_states([saved[id(arm)] for arm in stepper.arms])


def _misfit(call: SideBySide, state: dict) -> str | None:
    """Why a checkpoint cannot resume ``call`` (another length, arms or model shapes), or None."""
    if state.get("steps") != call.steps or not 0 < state.get("step", 0) < call.steps:
        return f"step {state.get('step')} of {state.get('steps')}, not of {call.steps}"
    saved = state.get("arms", {})
    for arm in call.arms:
        if arm.name not in saved:
            return f"has no arm {arm.name}"
        shapes = {key: tuple(value.shape) for key, value in saved[arm.name]["model"].items()}
        if shapes != {key: tuple(value.shape) for key, value in arm.model.state_dict().items()}:
            return f"arm {arm.name}'s model has other shapes"
    return None


# Timed CUDA steps held before their times are read (a long evaluation interval then waits for
# the device once per this many steps rather than holding an event pair for every step).
MAX_PENDING_EVENTS = 1024


class StepClock:
    """Each stepper's time per step, shared equally among the arms it stepped.

    On a CPU a step's time is the wall clock around it. A CUDA step only queues kernels, so its
    time is taken between two CUDA events recorded on the stream around it and read at ``settle``
    (each evaluation, checkpoint and the end), where the host waits for the device anyway: no
    synchronisation per step.
    """

    def __init__(self) -> None:
        self.pending: list[tuple[list[Arm], torch.cuda.Event, torch.cuda.Event]] = []

    @contextmanager
    def timing(self, stepper: Stepper) -> Iterator[None]:
        arms = stepper.arms
        if stepper.device.type == "cuda":
            with torch.cuda.device(stepper.device):
                begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                begin.record()
                yield
                end.record()
            self.pending.append((arms, begin, end))
            if len(self.pending) >= MAX_PENDING_EVENTS:
                self.settle()
            return
        start = time.perf_counter()
        yield
        _share(arms, time.perf_counter() - start)

    def settle(self) -> None:
        """Add the pending CUDA steps' times to their arms (waiting for the last of them)."""
        for arms, begin, end in self.pending:
            end.synchronize()
            _share(arms, begin.elapsed_time(end) / 1000.0)
        self.pending.clear()


def _share(arms: list[Arm], seconds: float) -> None:
    for arm in arms:
        arm.seconds += seconds / len(arms)


class _OneArm:
    """One arm stepped through torch.optim (the reference the stacked path is tested against)."""

    def __init__(self, arm: Arm, call: SideBySide) -> None:
        self.arm, self.loss_fn, self.divide, self.tf32 = arm, call.loss_fn, call.train.divide_gradients, call.train.tf32
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
        with float32_matmuls(self.tf32):
            loss = (loss_weights.to(x.dtype) * self.loss_fn(arm.model(x), y)).sum()
            self.optimizer.zero_grad(set_to_none=False)
            loss.backward()
        if self.divide and hasattr(arm.model, "divide_gradients"):
            arm.model.divide_gradients()
        self.optimizer.step()
        self.schedule.step()

    def drop_diverged(self) -> None:
        """Nothing to drop: ``arms`` is empty once the arm has diverged."""

    def optimizer_state(self, arm: Arm) -> dict:
        per_parameter = [self.optimizer.state[p] for p in self.optimizer.param_groups[0]["params"]]
        names = [name for name in per_parameter[0] if name != "step"]
        state = {_STACKED_NAME.get(name, name): [s[name].clone() for s in per_parameter] for name in names}
        return {"steps": self.schedule.last_epoch, "state": state}

    def load_optimizer_states(self, states: list[dict]) -> None:
        """torch.optim's state after ``steps`` updates, and the schedule's learning rate then."""
        ((steps, state),) = [(s["steps"], s["state"]) for s in states]
        torch_name = {stacked: name for name, stacked in _STACKED_NAME.items()}
        counted = type(self.optimizer).__name__ != "SGD"  # the others count their updates in state["step"]
        for i, p in enumerate(self.optimizer.param_groups[0]["params"]):
            self.optimizer.state[p] = {torch_name.get(name, name): tensors[i].to(p) for name, tensors in state.items()}
            if counted:
                self.optimizer.state[p]["step"] = torch.tensor(float(steps))
        self.schedule.last_epoch = steps
        for group, base, factor in zip(self.optimizer.param_groups, self.schedule.base_lrs, self.schedule.lr_lambdas):
            group["lr"] = base * factor(steps)  # as LambdaLR computes it


# torch.optim's names of optimizer state that harness/train/stacked_optim.py names otherwise.
_STACKED_NAME = {"momentum_buffer": "momentum"}


def _finite_or_none(value):
    """JSON has no NaN/inf: non-finite floats are recorded as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
