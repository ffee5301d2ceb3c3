"""Batched Caratheodory elimination: drop points while keeping sum_j c_j F_j fixed and c >= 0.

The textbook step takes one null vector of the feature matrix, moves the weights along it until
one weight hits zero, and refactorises: one sequential step per dropped point. Here one LU
factorisation per problem splits its points into N basic points B and the rest, and writes a null
vector for every non-basic point j as e_j + sum_i X[i, j] e_{B_i} (the simplex tableau X). Moving
all the weight of the J points to be dropped onto the basis at once gives the basic solution
w = c_B - X c_J, which has the same moments. When w >= 0 every point of J goes in one step. When
it is not, the walk moves the weights straight towards w until the first basic point hits zero,
swaps it out of the basis for a point of J (a rank-one update of the tableau and of w), and looks
again. Each swap drops one point, and far fewer swaps are needed than points dropped: for the kd
cells of a uniform sample, 11 swaps on average (19 at most) drop 100 points at m = 3, k = 5, and
3 (at most 9) drop 50 at m = 2, k = 6. Every problem of a batch walks in lock step, so many
small reductions run as a few dozen large tensor operations (on the GPU when the tensors live
there), where one elimination per dropped point took hundreds; whenever half of the problems
still walking are done, the others go on without them.

The walk works on the ratios u = new / old weight and the weighted features c_j F_j, so that
every weight starts at one and the LU's pivoting picks heavy points for the first basis.
"""

from __future__ import annotations

import numpy as np
import torch

# Singular values below RANK_RTOL * (largest) count as zero when reading off the rank. Legendre
# features of points in [-1, 1]^m keep genuine directions far above this; exactly degenerate
# inputs (duplicates, points on a line) give values near 1e-16.
RANK_RTOL = 1e-11
# A basic weight of the target counts as negative only below -ROUNDOFF * (a bound on the
# problem's total weight; the walk's weights are ratios new / old, so the total is the number of
# points it moves weight between, at most N + W): round-off in the tableau updates stays far
# below it. Smaller negatives are set to zero at the end, which changes a point's weight by at
# most that fraction of the total.
ROUNDOFF = 64 * torch.finfo(torch.float64).eps
# The entering point of a swap is the largest positive tableau entry of the leaving row when that
# is at least this fraction of the row's largest magnitude; each swap then grows the tableau by
# a factor of at most 1 / POSITIVE_PIVOT.
POSITIVE_PIVOT = 0.25


def eliminate(
    features: torch.Tensor, weights: torch.Tensor, n_remove: torch.Tensor, *, rank_revealing: bool = False
) -> torch.Tensor:
    """Remove up to ``n_remove[b]`` points of problem b; return the new weights.

    Args:
        features: (B, s, N) features of the s points of each problem.
        weights: (B, s) non-negative weights.
        n_remove: (B,) how many points to drop in each problem, capped at the problem's capacity.
        rank_revealing: False (default) uses the features as given: capacity s - N, whatever
            their rank. True first replaces them by their column space (from an SVD, rank read
            off it), so that degenerate sets (duplicates, points on a line) shrink to their true
            rank: capacity s - rank. Several times slower.

    Returns:
        (B, s) non-negative weights with ``sum_j c_j F_j`` unchanged up to round-off and at least
        ``min(n_remove[b], capacity[b])`` more zeros in problem b (more only on exact ties).
    """
    n_remove = n_remove.to(weights.device)
    if not rank_revealing:
        return _eliminate_full_rank(features, weights, n_remove)
    space, rank = column_space(features)
    c = weights.clone()
    for value in torch.unique(rank).tolist():
        same = torch.nonzero(rank == value).squeeze(1)
        c[same] = _eliminate_full_rank(space[same, :, :value], weights[same], n_remove[same])
    return c


