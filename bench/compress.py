"""Compression speed against plain one-point-per-null-vector peeling, on identical inputs.

The plain peeling is the textbook reduction as the authors' code does it: repeatedly take N+1
live points of a group, compute one null vector of their N x (N+1) feature matrix, step until one
weight hits zero, and drop that point. To isolate the reduction, it runs inside the same
clustered schedule as ours (same kd cells and nearest-neighbour groups, same group ranking, same
Legendre features computed once per group), so the ratio measures batched elimination vs peeling
alone.

``--reference PATH`` also times the authors' own ``compressor.py`` (WHY-David/moment_compression,
MIT; loaded from PATH at run time, never part of this repository; it needs ``faiss`` importable)
on the same three clustered inputs, once each: the speed-up over their whole method.

Both sides are timed on the reduction alone: ours by ``Compression.seconds`` (input checks and
the moment-error measurement excluded), best of 5; the peeling once (it takes seconds). Freed
memory stays in the process for both (``retain_freed_memory``, as the ``polyscale`` command does):
otherwise the first round's buffers of a few MB are page-faulted in afresh on every call.

Run: make bench   (or .venv/bin/python bench/compress.py [--quick] [--reference /tmp/authors/compressor.py])
"""

from __future__ import annotations

import argparse
import functools
import time
from pathlib import Path

import numpy as np
import torch

# bench/ is the script's directory, so first on sys.path.
from compress_accuracy import add_schedule_arguments, load_reference, schedule_options

from harness.allocator import retain_freed_memory
from harness.compression import compress, n_moments, raw_moments, relative_moment_error
from harness.compression.basis import product_features, to_box
from harness.compression.clustered import (
    DEFAULT_GROUP_WIDTH,
    DEFAULT_ROUND_FRACTION,
    _pick_cells,
    _pick_groups,
    _round_cells,
    clustered_weights,
    default_final_phase,
    default_spare,
    halving_end,
    resolve_final_drops,
)
from harness.compression.partition import merge_siblings


def plain_peel(features: np.ndarray, weights: np.ndarray, n_remove: int) -> np.ndarray:
    """Drop n_remove points of one group, one SVD of N+1 live points per dropped point."""
    c = weights.copy()
    n_features = features.shape[1]
    for _ in range(n_remove):
        group = np.flatnonzero(c > 0)[: n_features + 1]
        _, _, vt = np.linalg.svd(features[group].T)
        v = vt[-1]
        if not np.any(v > 0):
            v = -v
        positive = v > 0
        ratios = c[group[positive]] / v[positive]
        t = ratios.min()
        c[group] -= t * v
        c[group[positive][np.argmin(ratios)]] = 0.0
        np.clip(c, 0.0, None, out=c)
    return c


def plain_peel_clustered(
    points: np.ndarray, k: int, target: int, fraction: float, width: str, drops: str
) -> np.ndarray:
    """The clustered schedule of harness.compression.clustered (round_fraction ``fraction``,
    group_width ``width``, final_drops ``drops``) with plain peeling inside. With ``balanced``
    drops it peels one point per group of N + 1 as they do, without choosing the vertex."""
    n_features = n_moments(points.shape[1], k)
    unit = to_box(torch.as_tensor(points)).numpy()
    c = np.ones(len(points))
    live = np.arange(len(points))
    boundary = halving_end(len(points), target, default_final_phase(n_features))
    cells = None
    while len(live) > target:
        if len(live) > boundary:
            cells = _round_cells(cells, unit[live], n_features)
            members, remove = _pick_cells(cells, unit[live], len(live) - boundary, n_features)
        else:
            spare = default_spare(n_features)
            members, remove = _pick_groups(unit[live], c[live], k, target, spare, fraction, width, drops)
        for cell, count in zip(members, remove):
            rows = live[cell]
            features = product_features(to_box(torch.as_tensor(unit[rows])), k).numpy()
            c[rows] = plain_peel(features, c[rows], int(count))
        survivors = c[live] > 0
        if len(live) > boundary:
            cells = merge_siblings(cells, survivors)
        live = live[survivors]
    return c


