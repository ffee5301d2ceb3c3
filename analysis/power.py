"""Power of the verdict for a planned study, from pilot runs.

Per group of the pilot: the seed noise of log loss (pooled over x) and the power law with offset
fitted to the means (the null). A design is a number of seeds per x and a number of x values spread
log-uniformly over the pilot's x range. For each design, data sets are simulated as the null's log
loss plus Gaussian seed noise, and as the stretched exponential with the same level, offset and
slope at the smallest x but gamma > 0 (the nested family of ``analysis.forms`` with that gamma: the
slope of the excess loss grows like x^gamma); each batch of data sets goes through the same
analysis and decision as ``polyscale fit`` (``analysis.analyse.analyse_batch``). The power is the
share of alternative data sets called superpolynomial, the false-positive rate the share of null
data sets called so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.analyse import TEST_FORMS, analyse_batch
from analysis.fit import fit_batch
from analysis.forms import FORMS, log_model
from analysis.load import Series, make_series
from analysis.verdict import LEVEL

SUPERPOLYNOMIAL = "superpolynomial"
# gamma of the alternative when the pilot does not give m: the polylog prediction for m = 3.
DEFAULT_GAMMA = 1 / 3
# Columns that hold m, the input dimension the default gamma = 1/m comes from.
M_COLUMNS = ("m", "task.input_dim")


@dataclass(frozen=True)
class Pilot:
    """One group of the pilot: its x range, seed noise of log loss and fitted null theta (4,)."""

    group: dict
    label: str
    x_min: float
    x_max: float
    noise_sd: float
    null_theta: np.ndarray
    m: float | None


def pooled_sd(series: Series) -> float:
    """Pooled seed standard deviation of log y: sqrt(within-x sum of squares / (runs - distinct x))."""
    means = series.means()
    dev = series.log_y - means[series.run_x]
    dof = len(series.run_x) - len(series.x)
    if dof <= 0:
        return float("nan")
    return float(np.sqrt((dev * dev).sum() / dof))


def fit_null(series: Series) -> np.ndarray:
    """theta (4,) of the power law with offset fitted to the seed means of a series."""
    fit = fit_batch("power_law_offset", series.t, series.means()[None, :], series.n, None)
    return fit.theta[0]


def _group_m(part: pd.DataFrame) -> float | None:
    for col in M_COLUMNS:
        if col in part.columns:
            values = pd.to_numeric(part[col], errors="coerce").dropna().unique()
            if len(values) == 1 and values[0] > 0:
                return float(values[0])
    return None


def pilots(table: pd.DataFrame, x: str, y: str, by: list[str], source: str = "table") -> tuple[list[Pilot], list[str]]:
    """The pilot of each group with seeds to estimate the noise from; notes on the groups skipped."""
    series, notes = make_series(table, x, y, by, source)
    runs = table.assign(_x=pd.to_numeric(table[x], errors="coerce"))
    found = []
    for s in series:
        sd = pooled_sd(s)
        if not np.isfinite(sd) or sd <= 0:
            notes.append(f"group {s.label}: no x has two or more seeds, so its noise is unknown; skipped")
            continue
        if len(s.x) <= FORMS["power_law_offset"].n_params:
            notes.append(
                f"group {s.label}: {len(s.x)} distinct {x} values are too few to fit the power law with offset"
            )
            continue
        part = runs
        for col, value in s.group.items():
            part = part[part[col] == value]
        found.append(Pilot(s.group, s.label, float(s.x[0]), float(s.x[-1]), sd, fit_null(s), _group_m(part)))
    return found, notes


def design_series(pilot: Pilot, seeds: int, points: int) -> Series:
    """A design's x values (log-uniform over the pilot's range) and run layout, without data."""
    x = np.geomspace(pilot.x_min, pilot.x_max, points)
    run_x = np.repeat(np.arange(points), seeds)
    return Series(pilot.group, pilot.label, x, run_x, np.zeros(len(run_x)))


def alternative_theta(null_theta: np.ndarray, gamma: float) -> np.ndarray:
    """The null's (L0, c, a) with the slope of the excess loss growing like x^gamma."""
    theta = np.array(null_theta, dtype=float)
    theta[3] = gamma
    return theta


