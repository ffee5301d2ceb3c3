"""The 1-D analysis of one group: fits of every form, seed-bootstrap intervals, the test of
gamma > 0, extrapolation errors, local slopes and the verdict.

``analyse_batch`` does it for D data sets of one design at once (the leading axis of
``Series.log_y``), which is how the calibration tests run thousands of draws; ``analyse_series``
is the same for the one observed data set, packaged as a ``GroupResult``.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from analysis.bootstrap import noise_model, percentile_interval, simulate, within_x
from analysis.fit import BatchFit, FitResult, fit_batch, summarise
from analysis.forms import FORMS, STRETCHED_GAMMA_MIN, log_model
from analysis.load import Series, make_series
from analysis.verdict import LEVEL, bootstrap_p_value, decide, f_statistic, lack_of_fit_p

FORM_ORDER = ("power_law", "power_law_offset", "stretched_exp", "nested")
# Relative AICc difference below which two forms fit equally well (round-off of equal optima).
AICC_TIE = 1e-9
TEST_FORMS = ("power_law_offset", "nested")
INTERVAL = 0.95


@dataclass(frozen=True)
class BatchAnalysis:
    """Everything computed for D data sets (leading axis) with B bootstrap replicates each."""

    fits: dict[str, BatchFit]
    boot_theta: dict[str, np.ndarray]  # (D, B, 4) seed-bootstrap fits
    boot_means: np.ndarray  # (D, B, J)
    statistic: np.ndarray  # (D,)
    p_value: np.ndarray  # (D,)
    lack_of_fit: dict[str, np.ndarray]  # (D,) p-values of the test forms' lack of fit against the seed noise
    extrapolation: dict[str, np.ndarray]  # (D,) RMSE of log loss on the held-out largest x
    holdout: int
    gamma_ci: np.ndarray  # (D, 2)
    verdict: np.ndarray
    reason: np.ndarray


@dataclass(frozen=True)
class GroupResult:
    """The analysis of one group, ready to print, serialise and plot."""

    series: Series
    forms: dict[str, FitResult]
    extrapolation: dict[str, float | None]
    holdout: int
    p_value: float | None
    statistic: float | None
    n_boot: int
    gamma: float | None
    gamma_ci: tuple[float, float] | None
    alpha: float | None
    alpha_ci: tuple[float, float] | None
    verdict: str
    reason: str
    local_slope: dict[str, np.ndarray]  # x_mid, slope, lo, hi
    boot_theta: dict[str, np.ndarray]  # (B, 4) per form, for bands and exponent ratios

    @property
    def label(self) -> str:
        return self.series.label

    @property
    def best_form(self) -> str | None:
        """The form with the lowest AICc; forms within AICC_TIE of it tie, and the first name wins.

        stretched_exp and nested are one family in two parametrisations: when both reach the same
        optimum their AICc differ only by round-off, which differs between CPUs."""
        scored = {name: f.aicc for name, f in self.forms.items() if np.isfinite(f.aicc)}
        if not scored:
            return None
        lowest = min(scored.values())
        return min(name for name, aicc in scored.items() if aicc <= lowest + AICC_TIE * max(1.0, abs(lowest)))


def fittable(forms: tuple[str, ...], n_points: int) -> tuple[str, ...]:
    """The forms with fewer parameters than points."""
    return tuple(name for name in forms if FORMS[name].n_params < n_points)


def fit_forms(
    t: np.ndarray, y: np.ndarray, w: np.ndarray, forms: tuple[str, ...], huber: float | None
) -> dict[str, BatchFit]:
    """Fit the forms to y (B, J), each nested one also started from the optimum of the one it contains."""
    fits: dict[str, BatchFit] = {}
    for name in FORM_ORDER:
        if name not in forms:
            continue
        starts = []
        if name == "nested" and "power_law_offset" in fits:
            starts.append(fits["power_law_offset"].theta)
        if name == "stretched_exp" and "nested" in fits:
            theta = fits["nested"].theta.copy()
            theta[:, 3] = np.maximum(theta[:, 3], STRETCHED_GAMMA_MIN)
            starts.append(theta)
        fits[name] = fit_batch(name, t, y, w, huber, starts, curved_only=bool(starts))
    return fits


def analyse_batch(
    series: Series,
    n_boot: int = 1000,
    rng: np.random.Generator | None = None,
    forms: tuple[str, ...] = FORM_ORDER,
    huber: float | None = None,
    level: float = LEVEL,
) -> BatchAnalysis:
    """Analyse D data sets with the design of ``series`` (log_y of shape (D, N) or (N,))."""
    rng = np.random.default_rng(0) if rng is None else rng
    log_y = np.atleast_2d(series.log_y)
    D, J = log_y.shape[0], len(series.x)
    t, w = series.t, series.n
    forms = fittable(tuple(dict.fromkeys((*forms, *TEST_FORMS))), J)
    means, ss_within = within_x(series, log_y)
    fits = fit_forms(t, means, w, forms, huber)

    # tau from the residuals of the most flexible fit. Taken from the null's residuals instead, it
    # grows with the very curvature under test: in trials that cut the power on 8 noisy x values
    # from 91% to 34%.
    flexible = "nested" if "nested" in fits else max(fits, key=lambda name: FORMS[name].n_params)
    resid = means - log_model(fits[flexible].theta, t)
    noise = noise_model(series, log_y, (w * resid**2).sum(axis=1), FORMS[flexible].n_params)

    boot_means, _ = simulate(series, noise, means, n_boot, rng)
    boot_fits = fit_forms(t, boot_means.reshape(D * n_boot, J), w, forms, huber)
    boot_theta = {name: f.theta.reshape(D, n_boot, 4) for name, f in boot_fits.items()}

    testable = all(name in fits for name in TEST_FORMS) and J > FORMS["nested"].n_params
    if testable:
        null_center = log_model(fits["power_law_offset"].theta, t)
        null_means, null_ss = simulate(series, noise, null_center, n_boot, rng, pooled=True)
        null_fits = fit_forms(t, null_means.reshape(D * n_boot, J), w, TEST_FORMS, huber)
        n_runs = len(series.run_x)
        null_stat = f_statistic(null_fits["power_law_offset"].loss, null_fits["nested"].loss, null_ss.ravel(), n_runs)
        statistic = f_statistic(fits["power_law_offset"].loss, fits["nested"].loss, ss_within, n_runs)
        p_value = bootstrap_p_value(statistic, null_stat.reshape(D, n_boot))
        gamma_ci = percentile_interval(boot_theta["nested"][..., 3], INTERVAL)
    else:
        statistic = p_value = np.full(D, np.nan)
        gamma_ci = np.full((D, 2), np.nan)

    holdout = max(1, round(J / 4))
    kept = J - holdout
    extrapolation = {}
    for name, fit in fit_forms(t[:kept], means[:, :kept], w[:kept], fittable(forms, kept), huber).items():
        err = means[:, kept:] - log_model(fit.theta, t[kept:])
        extrapolation[name] = np.sqrt((err**2).mean(axis=1))

    gamma = fits["nested"].theta[:, 3] if "nested" in fits else np.full(D, np.nan)
    lack_of_fit = {
        name: lack_of_fit_p(fits[name].loss, ss_within, J, len(series.run_x), FORMS[name].n_params)
        if huber is None and testable
        else np.full(D, np.nan)
        for name in TEST_FORMS
    }
    verdict, reason = decide(
        series.x, p_value, gamma, gamma_ci, lack_of_fit["power_law_offset"], lack_of_fit["nested"], level
    )
    return BatchAnalysis(
        fits, boot_theta, boot_means, statistic, p_value, lack_of_fit, extrapolation, holdout, gamma_ci, verdict, reason
    )


def group_seed(label: str, seed: int) -> np.random.Generator:
    """A generator that depends only on the seed and the group's label, not on the other groups."""
    return np.random.default_rng([seed, zlib.crc32(label.encode())])


