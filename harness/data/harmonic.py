"""E3's task: J_n(a r) cos(n theta) on [-1, 1]^2 in polar coordinates, noisy training labels."""

from __future__ import annotations

import numpy as np
from scipy.special import jv

from harness.data.dataset import Dataset, streams

DEFAULT_NOISE = 0.2  # SPEC E3


def harmonic(x: np.ndarray, order: int, frequency: float) -> np.ndarray:
    """J_order(frequency * r) cos(order * theta) at points x (n, 2): (n, 1)."""
    r = np.hypot(x[:, 0], x[:, 1])
    theta = np.arctan2(x[:, 1], x[:, 0])
    return (jv(order, frequency * r) * np.cos(order * theta))[:, None]


def harmonic_task(
    n_train: int, n_test: int, *, order: int = 6, frequency: float = 20.0, noise: float = DEFAULT_NOISE, seed: int = 0
) -> Dataset:
    """x uniform in [-1, 1]^2; training labels carry N(0, noise^2); test labels are clean."""
    _, train, test = streams(seed)
    x_train = train.uniform(-1.0, 1.0, (n_train, 2))
    y_train = harmonic(x_train, order, frequency) + noise * train.standard_normal((n_train, 1))
    x_test = test.uniform(-1.0, 1.0, (n_test, 2))
    return Dataset("harmonic", x_train, y_train, x_test, harmonic(x_test, order, frequency))