def error_of(points, weights, k) -> float:
    return relative_moment_error(raw_moments(points, np.ones(len(points)), k), raw_moments(points, weights, k))


def best_time(function, repeats: int):
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="d = 1e5 instead of 1e6 for the global case")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads for the peeling (default 1, as ours always runs on a CPU: small "
        "SVDs gain nothing from more, and lose much when the cores are shared)",
    )
    parser.add_argument("--reference", type=Path, help="path of the authors' compressor.py, timed on the same inputs")
    add_schedule_arguments(parser)
    args = parser.parse_args()
    schedule = schedule_options(args)
    reference = load_reference(args.reference) if args.reference else None
    retain_freed_memory()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    print(
        f"torch {torch.__version__}, peeling on {torch.get_num_threads()} thread(s), ours on 1, float64, CPU"
        + "".join(f"; ours with {name} {value}" for name, value in schedule.items())
    )
    authors = (
        (" authors (s) | speed-up over the authors | kd halving only (s) | its speed-up | moment error authors |")
        if reference
        else ""
    )
    print("| case | ours (s) | plain peeling (s) | speed-up | moment error ours | moment error peeling |" + authors)
    print("|---|---|---|---|---|---|" + "---|---|---|---|---|" * bool(reference))
    for m, k, d, target in [(3, 5, 10_000, 1_000), (2, 6, 10_000, 1_000), (3, 5, 1_000, 100)]:
        points = rng.uniform(-1, 1, (d, m))
        compress(points[:500], k=k, size=100)  # warm-up
        ours = [compress(points, k=k, size=target, **schedule) for _ in range(5)]
        ours_time, ours = min(result.seconds for result in ours), ours[0]
        fraction = schedule.get("round_fraction", DEFAULT_ROUND_FRACTION)
        width = schedule.get("group_width", DEFAULT_GROUP_WIDTH)
        drops = resolve_final_drops(schedule.get("final_drops"), n_moments(m, k), target)
        peeling = functools.partial(plain_peel_clustered, points, k, target, fraction, width, drops)
        peel_time, peel = best_time(peeling, 1)
        peel_error = error_of(points, peel, k)
        row = (
            f"| clustered m={m} k={k} d={d:.0e} -> {target} | {ours_time:.3f} | {peel_time:.2f} | "
            f"{peel_time / ours_time:.0f}x | {ours.moment_error:.1e} | {peel_error:.1e} |"
        )
        if reference is not None:
            start = time.perf_counter()
            weights, kept = reference(points).compress(k, dstop=target)
            theirs_time = time.perf_counter() - start
            theirs_error = relative_moment_error(raw_moments(points, np.ones(d), k), raw_moments(kept, weights, k))
            # The schedule without the nearest-neighbour phase (final_phase=1), the fast end of the
            # accuracy-speed trade-off, timed the same way as ours.
            x, w = torch.as_tensor(points), torch.ones(d, dtype=torch.float64)
            halving_time, _ = best_time(functools.partial(clustered_weights, x, w, k, target, final_phase=1.0), 5)
            row += (
                f" {theirs_time:.1f} | {theirs_time / ours_time:.0f}x | {halving_time:.3f} | "
                f"{theirs_time / halving_time:.0f}x | {theirs_error:.1e} |"
            )
        print(row, flush=True)
    d = 100_000 if args.quick else 1_000_000
    points = rng.uniform(-1, 1, (d, 3))
    results = [compress(points, k=5, method="global") for _ in range(3)]
    global_time, result = min(result.seconds for result in results), results[0]
    print(
        f"| global m=3 k=5 d={d:.0e} -> {len(result.weights)} | {global_time:.2f} | - | - | "
        f"{result.moment_error:.1e} | - |"
    )


if __name__ == "__main__":
    main()
