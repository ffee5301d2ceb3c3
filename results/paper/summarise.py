"""Per-arm summaries of the committed paper results (the numbers results/paper/README.md quotes beside fits.json).

    .venv/bin/python results/paper/summarise.py        # writes results/paper/<exp>/summary.csv
    .venv/bin/python results/paper/summarise.py results/paper/e3-full-taper --baseline results/paper/e3-full

For every results folder with a runs.parquet: per (setting, arm), over seeds, the mean, median and
range (min, max) of the final test loss, of its ratio to the original arm of the same seed and
setting (paired: same data, same initialisation, same batches), and of the arm's largest
trajectory gap to the original (width and attention experiments), or of the compression error
(symmetric experiments). Only finished ('done') runs. With --baseline, also paired.csv: a one-arm
rerun's runs beside the baseline sweep's original and same-arm runs of their seed, finished or
not. For runtime (E5) folders also runtime_slopes.csv (the log-log slope of time against d) and
runtime.png; for a folder that varies train.sampling, sampling_pairs.csv (paired loss ratios of the two modes).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent
SETTINGS = [
    "train.optimizer",
    "train.lr",
    "train.steps",
    "train.sampling",
    "d",
    "width",
    "task.input_dim",
    "compression.k",
]
VALUES = [
    "test_loss",
    "ratio_to_original",
    "max_test_gap",
    "max_train_gap",
    "error",
    "relative_error",
    "compress_seconds",
    "d_eff",
    "width_eff",
]


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    runs = table[table["status"] == "done"].copy()
    keys = [c for c in SETTINGS if c in runs.columns and runs[c].nunique(dropna=False) > 1]
    if "test_loss" in runs.columns and (runs["arm"] == "original").any():
        base = runs[runs["arm"] == "original"].set_index([*keys, "seed"])["test_loss"]
        index = pd.MultiIndex.from_frame(runs[[*keys, "seed"]])
        runs["ratio_to_original"] = runs["test_loss"].to_numpy() / base.reindex(index).to_numpy()
    values = [c for c in VALUES if c in runs.columns and pd.to_numeric(runs[c], errors="coerce").notna().any()]
    rows = []
    for key, part in runs.groupby([*keys, "arm"], dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip([*keys, "arm"], key))
        row["n_seeds"] = len(part)
        for col in values:
            v = pd.to_numeric(part[col], errors="coerce").dropna()
            if v.empty:
                continue
            row[f"{col}_mean"], row[f"{col}_median"] = v.mean(), v.median()
            row[f"{col}_min"], row[f"{col}_max"] = v.min(), v.max()
        rows.append(row)
    return pd.DataFrame(rows)


def runtime_slopes(table: pd.DataFrame, d_min: float = 4000, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """E5: the exponent b of compress_seconds ~ a d^b per (arm, m), least squares in log-log over
    every run with d >= d_min, with a 95% percentile interval from resampling runs within each d.

    (The scaling-law fits of `polyscale fit` are built for decreasing losses: their forms keep
    alpha >= 0, so a growing runtime gets alpha = 0 there.)
    """
    runs = table[(table["status"] == "done") & (table["d"] >= d_min)]
    rng = np.random.default_rng(seed)
    rows = []
    for (arm, m), part in runs.groupby(["arm", "task.input_dim"], sort=True):
        x, y = np.log(part["d"].to_numpy(float)), np.log(part["compress_seconds"].to_numpy(float))
        slope = np.polyfit(x, y, 1)[0]
        cells = [np.flatnonzero(x == v) for v in np.unique(x)]
        boot = []
        for _ in range(n_boot):
            pick = np.concatenate([rng.choice(c, len(c)) for c in cells])
            boot.append(np.polyfit(x[pick], y[pick], 1)[0])
        lo, hi = np.percentile(boot, [2.5, 97.5])
        largest = part[part["d"] == part["d"].max()]["compress_seconds"]
        rows.append(
            {
                "arm": arm,
                "m": m,
                "d_min": d_min,
                "d_max": part["d"].max(),
                "n_runs": len(part),
                "slope": slope,
                "slope_lo": lo,
                "slope_hi": hi,
                "median_seconds_at_d_max": largest.median(),
            }
        )
    return pd.DataFrame(rows)


def runtime_plot(table: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = table[table["status"] == "done"]
    fig, ax = plt.subplots(figsize=(6.5, 4.5), constrained_layout=True)
    for (arm, m), part in runs.groupby(["arm", "task.input_dim"], sort=True):
        med = part.groupby("d")["compress_seconds"].median()
        ax.plot(med.index, med.to_numpy(), "o-", label=f"{arm}, m = {m}")
        ax.scatter(part["d"], part["compress_seconds"], s=6, alpha=0.4)
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="d (points compressed to 0.1 d, k = 5)",
        ylabel="seconds (median of seeds)",
        title="E5: moment compression time (2-core CPU, one thread)",
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def sampling_pairs(table: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Beyond the paper: test loss with weighted_loss batches over proportional sampling, paired by
    (d, seed) (same data, same compression, same initialisation); per d and overall (geometric
    mean, 95% percentile interval from resampling the pairs)."""
    runs = table[table["status"] == "done"]
    pairs = runs.pivot_table(index=["d", "seed"], columns="train.sampling", values="test_loss").dropna()
    log_ratio = np.log(pairs["weighted_loss"] / pairs["proportional"])
    rng = np.random.default_rng(seed)
    rows = []
    for d, part in [*log_ratio.groupby(level="d"), ("all", log_ratio)]:
        v = part.to_numpy()
        boot = [rng.choice(v, len(v)).mean() for _ in range(n_boot)]
        lo, hi = np.exp(np.percentile(boot, [2.5, 97.5]))
        rows.append(
            {
                "d": d,
                "n_pairs": len(v),
                "ratio_weighted_loss_over_proportional": np.exp(v.mean()),
                "ratio_lo": lo,
                "ratio_hi": hi,
                "fraction_weighted_loss_better": float((v < 0).mean()),
            }
        )
    return pd.DataFrame(rows)


