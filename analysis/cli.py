"""``polyscale fit``, ``polyscale plot`` and ``polyscale report``: the analysis of a results table."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from analysis.defaults import LEVEL
from analysis.wandb_log import DEFAULT_PROJECT, MODES
from harness.errors import UsageError

if TYPE_CHECKING:
    from analysis.analyse import TableAnalysis
    from analysis.load import Source

INPUT_HELP = "a results folder (runs.parquet inside), a .parquet or .csv table, or wandb:ENTITY/PROJECT (online only)"
EPILOG = """\
Rows are runs; only status 'done' is fitted. Seeds at one x are replicates: fits use the mean log
loss per x and the bootstrap resamples seeds within each x. Forms: power law, power law + offset,
stretched exponential L0 + A exp(-b x^gamma), and the nested family ln(L - L0) = c - a (x^gamma - 1)/gamma
(gamma = 0: power law). Verdict per group: superpolynomial (gamma > 0 significant), power_law or
inconclusive, with the reason.
"""
PLOT_EPILOG = (
    EPILOG
    + """
output, in DIR:
  loss_vs_X.png       loss vs x per group: seeds, their means, the nested fit and its 95% band
  local_slope_X.png   d ln L / d ln x between neighbouring x with 95% bootstrap intervals
  trajectories.png    METRIC vs step from runs/*/metrics.jsonl (when runs/ is there)
  error_vs_d.png      ERROR_COL vs d per experiment (when the table has both)
A plot the data do not allow is skipped with a note; the others are still written.

examples:
  polyscale plot results/e4a                       # PNGs in results/e4a/analysis
  polyscale plot results/e4a --x d_eff --by arm,k --out figures/e4a
  polyscale plot runs.csv --metric train_loss --n-boot 200
"""
)
REPORT_EPILOG = (
    EPILOG
    + """
The page embeds its plots (no external links): verdicts and fit tables, the plots of `polyscale
plot`, runs by status and each failed run with its error. A table too small to fit still gets a
page, with the reason. The fits and PNGs also stay on disk, in
RESULTS/analysis (TABLE-analysis for a table), or with --out FILE in FILE's folder/analysis.

examples:
  polyscale report results/e4a                     # results/e4a/report.html
  polyscale report results/smoke --x d --by arm --n-boot 200
  polyscale report results/e4a --out ~/e4a/report.html   # results folder read-only: write elsewhere
"""
)

POWER_EPILOG = """\
The noise is the seed-to-seed scatter of log y at each x, pooled over x (so the pilot needs two or
more seeds at some x). The null is the power law with offset fitted to the pilot's means; the
alternative keeps its offset, level and slope at the smallest x and lets the slope of the excess
loss grow like x^gamma. Each simulated data set gets the analysis and verdict of `polyscale fit`;
both rates of one design use the same noise draws. Each design and group takes about 3 s per 100
simulations with the default --n-boot on one CPU core (noisier pilots take longer): the defaults
take about a minute and a half on a two-group pilot.

example:
  polyscale power results/paper/e4a-polylog --by arm --seeds 3,5,10 --points 8,12 --sims 100
"""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0; got {text}")
    return value


def _level(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1); got {text}")
    return value


def _add_common(parser: argparse.ArgumentParser, input_name: str = "INPUT") -> None:
    parser.add_argument("input", metavar=input_name, help=INPUT_HELP)
    parser.add_argument(
        "--x",
        default=None,
        metavar="COL",
        help="x column (d, d_eff, width, width_eff, ...); default: the first of d_eff, width_eff, d, width that varies",
    )
    parser.add_argument("--y", default="test_loss", metavar="COL", help="y column (default: test_loss)")
    parser.add_argument(
        "--by",
        default=None,
        metavar="COLS",
        help="comma-separated grouping columns (default: arm if present; 'none' for one group)",
    )
    parser.add_argument(
        "--n-boot", type=_positive_int, default=1000, metavar="B", help="bootstrap replicates (default: 1000)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default: 0)")
    parser.add_argument(
        "--huber",
        type=_positive_float,
        default=None,
        metavar="DELTA",
        help="Huber loss on log residuals with this delta (default: least squares; 1e-3 for --joint)",
    )
    parser.add_argument(
        "--level", type=_level, default=LEVEL, help=f"level of the test of gamma > 0 (default: {LEVEL})"
    )
    parser.add_argument(
        "--wandb", choices=MODES, default="disabled", help="log the fit table and plots to W&B (default: disabled)"
    )
    parser.add_argument(
        "--wandb-project", default=DEFAULT_PROJECT, metavar="NAME", help=f"W&B project (default: {DEFAULT_PROJECT})"
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    fit = subparsers.add_parser(
        "fit",
        help="fit scaling laws and test for superpolynomial scaling",
        description="Fit power laws, stretched exponentials and the nested family per group; write "
        "DIR/fits.json and DIR/fits.csv.",
        epilog=EPILOG
        + "\nexample:\n  polyscale fit results/e4 --x d_eff --by arm --out results/e4/analysis\n  polyscale "
        "fit runs.csv --joint N,D --y loss\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_common(fit)
    fit.add_argument(
        "--joint",
        default=None,
        metavar="N,D",
        help="fit L(N, D) = E + A/N^alpha + B/D^beta over these two columns instead",
    )
    fit.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="output folder (default: RESULTS/analysis, or TABLE-analysis beside a table)",
    )
    fit.set_defaults(handler=run_fit)

    plot = subparsers.add_parser(
        "plot",
        help="plot loss vs x with fits, local slopes, trajectories and compression error",
        description="Write PNGs: loss vs x per group with fitted curves and bands, local slope vs x, training "
        "trajectories (from runs/*/metrics.jsonl) and error vs d.",
        epilog=PLOT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_common(plot)
    plot.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="output folder (default: RESULTS/analysis, or TABLE-analysis beside a table)",
    )
    plot.add_argument(
        "--metric",
        default="test_loss",
        metavar="NAME",
        help="metric of metrics.jsonl drawn in trajectories.png, e.g. train_loss (default: test_loss)",
    )
    plot.add_argument(
        "--error-col",
        default="moment_error",
        metavar="COL",
        help="compression error column plotted against d (default: moment_error)",
    )
    plot.set_defaults(handler=run_plot)

    report = subparsers.add_parser(
        "report",
        help="write one self-contained HTML report of a results folder",
        description="Fit, plot and write RESULTS/report.html: verdicts, fit tables, plots, run counts and "
        "failures, in one file.",
        epilog=REPORT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_common(report, "RESULTS")
    report.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="FILE",
        help="the HTML file (default: RESULTS/report.html, or TABLE-analysis/report.html beside a table)",
    )
    report.add_argument(
        "--metric",
        default="test_loss",
        metavar="NAME",
        help="metric of metrics.jsonl drawn in the trajectories plot, e.g. train_loss (default: test_loss)",
    )
    report.add_argument(
        "--error-col",
        default="moment_error",
        metavar="COL",
        help="compression error column plotted against d (default: moment_error)",
    )
    report.set_defaults(handler=run_report)

    power = subparsers.add_parser(
        "power",
        help="plan a study: power of the verdict over designs, from pilot runs",
        description="From pilot runs, estimate each group's seed noise of log loss and fit the power law with "
        "offset; simulate, for each design (seeds per x, number of x values log-uniform over the pilot's x "
        "range), how often the verdict calls a stretched exponential with --gamma superpolynomial (power) and "
        "how often it calls the fitted power law so (false-positive rate). Write DIR/power.json, DIR/power.csv "
        "and DIR/power.png.",
        epilog=POWER_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    power.add_argument("input", metavar="PILOT", help=INPUT_HELP)
    power.add_argument("--x", default=None, metavar="COL", help="x column, as for fit (default: as for fit)")
    power.add_argument("--y", default="test_loss", metavar="COL", help="y column (default: test_loss)")
    power.add_argument(
        "--by", default=None, metavar="COLS", help="comma-separated grouping columns, as for fit (default: arm)"
    )
    power.add_argument(
        "--gamma",
        type=_positive_float,
        default=None,
        help="gamma of the stretched exponential to detect (default: 1/m from the column m or task.input_dim; "
        "1/3 when the pilot does not give m)",
    )
    power.add_argument("--seeds", default="3,5,10,20", metavar="LIST", help="seeds per x to try (default: 3,5,10,20)")
    power.add_argument("--points", default="8,12", metavar="LIST", help="numbers of x values to try (default: 8,12)")
    power.add_argument("--power", type=_level, default=0.8, help="power to reach (default: 0.8)")
    power.add_argument("--level", type=_level, default=LEVEL, help=f"level of the test of gamma > 0 (default: {LEVEL})")
    power.add_argument(
        "--sims", type=_positive_int, default=200, metavar="S", help="simulated data sets per design (default: 200)"
    )
    power.add_argument(
        "--n-boot",
        type=_positive_int,
        default=49,
        metavar="B",
        help="bootstrap replicates per simulated data set (default: 49)",
    )
    power.add_argument("--seed", type=int, default=0, help="seed of the simulations (default: 0)")
    power.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="output folder (default: RESULTS/analysis, or TABLE-analysis beside a table)",
    )
    power.set_defaults(handler=run_power)