def analyse_series(
    series: Series,
    n_boot: int = 1000,
    seed: int = 0,
    forms: tuple[str, ...] = FORM_ORDER,
    huber: float | None = None,
    level: float = LEVEL,
) -> GroupResult:
    """Analyse one group's runs (log_y of shape (N,))."""
    batch = analyse_batch(series, n_boot, group_seed(series.label, seed), forms, huber, level)
    means = series.means()
    results: dict[str, FitResult] = {}
    for name, fit in batch.fits.items():
        form = FORMS[name]
        result = summarise(form, fit, 0, series.t, means, series.n, series.x_ref)
        boot = form.report(batch.boot_theta[name][0], series.x_ref)
        ci = {k: tuple(float(v) for v in percentile_interval(boot[k], INTERVAL)) for k in form.reported}
        results[name] = replace(result, param_ci=ci)

    slopes = np.diff(batch.boot_means[0], axis=-1) / np.diff(series.t)
    band = percentile_interval(slopes, INTERVAL, axis=0)
    local = {
        "x_mid": np.sqrt(series.x[1:] * series.x[:-1]),
        "slope": np.diff(means) / np.diff(series.t),
        "lo": band[:, 0],
        "hi": band[:, 1],
    }
    alpha = alpha_ci = gamma = gamma_ci = None
    if "power_law_offset" in results:
        alpha = results["power_law_offset"].params["alpha"]
        alpha_ci = results["power_law_offset"].param_ci["alpha"]
    if "nested" in results:
        gamma = results["nested"].params["gamma"]
        gamma_ci = tuple(float(v) for v in batch.gamma_ci[0]) if np.isfinite(batch.gamma_ci[0]).all() else None
    p_value = float(batch.p_value[0]) if np.isfinite(batch.p_value[0]) else None
    statistic = float(batch.statistic[0]) if np.isfinite(batch.statistic[0]) else None
    return GroupResult(
        series=series,
        forms=results,
        extrapolation={
            name: float(batch.extrapolation[name][0]) if name in batch.extrapolation else None for name in results
        },
        holdout=batch.holdout,
        p_value=p_value,
        statistic=statistic,
        n_boot=n_boot,
        gamma=gamma,
        gamma_ci=gamma_ci,
        alpha=alpha,
        alpha_ci=alpha_ci,
        verdict=str(batch.verdict[0]),
        reason=str(batch.reason[0]),
        local_slope=local,
        boot_theta={name: theta[0] for name, theta in batch.boot_theta.items()},
    )


