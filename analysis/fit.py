"""Robust, global, deterministic fits of the 1-D forms, for one data set or thousands at once.

Residuals are in log space: r_j = y_j - ln L(x_j), y_j the mean log loss at x_j, weighted by the
number of seeds behind y_j. The loss is least squares or, with ``huber=delta``, Huber's.

Global: every form is started from the best points of a fixed grid over the exponents (a, gamma)
and the offset share q = L0 / L(x_max), where the level c is solved in closed form (variable
projection), one start per region of the grid (gamma on its lower bound or not, L0 = 0 or not),
so a boundary optimum and an interior one are both tried; a form can also be started from the
optimum of a form it contains, which then stands in for the regions on the gamma bound. Each start
is refined by a projected Levenberg-Marquardt, batched over data sets; the lowest loss wins. Same
data, same answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from analysis.forms import FORMS, Form, log_model_and_jacobian

A_GRID = np.geomspace(0.01, 5.0, 25)
GAMMA_SPAN_GRID = np.array([0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 11.0, 15.0])  # gamma * span
Q_GRID = np.array([0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98])
MAX_ITER = 400
MIN_DAMPING = 1e-10  # lambda never falls below this, so a damped system stays invertible
# Grid losses are evaluated in blocks of at most this many (data set, grid point) pairs.
BLOCK = 2_000_000


@dataclass(frozen=True)
class BatchFit:
    """Fits of one form to B data sets: internal parameters theta (B, 4), loss (B,), converged (B,)."""

    form: str
    theta: np.ndarray
    loss: np.ndarray
    converged: np.ndarray


@dataclass(frozen=True)
class FitResult:
    """One form fitted to one series.

    params: the form's parameters in raw x (see ``analysis.forms``); param_ci: percentile bootstrap
    intervals, filled in by ``analysis.bootstrap``; loss: the minimised loss (half the weighted sum of
    squared log residuals, or the Huber sum); rss: the weighted sum of squared log residuals with
    weights normalised to mean 1; aicc: small-sample AIC over the n_points distinct x values.
    """

    form: str
    formula: str
    params: dict[str, float]
    theta: np.ndarray
    x_ref: float
    loss: float
    rss: float
    n_points: int
    n_params: int
    aicc: float
    success: bool
    message: str
    param_ci: dict[str, tuple[float, float]] = field(default_factory=dict)


def huber_rho(r: np.ndarray, delta: float | None) -> np.ndarray:
    """r^2 / 2 (least squares), or Huber's loss: quadratic within delta, linear beyond."""
    if delta is None:
        return 0.5 * r * r
    abs_r = np.abs(r)
    return np.where(abs_r <= delta, 0.5 * r * r, delta * (abs_r - 0.5 * delta))


def _loss(r: np.ndarray, w: np.ndarray, delta: float | None) -> np.ndarray:
    return (w * huber_rho(r, delta)).sum(axis=-1)