def test_loss_trajectories(out: Path) -> dict[tuple, pd.Series]:
    """(arm, optimiser, lr, seed) -> test loss by step, from each run's metrics.jsonl (finished or not)."""
    from harness.tracking.store import read_identity, read_metrics, run_ids

    found = {}
    for run_id in run_ids(out):
        identity = read_identity(out, run_id) or {}
        config = identity.get("config", {})
        train = config.get("train", {})
        key = (identity.get("arm"), train.get("optimizer"), train.get("lr"), config.get("seed"))
        records = read_metrics(out, run_id)[0]
        found[key] = pd.Series({r["step"]: r.get("test_loss") for r in records}, dtype=float)
    return found


def paired_trajectories(runs: dict[tuple, pd.Series], base: dict[tuple, pd.Series], baseline: str) -> pd.DataFrame:
    """A one-arm rerun against its baseline sweep (``test_loss_trajectories`` of each; ``baseline``
    names the sweep's folder): each run beside the baseline's original and its run of the same
    arm, matched by (optimiser, lr, seed): the same data, initial net and batches. At the last step
    all three have recorded (finished or not): each arm's test loss over the original's, and its
    initial and worst |test loss / original's - 1| up to there. The trajectories come from
    metrics.jsonl, so they cover unfinished runs, which runs.parquet leaves out."""
    rows = []
    for (arm, optimizer, lr, seed), loss in sorted(runs.items(), key=str):
        original, same_arm = base.get(("original", optimizer, lr, seed)), base.get((arm, optimizer, lr, seed))
        if original is None or same_arm is None:
            continue
        steps = loss.index.intersection(original.index).intersection(same_arm.index)
        gap = (loss[steps] / original[steps] - 1).abs()
        baseline_gap = (same_arm[steps] / original[steps] - 1).abs()
        rows.append(
            {
                "baseline": baseline,
                "arm": arm,
                "train.optimizer": optimizer,
                "train.lr": lr,
                "seed": seed,
                "step": steps.max(),
                "ratio_to_original": loss[steps.max()] / original[steps.max()],
                "baseline_ratio_to_original": same_arm[steps.max()] / original[steps.max()],
                "initial_gap": gap[steps.min()],
                "baseline_initial_gap": baseline_gap[steps.min()],
                "max_test_gap": gap.max(),
                "baseline_max_test_gap": baseline_gap.max(),
            }
        )
    return pd.DataFrame(rows)


