"""What every experiment shares: the result of one arm, seed streams, devices and dtypes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from harness.compression import Compression, compress, n_moments
from harness.compression.methods import NULL_FINAL_DROPS
from harness.config import CompressionConfig, Config

# Called with (arm, record) at every evaluation of a training experiment, as it happens.
OnRecord = Callable[[str, dict], None]


@dataclass
class ArmResult:
    """One arm of one configuration: its status (done | diverged), one record per evaluation, and
    its summary (the measured columns of the results table: d, d_eff, width, width_eff, k,
    train_loss, test_loss, compress_seconds, train_seconds, moment_error and the arm's extras)."""

    arm: str
    status: str
    metrics: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Seeds:
    """Independent seeds for the parts of a run, all derived from ``config.seed``.

    Every arm of a configuration gets the same ones, which is what gives the arms one
    initialisation and one batch order. ``data`` is ``task.seed`` when the config sets it.
    """

    data: int
    init: int
    batches: int
    compression: int

    @classmethod
    def of(cls, config: Config) -> Seeds:
        derived = np.random.SeedSequence(config.seed).generate_state(3)
        data = config.task.seed if config.task.seed is not None else config.seed
        return cls(data, int(derived[0]), int(derived[1]), int(derived[2]))


def method_of(arm: str, compression: CompressionConfig) -> str:
    """The compress() method behind an arm: moment -> compression.method; baselines by name."""
    return compression.method if arm == "moment" else arm


def moment_options(arm: str, compression: CompressionConfig) -> dict:
    """The schedule options compress() takes for an arm: the moment arm's final_phase,
    round_fraction, group_width and final_drops when its method is the clustered one; nothing
    otherwise."""
    if method_of(arm, compression) != "clustered":
        return {}
    return {
        "final_phase": compression.final_phase,
        "round_fraction": compression.round_fraction,
        "group_width": compression.group_width,
        # compress()'s None is today's default; a config's null is the default its runs were made with.
        "final_drops": NULL_FINAL_DROPS if compression.final_drops is None else compression.final_drops,
    }


def warm_up_compression(arms: tuple[str, ...], compression: CompressionConfig, m: int, device: torch.device) -> None:
    """One untimed compression per arm on a small random set (2 N(m,k) + 1 points), so that the
    timed ones (E1, E5, E7) exclude one-off costs such as CUDA's lazily loaded linear algebra."""
    points = np.random.default_rng(0).uniform(-1.0, 1.0, (2 * n_moments(m, compression.k) + 1, m))
    for arm in arms:
        compress_objects(points, arm, compression, None, 0, device)


def compress_objects(
    objects: np.ndarray, arm: str, compression: CompressionConfig, size, seed: int, device: torch.device
) -> Compression:
    """An arm's compression of (d, m) objects: the moment arm's linear algebra on ``device``, the
    baselines on the host (E1, E5, E7). ``size``: a size rule, None for N(m, k)."""
    points = torch.as_tensor(objects, device=device) if arm == "moment" else objects
    method = method_of(arm, compression)
    return compress(points, k=compression.k, size=size, method=method, seed=seed, **moment_options(arm, compression))


def dtype_of(config: Config) -> torch.dtype:
    return torch.float64 if config.train.dtype == "float64" else torch.float32


def tensor(array: np.ndarray, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return torch.as_tensor(np.asarray(array), dtype=dtype, device=device)


def final_summary(history: list[dict]) -> dict:
    """Last recorded train/test loss, the best test loss, and the last step reached."""
    last = history[-1] if history else {}
    tests = [r["test_loss"] for r in history if r.get("test_loss") is not None]
    summary = {
        "train_loss": last.get("train_loss"),
        "test_loss": last.get("test_loss"),
        "best_test_loss": min(tests) if tests else None,
        "last_step": last.get("step"),
    }
    if "test_accuracy" in last:
        summary["test_accuracy"] = last["test_accuracy"]
    return summary
