"""Fit results as JSON records, flat tables and printed text; writing fits.json and fits.csv."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.analyse import GroupResult, TableAnalysis
from analysis.joint import PARAMS as JOINT_PARAMS
from analysis.joint import JointResult
from harness.errors import UsageError


def _num(value) -> float | None:
    """JSON-safe float: NaN and inf become null."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _pair(ci) -> list[float | None] | None:
    return None if ci is None else [_num(ci[0]), _num(ci[1])]


def group_record(result: GroupResult, analysis: TableAnalysis) -> dict:
    """One group of fits.json."""
    s = result.series
    finite_aicc = [f.aicc for f in result.forms.values() if np.isfinite(f.aicc)]
    best_aicc = min(finite_aicc) if finite_aicc else float("nan")
    forms = {
        name: {
            "formula": fit.formula,
            "params": {k: _num(v) for k, v in fit.params.items()},
            "param_ci": {k: _pair(v) for k, v in fit.param_ci.items()},
            "aicc": _num(fit.aicc),
            "delta_aicc": _num(round(fit.aicc - best_aicc, 9)),
            "rss": _num(fit.rss),
            "extrapolation_rmse": _num(result.extrapolation.get(name)),
            "success": fit.success,
            "message": fit.message,
        }
        for name, fit in result.forms.items()
    }
    ratios = {
        (r["denominator"] if r["numerator"] == result.label else r["numerator"]): {
            "ratio": _num(r["ratio"] if r["numerator"] == result.label else _inverse(r["ratio"])),
            "ci": _pair(r["ci"] if r["numerator"] == result.label else (_inverse(r["ci"][1]), _inverse(r["ci"][0]))),
        }
        for r in analysis.ratios
        if result.label in (r["numerator"], r["denominator"])
    }
    slope = result.local_slope
    return {
        "group": s.group,
        "label": result.label,
        "x": analysis.x,
        "y": analysis.y,
        "n_points": len(s.x),
        "n_runs": len(s.run_x),
        "x_range": [_num(s.x[0]), _num(s.x[-1])],
        "verdict": result.verdict,
        "reason": result.reason,
        "p_value": _num(result.p_value),
        "statistic": _num(result.statistic),
        "level": analysis.level,
        "n_boot": result.n_boot,
        "gamma": _num(result.gamma),
        "gamma_ci": _pair(result.gamma_ci),
        "alpha": _num(result.alpha),
        "alpha_ci": _pair(result.alpha_ci),
        "best_form": result.best_form,
        "extrapolation_holdout": result.holdout,
        "forms": forms,
        "alpha_ratios": ratios,
        "local_slope": [
            {"x": _num(xm), "slope": _num(v), "ci": [_num(lo), _num(hi)]}
            for xm, v, lo, hi in zip(slope["x_mid"], slope["slope"], slope["lo"], slope["hi"])
        ],
    }


def fits_frame(analysis: TableAnalysis) -> pd.DataFrame:
    """One row per (group, form): the verdict of the group and the form's parameters with intervals."""
    rows = []
    for record in (group_record(r, analysis) for r in analysis.results):
        for name, form in record["forms"].items():
            row = {
                **record["group"],
                "label": record["label"],
                "n_points": record["n_points"],
                "n_runs": record["n_runs"],
            }
            row.update({"verdict": record["verdict"], "p_value": record["p_value"], "gamma": record["gamma"]})
            row.update(_flat_ci("gamma", record["gamma_ci"]))
            row.update({"alpha": record["alpha"], **_flat_ci("alpha", record["alpha_ci"])})
            row.update(
                {
                    "form": name,
                    "aicc": form["aicc"],
                    "delta_aicc": form["delta_aicc"],
                    "extrapolation_rmse": form["extrapolation_rmse"],
                }
            )
            for k, v in form["params"].items():
                row[f"{name}.{k}"] = v
                row.update(_flat_ci(f"{name}.{k}", form["param_ci"].get(k)))
            rows.append(row)
    return pd.DataFrame(rows)


def _flat_ci(name: str, ci) -> dict:
    lo, hi = ci if ci else (None, None)
    return {f"{name}_lo": lo, f"{name}_hi": hi}


