"""Scaling-law forms as pure functions of log x.

Every 1-D form is a special case of one four-parameter family, written in log space on the
normalised coordinate t = ln(x / x_ref) (x_ref = the smallest x of a series):

    ln L(t) = ln( L0 + exp(c - a * h_gamma(t)) ),   h_gamma(t) = (exp(gamma t) - 1) / gamma,

with h_0(t) = t. theta = (L0, c, a, gamma). gamma = 0 is the power law with offset
L0 + A x^-a; L0 = 0 as well is the pure power law; gamma > 0 is the stretched exponential
L0 + A exp(-b x^gamma). The slope of the excess loss, d ln(L - L0) / d ln x = -a exp(gamma t),
grows like x^gamma: gamma is what the test is about, and it does not depend on x_ref. A form is
the family with some parameters fixed and bounds on the others; ``report`` turns theta into the
parameters of the form written in raw x.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# Largest gamma * ln(x_max / x_ref) allowed: beyond it the excess loss is ~exp(-e^20), i.e. gone.
MAX_GAMMA_SPAN = 20.0
MAX_GAMMA = 5.0
# The stretched-exponential form is held this far from its power-law limit so that its A and b
# stay finite; the nested family covers gamma -> 0.
STRETCHED_GAMMA_MIN = 0.05


def h_gamma(t: np.ndarray, gamma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """h_gamma(t) = expm1(gamma t) / gamma and its derivative in gamma, broadcast over gamma[..., None]."""
    t = np.asarray(t, dtype=float)
    g = np.asarray(gamma, dtype=float)[..., None]
    z = g * t
    small = np.abs(z) < 1e-4
    g_safe = np.where(g == 0.0, 1.0, g)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        h = np.where(small, t * (1.0 + z / 2.0 + z * z / 6.0), np.expm1(z) / g_safe)
        dh = np.where(small, t * t * (0.5 + z / 3.0 + z * z / 8.0), (z * np.exp(z) - np.expm1(z)) / g_safe**2)
    return h, dh


def log_model(theta: np.ndarray, t: np.ndarray) -> np.ndarray:
    """ln L at t for parameters theta (..., 4) -> (..., len(t))."""
    return log_model_and_jacobian(theta, t)[0]


def log_model_and_jacobian(theta: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ln L (..., J) and its Jacobian in theta (..., J, 4), computed without overflow."""
    theta = np.asarray(theta, dtype=float)
    L0, c, a, gamma = (theta[..., i] for i in range(4))
    h, dh = h_gamma(t, gamma)
    log_excess = c[..., None] - a[..., None] * h
    with np.errstate(divide="ignore"):
        log_l0 = np.log(L0)[..., None]
    m = np.logaddexp(log_l0, log_excess)
    share = np.exp(log_excess - m)  # (L - L0) / L
    jac = np.stack([np.exp(np.minimum(-m, 700.0)), share, -h * share, -a[..., None] * dh * share], axis=-1)
    return m, jac


def local_slope(theta: np.ndarray, t: np.ndarray) -> np.ndarray:
    """d ln L / d ln x of the model at t."""
    theta = np.asarray(theta, dtype=float)
    m = log_model(theta, t)
    a, c, gamma = theta[..., 2, None], theta[..., 1, None], theta[..., 3, None]
    h, _ = h_gamma(t, theta[..., 3])
    share = np.exp(c - a * h - m)
    return -a * np.exp(gamma * t) * share


@dataclass(frozen=True)
class Form:
    """One model form: which of (L0, c, a, gamma) are free, their bounds, and its reported parameters."""

    name: str
    formula: str
    free: tuple[bool, bool, bool, bool]
    gamma_min: float
    a_min: float
    reported: tuple[str, ...]
    report: Callable[[np.ndarray, float], dict[str, np.ndarray]]

    @property
    def n_params(self) -> int:
        return int(sum(self.free))

    def bounds(self, span: float) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bounds on theta for a series spanning t in [0, span]."""
        gamma_max = min(MAX_GAMMA, MAX_GAMMA_SPAN / max(span, 1e-12)) if self.free[3] else 0.0
        lower = np.array([0.0, -np.inf, self.a_min, self.gamma_min])
        upper = np.array([np.inf if self.free[0] else 0.0, np.inf, np.inf, gamma_max])
        return lower, upper


def _report_power_law(theta: np.ndarray, x_ref: float) -> dict[str, np.ndarray]:
    with np.errstate(over="ignore"):  # a bootstrap fit with a huge exponent reports A = inf
        return {"A": np.exp(theta[..., 1] + theta[..., 2] * np.log(x_ref)), "alpha": theta[..., 2]}


def _report_power_law_offset(theta: np.ndarray, x_ref: float) -> dict[str, np.ndarray]:
    return {"L0": theta[..., 0], **_report_power_law(theta, x_ref)}


def _report_stretched(theta: np.ndarray, x_ref: float) -> dict[str, np.ndarray]:
    L0, c, a, gamma = (theta[..., i] for i in range(4))
    with np.errstate(over="ignore"):
        return {"L0": L0, "A": np.exp(c + a / gamma), "b": a / (gamma * x_ref**gamma), "gamma": gamma}


def _report_nested(theta: np.ndarray, x_ref: float) -> dict[str, np.ndarray]:
    """(L0, c, a, gamma) of ln(L - L0) = c - a (x^gamma - 1) / gamma in raw x."""
    L0, c, a, gamma = (theta[..., i] for i in range(4))
    log_ref = np.log(x_ref)
    # (1 - x_ref^-gamma) / gamma, = ln x_ref at gamma = 0
    shift = -h_gamma(np.array([-log_ref]), gamma)[0][..., 0]
    return {"L0": L0, "c": c + a * shift, "a": a * x_ref ** (-gamma), "gamma": gamma}


FORMS: dict[str, Form] = {
    form.name: form
    for form in (
        Form(
            "power_law", "L = A x^-alpha", (False, True, True, False), 0.0, -np.inf, ("A", "alpha"), _report_power_law
        ),
        Form(
            "power_law_offset",
            "L = L0 + A x^-alpha",
            (True, True, True, False),
            0.0,
            0.0,
            ("L0", "A", "alpha"),
            _report_power_law_offset,
        ),
        Form(
            "stretched_exp",
            "L = L0 + A exp(-b x^gamma)",
            (True, True, True, True),
            STRETCHED_GAMMA_MIN,
            0.0,
            ("L0", "A", "b", "gamma"),
            _report_stretched,
        ),
        Form(
            "nested",
            "ln(L - L0) = c - a (x^gamma - 1)/gamma",
            (True, True, True, True),
            0.0,
            0.0,
            ("L0", "c", "a", "gamma"),
            _report_nested,
        ),
    )
}