def column_space(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """U S of the thin SVD F = U S V^T (same null space as F^T, orthogonal columns) and each rank."""
    left, singular, _ = torch.linalg.svd(features, full_matrices=False)
    rank = (singular > RANK_RTOL * singular[:, :1]).sum(dim=1)
    return left * singular.unsqueeze(1), rank


def _eliminate_full_rank(features: torch.Tensor, weights: torch.Tensor, n_remove: torch.Tensor) -> torch.Tensor:
    batch, size, n_features = features.shape
    n_remove = n_remove.clamp(min=0, max=max(size - n_features, 0))
    width = int(n_remove.max()) if batch else 0
    if width == 0:
        return weights.clone()
    # Solve for the ratios u = new / old weight: sum_j u_j (c_j F_j) keeps its value at u = 1. On
    # the weighted features c_j F_j the LU's pivoting favours heavy points for the first basis,
    # so the light ones, which reach zero first on the way, are mostly the J points dropped
    # anyway: fewer lock-step steps per reduction, and no worse an E1 function error than with
    # unweighted features (bench/compress_accuracy.py measures both).
    first_basis, free, tableau = lu_tableau(features * weights.unsqueeze(2), width, overwrite=True)
    # Columns past a problem's n_remove are not in its J: they keep their weights.
    in_j = torch.arange(width, device=weights.device) < n_remove.unsqueeze(1)
    ratio_basic, basis = walk_to_vertex(tableau, in_j, first_basis, free)
    ratio = torch.ones_like(weights).scatter_(1, free, (~in_j).to(weights.dtype))
    ratio.scatter_(1, first_basis, 0.0)
    return weights * ratio.scatter_(1, basis, ratio_basic)


def lu_tableau(
    features: torch.Tensor, width: int, *, overwrite: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Basic points, the first ``width`` non-basic points, and their tableau, from F = P L U.

    F^T = U^T L^T P^T, so every v with L^T P^T v = 0 is a null vector of F^T, even when U is
    singular. With L = [L1; L2] (L1 unit lower triangular), P^T v = [X; I] with
    X = -L1^-T L2^T solves it; partial pivoting keeps |L| <= 1, so X is well scaled.

    ``overwrite=True`` factorises ``features`` in place (its contents become the LU factors),
    which saves a copy when it is already column-major, as LAPACK wants.

    Returns:
        basic (B, N) and free (B, width): row indices into the problem's points; tableau
        (B, N, width): column j holds the basic entries of the null vector of point free[:, j].
    """
    n_features = features.shape[2]
    # A singular U is fine here.
    if overwrite:
        batch = features.shape[:-2]
        pivots = features.new_empty(*batch, min(features.shape[-2:]), dtype=torch.int32)
        info = features.new_empty(batch, dtype=torch.int32)
        packed, pivots, _ = torch.linalg.lu_factor_ex(features, out=(features, pivots, info))
    else:
        packed, pivots, _ = torch.linalg.lu_factor_ex(features)
    tableau = torch.linalg.solve_triangular(
        packed[:, :n_features, :].transpose(1, 2),
        packed[:, n_features : n_features + width, :].transpose(1, 2),
        upper=True,
        unitriangular=True,
    ).neg_()  # negating the solution in place saves a copy of the right-hand side
    order = row_order(pivots, features.shape[1])  # row i of L U is row order[i] of F
    return order[:, :n_features], order[:, n_features : n_features + width], tableau


def walk_to_vertex(
    tableau: torch.Tensor, in_j: torch.Tensor, basic: torch.Tensor, free: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Move the weight of the J points onto a basis, swapping out basic points that would go negative.

    The weights are ratios new / old (see ``_eliminate_full_rank``): all one at the start.

    Args:
        tableau: (B, N, W) null vectors of the free points on the basis.
        in_j: (B, W) which free columns are in J; basic (B, N), free (B, W): point indices.

    Returns:
        The final basic weights (B, N), all >= 0, and the final basis (B, N) point indices. Every
        point of J that is not in the final basis, and every basic point swapped out, has weight 0.
    """
    batch, n_basic, width = tableau.shape
    live = in_j.to(tableau.dtype)
    # The basic solution rides along as an extra tableau column: re-expressing it on the new basis
    # after a swap is the same rank-one update as for the null vectors. It depends only on the
    # moments, not on how far the weights have moved. The tableau is kept transposed,
    # (B, W + 1, N): the solve leaves it in this layout, and the basic solution (its last row),
    # read by every step, is then contiguous.
    # Rows of free points that cannot enter (outside J, or in the basis already) are zero, and
    # stay zero: their update coefficients are their own entries of the leaving row.
    augmented = tableau.new_empty(batch, width + 1, n_basic)
    null_vectors = torch.mul(tableau.transpose(1, 2), live.unsqueeze(2), out=augmented[:, :width])
    torch.sum(null_vectors, dim=1, out=augmented[:, width]).neg_().add_(1.0)
    # Rows and entries are picked by flat index (a contiguous row copy each), several times
    # faster than gather and scatter along an expanded index: row w of problem b is row
    # first_row[b] + w of the (B (W + 1), N) view, and entry (w, i) is entry row_start[b, w] + i.
    first_row = torch.arange(0, batch * (width + 1), width + 1, device=tableau.device).unsqueeze(1)
    row_start = (first_row + torch.arange(width + 1, device=tableau.device)) * n_basic
    threshold = -ROUNDOFF * (n_basic + width)
    # Slot N of the weights and the basis is scratch: a problem with nothing left to swap writes
    # there, so that the loop needs no per-problem branches.
    ones = live.new_ones(batch, 1)
    weights = live.new_ones(batch, n_basic + 1)
    shrink = ones.clone()  # the J points' weights
    # One integer row per problem: its basis, its free points and its position in the batch,
    # selected together when the batch shrinks.
    indices = torch.cat([basic, basic[:, :1], free, torch.arange(batch, device=tableau.device).unsqueeze(1)], dim=1)
    final_weights, final_basis = live.new_empty(batch, n_basic), basic.clone()

    def views():
        """Views of the batch's state: every update below is in place, so they last until it shrinks."""
        walking = len(indices)
        return (
            augmented[:, width],
            weights[:, :n_basic],
            augmented.view(-1, n_basic),
            indices[:, : n_basic + 1],
            indices[:, n_basic + 1 : -1],
            indices[:, -1],
            first_row[:walking],
            row_start[:walking],
            ones[:walking],
        )

    target, c_now, rows, basis, free, position, first_rows, row_starts, units = views()
    for _ in range(width + 1):  # every swap uses up a J column of each problem still walking
        ratio = c_now / (c_now - target)  # along c + t (target - c), basic i reaches zero at t = ratio_i
        ratio.masked_fill_(target >= threshold, torch.inf)
        t, leave = ratio.min(dim=1, keepdim=True)
        idle = t.isinf()
        n_walking = len(idle) - int(idle.sum())
        if n_walking == 0:
            final_weights.index_copy_(0, position, target.clamp(min=0.0))
            final_basis.index_copy_(0, position, basis[:, :n_basic])
            return final_weights, final_basis
        t.masked_fill_(idle, 0.0)
        c_now.lerp_(target, t).clamp_(min=0.0)
        shrink.addcmul_(shrink, t, value=-1.0)
        # Swap in a J point of the leaving row: the null vectors of the other J points must vanish
        # on the leaving point, and the entering point takes its slot:
        # X -= (X[:, enter] + e_leave) (X[leave] / pivot)^T. A positive pivot gives the entering
        # point a positive target weight (-target_leave / pivot), which saves about a third of the
        # swaps; it must be at least POSITIVE_PIVOT of the row's largest entry, which bounds the
        # growth of the tableau per swap (otherwise the largest entry: partial pivoting).
        pivot_row = rows.view(-1).index_select(0, (row_starts + leave).view(-1)).view(-1, width + 1)
        candidates = pivot_row[:, :width]
        enter = candidates.maximum(candidates * -POSITIVE_PIVOT).argmax(dim=1, keepdim=True)
        pivot = pivot_row.gather(1, enter).masked_fill_(idle, torch.inf)  # idle problems: coef 0
        coef = pivot_row.div_(pivot)
        enter_row = (first_rows + enter).view(-1)
        column = rows.index_select(0, enter_row).scatter_add_(1, leave, units)
        augmented.addcmul_(coef.unsqueeze(2), column.unsqueeze(1), value=-1.0)
        leave.masked_fill_(idle, n_basic)
        weights.scatter_(1, leave, shrink)
        basis.scatter_(1, leave, free.gather(1, enter))
        rows.index_fill_(0, enter_row, 0.0)  # it is basic now
        if 2 * n_walking <= len(idle):
            # Record every problem's state (an idle one's is final: nothing moves it any more),
            # then go on with the walking ones alone: after a few swaps most problems are done,
            # and the rest should not drag them along.
            final_weights.index_copy_(0, position, target.clamp(min=0.0))
            final_basis.index_copy_(0, position, basis[:, :n_basic])
            keep = idle.logical_not().squeeze(1).nonzero().squeeze(1)
            augmented, weights, shrink, indices = (
                state.index_select(0, keep) for state in (augmented, weights, shrink, indices)
            )
            target, c_now, rows, basis, free, position, first_rows, row_starts, units = views()
    raise RuntimeError("the Caratheodory walk found no J point to swap in; please report this input")


def row_order(pivots: torch.Tensor, size: int) -> torch.Tensor:
    """LAPACK's sequential row swaps (1-based) as a permutation: row i of L U is row order[i] of F."""
    swaps = pivots.cpu().numpy().astype(np.int64) - 1
    batch, n_swaps = swaps.shape
    # One flat array for the whole batch: each swap is then two 1-d gathers and two scatters.
    offsets = np.arange(batch)[:, None] * size
    here = (offsets + np.arange(n_swaps)).T.copy()
    there = (offsets + swaps).T.copy()
    order = np.tile(np.arange(size), batch)
    for a, b in zip(here, there):
        order[a], order[b] = order[b], order[a]
    return torch.as_tensor(order.reshape(batch, size), device=pivots.device)
