"""The joint law L(N, D) = E + A / N^alpha + B / D^beta, fitted as in Besiroglu et al. 2024
("Chinchilla scaling: a replication attempt").

Parameters theta = (a, b, e, alpha, beta) with A = e^a, B = e^b, E = e^e, so that
ln L = logsumexp(a - alpha ln N, b - beta ln D, e). The loss is the *sum* over points of Huber's loss
(delta = 1e-3) of the log residuals, each point weighted by its number of seeds. Their grid of
starts (alpha, beta in {0, 0.5, ..., 2}, e in {-1, -0.5, ..., 1}, a, b in {0, 5, ..., 25}: 4500
points) is evaluated in one vectorised pass and L-BFGS-B runs from the ``n_starts`` best of them
(all 4500 with ``n_starts=None``; on the Chinchilla data the best 100 and all 4500 reach the same
minimum, to 1e-13 of the loss, in ~1 s instead of ~1 min).

Intervals: percentile bootstrap over seeds within each (N, D) cell when cells have replicates,
else over cells (each bootstrap fit starts from the full-data optimum).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import product

import numpy as np
from scipy.optimize import minimize

from analysis.bootstrap import percentile_interval

HUBER_DELTA = 1e-3
GRID = {
    "a": np.arange(0, 30, 5.0),
    "b": np.arange(0, 30, 5.0),
    "e": np.arange(-1, 1.5, 0.5),
    "alpha": np.arange(0, 2.5, 0.5),
    "beta": np.arange(0, 2.5, 0.5),
}
PARAMS = ("E", "A", "B", "alpha", "beta")
N_STARTS = 100


@dataclass(frozen=True)
class JointResult:
    """L(N, D) fit: params E, A, B, alpha, beta; loss = the minimised sum of weighted Huber losses."""

    params: dict[str, float]
    param_ci: dict[str, tuple[float, float]]
    theta: np.ndarray
    loss: float
    n_points: int
    n_runs: int
    success: bool
    message: str
    bootstrap: str
    n_boot: int
    huber_delta: float = HUBER_DELTA
    boot_params: dict[str, np.ndarray] = field(default_factory=dict, repr=False)


def _predict(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """ln L (..., P) for theta (..., 5) and the shares of the three terms in L."""
    a, b, e, alpha, beta = (theta[..., i, None] for i in range(5))
    ta, tb = a - alpha * log_n, b - beta * log_d
    top = np.maximum(np.maximum(ta, tb), e)
    ea, eb, ee = np.exp(ta - top), np.exp(tb - top), np.exp(e - top)
    total = ea + eb + ee
    return top + np.log(total), (ea / total, eb / total, ee / total)


def _huber(r: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """Huber's loss and its derivative."""
    abs_r = np.abs(r)
    inside = abs_r <= delta
    return np.where(inside, 0.5 * r * r, delta * (abs_r - 0.5 * delta)), np.where(inside, r, delta * np.sign(r))


def objective(
    theta: np.ndarray,
    log_n: np.ndarray,
    log_d: np.ndarray,
    log_l: np.ndarray,
    w: np.ndarray,
    delta: float = HUBER_DELTA,
) -> tuple[float, np.ndarray]:
    """Weighted sum of Huber losses of the log residuals and its gradient in theta."""
    pred, share = _predict(theta, log_n, log_d)
    loss, psi = _huber(pred - log_l, delta)
    g = w * psi
    grad = np.array([g @ share[0], g @ share[1], g @ share[2], -(g * log_n) @ share[0], -(g * log_d) @ share[1]])
    return float(w @ loss), grad


def _minimise(theta0: np.ndarray, args: tuple) -> tuple[np.ndarray, float, bool, str]:
    res = minimize(objective, theta0, args=args, jac=True, method="L-BFGS-B", options={"maxiter": 5000})
    return res.x, float(res.fun), bool(res.success), str(res.message)


