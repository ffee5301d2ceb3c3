"""Operations per lockstep training step: what a GPU launches as kernels, counted on any machine.

A batched step on a GPU is a few hundred microseconds of launches for E3-sized models, so the
number of operations per step bounds its speed there (CUDA graphs or ``torch.compile`` would fuse
them). This counts the ATen operations that reach a backend during the steps of a batched run (a
TorchDispatchMode), with the fused CPU kernels switched off so that the passes are the ones a GPU
runs, for E3's arms (width and training set reduced: the count does not depend on them) and E4a's
data arms, per optimizer. Views and other metadata-only operations are counted too (they launch
nothing), so this is an upper bound on kernels.

Run: taskset -c 0 .venv/bin/python bench/step_ops.py
"""

from __future__ import annotations

import collections
import functools
import warnings

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from harness.config import parse_config
from harness.experiments.runner import run_arms
from harness.models import relu_kernels
from harness.train import batched, run_together

STEPS = 8


class Counter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def count(raw: dict) -> tuple[float, collections.Counter]:
    """Operations per lockstep step (all stacks of the run) and the most frequent ones."""
    counter = Counter()
    step = batched._Stack.step

    def counted(self, *args):
        with counter:
            return step(self, *args)

    batched._Stack.step = counted
    try:
        run_together([functools.partial(run_arms, parse_config(raw))])
    finally:
        batched._Stack.step = step
    return sum(counter.ops.values()) / STEPS, counter.ops


def main() -> None:
    warnings.simplefilter("ignore")
    relu_kernels.applies = lambda x: False  # the passes a GPU runs
    train = {"steps": STEPS, "batch_size": 512, "eval_every": STEPS}
    e3 = {
        "experiment": "width",
        "device": "cpu",
        "task": {"name": "harmonic", "n_train": 4000, "n_test": 100, "order": 6, "frequency": 20.0},
        "model": {"width": 400},
        "compression": {"k": 5, "size": 130},
    }
    e4a = {
        "experiment": "data",
        "device": "cpu",
        "task": {"name": "teacher", "n_train": 4096, "n_test": 100},
        "model": {"width": 50, "init": "uniform"},
        "compression": {"k": 6, "size": "16*sqrt(d)"},
    }
    print(f"ATen operations per lockstep step (torch {torch.__version__}; fused CPU kernels off)")
    print("| workload | optimizer | operations per step | most frequent |")
    print("|---|---|---|---|")
    for name, base in (("E3 arms (4 models, 2 stacks)", e3), ("E4a arms (4 models, 1 stack)", e4a)):
        for optimizer in ("sgd", "adamw", "rprop"):
            per_step, ops = count({**base, "train": {**train, "optimizer": optimizer}})
            top = ", ".join(f"{op} {n / STEPS:g}" for op, n in ops.most_common(4))
            print(f"| {name} | {optimizer} | {per_step:g} | {top} |", flush=True)


if __name__ == "__main__":
    main()
