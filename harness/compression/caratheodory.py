"""Batched Caratheodory elimination: drop points while keeping sum_j c_j F_j fixed and c >= 0.

The textbook step takes one null vector v of the feature matrix (F^T v = 0), moves the weights
along it until one weight hits zero, and refactorises. Here one factorisation per problem yields
all null vectors at once; after each elimination the remaining null vectors are corrected by a
rank-one update so that they vanish on the dropped point (Tchernychova and Lyons' trick), which
removes many points for the price of one factorisation. Every problem of the batch is processed
in lock step, so many small reductions run as a few large tensor operations (on the GPU when the
tensors live there).
"""

from __future__ import annotations

import torch

# Singular values below RANK_RTOL * (largest) count as zero when reading off the null space.
# Legendre features of points in [-1, 1]^m keep genuine directions far above this; exactly
# degenerate inputs (duplicates, points on a line) give values near 1e-16.
RANK_RTOL = 1e-11
# A null vector's entries below PIVOT_RTOL * (its largest) are round-off, never pivots; ratios
# within TIE_RTOL of the smallest count as ties.
PIVOT_RTOL = 1e-12
TIE_RTOL = 1e-12


def eliminate(
    features: torch.Tensor, weights: torch.Tensor, n_remove: torch.Tensor, *, rank_revealing: bool = False
) -> torch.Tensor:
    """Remove up to ``n_remove[b]`` points of problem b; return the new weights.

    Args:
        features: (B, s, N) features of the s points of each problem.
        weights: (B, s) positive weights.
        n_remove: (B,) how many points to drop in each problem, capped at the problem's capacity.
        rank_revealing: False (default) takes the null space from an LU factorisation, which
            always gives s - N exact null vectors (capacity s - N, whatever the rank). True uses
            an SVD and reads the rank off it (capacity s - rank), so that degenerate sets
            (duplicates, points on a line) shrink to their true rank; several times slower.

    Returns:
        (B, s) non-negative weights with ``sum_j c_j F_j`` unchanged up to round-off and
        ``min(n_remove[b], capacity[b])`` zeros in problem b.
    """
    vectors, capacity = svd_null_space(features) if rank_revealing else lu_null_space(features)
    n_remove = torch.minimum(n_remove.to(capacity), capacity)
    steps = int(n_remove.max()) if len(n_remove) else 0
    c = weights.clone()
    if steps <= 0:
        return c
    vectors = vectors[:, :, :steps].clone()
    never = torch.tensor(float("inf"), dtype=c.dtype, device=c.device)
    columns = torch.arange(c.shape[1], device=c.device)
    pivoted = torch.zeros_like(c, dtype=torch.bool)
    for i in range(steps):
        active = (i < n_remove).unsqueeze(1)
        v = vectors[:, :, i]
        # A null vector has entries of both signs (the constant feature forces sum_j v_j = 0).
        # The pivot is any point not yet pivoted, including one that reached zero in an earlier
        # step's tie: that step is degenerate (t = 0), and pivoting it is what makes the later
        # vectors vanish on it. Skipping such points would move weight off a point held at zero
        # and break the moments. Pivoted points stay at zero whatever round-off is left in v.
        # Entries at round-off level are not pivots: dividing by one would blow the remaining
        # vectors up. Among the points that reach zero first (ties are common on grids and
        # duplicates), the largest entry is the best-conditioned pivot.
        usable = (v > PIVOT_RTOL * v.abs().amax(dim=1, keepdim=True)) & ~pivoted
        ratio = torch.where(usable, c / v, never)
        t = ratio.min(dim=1, keepdim=True).values
        first = usable & (ratio <= t * (1.0 + TIE_RTOL))
        drop = torch.where(first, v, -never).argmax(dim=1, keepdim=True)
        active = active & torch.isfinite(t)  # no usable entry left: this problem skips the step
        t = torch.where(active, t, 0.0)
        pivoted |= (columns == drop) & active
        c = torch.where(pivoted, 0.0, (c - t * v).clamp_(min=0.0))
        if i + 1 < steps:
            rest = vectors[:, :, i + 1 :]
            pivot_row = torch.gather(rest, 1, drop.unsqueeze(2).expand(-1, 1, rest.shape[2]))
            coef = torch.where(active, 1.0 / torch.gather(v, 1, drop), 0.0).unsqueeze(2) * pivot_row
            rest.baddbmm_(v.unsqueeze(2), coef, alpha=-1.0)  # rest -= v coef^T, in place
    return c


def lu_null_space(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """s - N null vectors of F^T per problem, from F = P L U with partial pivoting.

    F^T = U^T L^T P^T, so every v with L^T P^T v = 0 is a null vector, even when U is singular.
    With L = [L1; L2] (L1 unit lower triangular), P^T v = [-L1^-T L2^T; I] solves it; partial
    pivoting keeps |L| <= 1, so these vectors are well scaled. Cost about 2.7 N^3 per problem
    (a complete QR costs about 10 N^3 and an SVD more).
    """
    batch, size, n_features = features.shape
    if size <= n_features:
        return features.new_zeros(batch, size, 0), torch.zeros(batch, dtype=torch.long, device=features.device)
    packed, pivots, _ = torch.linalg.lu_factor_ex(features)  # a singular U is fine here
    top = packed[:, :n_features, :]
    bottom = packed[:, n_features:, :]
    solved = torch.linalg.solve_triangular(
        top.transpose(1, 2), -bottom.transpose(1, 2), upper=True, unitriangular=True
    )
    eye = torch.eye(size - n_features, dtype=features.dtype, device=features.device).expand(batch, -1, -1)
    permuted = torch.cat([solved, eye], dim=1)  # P^T v, (B, s, s - N)
    order = _permutation(pivots, size)  # row i of L U is row order[i] of F
    vectors = torch.empty_like(permuted).scatter_(1, order.unsqueeze(2).expand_as(permuted), permuted)
    capacity = torch.full((batch,), size - n_features, dtype=torch.long, device=features.device)
    return vectors, capacity


def svd_null_space(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Orthonormal null vectors of F^T from a full SVD; capacity s - rank per problem.

    Returns (B, s, s) vectors whose first ``capacity[b]`` columns span problem b's null space.
    """
    batch, size, _ = features.shape
    left, singular, _ = torch.linalg.svd(features, full_matrices=True)
    rank = (singular > RANK_RTOL * singular[:, :1]).sum(dim=1)
    index = (rank.unsqueeze(1) + torch.arange(size, device=rank.device)) % size
    vectors = torch.gather(left, 2, index.unsqueeze(1).expand(batch, size, size))
    return vectors, size - rank


def _permutation(pivots: torch.Tensor, size: int) -> torch.Tensor:
    """LAPACK's sequential row swaps (1-based) as a permutation: row i of L U is row order[i] of F."""
    batch = pivots.shape[0]
    order = torch.arange(size, device=pivots.device).repeat(batch, 1)
    rows = torch.arange(batch, device=pivots.device)
    for i in range(pivots.shape[1]):
        j = pivots[:, i].long() - 1
        a, b = order[rows, i].clone(), order[rows, j].clone()
        order[rows, i], order[rows, j] = b, a
    return order
