"""Operations per lockstep training step and per evaluation: what a GPU launches as kernels.

A batched step on a GPU is a few hundred microseconds of launches for E3-sized models, so the
number of operations per step bounds its speed there (CUDA graphs or ``torch.compile`` would fuse
them). The default table counts the ATen operations that reach a backend during the steps of a
batched run (a TorchDispatchMode), with the fused CPU kernels switched off so that the passes are
the ones a GPU runs, for E3's arms (width and training set reduced: the count does not depend on
them) and E4a's data arms, per optimizer. Views and other metadata-only operations are counted too
(they launch nothing), so this is an upper bound on kernels.

``--evaluation``: one evaluation of a run's arms on shared inputs, arm by arm (``predict`` per
model) against together (``predict_together``: same-shape MLPs as one stack), for an E3-sized run
(a width-10000 original and four width-1000 compressed arms on 100,000 rows) and an E4a-sized one
(four width-50 students on the 2^19 rows of the largest full training set): seconds per
evaluation (the best of three) through the fused CPU kernels where they apply and through torch's
passes, and the ATen operations of one evaluation through torch's passes in a GPU's chunks
(GPU_CHUNK_SCALE times a CPU's, which is what a CUDA device takes).

``--compile``: milliseconds per lockstep training step, eager against ``torch.compile`` (inductor;
on a CUDA device also mode="reduce-overhead", which replays CUDA graphs), for an E3-sized run (the
original at width 10000 and three arms of 1000, two stacks) and an E4a-sized one (4 seeds x 4 data
arms of width 50 at d = 4096, one stack of 16), batch 512, AdamW. What is compiled, per stack: the
stacked forward pass (with the backward pass AOTAutograd derives from it; ``loss.backward()``
itself is a graph break), the loss and the optimizer's update. Each run trains the same
configurations from the same seeds, eager and compiled in turn, ``--rounds`` times each. The table
gives the 10th percentile and the median of the second half's step times, the best of the rounds
(on a shared machine the slower steps and rounds are mostly other jobs' time; the speed-up is of
the 10th percentiles); the compile time (the first compiled round's step time beyond steps x its
median: compilation and recompilation, with inductor's on-disk graph cache off), dynamo's graphs,
graph breaks and CUDA graph skips in that round; and the largest relative difference of its final
test losses from the eager run's. On a CPU both through the fused kernels (what a CPU trains with;
dynamo cannot trace their numba calls) and through torch's passes (what a GPU runs).

Run: taskset -c 0 .venv/bin/python bench/step_ops.py [--evaluation | --compile] [--device cpu|cuda]
         [--rows N] [--steps N] [--rounds N]
"""

from __future__ import annotations

import argparse
import collections
import functools
import time
import warnings

import numpy as np
import torch
import torch._inductor.config
from torch._dynamo.utils import counters
from torch.utils._python_dispatch import TorchDispatchMode

from harness.config import parse_config
from harness.experiments.runner import run_arms
from harness.models import init_mlp, relu_kernels
from harness.train import batched, predict, predict_together, run_together
from harness.train.losses import GPU_CHUNK_SCALE, chunk_rows_for

STEPS = 8


class Counter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: collections.Counter = collections.Counter()
        self.views = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[func.overloadpacket.__name__] += 1
        self.views += func.is_view
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


