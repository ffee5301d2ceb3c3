"""``polyscale compress``: compress a point set stored as .npy, write the result as .npz."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from harness.compression.methods import FINAL_DROPS, GROUP_WIDTHS, METHODS
from harness.errors import UsageError

if TYPE_CHECKING:
    import numpy as np

EPILOG = """\
size rules: a count (1000), a fraction of d (0.1d), a power (16*d^0.5, 16*sqrt(d)) or a polylog
(20*ln(d)^2); omitted means the minimum N(m,k) = C(m+k, k). Sizes below N(m,k) are raised to it.

output: OUT.npz holds `weights` (d',) and `points` (d', m), and `indices` (d',) into the input rows
for every method but kmeans (whose centroids are new points). One JSON line goes to stdout:
{"kept", "n_moments", "moment_error", "seconds", "method"}.

examples:
  polyscale compress x.npy --k 5 --size 0.1d --out x_small.npz
  polyscale compress x.npy --k 5 --size 0.1d --round-fraction 1 --out x_fast.npz   # speed first
  polyscale compress x.npy --k 5 --size 0.1d --final-phase 1 --out x_fastest.npz   # kd halving only
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compress",
        help="compress a point set by moment matching",
        description="Keep a weighted subset of the points whose moments of degree <= K match the input's.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("points", type=Path, metavar="POINTS.npy", help="(d, m) float array")
    parser.add_argument("--weights", type=Path, metavar="W.npy", help="(d,) non-negative weights (default: ones)")
    parser.add_argument("--k", type=int, required=True, help="highest moment degree to match")
    parser.add_argument("--size", default=None, help="target support size or rule (see below)")
    parser.add_argument("--method", choices=METHODS, default="clustered", help="default: clustered")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random and kmeans baselines")
    parser.add_argument(
        "--final-phase",
        type=float,
        default=None,
        metavar="F",
        help="clustered only: start the nearest-neighbour phase at F x the target size (default 3, accuracy "
        "first, and from the start where N(m, k) < 8); 1 = kd halving only, 2-4x faster with 2-4x larger "
        "function errors",
    )
    parser.add_argument(
        "--round-fraction",
        type=float,
        default=None,
        metavar="Q",
        help="clustered only: each nearest-neighbour round reduces at most this fraction (0, 1] of its groups, "
        "smallest first (default 0.25, accuracy first); 1 is 2.7-4x faster with up to 3.8x larger errors where "
        "the function is steep at the domain's boundary",
    )
    parser.add_argument(
        "--group-width",
        choices=GROUP_WIDTHS,
        default=None,
        help="clustered only: how the nearest-neighbour groups are ranked, the smallest reduced first: bound, "
        "mass x radius^(k+1) (default; the group's term of the error bound), radius about its centre, "
        "or box, the bounding box's diagonal",
    )
    parser.add_argument(
        "--final-drops",
        choices=FINAL_DROPS,
        default=None,
        help="clustered only: how many points a nearest-neighbour group drops: balanced, one of N + 1 at the vertex "
        "that keeps the next moments' running change smallest; taper, fewer as the live count nears d', toward "
        "the proof's one (2-50x faster where N >= 10); scaled, N/4 x live / d' throughout; auto (default), "
        "balanced where N(m, k) < 8 or d' < 4 N, else taper; balanced_below_8, balanced where N(m, k) < 8, "
        "else taper",
    )
    parser.add_argument("--out", type=Path, required=True, metavar="OUT.npz", help="where to write the result")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from harness.compression.api import compress

    points = _load_array(args.points, "POINTS")
    weights = _load_array(args.weights, "--weights") if args.weights else None
    size = _parse_size_option(args.size)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = compress(
            points,
            weights,
            k=args.k,
            size=size,
            method=args.method,
            seed=args.seed,
            final_phase=args.final_phase,
            round_fraction=args.round_fraction,
            group_width=args.group_width,
            final_drops=args.final_drops,
        )
    for warning in caught:
        print(f"polyscale compress: warning: {warning.message}", file=sys.stderr)
    arrays = {"weights": result.weights, "points": result.points}
    if result.indices is not None:
        arrays["indices"] = result.indices
    try:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        np.savez(args.out, **arrays)
    except OSError as exc:
        raise UsageError(f"--out {args.out}: cannot write ({exc.strerror})") from exc
    summary = {
        "kept": result.size,
        "n_moments": result.n_moments,
        "moment_error": result.moment_error,
        "seconds": round(result.seconds, 6),
        "method": result.method,
    }
    print(json.dumps(summary))
    return 0


def _load_array(path: Path, what: str) -> np.ndarray:
    import numpy as np

    if not path.is_file():
        raise UsageError(f"{what} {path}: no such file")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise UsageError(f"{what} {path}: not a NumPy .npy array file") from exc


def _parse_size_option(text: str | None) -> int | str | None:
    if text is None:
        return None
    return int(text) if text.strip().isdigit() else text
