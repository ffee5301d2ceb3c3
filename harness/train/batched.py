"""Train the arms of many side-by-side calls at once, same-shape MLPs as one stacked model.

``train_together(calls)`` does what ``train_side_by_side`` (harness/train/loop.py) does for each
call, for all of them in lockstep (the loop's ``run_steps``, with stacks as its steppers): the arms
whose MLPs share layer shapes, dtype, device, the training settings other than the learning rate
(and the checkpoint interval) and the batch size are stacked
(harness/train/stacked.py; on a CPU in stacks of at most CPU_STACK_BYTES of activations, unless
the fused kernels keep none) and take each step together through one batched forward and backward
pass and one vectorised optimizer update (harness/train/stacked_optim.py) with each model's own
learning rate. Each arm keeps its own training set, sample weights, sampler and multiplicities;
a sampler shared by several arms is drawn once per step, as in the loop.

What comes out is what the loop gives: the same records (each call's own ``evaluate`` on its live
arms, at step 0, every ``eval_every`` steps and the last), statuses and ``seconds`` (each step's
time shared equally among the models stacked in it). An arm whose training loss is NaN/inf at an
evaluation is marked diverged and leaves its stack; the other models never see it (their slices of
every batched operation are their own). On a CPU in float64 the losses match the loop's to about
1e-14, at worst 3.4e-12 (Adamax, whose max-based steps amplify rounding; tests/test_train_batched.py
holds them to 1e-10).

``run_together(functions)`` runs functions that train through ``harness.train.train_side_by_side``
(e.g. ``run_config`` of several configurations) so that all their training calls meet here: see
harness/train/handoff.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch

from harness.device import float32_matmuls, one_cpu_thread
from harness.models import MLP
from harness.train import handoff
from harness.train.loop import Arm, SideBySide, restore, run_steps, train_one_by_one
from harness.train.optim import schedule_factor
from harness.train.stacked import StackedMLP, shape_of
from harness.train.stacked_optim import StackedOptimizer

# Activation bytes of one stack on a CPU (about one core's L2 cache). Beyond it a wide model's
# forward and backward passes are bound by memory, and a larger stack costs more per model-step
# (docs/performance.md). Stacks that train through the fused kernels (MLP.fits_relu_kernels) store no
# activations and are never split: fewer, larger stacks dispatch fewer operations per model.
CPU_STACK_BYTES = 4 << 20


def run_together(functions: Sequence[Callable[[], Any]]) -> list[Any]:
    """Each function's result (or the exception it raised); their training calls are batched."""
    return handoff.run_tasks(functions, _serve)


def _serve(calls: list[SideBySide]) -> list[None]:
    train_together(calls)
    return [None] * len(calls)


def train_together(calls: Sequence[SideBySide]) -> None:
    """Every call's arms trained as ``train_side_by_side`` would, the compatible ones stacked.

    Calls with a model other than an MLP run one after another through the loop; the others are
    trained in lockstep, one lockstep per (steps, eval_every, step resumed from).
    """
    lockstep: dict[tuple[int, int, int], list[SideBySide]] = {}
    for call in calls:
        if all(type(arm.model) is MLP for arm in call.arms):
            restore(call)
            lockstep.setdefault((call.steps, call.train.eval_every, call.start), []).append(call)
        else:
            train_one_by_one(call)
    for group in lockstep.values():
        _train_stacked(group)


class _Stack:
    """Arms of one stacking key: their models, data and samplers stacked, one optimizer (a
    ``harness.train.loop.Stepper``)."""

    def __init__(self, members: list[tuple[SideBySide, Arm]]) -> None:
        self.members = members
        call = members[0][0]
        self.train, self.loss_fn = call.train, call.loss_fn
        self.factor = schedule_factor(call.train, call.steps)
        models = [arm.model for _, arm in members]
        if len({id(model) for model in models}) != len(models):
            raise ValueError("two arms share one model object: they cannot be stacked")
        self.model = StackedMLP.of(models)
        self.model.bind(models)
        self.fused = models[0].fits_relu_kernels  # trained through the fused kernels: no activations kept
        self.optimizer = StackedOptimizer([self.model.flat], self.train)
        self.lrs = torch.tensor([c.train.lr for c, _ in members], dtype=torch.float64, device=self.model.flat.device)
        self.full = self.train.batch_size is None
        sources: dict[tuple[int, int], Arm] = {}  # each training set once (arms of a config share one)
        for _, arm in members:
            sources.setdefault((id(arm.x), id(arm.y)), arm)
        rows = {key: row for row, key in enumerate(sources)}
        self.source = torch.tensor([rows[id(arm.x), id(arm.y)] for arm in self.arms], device=self.lrs.device)
        # Each training set once, as rows of one (sets x n_max, ...) tensor: a batch is one index_select.
        self.x = _stack_padded([arm.x for arm in sources.values()])
        self.y = _stack_padded([arm.y for arm in sources.values()])
        self.n_max = self.x.shape[1]

    @property
    def arms(self) -> list[Arm]:
        return [arm for _, arm in self.members]

    @property
    def device(self) -> torch.device:
        return self.lrs.device

    def step(self, step: int, batches: dict[int, tuple]) -> None:
        """Step ``step`` (from 1) of every model, on its sampler's batch of this step."""
        if self.full:
            x, y = self.x[self.source], self.y[self.source]
        else:
            rows = torch.stack([batches[id(arm.sampler)][0] for arm in self.arms])
            rows = (rows + self.n_max * self.source[:, None]).view(-1)
            x = self.x.flatten(0, 1).index_select(0, rows).view(len(self.members), -1, self.x.shape[2])
            y = self.y.flatten(0, 1).index_select(0, rows).view(len(self.members), -1, self.y.shape[2])
        loss_weights = torch.stack([batches[id(arm.sampler)][1] for arm in self.arms]).to(x.dtype)
        with float32_matmuls(self.train.tf32):
            loss = (loss_weights * self.loss_fn(self.model.forward(x), y)).sum()
            loss.backward()
        if self.train.divide_gradients:
            self.model.divide_gradients()
        self.model.gather_grad()
        self.optimizer.step(self.lrs * self.factor(step - 1))

    def drop_diverged(self) -> None:
        """Go on with the arms still running; a diverged arm's model keeps its last values."""
        keep = [i for i, (_, arm) in enumerate(self.members) if arm.status == "running"]
        if len(keep) == len(self.members):
            return
        rows = torch.tensor(keep, device=self.lrs.device)
        self.members = [self.members[i] for i in keep]
        if not keep:
            return
        self.model = self.model.keep(rows)
        self.model.bind([arm.model for arm in self.arms])
        self.optimizer.keep(rows, [self.model.flat])
        self.lrs, self.source = self.lrs[rows], self.source[rows]

    def optimizer_state(self, arm: Arm) -> dict:
        """Row ``arm`` of the flat state, cut into one tensor per parameter of ``arm.model``."""
        row = next(i for i, (_, member) in enumerate(self.members) if member is arm)
        state = {name: _per_parameter(value[row], arm.model) for name, value in self.optimizer.state[0].items()}
        return {"steps": self.optimizer.steps, "state": state}

    def load_optimizer_states(self, states: list[dict]) -> None:
        self.optimizer.steps = states[0]["steps"]
        self.optimizer.state = [
            {
                name: torch.stack([_flat(s["state"][name]) for s in states]).to(self.model.flat)
                for name in states[0]["state"]
            }
        ]


