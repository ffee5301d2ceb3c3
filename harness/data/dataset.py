"""A supervised task's splits: float arrays, targets 2-D (one-hot rows for classification)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Dataset:
    """Train and test splits. ``x_*``: (n, inputs); ``y_*``: (n, outputs).

    Classification targets are one-hot rows, so a data point is one vector (x, y) for moment
    compression and k-means centroids (soft labels) stay valid targets of the cross-entropy.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classification: bool = False

    @property
    def n_inputs(self) -> int:
        return self.x_train.shape[1]

    @property
    def n_outputs(self) -> int:
        return self.y_train.shape[1]

    @property
    def objects(self) -> np.ndarray:
        """The training points as objects (x_i, y_i) of dimension m = inputs + outputs, float64."""
        return np.concatenate([self.x_train, self.y_train], axis=1).astype(np.float64)


def one_hot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """(n,) integer labels -> (n, n_classes) float32 one-hot rows."""
    return np.eye(n_classes, dtype=np.float32)[labels]


def streams(seed: int) -> tuple[np.random.Generator, np.random.Generator, np.random.Generator]:
    """Independent generators for the task's parameters, its train split and its test split.

    Separate streams keep the training set fixed when only n_test changes, and the task (teacher,
    target function) fixed when only n_train changes.
    """
    return tuple(np.random.default_rng([seed, stream]) for stream in range(3))
