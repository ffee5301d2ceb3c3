"""Checkpoint overhead: the share of a training run's time spent on checkpoints (harness/train/checkpoint.py).

The workload is E3-sized, as in bench/train_throughput.py: the width experiment on the harmonic
task, width 1000, 20000 training and 10000 test points, batch 128, AdamW, evaluations every 256
steps, float32. Two shapes of run, each recorded into a results store by the runner:

- one at a time: one configuration, its four arms (original, moment, random, magnitude) side by
  side through torch.optim (``run_config``);
- batched: four seeds of it trained as stacked models (``run_configs``).

Each is run twice, in this process: at the default interval (no ``train.checkpoint_every``, a
checkpoint every 10 minutes of wall clock) and at an aggressive one (every 64 steps). All time
spent in the step loop's checkpoint hook (``harness.train.loop._checkpoint``: the per-step checks,
building the state, writing every run's file) is summed and divided by the run's wall time: that
ratio is measured in one run. A run shorter than 10 minutes writes no checkpoint at the default
interval, so the default's ratio also counts, besides its measured checks, one checkpoint of every
configuration (its cost measured in the aggressive run, checks included) per 10 minutes of run time.

Run: .venv/bin/python bench/checkpoint_overhead.py [--steps N] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import tempfile
import time
import warnings
from pathlib import Path

import torch

from harness.allocator import retain_freed_memory
from harness.config import Config, parse_config
from harness.experiments.runner import run_config, run_configs
from harness.train import checkpoint, loop

AGGRESSIVE = 64  # steps between checkpoints for the contrast


class HookTimer:
    """Sums the time spent in the step loop's checkpoint hook and counts the checkpoints written."""

    def __init__(self) -> None:
        self.seconds, self.writes, self.write_seconds = 0.0, 0, 0.0
        self._hook, self._write = loop._checkpoint, checkpoint.Checkpoints.write

    def __enter__(self) -> HookTimer:
        def hook(*args):
            start = time.perf_counter()
            try:
                self._hook(*args)
            finally:
                self.seconds += time.perf_counter() - start

        def write(checkpoints, state):
            start = time.perf_counter()
            self._write(checkpoints, state)
            self.writes += 1
            self.write_seconds += time.perf_counter() - start

        loop._checkpoint, checkpoint.Checkpoints.write = hook, write
        return self

    def __exit__(self, *exc) -> None:
        loop._checkpoint, checkpoint.Checkpoints.write = self._hook, self._write


def e3_sized(seed: int, steps: int, device: str) -> Config:
    return parse_config(
        {
            "experiment": "width",
            "seed": seed,
            "device": device,
            "task": {"name": "harmonic", "n_train": 20_000, "n_test": 10_000},
            "model": {"width": 1000},
            "compression": {"k": 5, "size": 150},
            "train": {"optimizer": "adamw", "lr": 1e-3, "steps": steps, "batch_size": 128, "eval_every": 256},
        }
    )


def measure(configs: list[Config], folder: Path) -> tuple[float, HookTimer]:
    """(the run's wall time, the hook's time and writes) of training ``configs`` into ``folder``."""
    with HookTimer() as timer:
        start = time.perf_counter()
        if len(configs) == 1:
            run_config(configs[0], folder, refresh_table=False)
        else:
            for result in run_configs([(c, None) for c in configs], folder, refresh_table=False):
                if isinstance(result, Exception):
                    raise result
        return time.perf_counter() - start, timer


def report(name: str, configs: list[Config], folder: Path) -> None:
    aggressive = [
        dataclasses.replace(c, train=dataclasses.replace(c.train, checkpoint_every=AGGRESSIVE)) for c in configs
    ]
    seconds, default = measure(configs, folder / "default")
    seconds_aggressive, contrast = measure(aggressive, folder / "aggressive")
    per_write = contrast.write_seconds / max(1, contrast.writes)
    per_round = contrast.seconds * len(configs) / max(1, contrast.writes)  # every call's checkpoint, checks included
    projected = (default.seconds + per_round * seconds / checkpoint.DEFAULT_SECONDS) / seconds
    print(f"{name}")
    print(
        f"  default interval ({checkpoint.DEFAULT_SECONDS:.0f} s): run {seconds:.1f} s, hook {default.seconds:.3f} s "
        f"({default.writes} written), ratio {default.seconds / seconds:.3%}; with one checkpoint "
        f"({per_round * 1e3:.0f} ms) per {checkpoint.DEFAULT_SECONDS:.0f} s: {projected:.3%}"
    )
    print(
        f"  every {AGGRESSIVE} steps: run {seconds_aggressive:.1f} s, hook {contrast.seconds:.3f} s "
        f"({contrast.writes} written, {per_write * 1e3:.1f} ms each), ratio {contrast.seconds / seconds_aggressive:.3%}"
    )


def cpu_name() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), else what platform knows."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return f"{names[0]} x {len(names)}" if names else platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1024, help="training steps of each run (default 1024)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    args = parser.parse_args()
    retain_freed_memory()  # as the polyscale command does
    warnings.simplefilter("ignore")  # compression size notes
    threads = torch.get_num_threads()
    print(f"machine: {platform.platform()}, {cpu_name()}, {threads} torch threads, torch {torch.__version__}")
    if args.device.startswith("cuda"):
        print(f"device: {torch.cuda.get_device_name(torch.device(args.device))}")
    with tempfile.TemporaryDirectory() as tmp:
        report(
            f"E3-sized, one at a time: width 1000 x 4 arms, {args.steps} steps",
            [e3_sized(0, args.steps, args.device)],
            Path(tmp) / "one",
        )
        report(
            f"E3-sized, batched: 4 seeds x 4 arms, {args.steps} steps",
            [e3_sized(seed, args.steps, args.device) for seed in range(4)],
            Path(tmp) / "batched",
        )


if __name__ == "__main__":
    main()
