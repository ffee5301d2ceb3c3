"""Function error of every compression method against d (SPEC E1, E7), optionally beside the authors'.

Each draw is one E1/E7 problem exactly as ``harness.experiments.symmetric`` builds it (objects and
probes uniform in [-1, 1]^m from ``symmetric_problem(d, m, probes, seed)``); every method
compresses the same objects to d' = max(size(d), N(m,k)) points and is scored by |f' - f|. The
table gives, per setting, the geometric mean of the error over the draws (errors below 1e-15,
float64 round-off of f, count as 1e-15) and the mean seconds of the compression.

``--reference PATH`` loads the authors' ``compressor.py`` (WHY-David/moment_compression, MIT) from
PATH at run time (it is never part of this repository; it needs ``faiss`` and ``scikit-learn``
importable, e.g. ``PYTHONPATH=/tmp/authors/lib``), runs ``Compressor(objects).compress(k,
dstop=d')`` on the same draws, and prints the ratio table ours / theirs (ours = the clustered
method) with a 95% interval for each row's ratio (a paired t interval on the per-draw log ratios:
single-draw errors span two orders of magnitude, so a row is decided only when its interval
excludes 1). Their runs take minutes at d = 32000: ``--reference-cache FILE`` keeps their results
(keyed by function, m, k, d, d', seed, probes) so that a rerun times ours against the cached ones;
with the cache alone (no ``--reference``) every draw must be in it.
``results/compression/authors-reference.json`` holds their results on the draws of
docs/performance.md's tables (20 probe sets), measured on this project's machine.

``--curve`` adds the clustered method's accuracy-speed trade-off: error and seconds for each
``final_phase`` of ``clustered_weights`` (the nearest-neighbour phase starts at final_phase x d'
live points; 1 is plain kd halving all the way, the schedule before the final phase existed), and
``--fractions`` the same for each ``round_fraction`` (the share of the disjoint nearest-neighbour
groups a final-phase round reduces, smallest first), and ``--drops`` the same for each
``final_drops`` (balanced drops are the accurate and the slow end where d' < 4 N: the SPEC's
third case, 1e3 -> 1e2 at m = 3, k = 5, is where the trade-off is sharpest). ``--final-phase``,
``--round-fraction``, ``--group-width`` and ``--final-drops`` set those options for the tables
and for every point of the curve (a curve's own value overrides the option's).
``--plot PNG`` draws that trade-off, error against seconds, one panel per setting, with the
default schedule ringed and the authors' point beside it when they are compared.

A single probe set makes |f' - f| a noisy statistic: it is one signed sum, and its draws span two
orders of magnitude. ``--probe-sets P`` scores each draw by the root mean square of |f' - f| over
P probe sets instead (the SPEC's set first, the others drawn from the seed), for every method and
the authors' alike: the same function family, far less noise between two compressors.

``--json FILE`` also writes every draw's errors and seconds (and the authors', when compared).

Run: .venv/bin/python bench/compress_accuracy.py [--quick] [--function inverse --size "20*ln(d)^2"]
     [--reference /tmp/authors/compressor.py] [--probe-sets 20] [--fractions 1 0.25]
     [--drops balanced taper --plot drops.png]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from harness.allocator import retain_freed_memory
from harness.compression import (
    compress,
    n_moments,
    parse_size,
    raw_moments,
    relative_moment_error,
)
from harness.compression.clustered import clustered_weights
from harness.compression.methods import FINAL_DROPS, GROUP_WIDTHS
from harness.data.symmetric import symmetric_problem, symmetric_value

# The issue's table: (m, k, d) at d' = 0.1 d.
SETTINGS = [(2, 3, 2000), (2, 3, 8000), (2, 3, 32000), (3, 4, 2000), (3, 4, 8000), (3, 4, 32000)]
QUICK_SETTINGS = [(2, 3, 2000), (3, 4, 2000)]
METHODS = ("clustered", "global", "random", "kmeans")


def load_reference(path: Path):
    """The ``Compressor`` class of the authors' compressor.py at ``path``."""
    if not path.is_file():
        raise SystemExit(f"--reference {path}: no such file (the authors' compressor.py)")
    spec = importlib.util.spec_from_file_location("authors_compressor", path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    except ImportError as error:
        raise SystemExit(
            f"--reference {path}: {error} (install faiss-cpu outside the repository and put it on PYTHONPATH)"
        ) from error
    return module.Compressor


def parse_setting(text: str) -> tuple[int, int, int]:
    try:
        m, k, d = (int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"setting {text!r}: expected m,k,d (three integers)") from None
    return m, k, d


# Errors below this are float64 round-off of f (of order 1, a mean of d terms): they count as it,
# so that an exact zero (it happens at m = 1) does not sink a geometric mean.
ROUND_OFF = 1e-15


def geometric_mean(values) -> float:
    values = np.maximum(np.asarray(values, dtype=float), ROUND_OFF)
    return float(np.exp(np.log(values).mean()))


def ratio_interval(ours, theirs, level: float = 0.95) -> tuple[float, float]:
    """Interval for the geometric-mean ratio ours / theirs: Student's t on the per-draw log ratios.

    Paired, since both compress the same draw; single-draw errors span two orders of magnitude,
    so a row's ratio is only as decisive as this interval is narrow. NaN for fewer than two draws.
    """
    logs = np.log(np.maximum(np.asarray(ours, dtype=float), ROUND_OFF)) - np.log(
        np.maximum(np.asarray(theirs, dtype=float), ROUND_OFF)
    )
    if len(logs) < 2:
        return float("nan"), float("nan")
    half = stats.t.ppf(0.5 + level / 2, len(logs) - 1) * logs.std(ddof=1) / np.sqrt(len(logs))
    return float(np.exp(logs.mean() - half)), float(np.exp(logs.mean() + half))


def schedule_options(args: argparse.Namespace) -> dict:
    """The clustered method's options given on the command line (--final-phase, --round-fraction,
    --group-width, --final-drops)."""
    given = (
        ("final_phase", args.final_phase),
        ("round_fraction", args.round_fraction),
        ("group_width", args.group_width),
        ("final_drops", args.final_drops),
    )
    return {name: value for name, value in given if value is not None}


def add_schedule_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--final-phase",
        type=float,
        default=None,
        help="the clustered method's final_phase (default: compress's; d / d' or more: nearest-neighbour groups only)",
    )
    parser.add_argument(
        "--round-fraction", type=float, default=None, help="the clustered method's round_fraction (default: compress's)"
    )
    parser.add_argument(
        "--group-width",
        choices=GROUP_WIDTHS,
        default=None,
        help="the clustered method's group_width (default: compress's)",
    )
    parser.add_argument(
        "--final-drops",
        choices=FINAL_DROPS,
        default=None,
        help="the clustered method's final_drops (default: compress's)",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", type=parse_setting, nargs="+", help="m,k,d triples (default: the issue's six)")
    parser.add_argument("--quick", action="store_true", help="d = 2000 only, 3 draws")
    parser.add_argument("--draws", type=int, default=6, help="independent draws per setting (seeds 0..draws-1)")
    parser.add_argument("--function", choices=("sigmoid", "inverse"), default="sigmoid", help="E1 or E7's function")
    parser.add_argument("--size", default="0.1d", help="size rule for d' (clamped up to N(m,k)); E7: '20*ln(d)^2'")
    parser.add_argument("--probes", type=int, default=10, help="probe inputs x_a (SPEC: 10)")
    parser.add_argument(
        "--probe-sets", type=int, default=1, help="score each draw by the RMS error over this many probe sets"
    )
    add_schedule_arguments(parser)
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--reference", type=Path, help="path of the authors' compressor.py")
    parser.add_argument("--reference-cache", type=Path, help="JSON file keeping the authors' results between runs")
    parser.add_argument("--json", type=Path, help="also write every draw's errors and seconds to this JSON file")
    parser.add_argument(
        "--curve",
        type=float,
        nargs="*",
        metavar="PHASE",
        help="clustered final_phase values to time and score (default 1 2 3 4 if none given)",
    )
    parser.add_argument(
        "--fractions", type=float, nargs="+", metavar="Q", help="clustered round_fraction values to time and score"
    )
    parser.add_argument(
        "--drops",
        choices=FINAL_DROPS,
        nargs="+",
        metavar="DROPS",
        help="clustered final_drops values to time and score",
    )
    parser.add_argument(
        "--plot",
        type=Path,
        metavar="PNG",
        help="with --curve, --fractions or --drops: draw error against seconds to this file",
    )
    args = parser.parse_args()
    if args.probe_sets < 1:
        parser.error(f"--probe-sets must be at least 1; got {args.probe_sets}")
    if args.plot and args.curve is None and not args.fractions and not args.drops:
        parser.error("--plot draws the --curve / --fractions / --drops trade-off: give one of them")
    settings = args.settings or (QUICK_SETTINGS if args.quick else SETTINGS)
    draws = 3 if args.quick and args.draws == 6 else args.draws
    rule = parse_size(args.size)
    reference = load_reference(args.reference) if args.reference else None
    comparing = reference is not None or args.reference_cache is not None
    cache = (
        json.loads(args.reference_cache.read_text()) if args.reference_cache and args.reference_cache.exists() else {}
    )
    ours_schedule = schedule_options(args)
    retain_freed_memory()
    torch.set_num_threads(1)
    compress(np.random.default_rng(0).uniform(-1, 1, (500, 2)), k=2, size=100)  # warm-up

    print(
        f"{args.function} (SPEC {'E1' if args.function == 'sigmoid' else 'E7'}), d' = max({rule}, N), "
        f"{draws} draws; |f' - f| geometric mean over draws"
        + (f" (each draw: RMS over {args.probe_sets} probe sets)" if args.probe_sets > 1 else "")
        + f", seconds mean; torch {torch.__version__}, 1 thread"
        + "".join(f"; clustered {name} {value}" for name, value in ours_schedule.items())
    )
    schedules = [{"final_phase": phase} for phase in (args.curve or DEFAULT_PHASES)] if args.curve is not None else []
    schedules += [{"round_fraction": fraction} for fraction in args.fractions or ()]
    schedules += [{"final_drops": drops} for drops in args.drops or ()]
    print("| m, k, d | d' | " + " | ".join(f"{name} error | {name} s" for name in args.methods) + " |")
    print("|---|---|" + "---|---|" * len(args.methods))
    ratio_rows, curve_rows, records = [], [], []
    for m, k, d in settings:
        target = max(rule.resolve(d), n_moments(m, k))
        errors = {name: [] for name in args.methods}
        seconds = {name: [] for name in args.methods}
        theirs, theirs_seconds, ours_moment, theirs_moment = [], [], [], []
        for seed in range(draws):
            objects, probes = symmetric_problem(d, m, args.probes, seed)
            error_of = _scorer(args.function, objects, probes, args.probe_sets, seed)
            for name in args.methods:
                schedule = ours_schedule if name == "clustered" else {}
                result = compress(objects, k=k, size=target, method=name, seed=seed, **schedule)
                errors[name].append(error_of(result.points, result.weights))
                seconds[name].append(result.seconds)
                if name == "clustered":
                    ours_moment.append(result.moment_error)
            if comparing:
                key = f"{args.function},{m},{k},{d},{target},{seed},{args.probes}" + (
                    f",{args.probe_sets}" if args.probe_sets > 1 else ""
                )
                if key not in cache:
                    if reference is None:
                        raise SystemExit(
                            f"--reference-cache {args.reference_cache}: no result for {key}; "
                            "give --reference PATH to compute it"
                        )
                    start = time.perf_counter()
                    weights, points = reference(objects).compress(k, dstop=target)
                    elapsed = time.perf_counter() - start
                    moment = relative_moment_error(raw_moments(objects, np.ones(d), k), raw_moments(points, weights, k))
                    cache[key] = {
                        "error": error_of(points, weights),
                        "seconds": elapsed,
                        "moment_error": moment,
                        "size": len(weights),
                    }
                    if args.reference_cache:
                        args.reference_cache.write_text(json.dumps(cache, indent=1))
                theirs.append(cache[key]["error"])
                theirs_seconds.append(cache[key]["seconds"])
                theirs_moment.append(cache[key]["moment_error"])
            records.append(
                {
                    "m": m,
                    "k": k,
                    "d": d,
                    "size": target,
                    "seed": seed,
                    "error": {name: errors[name][-1] for name in args.methods},
                    "seconds": {name: seconds[name][-1] for name in args.methods},
                }
                | ({"theirs_error": theirs[-1], "theirs_seconds": theirs_seconds[-1]} if comparing else {})
            )
            if schedules:
                curve_rows.extend(_curve(objects, error_of, k, target, schedules, ours_schedule, m, d))
        print(
            f"| {m}, {k}, {d} | {target} | "
            + " | ".join(f"{geometric_mean(errors[n]):.2e} | {np.mean(seconds[n]):.3f}" for n in args.methods)
            + " |"
        )
        if comparing and "clustered" in errors:
            ours = np.array(errors["clustered"])
            low, high = ratio_interval(ours, theirs)
            ratio_rows.append(
                f"| {m}, {k}, {d} | {target} | {geometric_mean(theirs):.2e} | {geometric_mean(ours):.2e} | "
                f"{geometric_mean(ours) / geometric_mean(theirs):.2f} | {low:.2f}-{high:.2f} | "
                f"{int((ours < np.array(theirs)).sum())} of {draws} | "
                f"{np.mean(theirs_seconds):.2f} | {np.mean(seconds['clustered']):.4f} | "
                f"{np.mean(theirs_seconds) / np.mean(seconds['clustered']):.0f}x | "
                f"{max(ours_moment):.1e} | {max(theirs_moment):.1e} |"
            )
        sys.stdout.flush()
    if ratio_rows:
        print("\nours = clustered; theirs = the authors' Compressor at the same d' on the same draws")
        print(
            "| m, k, d | d' | theirs | ours | ours / theirs | 95% interval | ours lower in | theirs s | ours s | "
            "speed-up | moment error ours (max) | theirs (max) |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        print("\n".join(ratio_rows))
    if curve_rows:
        _print_curve(curve_rows)
    if args.plot:
        _plot_curve(curve_rows, records, args.plot)
    if args.json:
        args.json.write_text(json.dumps({"function": args.function, "probe_sets": args.probe_sets, "draws": records}))


DEFAULT_PHASES = (1.0, 2.0, 3.0, 4.0)


def _scorer(function: str, objects: np.ndarray, probes: np.ndarray, probe_sets: int, seed: int):
    """|f' - f| of a compressed set on the SPEC's probes, or its RMS over ``probe_sets`` probe sets."""
    d, m = objects.shape
    rng = np.random.default_rng([seed, 7])
    sets = [probes] + [rng.uniform(-1.0, 1.0, probes.shape) for _ in range(probe_sets - 1)]
    exact = np.array([symmetric_value(function, objects, np.ones(d), p, d) for p in sets])

    def error_of(points: np.ndarray, weights: np.ndarray) -> float:
        values = np.array([symmetric_value(function, points, weights, p, d) for p in sets])
        return float(np.sqrt(np.mean((values - exact) ** 2)))

    return error_of


def _curve(objects, error_of, k, target, schedules, fixed, m, d):
    """(m, k, d, schedule, error, seconds) of the clustered method for each schedule, on one draw;
    ``fixed`` holds the options given on the command line, which each schedule's value overrides."""
    rows = []
    x, w = torch.as_tensor(objects), torch.ones(len(objects), dtype=torch.float64)
    for schedule in schedules:
        start = time.perf_counter()
        c = clustered_weights(x, w, k, target, **{**fixed, **schedule}).numpy()
        elapsed = time.perf_counter() - start
        keep = c > 0
        ((name, value),) = schedule.items()
        label = f"{name}={value}" if isinstance(value, str) else f"{name}={value:g}"
        rows.append((m, k, d, label, error_of(objects[keep], c[keep]), elapsed))
    return rows


def _curve_points(rows: list[tuple]) -> dict[tuple, tuple[float, float]]:
    """(m, k, d, schedule) -> (geometric-mean error, mean seconds) over the draws."""
    points = {}
    for key in sorted({row[:4] for row in rows}):
        picked = [(e, s) for *rest, e, s in rows if tuple(rest) == key]
        points[key] = (geometric_mean([e for e, _ in picked]), float(np.mean([s for _, s in picked])))
    return points


def _print_curve(rows: list[tuple]) -> None:
    print("\nclustered error against seconds by schedule (geometric-mean error, mean seconds)")
    print("| m, k, d | schedule | error | seconds |")
    print("|---|---|---|---|")
    for (m, k, d, schedule), (error, seconds) in _curve_points(rows).items():
        print(f"| {m}, {k}, {d} | {schedule} | {error:.2e} | {seconds:.3f} |")


def _plot_curve(rows: list[tuple], records: list[dict], path: Path) -> None:
    """Error against seconds, one panel per setting (their errors differ by orders of magnitude):
    a line through each option's schedules (final_phase, round_fraction, final_drops;
    geometric-mean error, mean seconds over the draws), the default as a ring, and the authors'
    compressor as a star where it was compared."""
    import matplotlib  # only --plot needs it: the tables run without loading it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = _curve_points(rows)
    settings = sorted({key[:3] for key in curve})
    columns = min(3, len(settings))
    lines = -(-len(settings) // columns)
    figure, panels = plt.subplots(lines, columns, figsize=(4.5 * columns, 4 * lines), squeeze=False)
    for axes, (m, k, d) in zip(panels.flat, settings):
        for colour, (kind, style) in enumerate(
            (("final_phase", "o-"), ("round_fraction", "s--"), ("final_drops", "^:"))
        ):
            points = sorted(
                (seconds, error, key[3])
                for key, (error, seconds) in curve.items()
                if key[:3] == (m, k, d) and key[3].startswith(kind)
            )
            if not points:
                continue
            axes.plot([p[0] for p in points], [p[1] for p in points], style, color=f"C{colour}", label=kind)
            for seconds, error, schedule in points:
                axes.annotate(
                    schedule.split("=")[1], (seconds, error), fontsize=7, xytext=(3, 3), textcoords="offset points"
                )
        drawn = [r for r in records if (r["m"], r["k"], r["d"]) == (m, k, d)]
        axes.plot(
            np.mean([r["seconds"]["clustered"] for r in drawn]),
            geometric_mean([r["error"]["clustered"] for r in drawn]),
            "o",
            markersize=11,
            fillstyle="none",
            color="black",
            label="default",
        )
        if "theirs_error" in drawn[0]:  # the authors' were compared
            axes.plot(
                np.mean([r["theirs_seconds"] for r in drawn]),
                geometric_mean([r["theirs_error"] for r in drawn]),
                "*",
                markersize=12,
                color="C3",
                label="the authors'",
            )
        axes.set(xscale="log", yscale="log", xlabel="seconds per compression", ylabel="error |f' - f| (geometric mean)")
        axes.set_title(f"m={m} k={k}, d={d} -> {drawn[0]['size']}", fontsize=9)
        axes.legend(fontsize=7)
    for axes in panels.flat[len(settings) :]:
        axes.set_visible(False)
    figure.suptitle("clustered compression: accuracy against time, by schedule")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
