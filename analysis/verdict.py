"""The test of gamma > 0 and the verdict it leads to.

Statistic: F = (R0 - R1) / s^2, the drop in weighted residual sum of squares (log space, weights =
seeds per x) from the power law with offset (R0, gamma = 0) to the nested family (R1, gamma >= 0),
over s^2 = (within-x sum of squares + R1) / (runs - 4), the residual variance per run of the
nested fit with the seeds included. Seeds give s^2 many degrees of freedom, so the test has power
with 8-12 x values; lack of fit enters s^2 too, so scatter of the means beyond the seed noise does
not pass for curvature. gamma = 0 sits on the boundary and the fits are nonlinear, so F is not
F-distributed: its null distribution comes from a parametric bootstrap around the fitted power law
with offset (``analysis.bootstrap``).

Verdict, at level LEVEL = 0.025: the alternative is one-sided (gamma > 0), and so is the other
condition, gamma's 95% interval excluding 0 (its 2.5th percentile above 0); both are 2.5% tails, the
one-sided half of the usual two-sided 5%. The p-value itself is calibrated (about uniform under a
true power law: P(p < 0.05) = 5.1% in 1000 draws), so at LEVEL = 0.05 the verdict would call a pure
power law superpolynomial in ~5% of draws, with no margin; at 0.025 it does in 1-2%.

- superpolynomial: p < LEVEL, gamma's bootstrap interval excludes 0 and the nested family fits
  the means to within the seed noise (lack of fit not significant at LACK_OF_FIT_LEVEL). Scatter
  of the means beyond the seed noise (say, a point off the law at one x) can look like curvature;
  ``tau`` in the null bootstrap absorbs most of it, this check the rest;
- power_law: p >= LEVEL, the power law with offset fits the means to within the seed noise (lack
  of fit not significant at LACK_OF_FIT_LEVEL, when seeds allow the check) and the data exclude
  visible curvature: gamma's upper bound times ln(x_max / x_min) is at most MAX_SLOPE_GROWTH, i.e.
  the slope of the excess loss could not grow by more than a factor e^MAX_SLOPE_GROWTH across the
  x range. Without that bound a non-significant test only means too little data;
- inconclusive: otherwise, or with fewer than MIN_POINTS distinct x or less than MIN_RANGE in x.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from analysis.defaults import LEVEL

MIN_POINTS = 6
MIN_RANGE = 8.0
MAX_SLOPE_GROWTH = 1.0
LACK_OF_FIT_LEVEL = 0.01
ALT_PARAMS = 4
# Levenberg-Marquardt stops once a step gains under 1e-12 of the loss (``analysis.fit``); drops
# between fits below this share of the loss are numerical, not evidence.
ROUND_OFF_DROP = 1e-10


def f_statistic(loss_null: np.ndarray, loss_alt: np.ndarray, ss_within: np.ndarray, n_runs: int) -> np.ndarray:
    """F for gamma > 0 from the minimised losses (half weighted sums of squares) of the two fits.

    A drop below ROUND_OFF_DROP of the null loss counts as none. Where the nested fit ends on
    gamma = 0 it is the null fit, and its drop is round-off (1e-16 to 1e-11 of the loss); a third
    or more of null replicates sit there, so comparing such drops made the p-value depend on the
    BLAS kernels (0.97 with one, 1.0 with another, for the same data).
    """
    drop = 2.0 * (loss_null - loss_alt)
    drop = np.where(drop > ROUND_OFF_DROP * np.abs(loss_null), drop, 0.0)
    scale = (ss_within + 2.0 * loss_alt) / max(n_runs - ALT_PARAMS, 1)
    return drop / np.maximum(scale, 1e-300)


def bootstrap_p_value(observed: np.ndarray, null: np.ndarray) -> np.ndarray:
    """(1 + #{null >= observed}) / (B + 1) per data set: observed (D,), null (D, B)."""
    return (1.0 + (null >= observed[:, None]).sum(axis=1)) / (null.shape[1] + 1.0)


def lack_of_fit_p(loss: np.ndarray, ss_within: np.ndarray, n_points: int, n_runs: int, n_params: int) -> np.ndarray:
    """p-value of the classical lack-of-fit F test of a fit (its minimised loss) against the seed
    noise; NaN without seeds."""
    df_fit, df_seeds = n_points - n_params, n_runs - n_points
    if df_fit <= 0 or df_seeds <= 0:
        return np.full(np.shape(loss), np.nan)
    ratio = (2.0 * loss / df_fit) / np.maximum(ss_within / df_seeds, 1e-300)
    return stats.f.sf(ratio, df_fit, df_seeds)


def decide(
    x: np.ndarray,
    p_value: np.ndarray,
    gamma: np.ndarray,
    gamma_ci: np.ndarray,
    lack_of_fit_null: np.ndarray,
    lack_of_fit_alt: np.ndarray,
    level: float = LEVEL,
) -> tuple[np.ndarray, np.ndarray]:
    """Verdicts and reasons per data set (D,) for a series at distinct x (J,)."""
    D, n_points, x_range = len(p_value), len(x), float(x[-1] / x[0])
    if n_points < MIN_POINTS or x_range < MIN_RANGE:
        reason = (
            f"only {n_points} distinct x values; testing gamma needs at least {MIN_POINTS}"
            if n_points < MIN_POINTS
            else f"x spans only a factor {x_range:.3g}; testing gamma needs at least {MIN_RANGE:g}"
        )
        return np.full(D, "inconclusive", dtype=object), np.full(D, reason, dtype=object)
    span = np.log(x_range)
    verdicts = np.empty(D, dtype=object)
    reasons = np.empty(D, dtype=object)
    for i in range(D):
        p, g, (lo, hi), lof, lof_alt = p_value[i], gamma[i], gamma_ci[i], lack_of_fit_null[i], lack_of_fit_alt[i]
        facts = f"p = {p:.3g}, gamma = {g:.3g} [{lo:.3g}, {hi:.3g}]"
        if p < level and lo > 0 and lof_alt < LACK_OF_FIT_LEVEL:
            verdicts[i], reasons[i] = (
                "inconclusive",
                "gamma > 0 fits better, but the nested family too misses the means by more than the seed "
                f"noise (lack of fit p = {lof_alt:.2g}; {facts})",
            )
        elif p < level and lo > 0:
            verdicts[i], reasons[i] = "superpolynomial", f"power law with offset rejected and gamma > 0 ({facts})"
        elif p < level:
            verdicts[i], reasons[i] = (
                "inconclusive",
                f"power law with offset rejected but gamma's interval reaches 0 ({facts})",
            )
        elif lof < LACK_OF_FIT_LEVEL:
            verdicts[i], reasons[i] = (
                "inconclusive",
                "no evidence of gamma > 0, but the power law with offset misses the means by more than the "
                f"seed noise (lack of fit p = {lof:.2g}; {facts})",
            )
        elif hi * span <= MAX_SLOPE_GROWTH:
            verdicts[i], reasons[i] = (
                "power_law",
                "no evidence of gamma > 0, and the data exclude a slope growing more than "
                f"x{np.exp(hi * span):.2g} over the x range ({facts})",
            )
        else:
            verdicts[i], reasons[i] = (
                "inconclusive",
                "no evidence of gamma > 0, but too little data to exclude a slope growing "
                f"x{np.exp(hi * span):.2g} over the x range ({facts})",
            )
    return verdicts, reasons
