"""Which queued jobs a worker trains together, and how many at once.

Two jobs (configurations) are compatible when their models can be stacked and stepped in lockstep
(harness/train/batched.py): the same MLP experiment, model, task kind and input size, training
settings other than the learning rate, number of steps and, for full batches, training-set size;
for the width experiment also the compression (it sets the compressed widths). Seeds, learning
rates, arms, noise and the like may differ. ``batch_key`` says this as a string.

A worker that claims a job claims up to K - 1 more waiting jobs of its key at once through
``RunQueue.claim_matching``, so each job is still claimed, beaten for, finished and retried on its
own. K comes from ``--batch-models`` or, by default, from a memory estimate on the worker's device
(``auto_batch_models``); several workers on one GPU divide its memory among them
(``per_worker_batch``). This module is the policy (which jobs go together, how many); the queue
is the mechanism.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence

import torch

from harness.config import MLP_EXPERIMENTS, Config, parse_config, to_dict
from harness.device import pick_device
from harness.sweep.queue import Claim, RunQueue

CPU_CAP = 64  # most models batched on a CPU: beyond this the stack gains nothing and a failure costs more
GPU_CAP = 512
MEMORY_SHARE = 0.5  # of the device's free memory (GPU) or available memory (CPU)
# (inputs, outputs) of each supervised task; teacher's inputs are task.input_dim.
TASK_SIZES = {
    "harmonic": (2, 1),
    "digits": (64, 10),
    "mnist": (784, 10),
    "fashion_mnist": (784, 10),
    "cifar10": (3072, 10),
}


def batch_key(config: Config) -> str | None:
    """Jobs with one key train well together; None: this job is never batched."""
    if config.experiment not in MLP_EXPERIMENTS:
        return None
    train = dataclasses.replace(config.train, lr=1.0, steps=config.total_steps(), epochs=None)
    key = {
        "experiment": config.experiment,
        "model": to_dict(config.model),
        "task": config.task.name,
        "inputs": _sizes(config)[0],
        "train": to_dict(train),
    }
    if train.batch_size is None:
        key["n_train"] = config.task.n_train
    if config.experiment == "width":
        key["compression"] = to_dict(config.compression)
    return json.dumps(key, sort_keys=True)


@functools.lru_cache(maxsize=4096)
def _key_of_raw(text: str) -> str | None:
    try:
        return batch_key(parse_config(json.loads(text)))
    except Exception:  # a job that does not parse runs alone (and fails there, recorded)
        return None


def payload_key(payload: dict) -> str | None:
    """``batch_key`` of a queued job's configuration."""
    return _key_of_raw(json.dumps(payload.get("config"), sort_keys=True))


def _sizes(config: Config) -> tuple[int, int]:
    return (config.task.input_dim, 1) if config.task.name == "teacher" else TASK_SIZES[config.task.name]


def job_bytes(config: Config) -> int:
    """A rough upper bound on one job's memory in batched training: per arm, parameters with their
    gradient and two optimizer states, one batch's activations, and the training set."""
    inputs, outputs = _sizes(config)
    widths = [config.model.width] * config.model.depth
    sizes = [inputs, *widths, outputs]
    parameters = sum((fan_in + 1) * fan_out for fan_in, fan_out in zip(sizes[:-1], sizes[1:]))
    rows = config.train.batch_size or config.task.n_train
    activations = rows * (4 * sum(widths) + 2 * outputs)
    data = config.task.n_train * (inputs + outputs)
    itemsize = 8 if config.train.dtype == "float64" else 4
    return itemsize * len(config.arm_names) * (4 * parameters + activations + data)


def auto_batch_models(config: Config, device: str, free: int | None = None) -> int:
    """How many jobs like ``config`` to train at once on ``device``: what fits in MEMORY_SHARE of
    ``free`` bytes (default: the device's free memory), at most CPU_CAP on a CPU (GPU_CAP on a GPU)."""
    if config.experiment not in MLP_EXPERIMENTS:
        return 1
    where = pick_device(device)
    cap = GPU_CAP if where.type == "cuda" else CPU_CAP
    if free is None:
        free = torch.cuda.mem_get_info(where)[0] if where.type == "cuda" else _available_host_memory()
    return int(max(1, min(cap, MEMORY_SHARE * free // job_bytes(config))))


def _available_host_memory() -> int:
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def gpu_free_memory(device: str) -> int | None:
    """Free bytes on the GPU ``device`` (cuda or auto: the first, taken as like the others), asked
    in a child process so that the caller (the sweep coordinator) never opens a CUDA context, which
    would hold several hundred MB of that GPU for the whole sweep; None when the child cannot tell."""
    index = (torch.device(device).index if device.startswith("cuda") else None) or 0
    probe = f"import torch; print(torch.cuda.mem_get_info({index})[0])"
    try:
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
        return int(done.stdout.strip()) if done.returncode == 0 else None
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return None


def workers_per_gpu(device: str, workers: int) -> int:
    """The most workers that share one GPU when ``workers`` are spread as ``launch.assign_devices``
    spreads them (cuda or auto: over every GPU; cuda:N: all on that one)."""
    count = torch.cuda.device_count() if device in ("auto", "cuda") else 1
    return math.ceil(workers / max(1, count))


def claim_compatible(queue: RunQueue, first: Claim, limit: int) -> list[Claim]:
    """Up to ``limit - 1`` more waiting jobs of ``first``'s key, in queue order, each claimed on its own."""
    key = payload_key(first.payload)
    if key is None or limit <= 1:
        return []
    return queue.claim_matching(lambda payload: payload_key(payload) == key, limit - 1)


def batch_limit(requested: int | None, first: Claim, device: str) -> int:
    """K for a batch starting with ``first``: ``requested``, or by default ``auto_batch_models``."""
    if requested is not None:
        return requested
    try:
        config = parse_config(first.payload["config"])
    except Exception:
        return 1
    return auto_batch_models(config, device)


def per_worker_batch(configs: Sequence[Config], workers: int, device: str) -> int | None:
    """The default K for ``workers`` workers on this machine: no more than an equal share of the
    largest group of compatible jobs (so every worker gets some) and of the memory of the device
    they run on (the workers on one GPU, or all of them on a CPU, share it). None for one worker:
    it decides by memory as it claims.

    Called by the coordinator, which must not open a CUDA context: a GPU's free memory is asked
    in a child process (``gpu_free_memory``); if that fails, the workers' share of the jobs alone
    bounds K.
    """
    if workers == 1:
        return None
    keys = [batch_key(config) for config in configs]
    groups = Counter(key for key in keys if key is not None)
    if not groups:
        return 1
    key, count = groups.most_common(1)[0]
    config = configs[keys.index(key)]
    share = math.ceil(count / workers)
    if pick_device(device).type != "cuda":
        return max(1, min(share, auto_batch_models(config, device, _available_host_memory()) // workers))
    free = gpu_free_memory(device)
    if free is None:
        return max(1, min(share, GPU_CAP))
    return max(1, min(share, auto_batch_models(config, device, free) // workers_per_gpu(device, workers)))