def _by(option: str | None, source: Source) -> tuple[list[str], list[str]]:
    """Grouping columns and a note when the default 'arm' is absent."""
    if option is None:
        if "arm" in source.table.columns:
            return ["arm"], []
        return [], ["no 'arm' column: all runs form one group"]
    if option.strip().lower() in ("", "none"):
        return [], []
    return [c.strip() for c in option.split(",") if c.strip()], []


def _analyse(args: argparse.Namespace, source: Source, by: list[str]) -> TableAnalysis:
    from analysis.analyse import analyse_table
    from analysis.load import choose_x, fittable_runs

    x = args.x or choose_x(fittable_runs(source.table, source.description), by)
    return analyse_table(
        source.table, x, args.y, by, args.n_boot, args.seed, args.huber, args.level, source.description
    )


def _print_notes(notes: list[str]) -> None:
    for note in notes:
        print(f"note: {note}")


def _check_writable(path: Path, option: str | None, is_file: bool = False) -> None:
    """A one-line UsageError, before anything is written, unless the folder (or file) ``path`` can
    be written or created. ``option`` is the flag that named it, None for a default location."""
    problem = _unwritable(path, is_file)
    if problem is None:
        return
    if option is not None:
        raise UsageError(f"{option} {path}: not writable ({problem})")
    what, flag = ("file", "--out FILE") if is_file else ("folder", "--out DIR")
    raise UsageError(f"{path}: the default output {what} is not writable ({problem}); give another with {flag}")


