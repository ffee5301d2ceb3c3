"""Optimisers and the learning-rate schedule from a TrainConfig."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch

from harness.config import TrainConfig

ADAMW_WEIGHT_DECAY = 0.01  # SPEC 6: AdamW defaults betas (0.9, 0.999), weight decay 0.01, eps 1e-8


def make_optimizer(params: Iterable[torch.nn.Parameter], train: TrainConfig) -> torch.optim.Optimizer:
    """``gd`` is plain SGD on full batches; ``weight_decay`` None means 0.01 for adamw, else 0."""
    params = list(params)
    name, lr = train.optimizer, train.lr
    decay = train.weight_decay if train.weight_decay is not None else (ADAMW_WEIGHT_DECAY if name == "adamw" else 0.0)
    if name in ("gd", "sgd"):
        return torch.optim.SGD(params, lr=lr, momentum=train.momentum, weight_decay=decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=train.betas, eps=train.eps, weight_decay=decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=train.betas, eps=train.eps, weight_decay=decay)
    if name == "adamax":
        return torch.optim.Adamax(params, lr=lr, betas=train.betas, eps=train.eps, weight_decay=decay)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, eps=train.eps, momentum=train.momentum, weight_decay=decay)
    if name == "rprop":
        return torch.optim.Rprop(params, lr=lr)  # no weight decay (the config rejects one)
    raise ValueError(f"train.optimizer: unknown optimizer {name!r}")


def make_schedule(
    optimizer: torch.optim.Optimizer, train: TrainConfig, steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Cosine from lr at step 0 to 0 at step ``steps`` (SPEC 6), or constant.

    Rprop reads its lr only to initialise its step sizes, so a schedule does not change it later.
    """
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule_factor(train, steps))


def schedule_factor(train: TrainConfig, steps: int) -> Callable[[int], float]:
    """The schedule's factor: after t steps the learning rate is ``train.lr * factor(t)``."""
    if train.schedule == "cosine":
        return lambda t: 0.5 * (1.0 + math.cos(math.pi * min(t, steps) / steps))
    return lambda t: 1.0
