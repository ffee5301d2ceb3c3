"""PNG plots: loss vs x with fits and bootstrap bands, local slopes, training trajectories and
compression error vs d. Figures are drawn on matplotlib's Agg canvas, never through pyplot, so no
display or global backend is involved.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from analysis.analyse import TableAnalysis
from analysis.bootstrap import percentile_interval
from analysis.fit import fit_form
from analysis.forms import local_slope, log_model
from analysis.load import done_runs
from harness.tracking.store import read_metrics

MAX_PANELS = 12
DPI = 120


def _figure(n_panels: int = 1, width: float = 7.5, height: float = 5.0) -> tuple[Figure, list]:
    cols = min(n_panels, 3)
    rows = -(-n_panels // cols)
    fig = Figure(
        figsize=(width if n_panels == 1 else 5.2 * cols, height if n_panels == 1 else 4.0 * rows), layout="constrained"
    )
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, list(axes[:n_panels])


def _log_axes(ax, x: bool = True) -> None:
    """Log scales with plain tick labels (0.5, 2, 1e+04) rather than 5x10^-1."""
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    if x:
        ax.set_xscale("log")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.1e}"[0] in "25" else ""))
    ax.grid(True, which="both", alpha=0.25)


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


def _ci(value, ci) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if ci is None else f"{value:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]"


def plot_loss_vs_x(analysis: TableAnalysis, path: Path) -> Path:
    """Log-log loss vs x per group: seeds, their means (±1 s.e.), the nested fit with its 95%
    bootstrap band, and the power law with offset; exponents and verdicts in the legend."""
    fig, (ax,) = _figure()
    colors = [f"C{i % 10}" for i in range(len(analysis.results))]
    for r, color in zip(analysis.results, colors):
        s = r.series
        means = s.means()
        se = np.sqrt(np.bincount(s.run_x, (s.log_y - means[s.run_x]) ** 2) / np.maximum(s.n - 1, 1) / s.n)
        ax.scatter(s.x[s.run_x], np.exp(s.log_y), s=9, color=color, alpha=0.25, linewidths=0)
        ax.errorbar(
            s.x,
            np.exp(means),
            yerr=[np.exp(means) - np.exp(means - se), np.exp(means + se) - np.exp(means)],
            fmt="o",
            ms=4,
            color=color,
            capsize=2,
        )
        grid_t = np.linspace(0, s.t[-1], 200)
        grid_x = s.x_ref * np.exp(grid_t)
        label = f"{r.label}: alpha={_ci(r.alpha, r.alpha_ci)}, gamma={_ci(r.gamma, r.gamma_ci)} -> {r.verdict}"
        if "nested" in r.forms:
            ax.plot(grid_x, np.exp(log_model(r.forms["nested"].theta, grid_t)), color=color, lw=1.8, label=label)
            band = percentile_interval(log_model(r.boot_theta["nested"], grid_t), axis=0)
            ax.fill_between(grid_x, np.exp(band[:, 0]), np.exp(band[:, 1]), color=color, alpha=0.15, lw=0)
            label = None
        if "power_law_offset" in r.forms:
            ax.plot(
                grid_x,
                np.exp(log_model(r.forms["power_law_offset"].theta, grid_t)),
                color=color,
                lw=1.2,
                ls="--",
                label=label,
            )
    _log_axes(ax)
    ax.set_xlabel(analysis.x)
    ax.set_ylabel(f"{analysis.y} (log scale)")
    ax.set_title(
        f"{analysis.y} vs {analysis.x}\nsolid: nested fit with 95% band; dashed: power law + offset; dots: "
        "seed means ±1 s.e.",
        fontsize=10,
    )
    ax.legend(fontsize=7.5, loc="best")
    return _save(fig, path)


def plot_local_slope(analysis: TableAnalysis, path: Path) -> Path:
    """d ln L / d ln x between neighbouring x (95% seed-bootstrap intervals) and the fitted forms' slopes."""
    fig, (ax,) = _figure()
    for i, r in enumerate(analysis.results):
        color = f"C{i % 10}"
        ls = r.local_slope
        yerr = np.abs(np.stack([ls["slope"] - ls["lo"], ls["hi"] - ls["slope"]]))
        ax.errorbar(
            ls["x_mid"],
            ls["slope"],
            yerr=yerr,
            fmt="o",
            ms=4,
            color=color,
            capsize=2,
            label=f"{r.label} (gamma={_ci(r.gamma, r.gamma_ci)})",
        )
        grid_t = np.linspace(0, r.series.t[-1], 200)
        grid_x = r.series.x_ref * np.exp(grid_t)
        for name, style in (("nested", "-"), ("power_law_offset", "--")):
            if name in r.forms:
                ax.plot(grid_x, local_slope(r.forms[name].theta, grid_t), color=color, ls=style, lw=1.3)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xscale("log")
    ax.set_xlabel(analysis.x)
    ax.set_ylabel(f"local slope d ln {analysis.y} / d ln {analysis.x}")
    ax.set_title(
        "Local slope: steepening with x means faster than any power law\nsolid: nested fit; dashed: power law + offset",
        fontsize=10,
    )
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=8)
    return _save(fig, path)