def paired_plot(runs: dict[tuple, pd.Series], base: dict[tuple, pd.Series], names: tuple[str, str], path: Path) -> None:
    """Test loss over the original's of the same seed along training, one column per optimiser: on
    top the rerun's arm and every arm of the baseline sweep (log scale; ``names`` of the two
    folders in the legend), below the
    rerun's arm and the baseline's run of the same arm alone (linear); the line is the geometric
    mean over seeds, the band the min-max."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = {f"{key[0]} ({names[0]})": (runs, key[0]) for key in runs}
    arms |= {f"{key[0]} ({names[1]})": (base, key[0]) for key in base if key[0] != "original"}
    rerun_arms = {key[0] for key in runs}
    settings = sorted({key[1:3] for key in runs}, key=str)
    fig, axes = plt.subplots(
        2, len(settings), figsize=(5.5 * len(settings), 7.5), constrained_layout=True, squeeze=False
    )
    for column, (optimiser, lr) in enumerate(settings):
        for label, (source, arm) in arms.items():
            ratios = [
                loss / base[("original", optimiser, lr, seed)]
                for (a, o, r, seed), loss in source.items()
                if (a, o, r) == (arm, optimiser, lr) and ("original", o, r, seed) in base
            ]
            if not ratios:
                continue
            frame = pd.concat(ratios, axis=1).dropna()
            mean = np.exp(np.log(frame).mean(axis=1))
            for ax in axes[:, column] if arm in rerun_arms else axes[:1, column]:
                line = ax.plot(frame.index, mean, label=label, lw=2 if source is runs else 1.2)[0]
                ax.fill_between(frame.index, frame.min(axis=1), frame.max(axis=1), color=line.get_color(), alpha=0.2)
        for row, ax in enumerate(axes[:, column]):
            ax.axhline(1.0, color="black", lw=0.8)
            ax.set(xlabel="step", ylabel="test loss / original's (same seed)", title=f"{optimiser} {lr:g}")
            ax.set_yscale("log" if row == 0 else "linear")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(arguments: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="*", type=Path, help="results folders (default: every one here)")
    parser.add_argument("--baseline", type=Path, help="the sweep a one-arm rerun pairs with (writes paired.csv)")
    args = parser.parse_args(arguments)
    if args.baseline is not None and not (args.baseline / "runs").is_dir():
        parser.error(f"--baseline {args.baseline}: no runs/ folder there")
    base = test_loss_trajectories(args.baseline) if args.baseline is not None else None
    paths = args.folders or sorted(p.parent for p in ROOT.glob("*/runs.parquet"))
    for folder in paths:
        if base is not None:
            runs = test_loss_trajectories(folder)
            table = paired_trajectories(runs, base, args.baseline.name)
            table.to_csv(folder / "paired.csv", index=False, float_format="%.6g")
            paired_plot(runs, base, (folder.name, args.baseline.name), folder / "analysis" / "paired.png")
            print(f"{folder}/paired.csv, {folder}/analysis/paired.png")
        table = pd.read_parquet(folder / "runs.parquet")
        frame = summarise(table)
        frame.to_csv(folder / "summary.csv", index=False, float_format="%.6g")
        print(f"{folder}/summary.csv: {len(frame)} rows")
        if (table["experiment"] == "runtime").all():
            runtime_slopes(table).to_csv(folder / "runtime_slopes.csv", index=False, float_format="%.6g")
            runtime_plot(table, folder / "runtime.png")
            print(f"{folder}/runtime_slopes.csv, {folder}/runtime.png")
        if "train.sampling" in table.columns and table["train.sampling"].nunique() == 2:
            sampling_pairs(table).to_csv(folder / "sampling_pairs.csv", index=False, float_format="%.6g")
            print(f"{folder}/sampling_pairs.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
