"""The paper's Algorithm 1: reduce small-diameter groups until exactly d' points remain.

Global moment matching keeps N(m,k) points but approximates a non-polynomial function poorly;
matching the moments of each small ball separately is what drives the error down (SPEC
section 3). The bound is a sum over the reduced groups of (mass) x (diameter)^(k+1), and the
last rounds dominate it: by then the live points are few, heavy and far apart. So the rounds come
in two phases:

1. halving, down to ``final_phase`` x d' live points (``default_final_phase``: 3, none where
   N < 8): kd cells of about 2N live points; the first
   round splits all the points, and a round that reduced every cell leaves about N points in
   each, so the next one merges each cell with its kd sibling instead of splitting again. The
   cells are ordered by diameter and the smallest ones picked until their combined capacity
   (cell size - N) covers the excess over the phase's end, the last one only partly (a cell a
   point or two larger than the smallest takes part with that many points, the rest waiting, so
   that one batch holds them all). Each round removes up to half of the live points.
2. nearest-neighbour, down to d': groups of nearest live points, re-formed every round, the
   disjoint ones with the smallest term of the error bound first, mass x radius^(k+1)
   (``partition.nearest_groups``): the greedy choice of the proof, and the authors' final phase
   (which ranks by diameter), a batch of groups per round instead of one group. With
   ``final_drops`` balanced every group holds N + 1 points and drops one, at whichever of its
   two vertices keeps the running change of the degree k + 1 and k + 2 moments smallest, so that
   the groups' errors cancel instead of adding up (``balance.py``). With ``taper``, the faster
   schedule, a group of N + s points drops s: spare x live / target, fewer toward one as the live
   count nears the target (``_pick_groups``). The default, ``auto``, is balanced where N < 8 or
   d' < 4 N, taper elsewhere (``resolve_final_drops``).
   Measured on SPEC E1's sigmoid-sum, (m, k) = (2, 3), (3, 4), d = 2000 and 8000 -> 0.1 d (8
   draws, each scored on 100 probe sets): 2.2-4.3x smaller errors than halving all the way
   (``final_phase=1``, the fast end of the trade-off), for 2-4x the time;
   ``bench/compress_accuracy.py --curve`` shows both. With ``round_fraction`` < 1 a round
   reduces only that fraction of the disjoint groups, the smallest, so that the others wait as
   in the proof's one-group-at-a-time greedy: groups at the domain's boundary are wide (their
   neighbours lie on one side), so the boundary keeps more points. That matters where the
   function is steep at the boundary (SPEC E7's 1 / (A + <w, x>)); see ``DEFAULT_ROUND_FRACTION``.

Every picked group is reduced at once with the batched Caratheodory elimination, each in its own
[-1, 1]^m box and Legendre basis (so the moments of each group are preserved exactly).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from harness.compression.balance import BALANCE_DEGREES, balanced_drop, higher_features
from harness.compression.basis import n_moments, product_features, to_box
from harness.compression.caratheodory import eliminate
from harness.compression.methods import FINAL_DROPS, GROUP_WIDTHS, check_choice
from harness.compression.partition import Cells, kd_cells, merge_siblings, nearest_groups

# Bytes of null vectors one batched elimination may hold. Each step updates all of them, so on a
# CPU they should stay in cache (many small batches); a GPU wants wide batches instead.
WORKING_SET_BYTES = {"cpu": 8 << 20, "cuda": 1 << 30}
# Live points, as a multiple of the target, below which the reduction switches from kd cells to
# nearest-neighbour groups (where N >= SMALL_N, ``default_final_phase``). On the E1 settings
# above, 3 gave about 0.75x the error of 2 for 1.6x the time, 4 no better than 3.
FINAL_PHASE = 3.0
# Below this many moments the nearest-neighbour phase runs from the first round
# (``default_final_phase``) and its groups drop one point each, balanced (``resolve_final_drops``).
SMALL_N = 8
# How the final phase ranks its groups, the smallest reduced first (``partition.nearest_groups``):
# by the group's term of the error bound, mass x radius^(k+1) about its centre point, so that a
# group made heavy by earlier rounds waits longer than a light one of the same radius. The most
# accurate of the three against the authors' compressor, at the same speed (docs/performance.md).
DEFAULT_GROUP_WIDTH = "bound"
# The fraction of the disjoint nearest-neighbour groups a final-phase round reduces. Measured
# against the authors' compressor (docs/performance.md): 0.25 divides E7's error by 1.8-3.7 at
# m = 1 and 2 and E1's by up to 1.8, for 2.7-4x the time; accuracy first, so 0.25 by default, and
# 1 (every group) is the fast schedule.
DEFAULT_ROUND_FRACTION = 0.25
# ``final_drops`` auto, the default (``resolve_final_drops``): balanced drops where N < SMALL_N or
# the target is below BALANCED_SIZE x N, taper elsewhere. Against the authors' compressor on SPEC
# E1 (docs/performance.md), balanced drops gave 0.13-0.49x their error where N < 8 (taper
# 0.41-1.22x); at N >= 10 0.35-0.94x where taper gave 0.47-1.07x, for 2-50x taper's time. Where
# d' < 4 N taper's margin was thin (0.70-1.07x, 0.84 or more in 12 of 13 rows; above 1 only at
# d' < 2 N), balanced's 0.52-0.94x. Where d' is more N, taper's groups are narrower, its errors
# were 0.47-1.00x the authors', and it is the faster schedule; on E7 at (m, k, d) = (2, 6, 8000),
# d' = 58 N, balanced drops gave 1.07x the authors' error [0.70, 1.64] where taper gave 0.86x.
BALANCED_SIZE = 4
# The taper's slope (``_pick_groups``): the largest of those tried (1, 2, 3, 4, 6, 10) that keeps
# E1 at (m, k) = (3, 6), d' = 200 below the authors' error; smaller ones take more rounds.
TAPER_SLOPE = 3.0


@torch.inference_mode()  # thousands of small ops: skipping autograd's bookkeeping saves about 8%
def clustered_weights(
    x: torch.Tensor,
    weights: torch.Tensor,
    k: int,
    target: int,
    *,
    spare: int | None = None,
    final_phase: float | None = None,
    round_fraction: float = DEFAULT_ROUND_FRACTION,
    group_width: str = DEFAULT_GROUP_WIDTH,
    final_drops: str | None = None,
) -> torch.Tensor:
    """Weights on the rows of x (n, m): ``target`` non-zero (fewer only on exact ties), equal moments per group.

    ``target`` must be at least N(m,k). ``x`` and ``weights`` are float64 tensors on one device;
    the result is on that device.

    Args:
        spare: with ``final_drops`` scaled, the points each nearest-neighbour group holds
            beyond N(m, k), and drops, at the end of the final phase (spare x live / target of
            them before); with taper, also the scale of the taper. Default
            ``default_spare(N)``. Smaller is slower.
        final_phase: the nearest-neighbour phase starts at final_phase * target live points;
            above that, kd cells halve the support. Larger is (a little) more accurate and slower;
            d / target or more (``math.inf``) skips the halving. Default
            ``default_final_phase(N)``.
        round_fraction: in (0, 1], the fraction of the disjoint nearest-neighbour groups, smallest
            first (``group_width``), that a final-phase round may reduce (at least one group).
            Smaller is slower, and more accurate where the function is steep at the domain's
            boundary.
        group_width: ``bound``, ``radius`` or ``box``: how the final phase ranks its groups,
            the smallest first: mass x radius^(k+1), the radius, or the box diagonal
            (``partition.nearest_groups``).
        final_drops: ``auto``, ``balanced``, ``taper``, ``scaled`` or ``balanced_below_8``: how
            many points a final-phase group drops: one of N + 1 at the vertex that balances the
            next moments' running change (balanced; ``balance.py``), fewer toward one as the
            live count nears the target (taper), spare x live / target throughout (scaled; see
            ``_pick_groups``); auto (None: the default) and balanced_below_8 choose between
            balanced and taper by N and the target (``resolve_final_drops``).
    """
    check_schedule(
        spare=spare,
        final_phase=final_phase,
        round_fraction=round_fraction,
        group_width=group_width,
        final_drops=final_drops,
    )
    n_features = n_moments(x.shape[1], k)
    spare = default_spare(n_features) if spare is None else spare
    final_phase = default_final_phase(n_features) if final_phase is None else final_phase
    final_drops = resolve_final_drops(final_drops, n_features, target)
    # The bookkeeping (cells, indices, weights) stays on the host in numpy, whose gathers and
    # scatters of a few thousand elements are 3-5x faster than torch's; each batch of cells goes
    # to x's device for the features and the elimination. The points are kept coordinate-major,
    # (m, n): a batch gathered from them is (m, B, s), and its view as (B, s, m) has each cell's
    # coordinates contiguous, the layout that the box and the features reduce and compute along.
    coordinate_major = torch.from_numpy(np.ascontiguousarray(x.cpu().numpy().T))  # (m, n)
    columns = to_box(coordinate_major.T).T.numpy()  # to_box takes (n, m) and keeps the layout
    c = weights.cpu().numpy().copy()
    live = np.flatnonzero(c > 0)
    boundary = halving_end(len(live), target, final_phase)
    cells = None
    # Balanced drops: the running change of the higher moments (balance.py), from the first
    # balanced round on; kd halving before it (a finite final_phase) is not counted.
    running = np.zeros(n_moments(x.shape[1], k + BALANCE_DEGREES) - n_features)
    working_set = WORKING_SET_BYTES.get(x.device.type, WORKING_SET_BYTES["cpu"])
    while len(live) > target:
        points = np.take(columns, live, axis=1).T
        halving = len(live) > boundary
        if halving:
            cells = _round_cells(cells, points, n_features)
            members, remove = _pick_cells(cells, points, len(live) - boundary, n_features)
        else:
            members, remove = _pick_groups(points, c[live], k, target, spare, round_fraction, group_width, final_drops)
        balanced = not halving and final_drops == "balanced"
        size = members.shape[1]
        per_batch = max(1, working_set // (8 * size * (size - n_features)))
        for start in range(0, len(members), per_batch):
            rows = live[members[start : start + per_batch]]
            cell_points = torch.as_tensor(np.take(columns, rows, axis=1), device=x.device).permute(1, 2, 0)
            features = product_features(to_box(cell_points), k)
            group_weights = torch.as_tensor(c[rows], device=x.device)
            if balanced:
                higher = higher_features(cell_points, k)  # in the whole set's box, as the columns
                c[rows] = balanced_drop(features, group_weights, higher, running).cpu().numpy()
            else:
                cut = torch.as_tensor(remove[start : start + per_batch], device=x.device)
                c[rows] = eliminate(features, group_weights, cut).cpu().numpy()
        survivors = c[live] > 0
        if survivors.all():
            raise RuntimeError("clustered compression made no progress; please report this input")
        if halving:
            cells = merge_siblings(cells, survivors)
        live = live[survivors]
    return torch.as_tensor(c, device=x.device)


def check_schedule(
    *,
    spare: int | None = None,
    final_phase: float | None = None,
    round_fraction: float | None = None,
    group_width: str | None = None,
    final_drops: str | None = None,
) -> None:
    """Raise a one-line ValueError for the first option of ``clustered_weights`` out of its range
    (None: the default, which is fine)."""
    if spare is not None and not spare >= 1:
        raise ValueError(f"spare must be >= 1 (1: the proof's one point per group); got {spare}")
    if final_phase is not None and not final_phase >= 1:
        raise ValueError(f"final_phase must be >= 1 (1: kd halving only); got {final_phase}")
    if round_fraction is not None and not 0 < round_fraction <= 1:
        raise ValueError(f"round_fraction must be in (0, 1] (1: every disjoint group); got {round_fraction}")
    if group_width is not None:
        check_choice("group_width", group_width, GROUP_WIDTHS)
    if final_drops is not None:
        check_choice("final_drops", final_drops, FINAL_DROPS)


def default_spare(n_features: int) -> int:
    """Points a final-phase group drops at the end with ``final_drops`` scaled, and the taper's
    scale: N / 4, at least 1. On the E1 settings above,
    2, N / 8 and N / 4 gave errors within 10% of each other, and N / 4 takes the fewest rounds.
    Closer to the proof's one point per group of N + 1, one group per neighbourhood at a time,
    the error was about 0.6x for 4-26x the time. For N < 8 (m = 1) that is the proof's one point
    per group of N + 1: on E7 at m = 1, k = 2 (N = 3) its error was half that of dropping 2."""
    return max(1, n_features // 4)


def halving_end(n_live: int, target: int, final_phase: float) -> int:
    """The live count at which kd halving gives way to nearest-neighbour groups: final_phase x
    target, at least the target and at most ``n_live`` (inf: nearest-neighbour groups throughout)."""
    return max(target, int(min(final_phase * target, n_live)))


def default_final_phase(n_features: int) -> float:
    """Where the nearest-neighbour phase starts, as a multiple of the target: FINAL_PHASE, or the
    first round (inf) where N < SMALL_N. With so few moments a kd cell holds 2N + 2 <= 16 points,
    whose widths vary widely in a uniform sample, and halving reduces them all at once, while the
    nearest-neighbour phase reduces the narrowest groups first. On SPEC E1, d = 1000-8000 -> 0.1 d
    (24 draws), that gave the lower error in 16 of the 17 (m, k) settings with N < 8 measured,
    for 1.1-2.6x the time; at N >= 10 it was no better (docs/performance.md)."""
    return math.inf if n_features < SMALL_N else FINAL_PHASE


def resolve_final_drops(final_drops: str | None, n_features: int, target: int) -> str:
    """The drop schedule a final phase runs, balanced, taper or scaled: ``final_drops`` itself;
    for ``auto`` (or None) balanced where N < SMALL_N or the target is below BALANCED_SIZE x N,
    else taper; for ``balanced_below_8`` balanced where N < SMALL_N, else taper. That was the
    default from the first measurement of balanced drops (at N < 8: 0.1-0.8x taper's E1 error for
    up to 2.9x the time) until they were measured at N >= 10 (docs/performance.md); the
    configurations that name it keep their runs."""
    if final_drops in (None, "auto"):
        return "balanced" if n_features < SMALL_N or target < BALANCED_SIZE * n_features else "taper"
    if final_drops == "balanced_below_8":
        return "balanced" if n_features < SMALL_N else "taper"
    return final_drops


def _pick_groups(
    points: np.ndarray,
    weights: np.ndarray,
    k: int,
    target: int,
    spare: int,
    fraction: float,
    width: str,
    drops: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest-neighbour groups of the live ``points`` to reduce, smallest first by ``width`` (at
    most ``fraction`` of the disjoint ones, at least one), and how many points each drops.

    Early in the phase the errors are small (the bound's terms grow as the live points thin out),
    so a group holds N + spare x (live / target) points and drops the spare x (live / target),
    the last one fewer, adding up to the excess over ``target`` when they can. On the E1 settings
    of the module docstring: the same errors as spare throughout, 15-30% faster. Near the end,
    where the terms are largest, ``taper`` drops fewer: at most the nearest integer to
    1 + TAPER_SLOPE x spare x (live - target) / target, which falls toward the proof's one point
    per group of N + 1 as the live count nears the target. ``balanced`` drops that one point from
    every group, throughout.
    """
    n_features = n_moments(points.shape[1], k)
    excess = len(points) - target
    drop = 1 if drops == "balanced" else spare * len(points) // target
    if drops == "taper":
        drop = min(drop, round(1 + TAPER_SLOPE * spare * excess / target))
    groups = nearest_groups(points, n_features + drop, width=width, weights=weights, k=k)
    capacity = groups.shape[1] - n_features
    n_picked = min(-(-excess // capacity), max(1, int(fraction * len(groups))))
    remove = np.full(n_picked, capacity)
    remove[-1] -= max(0, n_picked * capacity - excess)
    return groups[:n_picked], remove


def _round_cells(merged: Cells | None, points: np.ndarray, n_features: int) -> Cells:
    """This round's cells: the previous round's merged with their siblings, or fresh kd cells.

    Fresh ones on the first round, and whenever a merged cell could drop nothing (N points or
    fewer). kd cells hold at least (cell size) / sqrt(2) points, rounded down: with 2N + 2 that is
    more than N for every N, so every cell can drop a point.
    """
    if merged is None or merged.sizes.min() <= n_features:
        return kd_cells(points, 2 * n_features + 2)
    return merged


def _pick_cells(cells: Cells, points: np.ndarray, excess: int, n_features: int) -> tuple[np.ndarray, np.ndarray]:
    """Cells to reduce this round, all of one size, and how many points each drops.

    kd cells differ in size by a point or two; a larger cell takes part with its first s points
    (s the smallest size; the rest wait for the next round), so that all cells reduce in one
    batch: one walk of the batched elimination per round.

    Returns:
        members (B, s): row positions into ``points`` of the picked cells, smallest diameter
        first; remove (B,): how many of each cell's points to drop, adding up to
        min(excess, total capacity).
    """
    size = int(cells.sizes.min())
    capacity = size - n_features
    by_diameter = np.argsort(cells.diameters(points), kind="stable")
    n_picked = min(-(-excess // capacity), len(by_diameter))
    remove = np.full(n_picked, capacity)
    remove[-1] -= max(0, n_picked * capacity - excess)
    members = cells.order[cells.starts[by_diameter[:n_picked], None] + np.arange(size)]
    return members, remove