def step_table() -> None:
    relu_kernels.applies = lambda x: False  # the passes a GPU runs
    train = {"steps": STEPS, "batch_size": 512, "eval_every": STEPS}
    e3 = {
        "experiment": "width",
        "device": "cpu",
        "arms": ["original", "moment", "random", "magnitude"],  # imp's pruning rounds would be counted too
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


def evaluation_workloads(device: torch.device, rows: int | None) -> dict[str, tuple[list, torch.Tensor]]:
    """(models, inputs) of one evaluation set: E3's five arms (the compressed ones as
    ``compress_units`` leaves them: 1000 of the original's neurons, the moment arm with
    multiplicities) and E4a's four students."""
    generator = np.random.default_rng(0)
    original = init_mlp([2, 10_000, 1], seed=0)
    compressed = []
    for arm in range(4):
        kept = np.sort(generator.choice(10_000, 1000, replace=False))
        multiplicities = generator.uniform(5, 15, 1000) if arm == 0 else np.ones(1000)
        compressed.append(original.select_units(0, kept, multiplicities))
    students = [init_mlp([2, 50, 1], seed=seed, init="uniform") for seed in range(4)]

    def inputs(n: int) -> torch.Tensor:
        return torch.rand(n, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float32).to(device) * 2 - 1

    def place(models: list) -> list:
        return [model.to(device=device, dtype=torch.float32) for model in models]

    return {
        "E3-sized: width 10000 + 4 x 1000": (place([original, *compressed]), inputs(rows or 100_000)),
        "E4a-sized: 4 x width 50": (place(students), inputs(rows or 1 << 19)),
    }


def per_arm(models: list, x: torch.Tensor, chunk_rows: int) -> list[torch.Tensor]:
    return [predict(model, x, chunk_rows) for model in models]


def seconds(evaluate, models: list, x: torch.Tensor, chunk_rows: int, repeats: int = 3) -> float:
    """The best of ``repeats`` evaluations (the device waited for)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        outputs = evaluate(models, x, chunk_rows)
        if x.device.type == "cuda":
            torch.cuda.synchronize(x.device)
        best = min(best, time.perf_counter() - start)
        del outputs
    return best


def operations(evaluate, models: list, x: torch.Tensor, chunk_rows: int) -> tuple[int, int]:
    """ATen operations of one evaluation: all, and those that are not views (kernels, at most)."""
    counter = Counter()
    with counter:
        evaluate(models, x, chunk_rows)
    total = sum(counter.ops.values())
    return total, total - counter.views


def evaluation_table(device: torch.device, rows: int | None) -> None:
    fits = device.type == "cpu"
    print(f"One evaluation set, arm by arm and together (torch {torch.__version__}, {device}, float32)")
    print(
        "| workload | rows | path | arm by arm (s) | together (s) | speed-up "
        "| ATen ops arm by arm (all / not views) | together |"
    )
    print("|---|---|---|---|---|---|---|---|")
    applies = relu_kernels.applies
    for name, (models, x) in evaluation_workloads(device, rows).items():
        chunk_rows = chunk_rows_for(max(max(model.widths) for model in models))
        gpu_chunks = chunk_rows if device.type == "cuda" else chunk_rows * GPU_CHUNK_SCALE
        for path in ("fused kernels", "torch passes") if fits else ("torch passes",):
            relu_kernels.applies = applies if path == "fused kernels" else (lambda x: False)
            try:
                alone, together = (seconds(f, models, x, chunk_rows) for f in (per_arm, predict_together))
                ops = ["", ""]
                if path == "torch passes":
                    (alone_all, alone_kernels), (together_all, together_kernels) = (
                        operations(f, models, x, gpu_chunks) for f in (per_arm, predict_together)
                    )
                    ops = [f"{alone_all} / {alone_kernels}", f"{together_all} / {together_kernels}"]
            finally:
                relu_kernels.applies = applies
            print(
                f"| {name} | {len(x):,} | {path} | {alone:.3f} | {together:.3f} | {alone / together:.2f}x | "
                f"{' | '.join(ops)} |",
                flush=True,
            )


def compile_workloads(device: str) -> dict[str, list[dict]]:
    train = {"optimizer": "adamw", "batch_size": 512, "eval_every": 1 << 30}
    e3 = {
        "experiment": "width",
        "device": device,
        "arms": ["original", "moment", "random", "magnitude"],
        "task": {"name": "harmonic", "n_train": 10_000, "n_test": 100, "order": 6, "frequency": 20.0},
        "model": {"width": 10_000},
        "compression": {"k": 5, "size": 1000},
        "train": {**train, "lr": 1e-4},
    }
    e4a = {
        "experiment": "data",
        "device": device,
        "task": {"name": "teacher", "n_train": 4096, "n_test": 100},
        "model": {"width": 50, "init": "uniform"},
        "compression": {"k": 6, "size": "16*sqrt(d)"},
        "train": {**train, "lr": 1e-3},
    }
    return {
        "E3-sized: width 10000 + 3 x 1000": [e3],
        "E4a-sized: 16 x width 50": [{**e4a, "seed": seed} for seed in range(4)],
    }


def compiled(stack: batched._Stack, mode: str | None) -> None:
    """The stack's forward pass, loss and optimizer update through torch.compile (``mode``)."""
    stack.model.forward = torch.compile(stack.model.forward, mode=mode)
    stack.loss_fn = torch.compile(stack.loss_fn, mode=mode)
    stack.optimizer.step = torch.compile(stack.optimizer.step, mode=mode)


def timed_run(raws: list[dict], steps: int, mode: str) -> tuple[list[float], list[float]]:
    """Seconds of each lockstep step (``mode``: eager or a torch.compile mode) and the final test losses."""
    times: collections.Counter = collections.Counter()
    original = batched._Stack.step
    device = torch.device(raws[0]["device"])

    def step(self, number, batches):
        if mode != "eager" and not getattr(self, "compiled", False):
            compiled(self, None if mode == "default" else mode)
            self.compiled = True
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        original(self, number, batches)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times[number] += time.perf_counter() - start

    batched._Stack.step = step
    try:
        configs = [parse_config({**raw, "train": {**raw["train"], "steps": steps}}) for raw in raws]
        results = run_together([functools.partial(run_arms, config) for config in configs])
    finally:
        batched._Stack.step = original
    losses = [r.metrics[-1]["test_loss"] for result in results for r in result.values()]
    return [times[number] for number in sorted(times)], losses


def compile_table(device: str, steps: int, rounds: int) -> None:
    """Eager and each mode in turn, ``rounds`` times (the best round of each: the machine's load
    drifts); compile time and dynamo's counts from a mode's first round, which compiles."""
    modes = ["default", "reduce-overhead"] if device.startswith("cuda") else ["default"]
    torch._inductor.config.fx_graph_cache = False  # the compile time a fresh machine pays
    print(f"Lockstep step, eager against torch.compile (torch {torch.__version__}, {device}, float32)")
    print(
        "| workload | passes | mode | eager (ms/step, p10 / median) | compiled | speed-up | compile (s) "
        "| graphs / breaks / CUDA graph skips | final loss rel. diff. |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    applies = relu_kernels.applies
    for name, raws in compile_workloads(device).items():
        for passes in ("fused kernels", "torch passes") if device == "cpu" else ("torch passes",):
            relu_kernels.applies = applies if passes == "fused kernels" else (lambda x: False)
            try:
                torch._dynamo.reset()
                best: dict[str, tuple[float, float]] = {}
                first: dict[str, tuple] = {}
                for round_ in range(rounds):
                    for mode in ["eager", *modes]:
                        counters.clear()
                        times, losses = timed_run(raws, steps, mode)
                        p10, median = quantiles(times, steps)
                        best[mode] = tuple(map(min, zip(best.get(mode, (p10, median)), (p10, median))))
                        if round_ == 0:
                            dynamo = (
                                counters["stats"]["unique_graphs"],
                                sum(counters["graph_break"].values()),
                                counters["inductor"]["cudagraph_skips"],
                            )
                            first[mode] = (sum(times) - steps * median, dynamo, losses)
                (eager_p10, eager_median), reference = best["eager"], first["eager"][2]
                for mode in modes:
                    (p10, median), (overhead, dynamo, losses) = best[mode], first[mode]
                    difference = max(abs(a - b) / abs(a) for a, b in zip(reference, losses))
                    print(
                        f"| {name} | {passes} | {mode} | {1e3 * eager_p10:.2f} / {1e3 * eager_median:.2f} | "
                        f"{1e3 * p10:.2f} / {1e3 * median:.2f} | {eager_p10 / p10:.2f}x | {overhead:.1f} | "
                        f"{' / '.join(map(str, dynamo))} | {difference:.1e} |",
                        flush=True,
                    )
            finally:
                relu_kernels.applies = applies


def quantiles(times: list[float], steps: int) -> tuple[float, float]:
    """The 10th percentile and the median of the second half's step times."""
    late = np.array(times[steps // 2 :])
    return float(np.percentile(late, 10)), float(np.median(late))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--evaluation", action="store_true", help="evaluation arm by arm against together")
    parser.add_argument("--compile", action="store_true", help="lockstep steps eager against torch.compile")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N (--evaluation, --compile)")
    parser.add_argument("--rows", type=int, default=None, help="rows of each evaluation workload (--evaluation)")
    parser.add_argument("--steps", type=int, default=200, help="steps of each run (--compile; default 200)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each mode, alternating (--compile; default 3)")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    if args.evaluation:
        evaluation_table(torch.device(args.device), args.rows)
    elif args.compile:
        compile_table(args.device, args.steps, args.rounds)
    else:
        step_table()


if __name__ == "__main__":
    main()