def _per_parameter(row: torch.Tensor, model: MLP) -> list[torch.Tensor]:
    """A row of a stack's flat state as one tensor per parameter of ``model``, in its shape (the
    row holds every weight matrix transposed, then every bias, as StackedMLP lays out ``flat``)."""
    tensors, start = [], 0
    for parameter in model.parameters():  # weights, then biases
        chunk = row[start : start + parameter.numel()]
        start += parameter.numel()
        tensors.append(chunk.view(parameter.shape[::-1]).T.clone() if parameter.dim() == 2 else chunk.clone())
    return tensors


def _flat(tensors: list[torch.Tensor]) -> torch.Tensor:
    """``_per_parameter`` undone."""
    return torch.cat([(t.T if t.dim() == 2 else t).reshape(-1) for t in tensors])


def _stack_padded(tensors: list[torch.Tensor]) -> torch.Tensor:
    """(U, n_max, ...) with zero rows after each tensor's own (never drawn: rows < its n)."""
    if len({len(t) for t in tensors}) == 1:
        return torch.stack(tensors)
    out = tensors[0].new_zeros((len(tensors), max(len(t) for t in tensors), *tensors[0].shape[1:]))
    for i, t in enumerate(tensors):
        out[i, : len(t)] = t
    return out


def _stack_parts(members: list[tuple[SideBySide, Arm]]) -> list[list[tuple[SideBySide, Arm]]]:
    """Members of one stacking key in stacks of about equal size, small enough for a CPU's cache.

    On a CPU a stack's activations (models x batch rows x widest layer) should stay within
    CPU_STACK_BYTES; a GPU takes them all in one stack, and so does a CPU where the fused kernels
    keep no activations.
    """
    call, arm = members[0]
    weight = arm.model.weights[0]
    if weight.device.type != "cpu" or arm.model.fits_relu_kernels:
        return [members]
    per_model = _batch_rows(call, arm) * max(max(w.shape) for w in arm.model.weights) * weight.element_size()
    parts = min(len(members), max(1, -(-len(members) * per_model // CPU_STACK_BYTES)))
    size = -(-len(members) // parts)
    return [members[start : start + size] for start in range(0, len(members), size)]


def _batch_rows(call: SideBySide, arm: Arm) -> int:
    """Examples in each of the arm's batches: its whole training set for full-batch training."""
    return arm.sampler.n if call.train.batch_size is None else call.train.batch_size


def _stacking_key(call: SideBySide, arm: Arm) -> tuple:
    return (
        shape_of(arm.model),
        dataclasses.replace(call.train, lr=1.0, checkpoint_every=None),
        _batch_rows(call, arm),
        call.loss_fn,
    )


def _train_stacked(calls: list[SideBySide]) -> None:
    """Calls of one number of steps and evaluation interval, their arms stacked by stacking key,
    trained step by step together."""
    keyed: dict[tuple, list[tuple[SideBySide, Arm]]] = {}
    for call in calls:
        for arm in call.arms:
            if arm.status == "running":  # a resumed call's diverged arms stay out
                keyed.setdefault(_stacking_key(call, arm), []).append((call, arm))
    stacks = [_Stack(part) for members in keyed.values() for part in _stack_parts(members)]
    # Stacks that train through the fused kernels (single-threaded) are left with small
    # elementwise ops, which a second torch thread slows down (harness/device.py, one_cpu_thread).
    one_thread = all(stack.fused for stack in stacks)
    models = sum(len(stack.members) for stack in stacks)
    with one_cpu_thread(torch.device("cpu")) if one_thread else contextlib.nullcontext():
        run_steps(calls, stacks, f"batched {models} models")
