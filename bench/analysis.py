"""Time the 1-D analysis of a 200-run table: 4 groups x 10 x values x 5 seeds, 1000 bootstrap
replicates (seed bootstrap of every form and null bootstrap of the test, per group).

    .venv/bin/python bench/analysis.py [--n-boot 1000]

Target: under 30 s on a 2-core machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.analyse import analyse_table  # noqa: E402
from analysis.tables import format_table  # noqa: E402


def synthetic_table(seed: int = 0) -> pd.DataFrame:
    """Two power laws, one with offset, and two stretched exponentials, 3% seed noise in log loss."""
    rng = np.random.default_rng(seed)
    d = 2.0 ** np.arange(8, 18)
    laws = {
        "original": lambda x: 0.2 + 8.0 * x**-0.4,
        "naive": lambda x: 6.0 * x**-0.25,
        "compressed": lambda x: 0.2 + 3.0 * np.exp(-0.4 * x**0.25),
        "kmeans": lambda x: 0.1 + 2.0 * np.exp(-0.9 * x**0.15),
    }
    rows = [
        {
            "run_id": f"{arm}-{int(x)}-{s}",
            "arm": arm,
            "seed": s,
            "d": x,
            "test_loss": law(x) * np.exp(rng.normal(0, 0.03)),
            "status": "done",
        }
        for arm, law in laws.items()
        for x in d
        for s in range(5)
    ]
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-boot", type=int, default=1000)
    args = parser.parse_args()
    table = synthetic_table()
    start = time.perf_counter()
    analysis = analyse_table(table, "d", "test_loss", ["arm"], n_boot=args.n_boot)
    elapsed = time.perf_counter() - start
    print(format_table(analysis))
    print(f"\n{len(table)} runs, {len(analysis.results)} groups, {args.n_boot} bootstrap replicates: {elapsed:.1f} s")


if __name__ == "__main__":
    main()