def read_trajectories(results_dir: Path | None, table: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The metrics records of the table's done runs, with each run's experiment, arm, seed,
    optimizer and size, and notes on the files that had unreadable lines or non-numeric values
    (those lines are skipped, those values read as missing; harness/tracking/store.py)."""
    if results_dir is None or "run_id" not in table.columns:
        return pd.DataFrame(), []
    frames, notes = [], []
    keep = [c for c in ("experiment", "arm", "seed", "train.optimizer", "d", "width") if c in table.columns]
    for _, run in done_runs(table).iterrows():
        records, problem = read_metrics(results_dir, str(run["run_id"]))
        if problem:
            notes.append(problem)
        if records:
            frame = pd.DataFrame(records)
            for col in keep:
                frame[col] = run[col]
            frame["run_id"] = run["run_id"]
            frames.append(frame)
    return (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()), notes


def plot_trajectories(trajectories: pd.DataFrame, metric: str, path: Path) -> tuple[Path | None, str | None]:
    """Metric vs step, one panel per experiment (and optimizer), one line per arm (mean over seeds, min-max band)."""
    if trajectories.empty or metric not in trajectories.columns or "step" not in trajectories.columns:
        return None, f"no trajectories: no metrics.jsonl with 'step' and {metric!r} under runs/"
    data = trajectories[np.isfinite(pd.to_numeric(trajectories[metric], errors="coerce"))]
    panel_cols = [c for c in ("experiment", "train.optimizer") if c in data.columns]
    panels = list(data.groupby(panel_cols, dropna=False)) if panel_cols else [((), data)]
    note = (
        f"{len(panels)} trajectory panels; only the first {MAX_PANELS} are drawn" if len(panels) > MAX_PANELS else None
    )
    panels = panels[:MAX_PANELS]
    # One colour per arm in every panel, so that a panel lacking an arm does not recolour the rest.
    names = sorted(data["arm"].astype(str).unique()) if "arm" in data.columns else ["all"]
    palette = {name: f"C{i % 10}" for i, name in enumerate(names)}
    fig, axes = _figure(len(panels))
    for ax, (key, part) in zip(axes, panels):
        key = key if isinstance(key, tuple) else (key,)
        sizes = [c for c in ("d", "width") if c in part.columns and part[c].nunique() > 1]
        arms = list(part.groupby("arm", dropna=False)) if "arm" in part.columns else [("all", part)]
        for arm, arm_part in arms:
            lines = list(arm_part.groupby(sizes)) if sizes else [((), arm_part)]
            for j, (size, runs) in enumerate(lines):
                size = size if isinstance(size, tuple) else (size,)
                stats = runs.groupby("step")[metric].agg(["mean", "min", "max"])
                n = runs["run_id"].nunique()
                label = (
                    " ".join([str(arm), *(f"{c}={v:g}" for c, v in zip(sizes, size))]) + f" ({n} run{'s' * (n > 1)})"
                )
                style = ("-", "--", ":", "-.")[j % 4]
                ax.plot(stats.index, stats["mean"], color=palette[str(arm)], ls=style, lw=1.5, label=label)
                ax.fill_between(stats.index, stats["min"], stats["max"], color=palette[str(arm)], alpha=0.12, lw=0)
        _log_axes(ax, x=False)
        ax.set_xlabel("step")
        ax.set_ylabel(f"{metric} (log scale)")
        ax.set_title(" / ".join(str(k) for k in key) or metric, fontsize=10)
        ax.legend(fontsize=7.5)
    fig.suptitle(f"{metric} during training: mean over seeds, band = min-max", fontsize=11)
    return _save(fig, path), note


def plot_error_vs_d(table: pd.DataFrame, error: str, path: Path, d: str = "d") -> tuple[Path | None, str | None]:
    """Compression error vs d, one panel per experiment, one line per (arm, k) with its fitted power-law slope."""
    if error not in table.columns or d not in table.columns:
        return None, f"no error-vs-d plot: the table has no {error!r} or {d!r} column"
    runs = done_runs(table)
    err = pd.to_numeric(runs[error], errors="coerce")
    dv = pd.to_numeric(runs[d], errors="coerce")
    runs = runs.assign(_err=err, _d=dv)[(err > 0) & (dv > 0)]
    if runs.empty:
        return None, f"no error-vs-d plot: no done run has a positive {error!r}"
    panel_col = "experiment" if "experiment" in runs.columns else None
    panels = list(runs.groupby(panel_col)) if panel_col else [("all", runs)]
    note = f"{len(panels)} error panels; only the first {MAX_PANELS} are drawn" if len(panels) > MAX_PANELS else None
    panels = panels[:MAX_PANELS]
    fig, axes = _figure(len(panels))
    for ax, (name, part) in zip(axes, panels):
        line_cols = [c for c in ("arm", "k") if c in part.columns]
        lines = part.groupby(line_cols, dropna=False) if line_cols else [((), part)]
        for i, (key, runs_line) in enumerate(lines):
            key = key if isinstance(key, tuple) else (key,)
            agg = runs_line.groupby("_d")["_err"].apply(lambda v: np.exp(np.log(v).mean()))
            label = " ".join(f"{c}={v}" if c == "k" else str(v) for c, v in zip(line_cols, key)) or error
            if len(agg) >= 3:
                slope = -fit_form("power_law", agg.index.to_numpy(), np.log(agg.to_numpy())).params["alpha"]
                label += f": slope {slope:.2f}"
            ax.scatter(runs_line["_d"], runs_line["_err"], s=8, color=f"C{i % 10}", alpha=0.3, linewidths=0)
            ax.plot(agg.index, agg.to_numpy(), "o-", ms=3, color=f"C{i % 10}", lw=1.3, label=label)
        _log_axes(ax)
        ax.set_xlabel(d)
        ax.set_ylabel(f"{error} (log scale)")
        ax.set_title(str(name), fontsize=10)
        ax.legend(fontsize=8)
    fig.suptitle(f"{error} vs {d}: geometric mean over seeds, slope of a fitted power law", fontsize=11)
    return _save(fig, path), note


def make_plots(
    analysis: TableAnalysis | None,
    table: pd.DataFrame,
    results_dir: Path | None,
    out: Path,
    metric: str = "test_loss",
    error: str = "moment_error",
) -> tuple[list[Path], list[str]]:
    """Every plot the data allow; returns the PNGs written and notes on those that were not (and on
    unreadable trajectory records)."""
    paths: list[Path] = []
    if analysis is not None:
        paths.append(plot_loss_vs_x(analysis, out / f"loss_vs_{analysis.x}.png"))
        paths.append(plot_local_slope(analysis, out / f"local_slope_{analysis.x}.png"))
    trajectories, notes = read_trajectories(results_dir, table)
    for path, note in (
        plot_trajectories(trajectories, metric, out / "trajectories.png"),
        plot_error_vs_d(table, error, out / "error_vs_d.png"),
    ):
        if path is not None:
            paths.append(path)
        if note:
            notes.append(note)
    return paths, notes


def plot_power(table: pd.DataFrame, target: float, path: Path) -> Path:
    """Power against seeds per x, one line per number of x values, one panel per group (``polyscale power``)."""
    labels = list(dict.fromkeys(table["group"]))
    fig, axes = _figure(len(labels))
    for ax, label in zip(axes, labels):
        part = table[table["group"] == label]
        for points, line in part.groupby("points"):
            line = line.sort_values("seeds")
            ax.plot(line["seeds"], line["power"], marker="o", label=f"{points} x values")
        ax.axhline(target, color="grey", linestyle="--", linewidth=1, label=f"target {target:g}")
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(sorted(part["seeds"].unique()), [str(s) for s in sorted(part["seeds"].unique())])
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("seeds per x")
        ax.set_ylabel("power (share called superpolynomial)")
        ax.set_title(label)
        ax.grid(True, alpha=0.25)
        ax.legend(fontsize=8)
    return _save(fig, path)