def _grid(form: Form, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grid start points allowed by the form: theta without c (G, 4), log-model shapes M (G, J), region id (G,)."""
    span = float(t[-1])
    lower, upper = form.bounds(span)
    a_vals = A_GRID if form.free[2] else np.array([0.0])
    gammas = GAMMA_SPAN_GRID / max(span, 1e-12) if form.free[3] else np.array([0.0])
    gammas = gammas[(gammas >= lower[3]) & (gammas <= upper[3])]
    if gammas.size == 0 or gammas[0] > lower[3]:
        gammas = np.concatenate([[lower[3]], gammas])
    q_vals = Q_GRID if form.free[0] else np.array([0.0])
    a, gamma, q = (v.ravel() for v in np.meshgrid(a_vals, gammas, q_vals, indexing="ij"))
    shape_theta = np.stack([np.zeros_like(a), np.zeros_like(a), a, gamma], axis=1)
    log_shape, _ = log_model_and_jacobian(shape_theta, t)  # ln g(t), g(0) = 1
    with np.errstate(divide="ignore"):
        log_rho = np.log(q) - np.log1p(-q) + log_shape[:, -1]
    M = np.logaddexp(log_rho[:, None], log_shape)
    theta = shape_theta.copy()
    theta[:, 0] = np.exp(log_rho)  # L0 = rho * e^c, completed once c is known
    region = 2 * (gamma > lower[3]) + (q > 0)
    return theta, M, region


def _grid_starts(
    form: Form, t: np.ndarray, y: np.ndarray, w: np.ndarray, curved_only: bool = False
) -> list[np.ndarray]:
    """For each grid region, the best grid point of every data set (B, 4), level solved exactly.

    curved_only: only the regions with gamma above its lower bound.
    """
    theta_g, M, region = _grid(form, t)
    if curved_only and (region >= 2).any():
        keep = region >= 2
        theta_g, M, region = theta_g[keep], M[keep], region[keep]
    order = np.argsort(region, kind="stable")
    theta_g, M, region = theta_g[order], M[order], region[order]
    bounds = np.flatnonzero(np.diff(region)) + 1
    slices = [slice(lo, hi) for lo, hi in zip([0, *bounds], [*bounds, len(region)])]
    wn = w / w.sum()
    y_bar = y @ wn
    M_bar = M @ wn
    Mc = M - M_bar[:, None]
    smm = (Mc * Mc) @ wn
    B, G = y.shape[0], M.shape[0]
    arg = np.zeros((len(slices), B), dtype=int)
    step = max(1, BLOCK // G)
    for lo in range(0, B, step):
        block = slice(lo, lo + step)
        # weighted RSS up to a per-data-set constant
        score = smm[None, :] - 2.0 * ((y[block] - y_bar[block, None]) * wn) @ Mc.T
        for k, cols in enumerate(slices):
            arg[k, block] = cols.start + np.argmin(score[:, cols], axis=1)
    starts = []
    for k in range(len(slices)):
        theta = theta_g[arg[k]].copy()
        c = y_bar - M_bar[arg[k]]
        theta[:, 1] = c
        theta[:, 0] = theta[:, 0] * np.exp(c)
        starts.append(theta)
    return starts


def levenberg_marquardt(
    form: Form,
    theta0: np.ndarray,
    t: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    huber: float | None = None,
    max_iter: int = MAX_ITER,
) -> BatchFit:
    """Projected Levenberg-Marquardt on B data sets at once (iteratively reweighted for Huber).

    Parameters at a bound whose gradient points outwards are held there for the step, so a fit can
    end exactly on gamma = 0 or L0 = 0. A data set stops when a step gains less than 1e-12 of its
    loss or no damping gives a gain.
    """
    lower, upper = form.bounds(float(t[-1]))
    free = np.array(form.free)
    theta = np.clip(np.array(theta0, dtype=float), lower, upper)
    B = theta.shape[0]
    m, jac = log_model_and_jacobian(theta, t)
    r = y - m
    loss = _loss(r, w, huber)
    lam = np.full(B, 1e-3)
    converged = np.zeros(B, dtype=bool)
    live = np.arange(B)
    eye = np.eye(4)
    for _ in range(max_iter):
        if live.size == 0:
            break
        th, rr, jj, yy = theta[live], r[live], jac[live], y[live]
        weight = w if huber is None else w * np.minimum(1.0, huber / np.maximum(np.abs(rr), 1e-300))
        jw = (jj * weight[..., None]).transpose(0, 2, 1)
        grad = (jw @ rr[..., None])[..., 0]  # descent direction in theta
        hess = jw @ jj
        movable = free & ~((th <= lower) & (grad < 0)) & ~((th >= upper) & (grad > 0))
        diag = np.diagonal(hess, axis1=1, axis2=2)
        # The damping floor keeps the system invertible where a parameter has no grip on the data
        # (a zero Jacobian column); a data set whose model overflowed takes no step and stops.
        scale = np.maximum(diag, 1e-12 * diag.max(axis=1, keepdims=True) + 1e-12)
        system = hess + (lam[live, None] * scale)[:, :, None] * eye
        mask = movable[:, :, None] & movable[:, None, :]
        system = np.where(mask, system, eye)
        rhs = np.where(movable, grad, 0.0)
        broken = ~(np.isfinite(system).all(axis=(1, 2)) & np.isfinite(rhs).all(axis=1))
        system[broken], rhs[broken] = eye, 0.0
        step = _solve_each(system, rhs)
        new = np.clip(th + step, lower, upper)
        m_new, jac_new = log_model_and_jacobian(new, t)
        r_new = yy - m_new
        loss_new = _loss(r_new, w, huber)
        old = loss[live]
        accept = np.isfinite(loss_new) & (loss_new < old)
        gain_small = accept & (old - loss_new <= 1e-12 * old + 1e-300)
        idx = live[accept]
        theta[idx], r[idx], jac[idx], loss[idx] = new[accept], r_new[accept], jac_new[accept], loss_new[accept]
        lam[live] = np.where(accept, np.maximum(lam[live] / 3.0, MIN_DAMPING), lam[live] * 4.0)
        done = gain_small | (lam[live] > 1e12)
        converged[live[done]] = True
        live = live[~done]
    return BatchFit(form.name, theta, loss, converged)


def _solve_each(systems: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Solve a stack of small systems; should one be singular to working precision (two parameters
    with proportional Jacobian columns), its least-squares step is used instead."""
    try:
        return np.linalg.solve(systems, rhs[..., None])[..., 0]
    except np.linalg.LinAlgError:
        return np.stack([np.linalg.lstsq(a, b, rcond=None)[0] for a, b in zip(systems, rhs)])


def fit_batch(
    form: Form | str,
    t: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    huber: float | None = None,
    extra_starts: list[np.ndarray] = (),
    curved_only: bool = False,
) -> BatchFit:
    """Fit a form to B data sets y (B, J) that share the design t (J,) (ascending, t[0] = 0) and weights w (J,).

    extra_starts: more starting points (B, 4), e.g. the optimum of a form this one contains; with
    curved_only the grid supplies starts only off the gamma bound, which such a start then covers.
    """
    form = FORMS[form] if isinstance(form, str) else form
    y = np.atleast_2d(np.asarray(y, dtype=float))
    best: BatchFit | None = None
    for start in [*_grid_starts(form, t, y, w, curved_only), *extra_starts]:
        fit = levenberg_marquardt(form, start, t, y, w, huber)
        if best is None:
            best = fit
            continue
        better = fit.loss < best.loss
        best = BatchFit(
            form.name,
            np.where(better[:, None], fit.theta, best.theta),
            np.where(better, fit.loss, best.loss),
            np.where(better, fit.converged, best.converged),
        )
    return BatchFit(best.form, flat_as_amplitude(best.theta), best.loss, best.converged)


def flat_as_amplitude(theta: np.ndarray) -> np.ndarray:
    """theta with every flat fit (a = 0: L = L0 + e^c at every x) written with L0 = 0.

    A flat fit fixes only the sum L0 + e^c; where the optimiser ends on that line is round-off (two
    CPUs reported L0 = 4e-5, A = 2.6e-3 and L0 = 2.6e-3, A = 5e-5 for the same data), so it is
    reported one way: all amplitude.
    """
    theta = theta.copy()
    flat = (theta[:, 2] == 0.0) & (theta[:, 0] > 0.0)
    with np.errstate(divide="ignore"):
        theta[flat, 1] = np.logaddexp(theta[flat, 1], np.log(theta[flat, 0]))
    theta[flat, 0] = 0.0
    return theta


def aicc(rss: float, n_points: int, n_params: int) -> float:
    """AICc of a least-squares fit with Gaussian errors of unknown variance (the variance counts as a parameter)."""
    k = n_params + 1
    if n_points - k - 1 <= 0 or rss <= 0:
        return float("nan")
    return n_points * np.log(rss / n_points) + 2 * k + 2 * k * (k + 1) / (n_points - k - 1)


def normalised_log_x(x: np.ndarray) -> tuple[np.ndarray, float]:
    """t = ln(x / x_ref) with x_ref = min(x)."""
    x = np.asarray(x, dtype=float)
    x_ref = float(x.min())
    return np.log(x / x_ref), x_ref


def summarise(
    form: Form | str, batch: BatchFit, index: int, t: np.ndarray, y: np.ndarray, w: np.ndarray, x_ref: float
) -> FitResult:
    """Turn row ``index`` of a batch fit to the observed y (J,) into a FitResult."""
    form = FORMS[form] if isinstance(form, str) else form
    theta = batch.theta[index]
    m, _ = log_model_and_jacobian(theta, t)
    wn = w / w.mean()
    rss = float(((y - m) ** 2) @ wn)
    n = len(t)
    ok = bool(batch.converged[index] and np.isfinite(batch.loss[index]))
    message = "converged" if ok else "did not converge: result is the best point reached"
    params = {k: float(v) for k, v in form.report(theta, x_ref).items()}
    return FitResult(
        form=form.name,
        formula=form.formula,
        params=params,
        theta=theta,
        x_ref=x_ref,
        loss=float(batch.loss[index]),
        rss=rss,
        n_points=n,
        n_params=form.n_params,
        aicc=aicc(rss, n, form.n_params),
        success=ok,
        message=message,
    )


def fit_form(
    form: Form | str, x: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None, huber: float | None = None
) -> FitResult:
    """Fit one form to mean log losses y at distinct x (weights: seeds behind each y; default equal)."""
    form = FORMS[form] if isinstance(form, str) else form
    order = np.argsort(x)
    x, y = np.asarray(x, float)[order], np.asarray(y, float)[order]
    w = np.ones_like(x) if weights is None else np.asarray(weights, float)[order]
    if len(x) < form.n_params + 1:
        raise ValueError(
            f"{form.name} has {form.n_params} parameters; {len(x)} distinct x values are too few to fit it"
        )
    t, x_ref = normalised_log_x(x)
    batch = fit_batch(form, t, y[None, :], w, huber)
    return summarise(form, batch, 0, t, y, w, x_ref)
