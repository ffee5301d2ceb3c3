"""``make demo``: the end-to-end tour on a CPU in a few minutes.

1. Compress a few thousand random points at several (m, k) with every method; print a table.
2. Experiment E1 at small scale: error of the sigmoid-sum function vs d for the moment-compressed
   set and the random subset at d' = 0.1 d; save the plot.
3. The smoke sweep (``sweeps/smoke.yaml``, E2 at toy scale: 4 arms x 6 dataset sizes x 2 seeds),
   mirrored to W&B offline, then fitted, plotted and reported: the path every real sweep takes.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402

from harness.cli import main as polyscale  # noqa: E402
from harness.compression import METHODS, compress  # noqa: E402
from harness.data.symmetric import sigmoid_sum, uniform_objects  # noqa: E402

SMOKE_SPEC = Path(__file__).resolve().parents[1] / "sweeps" / "smoke.yaml"


def compression_table(d: int = 4000) -> list[dict]:
    """Every method at several (m, k), compressing d uniform points to 0.1 d."""
    rng = np.random.default_rng(0)
    rows = []
    for m, k in [(1, 4), (2, 3), (3, 3), (4, 2)]:
        points = uniform_objects(d, m, rng)
        for method in METHODS:
            result = compress(points, k=k, size="0.1d", method=method, seed=0)
            rows.append(
                {
                    "m": m,
                    "k": k,
                    "N(m,k)": result.n_moments,
                    "method": method,
                    "kept": result.size,
                    "moment_error": result.moment_error,
                    "seconds": result.seconds,
                }
            )
    return rows


def e1_errors(m: int, k: int, ds: list[int], trials: int, method: str) -> np.ndarray:
    """Mean |f - f'| of E1's sigmoid-sum over trials, for each d (d' = 0.1 d)."""
    errors = np.zeros(len(ds))
    for i, d in enumerate(ds):
        for trial in range(trials):
            rng = np.random.default_rng(10_000 * trial + d)
            objects, probes = uniform_objects(d, m, rng), uniform_objects(10, m, rng)
            small = compress(objects, k=k, size="0.1d", method=method, seed=trial)
            exact = sigmoid_sum(objects, np.ones(d), probes, d)
            errors[i] += abs(exact - sigmoid_sum(small.points, small.weights, probes, d)) / trials
    return errors


def plot_e1(out: Path, ds: list[int], trials: int) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, m in zip(axes, (1, 2)):
        for k, colour in zip((1, 2, 3), ("tab:blue", "tab:orange", "tab:green")):
            errors = e1_errors(m, k, ds, trials, "clustered")
            slope = np.polyfit(np.log(ds), np.log(errors), 1)[0]
            expected = -((k + 1) / m + 0.5)
            ax.loglog(ds, errors, "o-", color=colour, label=f"moment k={k}: slope {slope:.2f} (SPEC {expected:.2f})")
        random = e1_errors(m, 1, ds, trials, "random")
        ax.loglog(ds, random, "s--", color="grey", label="random subset (same d')")
        ax.set_title(f"E1, m = {m}: d' = 0.1 d, {trials} trials")
        ax.set_xlabel("d (objects before compression)")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("|f - f'|  (sigmoid-sum, mean over trials)")
    fig.tight_layout()
    path = out / "e1_error_vs_d.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def print_table(rows: list[dict]) -> None:
    print(f"{'m':>2} {'k':>2} {'N(m,k)':>7} {'method':>10} {'kept':>6} {'moment error':>13} {'seconds':>8}")
    for row in rows:
        print(
            f"{row['m']:>2} {row['k']:>2} {row['N(m,k)']:>7} {row['method']:>10} {row['kept']:>6} "
            f"{row['moment_error']:>13.2e} {row['seconds']:>8.3f}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("results/demo"), help="where plots and tables go")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    warnings.simplefilter("ignore", UserWarning)

    print("== 1. compressing 4000 uniform points to 400 (0.1 d) ==")
    rows = compression_table()
    print_table(rows)
    pd.DataFrame(rows).to_csv(args.out / "compression_table.csv", index=False)

    print("\n== 2. E1 at small scale: error of the compressed sigmoid-sum vs d ==")
    path = plot_e1(args.out, ds=[500, 1000, 2000, 4000, 8000], trials=5)
    print(f"plot: {path}")

    smoke = args.out / "smoke"
    print(f"\n== 3. the smoke sweep -> {smoke} (finished runs are kept; a rerun only adds what is missing) ==")
    for command in (
        ["sweep", str(SMOKE_SPEC), "--out", str(smoke)],
        ["fit", str(smoke)],
        ["plot", str(smoke)],
        ["report", str(smoke)],
    ):
        print(f"\n$ polyscale {' '.join(command)}", flush=True)
        code = polyscale(command)
        if code != 0:
            return code
    print(f"\nopen {smoke / 'report.html'} in a browser: fits, verdicts and plots of the smoke sweep")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
