"""One self-contained HTML page per results folder: verdicts, fit tables, plots (embedded as
base64 data URIs), run counts by status and the failed runs with the head of their error."""

from __future__ import annotations

import base64
import datetime as dt
import html
from pathlib import Path

import pandas as pd

from analysis.analyse import TableAnalysis
from analysis.tables import group_record, loss_name
from harness.tracking.store import error_line, run_error

ERROR_HEAD = 300
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1150px; color: #222; }
table { border-collapse: collapse; margin: 0.6em 0 1.4em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
.superpolynomial { background: #d8f0d8; } .power_law { background: #dde6f7; } .inconclusive { background: #f7efd6; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.5em 0; }
.note { color: #555; font-size: 0.9em; }
code { background: #f4f4f4; padding: 0 0.2em; }
"""


def _e(value) -> str:
    return html.escape("" if value is None else str(value))


def _fmt(value, ci=None) -> str:
    if value is None:
        return "-"
    text = f"{value:.4g}"
    if ci and None not in ci:
        text += f" [{ci[0]:.4g}, {ci[1]:.4g}]"
    return text


def _table(header: list[str], rows: list[list[str]], row_classes: list[str] | None = None) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(
        f"<tr class='{_e(cls)}'>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>"
        for row, cls in zip(rows, row_classes or [""] * len(rows))
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def status_counts(table: pd.DataFrame) -> pd.DataFrame:
    """Runs by (experiment, arm) and status."""
    index = [c for c in ("experiment", "arm") if c in table.columns]
    status = table["status"] if "status" in table.columns else pd.Series("done", index=table.index)
    if not index:
        return status.value_counts().rename_axis("status").to_frame("runs").T
    return pd.crosstab([table[c] for c in index], status, margins=True, margins_name="total")


def failures(table: pd.DataFrame, results_dir: Path | None) -> pd.DataFrame:
    """Runs not 'done', with their error line (the store's, else that of an 'error' column)."""
    if "status" not in table.columns:
        return pd.DataFrame()
    bad = table[table["status"] != "done"]
    rows = []
    for _, run in bad.iterrows():
        head = run_error(results_dir, str(run["run_id"])) if results_dir is not None and "run_id" in bad.columns else ""
        error = run.get("error") if "error" in bad.columns else None
        if not head and error is not None and not pd.isna(error):
            head = error_line(str(error))
        head = head[:ERROR_HEAD]
        rows.append(
            {c: run[c] for c in ("run_id", "experiment", "arm", "seed", "status") if c in bad.columns} | {"error": head}
        )
    return pd.DataFrame(rows)


def _embed(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (
        f"<figure><img alt='{_e(path.stem)}' src='data:image/png;base64,{data}'>"
        f"<figcaption class='note'>{_e(path.name)}</figcaption></figure>"
    )


def _fits_section(analysis: TableAnalysis) -> str:
    parts = []
    header = [
        "group",
        "x points",
        "runs",
        "verdict",
        "p",
        "gamma [95% CI]",
        "alpha [95% CI]",
        "best form (AICc)",
        "reason",
    ]
    records = [group_record(r, analysis) for r in analysis.results]
    rows = [
        [
            _e(r["label"]),
            str(r["n_points"]),
            str(r["n_runs"]),
            f"<b>{_e(r['verdict'])}</b>",
            _fmt(r["p_value"]),
            _fmt(r["gamma"], r["gamma_ci"]),
            _fmt(r["alpha"], r["alpha_ci"]),
            _e(r["best_form"]),
            _e(r["reason"]),
        ]
        for r in records
    ]
    parts.append(_table(header, rows, [r["verdict"] for r in records]))
    if analysis.ratios:
        parts.append("<h3>Exponent ratios (power law with offset)</h3>")
        parts.append(
            _table(
                ["ratio", "value [95% CI]"],
                [[_e(f"{q['numerator']} / {q['denominator']}"), _fmt(q["ratio"], q["ci"])] for q in analysis.ratios],
            )
        )
    for r in records:
        parts.append(f"<h3>{_e(r['label'])}</h3>")
        rows = [
            [
                _e(name),
                _e(form["formula"]),
                "<br>".join(f"{_e(k)} = {_fmt(v, form['param_ci'].get(k))}" for k, v in form["params"].items()),
                _fmt(form["aicc"]),
                _fmt(form["delta_aicc"]),
                _fmt(form["extrapolation_rmse"]),
            ]
            for name, form in r["forms"].items()
        ]
        parts.append(
            _table(
                [
                    "form",
                    "formula",
                    "parameters [95% CI]",
                    "AICc",
                    "ΔAICc",
                    f"extrapolation RMSE (ln, {r['extrapolation_holdout']} largest x held out)",
                ],
                rows,
            )
        )
    return "\n".join(parts)


def render(
    title: str,
    source: str,
    table: pd.DataFrame,
    results_dir: Path | None,
    analysis: TableAnalysis | None,
    plots: list[Path],
    notes: list[str],
    problem: str | None = None,
) -> str:
    """The report as one HTML string (nothing fetched from elsewhere)."""
    counts = status_counts(table)
    fail = failures(table, results_dir)
    body = [
        f"<h1>{_e(title)}</h1>",
        f"<p class='note'>source: <code>{_e(source)}</code>; generated "
        f"{_e(dt.datetime.now().isoformat(timespec='seconds'))}</p>",
    ]
    body.append(f"<h2>Runs ({len(table)})</h2>")
    body.append(counts.to_html(border=0))
    body.append("<h2>Verdicts and fits</h2>")
    if analysis is not None:
        body.append(
            f"<p class='note'>x = <code>{_e(analysis.x)}</code>, y = <code>{_e(analysis.y)}</code>, groups by "
            f"<code>{_e(', '.join(analysis.by) or '(none)')}</code>; {_e(loss_name(analysis))} on log loss; "
            "seeds of one x are replicates; "
            f"{analysis.n_boot} bootstrap replicates; verdict level {analysis.level:g}.</p>"
        )
        body.append(_fits_section(analysis))
    else:
        body.append(f"<p><b>No fits:</b> {_e(problem)}</p>")
    body.append("<h2>Plots</h2>")
    body.extend(_embed(p) for p in plots)
    if not plots:
        body.append("<p>No plots.</p>")
    body.append(f"<h2>Failures ({len(fail)})</h2>")
    body.append(fail.to_html(index=False, border=0) if not fail.empty else "<p>No failed or diverged runs.</p>")
    if notes:
        body.append("<h2>Notes</h2><ul>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>")
    return (
        "<!DOCTYPE html>\n<html><head><meta "
        f"charset='utf-8'><title>{_e(title)}</title><style>{STYLE}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