def _unwritable(path: Path, is_file: bool) -> str | None:
    """Why ``path`` cannot be written or created, or None when it can."""
    if path.exists():
        if path.is_dir() == is_file:
            return f"{path} is {'a folder' if is_file else 'a file'}"
        nearest = path
    else:
        nearest = path.parent
        while not nearest.exists() and nearest != nearest.parent:
            nearest = nearest.parent
        if not nearest.is_dir():
            return f"{nearest} is a file"
    if os.access(nearest, os.W_OK if nearest.is_file() else os.W_OK | os.X_OK):
        return None
    read_only = os.statvfs(nearest).f_flag & os.ST_RDONLY
    return f"{'read-only file system' if read_only else 'permission denied'}: {nearest}"


def run_fit(args: argparse.Namespace) -> int:
    from analysis.load import read_source, seed_table
    from analysis.tables import fits_frame, format_table, group_record, write_fits
    from analysis.wandb_log import log_analysis

    source = read_source(args.input)
    by, notes = _by(args.by, source)
    out = args.out or source.default_out
    _check_writable(out, "--out" if args.out else None)
    if args.joint:
        return _run_joint(args, source, by, out, notes)
    analysis = _analyse(args, source, by)
    frame = fits_frame(analysis)
    seeds = seed_table([r.series for r in analysis.results], analysis.x, analysis.y)
    paths = write_fits(out, [group_record(r, analysis) for r in analysis.results], frame, seeds)
    print(format_table(analysis))
    _print_notes(notes + analysis.notes)
    print(f"wrote {', '.join(str(p) for p in paths)}")
    log_analysis(
        args.wandb,
        args.wandb_project,
        source.name,
        {"fits": frame},
        summary=_verdicts(analysis),
        config=_config(args, analysis),
    )
    return 0


