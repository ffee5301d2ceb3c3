"""E6's task: in-context regression of random continuous piecewise-linear functions on [0, 1].

Each example is its own function f: ``segments`` equal pieces, f(0) ~ N(0, 0.5^2), each piece's
slope ~ N(0, 1). The input is a sequence of scalar tokens x_1, y_1, ..., x_C, y_C, x_q with
y_i = f(x_i) + N(0, noise^2) and x uniform in [0, 1]; the target is f(x_q) (plus the same noise in
the training split; clean in the test split).
"""

from __future__ import annotations

import numpy as np

from harness.data.dataset import Dataset, streams

DEFAULT_NOISE = 0.3  # SPEC E6
START_SD = 0.5


def piecewise_values(x: np.ndarray, start: np.ndarray, slopes: np.ndarray) -> np.ndarray:
    """f(x) for n functions at once: x (n, p) in [0, 1], start (n,), slopes (n, S) -> (n, p)."""
    n_segments = slopes.shape[1]
    knots = np.concatenate([start[:, None], start[:, None] + np.cumsum(slopes, axis=1) / n_segments], axis=1)
    piece = np.minimum((x * n_segments).astype(np.int64), n_segments - 1)
    left = np.take_along_axis(knots, piece, axis=1)
    return left + np.take_along_axis(slopes, piece, axis=1) * (x - piece / n_segments)


def _sequences(n: int, rng: np.random.Generator, segments: int, context: int, noise: float, noisy_target: bool):
    start = START_SD * rng.standard_normal(n)
    slopes = rng.standard_normal((n, segments))
    x = rng.uniform(0.0, 1.0, (n, context + 1))
    f = piecewise_values(x, start, slopes)
    y = f + noise * rng.standard_normal((n, context + 1))
    tokens = np.empty((n, 2 * context + 1))
    tokens[:, 0:-1:2] = x[:, :context]
    tokens[:, 1:-1:2] = y[:, :context]
    tokens[:, -1] = x[:, context]
    target = y[:, context] if noisy_target else f[:, context]
    return tokens, target[:, None]


def piecewise_task(
    n_train: int, n_test: int, *, segments: int = 16, context: int = 8, noise: float = DEFAULT_NOISE, seed: int = 0
) -> Dataset:
    """Sequences (n, 2 context + 1) of scalar tokens and the query's value (n, 1)."""
    _, train, test = streams(seed)
    x_train, y_train = _sequences(n_train, train, segments, context, noise, noisy_target=True)
    x_test, y_test = _sequences(n_test, test, segments, context, noise, noisy_target=False)
    return Dataset("piecewise", x_train, y_train, x_test, y_test)
