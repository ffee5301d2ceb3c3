"""Host time per lockstep step spent drawing batches: E4a's stack of 400 proportional samplers.

A batched E4a step draws one batch from each of its models' samplers on the host (the same
batches on any device). Two ways, host work only (no GPU here):

- per batch: one ``torch.multinomial`` per sampler per step, as ``BatchSampler`` draws on a CPU;
- blocks: an epoch of batches per multinomial draw, a step's batch a slice, as ``BatchSampler``
  draws for a CUDA device (whose one pinned, non-blocking copy per block replaces a blocking copy
  per sampler per step; the copies are not measured here).

Both then stack the 400 index rows as ``_Stack.step`` does. What it shows: the multinomial draw
itself costs about the same per index either way, and that, not the copy, is most of a GPU
step's host time at this size.

Run: taskset -c 0 .venv/bin/python bench/sampler_draws.py [--samplers 400] [--steps 200]
"""

from __future__ import annotations

import argparse
import math
import platform
import time

import numpy as np
import torch

from harness.train.sampling import BatchSampler


def per_step(samplers: list[BatchSampler], steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        torch.stack([sampler.next()[0] for sampler in samplers])
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samplers", type=int, default=400)
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(
        f"batch draws per step, {args.samplers} samplers, torch {torch.__version__}, one thread, {platform.machine()}"
    )
    print("| d (E4a) | d' = 16 sqrt(d) | batch | per batch (ms/step) | epoch blocks (ms/step) | ratio |")
    print("|---|---|---|---|---|---|")
    for d in (2**12, 2**16, 2**19):
        size, batch = round(16 * math.sqrt(d)), 512
        rng = np.random.default_rng(0)
        masses = [rng.uniform(0.5, 2.0, size) for _ in range(args.samplers)]
        one = [BatchSampler(m, batch, "proportional", seed) for seed, m in enumerate(masses)]
        epoch = [BatchSampler(m, batch, "proportional", seed) for seed, m in enumerate(masses)]
        for sampler in epoch:
            sampler._block = -(-size // batch)  # as batches_per_draw gives on a CUDA device
        per_step(epoch, 5)  # first blocks drawn
        old, new = per_step(one, args.steps), per_step(epoch, args.steps)
        print(f"| {d:,} | {size:,} | {batch} | {1000 * old:.2f} | {1000 * new:.2f} | {old / new:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