def _run_joint(args: argparse.Namespace, source: Source, by: list[str], out: Path, notes: list[str]) -> int:
    from analysis.joint import N_STARTS, fit_joint
    from analysis.load import clean_runs, groups
    from analysis.tables import format_joint, joint_frame, joint_record, write_fits
    from analysis.wandb_log import log_analysis

    cols = [c.strip() for c in args.joint.split(",")]
    if len(cols) != 2 or not all(cols):
        raise UsageError(f"--joint {args.joint}: expected two columns, N,D")
    n_col, d_col = cols
    runs, more = clean_runs(source.table, [n_col, d_col, args.y], by, source.description)
    notes += more
    records = []
    for group, label, part in groups(runs, by):
        cells = part[[n_col, d_col]].drop_duplicates()
        if len(cells) < 6:
            notes.append(
                f"group {label}: only {len(cells)} distinct ({n_col}, {d_col}) points; the joint law needs at "
                "least 6, skipped"
            )
            continue
        result = fit_joint(part[n_col], part[d_col], part[args.y], args.n_boot, args.seed, args.huber or 1e-3, N_STARTS)
        records.append(joint_record(group, label, result, n_col, d_col, args.y))
    if not records:
        raise UsageError(f"{source.description}: too few points: no group has 6 distinct ({n_col}, {d_col}) points")
    frame = joint_frame(records)
    paths = write_fits(out, records, frame)
    print(format_joint(records))
    _print_notes(notes)
    print(f"wrote {', '.join(str(p) for p in paths)}")
    log_analysis(
        args.wandb, args.wandb_project, source.name, {"joint_fits": frame}, config={"N": n_col, "D": d_col, "y": args.y}
    )
    return 0


def _verdicts(analysis: TableAnalysis) -> dict:
    return {f"verdict/{r.label}": r.verdict for r in analysis.results} | {
        f"gamma/{r.label}": r.gamma for r in analysis.results if r.gamma is not None
    }


def _config(args: argparse.Namespace, analysis: TableAnalysis) -> dict:
    return {
        "x": analysis.x,
        "y": analysis.y,
        "by": analysis.by,
        "n_boot": args.n_boot,
        "seed": args.seed,
        "huber": args.huber,
        "level": args.level,
        "input": str(args.input),
    }


def _analyse_for_plots(
    args: argparse.Namespace, source: Source, by: list[str]
) -> tuple[TableAnalysis | None, str | None]:
    """The fits when the table allows them; otherwise None and why (plots of the rest still go out)."""
    try:
        return _analyse(args, source, by), None
    except (UsageError, ValueError) as exc:
        return None, str(exc)


def run_plot(args: argparse.Namespace) -> int:
    from analysis.load import read_source
    from analysis.plots import make_plots
    from analysis.tables import fits_frame
    from analysis.wandb_log import log_analysis

    source = read_source(args.input)
    by, notes = _by(args.by, source)
    out = args.out or source.default_out
    _check_writable(out, "--out" if args.out else None)
    analysis, problem = _analyse_for_plots(args, source, by)
    paths, plot_notes = make_plots(analysis, source.table, source.results_dir, out, args.metric, args.error_col)
    notes += ([f"no fits: {problem}"] if problem else analysis.notes) + plot_notes
    _print_notes(notes)
    print("wrote " + (", ".join(str(p) for p in paths) if paths else "no plots"))
    tables = {"fits": fits_frame(analysis)} if analysis else {}
    log_analysis(args.wandb, args.wandb_project, source.name, tables, paths, _verdicts(analysis) if analysis else None)
    return 0


def run_report(args: argparse.Namespace) -> int:
    from analysis.load import read_source
    from analysis.plots import make_plots
    from analysis.report import render
    from analysis.tables import fits_frame, format_table, group_record, write_fits
    from analysis.wandb_log import log_analysis

    source = read_source(args.input)
    by, notes = _by(args.by, source)
    # The fits and plots the page embeds go beside it: by default into RESULTS/analysis (or
    # TABLE-analysis), with --out FILE into FILE's folder/analysis.
    plots_dir = source.default_out if args.out is None else args.out.parent / "analysis"
    target = args.out or (source.results_dir / "report.html" if source.results_dir else plots_dir / "report.html")
    _check_writable(target, "--out" if args.out else None, is_file=True)
    if args.out is None:
        _check_writable(plots_dir, None)
    elif why := _unwritable(plots_dir, is_file=False):
        raise UsageError(f"--out {args.out}: cannot write its fits and plots to {plots_dir} ({why})")
    analysis, problem = _analyse_for_plots(args, source, by)
    if analysis is not None:
        write_fits(plots_dir, [group_record(r, analysis) for r in analysis.results], fits_frame(analysis))
        notes += analysis.notes
    paths, plot_notes = make_plots(analysis, source.table, source.results_dir, plots_dir, args.metric, args.error_col)
    page = render(
        f"polyscale report: {source.name}",
        source.description,
        source.table,
        source.results_dir,
        analysis,
        paths,
        notes + plot_notes,
        problem,
    )
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(page)
    except OSError as exc:
        raise UsageError(f"{'--out ' if args.out else ''}{target}: cannot write ({exc.strerror})") from exc
    if analysis is not None:
        print(format_table(analysis))
    _print_notes(notes + plot_notes + ([f"no fits: {problem}"] if problem else []))
    print(f"report: {target.resolve()}")
    tables = {"fits": fits_frame(analysis)} if analysis else {}
    log_analysis(args.wandb, args.wandb_project, source.name, tables, paths, _verdicts(analysis) if analysis else None)
    return 0