def fit_joint_arrays(
    n: np.ndarray,
    d: np.ndarray,
    log_l: np.ndarray,
    w: np.ndarray | None = None,
    delta: float = HUBER_DELTA,
    n_starts: int | None = N_STARTS,
) -> tuple[np.ndarray, float, bool, str]:
    """Best (theta, loss, success, message) from the grid of starts, for points (N, D, ln L) with weights w."""
    log_n, log_d = np.log(n), np.log(d)
    w = np.ones_like(log_l) if w is None else w
    grid = np.array(list(product(GRID["a"], GRID["b"], GRID["e"], GRID["alpha"], GRID["beta"])))
    pred, _ = _predict(grid, log_n, log_d)
    grid_loss = (_huber(pred - log_l, delta)[0] * w).sum(axis=1)
    order = np.argsort(grid_loss, kind="stable")
    starts = grid[order] if n_starts is None else grid[order[:n_starts]]
    best = None
    for start in starts:
        theta, loss, ok, msg = _minimise(start, (log_n, log_d, log_l, w, delta))
        if np.isfinite(loss) and (best is None or loss < best[1]):
            best = (theta, loss, ok, msg)
    return best


def to_params(theta: np.ndarray) -> dict[str, np.ndarray]:
    """(a, b, e, alpha, beta) -> E, A, B, alpha, beta."""
    return {
        "E": np.exp(theta[..., 2]),
        "A": np.exp(theta[..., 0]),
        "B": np.exp(theta[..., 1]),
        "alpha": theta[..., 3],
        "beta": theta[..., 4],
    }


def fit_joint(
    n: np.ndarray,
    d: np.ndarray,
    loss: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    delta: float = HUBER_DELTA,
    n_starts: int | None = N_STARTS,
) -> JointResult:
    """Fit L(N, D) to runs (one row each); runs with equal (N, D) are seeds of one cell."""
    n, d, loss = (np.asarray(v, dtype=float) for v in (n, d, loss))
    cells, cell_of = np.unique(np.stack([n, d], axis=1), axis=0, return_inverse=True)
    cell_of = cell_of.ravel()
    counts = np.bincount(cell_of).astype(float)
    log_l = np.log(loss)
    means = np.bincount(cell_of, log_l) / counts
    theta, best_loss, ok, msg = fit_joint_arrays(cells[:, 0], cells[:, 1], means, counts, delta, n_starts)

    rng = np.random.default_rng(seed)
    log_n, log_d = np.log(cells[:, 0]), np.log(cells[:, 1])
    replicated = (counts > 1).any()
    boots = []
    for _ in range(n_boot):
        if replicated:
            pick = _resample_within(cell_of, rng)
            y, w = np.bincount(cell_of, log_l[pick]) / counts, counts
        else:
            y, w = means, np.bincount(rng.integers(0, len(cells), len(cells)), minlength=len(cells)).astype(float)
        boots.append(_minimise(theta, (log_n, log_d, y, w, delta))[0])
    boot_params = to_params(np.array(boots).reshape(-1, 5))
    ci = {
        k: tuple(float(v) for v in percentile_interval(boot_params[k])) if n_boot else (float("nan"),) * 2
        for k in PARAMS
    }
    return JointResult(
        params={k: float(v) for k, v in to_params(theta).items()},
        param_ci=ci,
        theta=theta,
        loss=best_loss,
        n_points=len(cells),
        n_runs=len(loss),
        success=ok,
        message=msg,
        bootstrap="seeds within (N, D) cells" if replicated else "(N, D) cells",
        n_boot=n_boot,
        huber_delta=delta,
        boot_params=boot_params,
    )


def _resample_within(cell_of: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For each run, the index of a run drawn at random from its own cell."""
    order = np.argsort(cell_of, kind="stable")
    counts = np.bincount(cell_of)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    offset = (rng.random(len(cell_of)) * counts[cell_of]).astype(int)
    return order[first[cell_of] + offset]