def joint_record(group: dict, label: str, result: JointResult, n_col: str, d_col: str, y: str) -> dict:
    """One group of fits.json for the joint law L(N, D)."""
    record = {
        "group": group,
        "label": label,
        "N": n_col,
        "D": d_col,
        "y": y,
        "n_points": result.n_points,
        "n_runs": result.n_runs,
    }
    for k in JOINT_PARAMS:
        record[k] = _num(result.params[k])
        record[f"{k}_ci"] = _pair(result.param_ci[k])
    record.update(
        {
            "formula": f"{y} = E + A/{n_col}^alpha + B/{d_col}^beta",
            "loss": _num(result.loss),
            "huber_delta": result.huber_delta,
            "bootstrap": result.bootstrap,
            "n_boot": result.n_boot,
            "success": result.success,
            "message": result.message,
        }
    )
    return record


def joint_frame(records: list[dict]) -> pd.DataFrame:
    rows = []
    for r in records:
        row = {**r["group"], "label": r["label"], "n_points": r["n_points"], "n_runs": r["n_runs"]}
        for k in JOINT_PARAMS:
            row[k] = r[k]
            row.update(_flat_ci(k, r[f"{k}_ci"]))
        row.update({"loss": r["loss"], "success": r["success"]})
        rows.append(row)
    return pd.DataFrame(rows)


def write_fits(out: Path, records: list[dict], frame: pd.DataFrame, seeds: pd.DataFrame | None = None) -> list[Path]:
    """Write out/fits.json, out/fits.csv and (given ``seeds``) out/seeds.csv; returns their paths."""
    paths = [out / "fits.json", out / "fits.csv"] + ([out / "seeds.csv"] if seeds is not None else [])
    try:
        out.mkdir(parents=True, exist_ok=True)
        paths[0].write_text(json.dumps(records, indent=2) + "\n")
        frame.to_csv(paths[1], index=False)
        if seeds is not None:
            seeds.to_csv(paths[2], index=False)
    except OSError as exc:
        raise UsageError(f"{out}: cannot write the fits there ({exc.strerror})") from exc
    return paths


def _ci_text(value, ci, digits: int = 3) -> str:
    if value is None or not np.isfinite(value):
        return "-"
    text = f"{value:.{digits}g}"
    if ci is not None and all(v is not None and np.isfinite(v) for v in ci):
        text += f" [{ci[0]:.{digits}g}, {ci[1]:.{digits}g}]"
    return text


def loss_name(analysis: TableAnalysis) -> str:
    return "least squares" if analysis.huber is None else f"Huber loss (delta {analysis.huber:g})"


def format_table(analysis: TableAnalysis) -> str:
    """The printed summary: one line per group, its reason, and the exponent ratios."""
    header = ("group", "x pts", "runs", "verdict", "p", "gamma [95% CI]", "alpha [95% CI]", "best (AICc)")
    rows = [
        (
            r.label,
            str(len(r.series.x)),
            str(len(r.series.run_x)),
            r.verdict,
            "-" if r.p_value is None else f"{r.p_value:.3g}",
            _ci_text(r.gamma, r.gamma_ci),
            _ci_text(r.alpha, r.alpha_ci),
            r.best_form or "-",
        )
        for r in analysis.results
    ]
    lines = [
        f"x = {analysis.x}, y = {analysis.y}, groups by {', '.join(analysis.by) or '(none)'}; {loss_name(analysis)}, "
        f"{analysis.n_boot} bootstrap replicates, level {analysis.level:g}",
        *_columns([header, *rows]),
        "",
        *(f"{r.label}: {r.reason}" for r in analysis.results),
    ]
    if analysis.ratios:
        lines += ["", "alpha ratios (power law with offset):"]
        lines += [f"  {q['numerator']} / {q['denominator']} = {_ci_text(q['ratio'], q['ci'])}" for q in analysis.ratios]
    return "\n".join(lines)


def format_joint(records: list[dict]) -> str:
    header = ("group", "points", *JOINT_PARAMS)
    rows = [(r["label"], str(r["n_points"]), *(_ci_text(r[k], r[f"{k}_ci"], 4) for k in JOINT_PARAMS)) for r in records]
    return "\n".join([records[0]["formula"] if records else "", *_columns([header, *rows])])


def _columns(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]


def _inverse(value: float) -> float:
    """1 / value, with an interval end at 0 (an exponent fitted at 0) inverted to infinity."""
    return math.inf if value == 0 else 1.0 / value
