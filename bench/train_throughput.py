"""Training throughput: runs per hour, batched (harness/train/batched.py) vs one at a time.

Identical work both ways, in one process: each configuration is run into a results store, first
one after another with ``run_config`` (what a ``--no-batch`` worker does), then all together with
``run_configs`` (what a batching worker does with the jobs it claims). Two workloads:

- E2-sized: 64 data-experiment runs (arm original), a width-50 student of the teacher task,
  d = 4096, batch 512, 2048 AdamW steps; 16 seeds x 4 learning rates;
- E3-sized: 16 width-experiment runs (arm original), width 1000 on the harmonic task, 20000
  training points, batch 128, 2048 AdamW steps; 4 seeds x 4 learning rates.

Both evaluate every 256 steps on their training and 10000 test points, in float32 (the default).
Also reported: the median and largest relative difference between the two paths' final test
losses: float32 rounding (about 1e-7 per operation) grown over 2048 steps, by far the most at the
largest learning rates, where training is chaotic. Speed is measured here, never asserted in tests.
The fused CPU kernels (harness/models/relu_kernels.py) are compiled on a machine's first use, about
1 s each, then cached on disk: a first run pays that inside its timings.

Run: .venv/bin/python bench/train_throughput.py [--quick] [--steps N] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch

from harness.allocator import retain_freed_memory
from harness.config import Config, parse_config
from harness.experiments.runner import run_config, run_configs

LEARNING_RATES = (1e-3, 3e-3, 1e-2, 3e-2)
EVAL_EVERY = 256


def workloads(quick: bool, device: str, steps: int | None = None) -> dict[str, list[Config]]:
    steps = steps or (128 if quick else 2048)
    e2_seeds, e3_seeds = (4, 1) if quick else (16, 4)
    e2 = [
        parse_config(
            {
                "experiment": "data",
                "seed": seed,
                "arms": ["original"],
                "device": device,
                "task": {"name": "teacher", "n_train": 4096, "n_test": 10_000},
                "model": {"width": 50},
                "train": {"optimizer": "adamw", "lr": lr, "steps": steps, "batch_size": 512, "eval_every": EVAL_EVERY},
            }
        )
        for seed, lr in itertools.product(range(e2_seeds), LEARNING_RATES)
    ]
    e3 = [
        parse_config(
            {
                "experiment": "width",
                "seed": seed,
                "arms": ["original"],
                "device": device,
                "task": {"name": "harmonic", "n_train": 20_000, "n_test": 10_000},
                "model": {"width": 1000},
                "train": {
                    "optimizer": "adamw",
                    "lr": lr / 10,
                    "steps": steps,
                    "batch_size": 128,
                    "eval_every": EVAL_EVERY,
                },
            }
        )
        for seed, lr in itertools.product(range(e3_seeds), LEARNING_RATES)
    ]
    return {
        f"E2-sized: {len(e2)} x width 50, d 4096, {steps} steps": e2,
        f"E3-sized: {len(e3)} x width 1000, d 20000, {steps} steps": e3,
    }


def final_losses(records) -> dict[str, float]:
    return {record.run_id: record.row["test_loss"] for record in records}


def measure(configs: list[Config], folder: Path) -> dict:
    start = time.perf_counter()
    alone = {}
    for config in configs:
        alone.update(final_losses(run_config(config, folder / "alone", refresh_table=False)))
    seconds_alone = time.perf_counter() - start
    start = time.perf_counter()
    batched = {}
    for result in run_configs([(config, None) for config in configs], folder / "batched", refresh_table=False):
        if isinstance(result, Exception):
            raise result
        batched.update(final_losses(result))
    seconds_batched = time.perf_counter() - start
    differences = [abs(batched[rid] - alone[rid]) / abs(alone[rid]) for rid in alone]
    return {
        "runs": len(configs),
        "alone": seconds_alone,
        "batched": seconds_batched,
        "median": statistics.median(differences),
        "max": max(differences),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="128 steps, 16 + 4 runs (a short check)")
    parser.add_argument("--steps", type=int, default=None, help="steps per run (default 2048; --quick: 128)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads for both paths (default: torch's)")
    args = parser.parse_args()
    retain_freed_memory()  # as the polyscale command does
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    where = (
        torch.cuda.get_device_name(args.device)
        if args.device.startswith("cuda")
        else f"CPU, {torch.get_num_threads()} torch threads"
    )
    print(f"training throughput on {where}, torch {torch.__version__}")
    print(
        "| workload | runs | one at a time (s) | batched (s) | runs/h one at a time | runs/h batched | speed-up "
        "| final test loss rel. diff. median / max |"
    )
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for name, configs in workloads(args.quick, args.device, args.steps).items():
            m = measure(configs, Path(folder) / name.split(":")[0])
            print(
                f"| {name} | {m['runs']} | {m['alone']:.1f} | {m['batched']:.1f} | "
                f"{3600 * m['runs'] / m['alone']:,.0f} | "
                f"{3600 * m['runs'] / m['batched']:,.0f} | {m['alone'] / m['batched']:.1f}x | "
                f"{m['median']:.0e} / {m['max']:.0e} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
