"""Training: batch samplers over weighted sets, optimisers and schedule, losses, the side-by-side loop.

``train_side_by_side`` is the one training entry (harness/train/loop.py); inside ``run_together``
the calls of several functions are trained together, same-shape MLPs stacked (harness/train/batched.py).
"""

from harness.train.batched import run_together
from harness.train.loop import Arm, train_side_by_side
from harness.train.losses import accuracy, cross_entropy, loss_for, mean_loss, predict, predict_together, squared_error
from harness.train.optim import make_optimizer, make_schedule
from harness.train.sampling import BatchSampler

__all__ = [
    "Arm",
    "BatchSampler",
    "accuracy",
    "cross_entropy",
    "loss_for",
    "make_optimizer",
    "make_schedule",
    "mean_loss",
    "predict",
    "predict_together",
    "run_together",
    "squared_error",
    "train_side_by_side",
]
