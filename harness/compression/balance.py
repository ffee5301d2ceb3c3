"""Balanced drops: a group of N + 1 points drops one point at whichever of its two vertices keeps
the running change of the next moments smallest.

Matching a group's moments up to degree k leaves an error of order k + 1: replacing the group
moves the integral of a smooth g by about sum_{|a| = k+1} D^a g(centre) / a! x (the change of the
group's moment a). Every reduction adds such a term, and the function error is their sum: terms
of one sign add up, terms of both signs cancel.

A group of N + 1 points has one null vector v of its N moment conditions, and exactly two ways
to drop a point while keeping every weight non-negative: move the weights along +v or along -v
until the first one reaches zero. The two change the moments of degree k + 1 in opposite
directions. Taking, group after group, the one that leaves the running sum of those changes
smallest (greedy vector balancing, over the degrees k + 1 to k + BALANCE_DEGREES in the
coordinates of the whole set's box; the group's own change counts too, ``_choose_steps``) makes
the terms cancel, while every group's moments up to degree k stay exact. The choice is
sequential, one group after the other, so it runs as a compiled loop (numba) over the batch's
precomputed changes; numba compiles it on first use (about 0.6 s) and caches it on disk.
"""

from __future__ import annotations

import numba
import numpy as np
import torch

from harness.compression.basis import exponents, product_features
from harness.compression.caratheodory import lu_tableau

# The degrees beyond k whose running change is balanced: k + 1 alone leaves the error's variation
# across the domain uncancelled. On SPEC E1 at (m, k, d) = (1, 1, 8000), (1, 2, 2000), (2, 1,
# 1000), (1, 1, 1000), (2, 2, 4000), (4, 1, 4000) -> 0.1 d (8 draws), k + 1 alone gave 0.3-27x the
# error of k + 1 and k + 2 (1.9x in geometric mean), and k + 1 to k + 3 0.7-4x (1.4x).
BALANCE_DEGREES = 2


def higher_features(points: torch.Tensor, k: int) -> torch.Tensor:
    """Monomials of degree k + 1 to k + BALANCE_DEGREES of points (..., n, m): (..., n, h)."""
    degree = exponents(points.shape[-1], k + BALANCE_DEGREES).sum(axis=1)
    columns = torch.as_tensor(np.flatnonzero(degree > k), device=points.device)
    return product_features(points, k + BALANCE_DEGREES, basis="monomial").index_select(-1, columns)


def balanced_drop(
    features: torch.Tensor, weights: torch.Tensor, higher: torch.Tensor, running: np.ndarray
) -> torch.Tensor:
    """Drop one point of each group, at the vertex that keeps ``running`` smallest; the new weights.

    Args:
        features: (B, N + 1, N) the groups' moment features (each in its own basis).
        weights: (B, N + 1) positive weights.
        higher: (B, N + 1, h) ``higher_features`` of the points, in the whole set's coordinates.
        running: (h,) float64, the running change of those moments; updated in place, group by
            group in batch order.

    Returns:
        (B, N + 1) non-negative weights with one zero more per group and each group's
        sum_j c_j F_j unchanged up to round-off.
    """
    size, n_features = features.shape[1:]
    if size != n_features + 1:
        raise ValueError(f"balanced drops need groups of N + 1 = {n_features + 1} points; got {size}")
    # The null vector in ratios u = new / old weight, as caratheodory.eliminate writes it: its
    # free point's entry 1, the basic points' entries that point's tableau column.
    basic, _, tableau = lu_tableau(features * weights.unsqueeze(2), 1, overwrite=True)
    null = torch.ones_like(weights).scatter_(1, basic, tableau[:, :, 0])
    # Along u = 1 + t v, point j reaches zero at t = -1 / v_j: the nearest on either side of 0.
    reach = -1.0 / null
    forward = reach.masked_fill(null >= 0, torch.inf).amin(dim=1)
    backward = reach.masked_fill(null <= 0, -torch.inf).amax(dim=1)
    change = torch.einsum("bj,bjh->bh", weights * null, higher)  # of the higher moments, per unit t
    steps = _choose_steps(forward.cpu().numpy(), backward.cpu().numpy(), change.cpu().numpy(), running)
    steps = torch.as_tensor(steps, dtype=null.dtype, device=null.device)
    ratio = torch.addcmul(torch.ones_like(null), steps.unsqueeze(1), null).clamp_(min=0.0)
    ratio.scatter_(1, ratio.argmin(dim=1, keepdim=True), 0.0)  # the vertex's point: exactly 0
    return weights * ratio


@numba.njit(cache=True)
def _choose_steps(forward: np.ndarray, backward: np.ndarray, change: np.ndarray, running: np.ndarray) -> np.ndarray:
    """Greedy vector balancing: for each group in turn, the step t (forward[b] > 0 or backward[b]
    < 0) with the smaller |running + t change[b]|^2 + |t change[b]|^2; ``running`` is updated in
    place. The second term makes a group's own change count as much as the cancellation: a group
    much wider than the running sum takes its smaller change. Without it, on SPEC E7 at (m, k, d)
    = (1, 2, 8000), where 1 / (1.05 + w x) is steep at the boundary and the boundary's few wide
    groups make the error, the error was 1.16x the authors' instead of 0.80x (24 draws;
    docs/performance.md), while E1's errors where N < 8 were 0.84-1.38x those with it."""
    steps = np.empty(len(forward))
    for b in range(len(forward)):
        # Each vertex's own change d = t change[b], formed first so that a tiny change times a
        # large step cannot underflow: |running + d|^2 + |d|^2 - |running|^2 = 2 d . (running + d).
        f, r = forward[b], backward[b]
        cost_f = 0.0
        cost_r = 0.0
        for i in range(len(running)):
            d_f = f * change[b, i]
            d_r = r * change[b, i]
            cost_f += d_f * (running[i] + d_f)
            cost_r += d_r * (running[i] + d_r)
        t = f if cost_f <= cost_r else r
        steps[b] = t
        for i in range(len(running)):
            running[i] += t * change[b, i]
    return steps
