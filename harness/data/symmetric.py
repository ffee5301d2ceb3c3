"""Permutation-symmetric functions of d objects (experiments E1 and E7; no training).

Each is f(W) = (1/d) sum_i c_i g(w_i) for objects w_i in R^m with weights c_i (all 1 for the
original set), evaluated at a fixed set of probe inputs x_a, so a compressed set (kept objects,
new weights) can be compared with the original directly.
"""

from __future__ import annotations

import numpy as np


def uniform_objects(d: int, m: int, rng: np.random.Generator) -> np.ndarray:
    """d objects uniform in [-1, 1]^m."""
    return rng.uniform(-1.0, 1.0, size=(d, m))


def sigmoid_sum(objects: np.ndarray, weights: np.ndarray, probes: np.ndarray, total: float) -> float:
    """E1: (1/total) sum_i c_i mean_a sigmoid(<w_i, x_a>), probes x_a of shape (A, m)."""
    values = 1.0 / (1.0 + np.exp(-(objects @ probes.T)))
    return float(weights @ values.mean(axis=1) / total)


def inverse_sum(objects: np.ndarray, weights: np.ndarray, probes: np.ndarray, total: float, offset: float) -> float:
    """E7: (1/total) sum_i c_i mean_a 1 / (offset + <w_i, x_a>); offset > m keeps it finite."""
    values = 1.0 / (offset + objects @ probes.T)
    return float(weights @ values.mean(axis=1) / total)


def symmetric_problem(d: int, m: int, n_probes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """E1/E7's objects (d, m) and probes (n_probes, m), both uniform in [-1, 1]^m, from one seed."""
    rng = np.random.default_rng([seed, 1])
    objects = uniform_objects(d, m, rng)
    return objects, uniform_objects(n_probes, m, rng)


def symmetric_value(
    function: str,
    objects: np.ndarray,
    weights: np.ndarray,
    probes: np.ndarray,
    total: float,
    offset: float | None = None,
) -> float:
    """``sigmoid`` (E1) or ``inverse`` (E7, offset A; None: m + 0.05 as in SPEC) of a weighted set."""
    if function == "sigmoid":
        return sigmoid_sum(objects, weights, probes, total)
    if function == "inverse":
        return inverse_sum(objects, weights, probes, total, objects.shape[1] + 0.05 if offset is None else offset)
    raise ValueError(f"function must be sigmoid or inverse; got {function!r}")