def exponent_ratios(results: list[GroupResult], form: str = "power_law_offset", level: float = INTERVAL) -> list[dict]:
    """alpha of each group over alpha of each other group, with a percentile interval.

    Groups are independent, so replicate b of one group paired with replicate b of another is a
    draw from their joint bootstrap distribution.
    """
    rows = []
    for i, num in enumerate(results):
        for den in results[i + 1 :]:
            if form not in num.forms or form not in den.forms:
                continue
            a_num, a_den = num.forms[form].params["alpha"], den.forms[form].params["alpha"]
            b = min(len(num.boot_theta[form]), len(den.boot_theta[form]))
            with np.errstate(divide="ignore", invalid="ignore"):
                boot = num.boot_theta[form][:b, 2] / den.boot_theta[form][:b, 2]
                ratio = a_num / a_den if a_den != 0 else float("nan")
            lo, hi = percentile_interval(np.where(np.isfinite(boot), boot, np.nan), level)
            rows.append(
                {"numerator": num.label, "denominator": den.label, "ratio": float(ratio), "ci": (float(lo), float(hi))}
            )
    return rows


@dataclass(frozen=True)
class TableAnalysis:
    """The 1-D analysis of every group of a runs table."""

    x: str
    y: str
    by: list[str]
    results: list[GroupResult]
    ratios: list[dict]
    notes: list[str]
    n_boot: int
    level: float
    huber: float | None


def analyse_table(
    table: pd.DataFrame,
    x: str,
    y: str,
    by: list[str],
    n_boot: int = 1000,
    seed: int = 0,
    huber: float | None = None,
    level: float = LEVEL,
    source: str = "table",
) -> TableAnalysis:
    """Split the done runs of a table into groups and analyse each (see ``analyse_series``)."""
    if n_boot < 1:
        raise ValueError(f"--n-boot must be at least 1; got {n_boot}")
    series, notes = make_series(table, x, y, by, source)
    if 1.0 / (n_boot + 1) >= level:
        notes.append(
            f"with {n_boot} bootstrap replicates no p-value falls below {1 / (n_boot + 1):.3g}, so none can "
            f"reach level {level:g}"
        )
    results = [analyse_series(s, n_boot, seed, huber=huber, level=level) for s in series]
    return TableAnalysis(x, y, by, results, exponent_ratios(results), notes, n_boot, level, huber)