def run_power(args: argparse.Namespace) -> int:
    import json

    from analysis.forms import FORMS
    from analysis.load import choose_x, fittable_runs, read_source
    from analysis.plots import plot_power
    from analysis.power import DEFAULT_GAMMA, design_counts, pilots, power_table, smallest_designs
    from analysis.verdict import MIN_POINTS, MIN_RANGE

    source = read_source(args.input)
    by, notes = _by(args.by, source)
    out = args.out or source.default_out
    _check_writable(out, "--out" if args.out else None)
    seeds = design_counts(args.seeds, "--seeds", minimum=2)
    points = design_counts(args.points, "--points", minimum=MIN_POINTS)
    if 1.0 / (args.n_boot + 1) >= args.level:
        raise UsageError(
            f"--n-boot {args.n_boot}: no p-value can fall below {1 / (args.n_boot + 1):.3g}, so none reaches "
            f"--level {args.level:g}; use --n-boot {int(1 / args.level)} or more"
        )
    x = args.x or choose_x(fittable_runs(source.table, source.description), by)
    found, more = pilots(source.table, x, args.y, by, source.description)
    notes += more
    if not found:
        raise UsageError(f"{source.description}: no group has seeds to estimate its noise from")
    gamma = {}
    for pilot in found:
        if pilot.x_max / pilot.x_min < MIN_RANGE:
            notes.append(
                f"group {pilot.label}: {x} spans only a factor {pilot.x_max / pilot.x_min:.3g}; the verdict needs "
                f"{MIN_RANGE:g}, so every design is inconclusive"
            )
        if args.gamma is not None:
            gamma[pilot.label] = args.gamma
        elif pilot.m is not None:
            gamma[pilot.label] = 1.0 / pilot.m
        else:
            gamma[pilot.label] = DEFAULT_GAMMA
            notes.append(f"group {pilot.label}: m is not in the pilot (no m or task.input_dim); gamma = 1/3")
    table = power_table(found, gamma, seeds, points, args.sims, args.n_boot, args.seed, args.level)
    best = smallest_designs(table, args.power)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = out / "power.csv", out / "power.json"
    table.to_csv(csv_path, index=False)
    record = {
        "input": str(args.input),
        "x": x,
        "y": args.y,
        "by": by,
        "target_power": args.power,
        "level": args.level,
        "sims": args.sims,
        "n_boot": args.n_boot,
        "seed": args.seed,
        "groups": [
            {
                "group": p.group,
                "label": p.label,
                "noise_sd_log": p.noise_sd,
                "x_range": [p.x_min, p.x_max],
                "null_power_law_offset": {
                    k: float(v) for k, v in FORMS["power_law_offset"].report(p.null_theta, p.x_min).items()
                },
                "gamma": gamma[p.label],
                "smallest_design": best[p.label],
            }
            for p in found
        ],
        "designs": table.to_dict(orient="records"),
    }
    json_path.write_text(json.dumps(record, indent=2) + "\n")
    png_path = plot_power(table, args.power, out / "power.png")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    for p in found:
        design = best[p.label]
        head = f"{p.label}: noise sd of ln {args.y} {p.noise_sd:.3g}, gamma {gamma[p.label]:.3g}: "
        if design is None:
            print(head + f"no design tried reaches power {args.power:g} at level {args.level:g}")
        else:
            print(
                head + f"smallest design {design['seeds']} seeds x {design['points']} {x} values "
                f"({design['runs']} runs): power {design['power']:.2f}, "
                f"false-positive rate {design['false_positive_rate']:.3f}"
            )
    _print_notes(notes)
    print(f"wrote {csv_path}, {json_path}, {png_path}")
    return 0