def simulate_log_y(
    design: Series, theta: np.ndarray, noise_sd: float, n_sims: int, rng: np.random.Generator
) -> np.ndarray:
    """n_sims data sets (n_sims, runs): the model's log loss at each run's x plus N(0, noise_sd^2)."""
    center = log_model(theta, np.log(design.x / design.x[0]))[design.run_x]
    return center + noise_sd * rng.standard_normal((n_sims, len(design.run_x)))


def verdicts(design: Series, log_y: np.ndarray, n_boot: int, rng: np.random.Generator, level: float) -> np.ndarray:
    """The verdict of ``polyscale fit`` on each simulated data set (D,), in one batch."""
    batch = Series(design.group, design.label, design.x, design.run_x, log_y)
    return analyse_batch(batch, n_boot, rng, TEST_FORMS, None, level).verdict


def detection_rate(
    design: Series,
    theta: np.ndarray,
    noise_sd: float,
    n_sims: int,
    n_boot: int,
    seed: int,
    level: float = LEVEL,
) -> float:
    """Share of n_sims data sets simulated from theta that the verdict calls superpolynomial.

    The generator ``default_rng(seed)`` draws the data first, then the bootstrap.
    """
    rng = np.random.default_rng(seed)
    log_y = simulate_log_y(design, theta, noise_sd, n_sims, rng)
    return float(np.mean(verdicts(design, log_y, n_boot, rng, level) == SUPERPOLYNOMIAL))


def power_table(
    pilot_list: list[Pilot],
    gamma: dict[str, float],
    seeds: list[int],
    points: list[int],
    n_sims: int,
    n_boot: int,
    seed: int = 0,
    level: float = LEVEL,
) -> pd.DataFrame:
    """Power and false-positive rate per group and design: columns group, seeds, points, power,
    false_positive_rate. ``gamma`` maps each group's label to the alternative's gamma."""
    rows = []
    for pilot in pilot_list:
        for n_seeds in seeds:
            for n_points in points:
                design = design_series(pilot, n_seeds, n_points)
                alt = alternative_theta(pilot.null_theta, gamma[pilot.label])
                # One seed per design for both rates: the two simulations share their noise draws.
                design_seed = [seed, n_seeds, n_points]
                rows.append(
                    {
                        "group": pilot.label,
                        "seeds": n_seeds,
                        "points": n_points,
                        "power": detection_rate(design, alt, pilot.noise_sd, n_sims, n_boot, design_seed, level),
                        "false_positive_rate": detection_rate(
                            design, pilot.null_theta, pilot.noise_sd, n_sims, n_boot, design_seed, level
                        ),
                    }
                )
    return pd.DataFrame(rows, columns=["group", "seeds", "points", "power", "false_positive_rate"])


def smallest_designs(table: pd.DataFrame, target: float) -> dict[str, dict | None]:
    """Per group, the design with the fewest runs (seeds x points; fewer points first on a tie)
    whose power reaches target, or None."""
    best: dict[str, dict | None] = {}
    for label, part in table.groupby("group", sort=False):
        ok = part[part["power"] >= target]
        if ok.empty:
            best[label] = None
            continue
        runs = ok["seeds"] * ok["points"]
        row = ok.assign(runs=runs).sort_values(["runs", "points"]).iloc[0]
        best[label] = {
            "seeds": int(row["seeds"]),
            "points": int(row["points"]),
            "runs": int(row["runs"]),
            "power": float(row["power"]),
            "false_positive_rate": float(row["false_positive_rate"]),
        }
    return best


def design_counts(text: str, option: str, minimum: int) -> list[int]:
    """'3,5,10' -> [3, 5, 10] (sorted, no repeats); a ValueError naming the option for anything
    else or for a count below minimum."""
    try:
        values = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise ValueError(f"{option} {text!r}: expected comma-separated integers, e.g. 3,5,10") from None
    if not values:
        raise ValueError(f"{option} {text!r}: expected comma-separated integers, e.g. 3,5,10")
    if values[0] < minimum:
        raise ValueError(f"{option} {text!r}: each value must be at least {minimum}")
    return values
