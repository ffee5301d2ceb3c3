"""E2's task: a random two-layer ReLU teacher on [-1, 1]^input_dim with Gaussian label noise."""

from __future__ import annotations

import numpy as np

from harness.data.dataset import Dataset, streams

DEFAULT_NOISE = 3.0  # SPEC E2: y = teacher(x) + N(0, 3^2)


def teacher_task(
    n_train: int,
    n_test: int,
    *,
    input_dim: int = 2,
    width: int = 50,
    weight_range: float = 1.0,
    noise: float = DEFAULT_NOISE,
    seed: int = 0,
    teacher_seed: int | None = None,
) -> Dataset:
    """Teacher weights and biases U(-weight_range, weight_range); x U(-1, 1); test labels clean.

    The teacher is drawn from ``teacher_seed`` when given, else from ``seed`` with the points."""
    params, train, test = streams(seed)
    if teacher_seed is not None:
        params = streams(teacher_seed)[0]
    w1 = params.uniform(-weight_range, weight_range, (width, input_dim))
    b1 = params.uniform(-weight_range, weight_range, width)
    w2 = params.uniform(-weight_range, weight_range, (1, width))
    b2 = params.uniform(-weight_range, weight_range, 1)

    def teacher(x: np.ndarray) -> np.ndarray:
        return np.maximum(x @ w1.T + b1, 0.0) @ w2.T + b2

    x_train = train.uniform(-1.0, 1.0, (n_train, input_dim))
    y_train = teacher(x_train) + noise * train.standard_normal((n_train, 1))
    x_test = test.uniform(-1.0, 1.0, (n_test, input_dim))
    return Dataset("teacher", x_train, y_train, x_test, teacher(x_test))
