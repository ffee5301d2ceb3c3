"""Spatial partitions of a point set into groups of small diameter, fully vectorised.

``kd_cells`` splits every cell at the median of its widest coordinate, level by level (one
row-wise partition per level), so the cells of one level have sizes within one of each other and
small diameters: the groups of the paper's Algorithm 1; ``merge_siblings`` goes one level back up.
``nearest_groups`` picks disjoint nearest-neighbour groups of small error bound or width (the
clustered method's final rounds). ``morton_order`` sorts points along a Z-order curve in one
argsort: a cheaper spatially coherent order for the global recombination, whose groups only need
distinct barycentres.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from harness.compression.methods import GROUP_WIDTHS, check_choice


@dataclass(frozen=True)
class Cells:
    """A partition of n points: cell c holds ``order[starts[c] : starts[c] + sizes[c]]``."""

    order: np.ndarray
    starts: np.ndarray
    sizes: np.ndarray

    def diameters(self, points: np.ndarray) -> np.ndarray:
        """Diagonal of each cell's bounding box."""
        sorted_columns = np.take(points.T, self.order, axis=1)  # whole rows when points.T is contiguous
        span = np.maximum.reduceat(sorted_columns, self.starts, axis=1) - np.minimum.reduceat(
            sorted_columns, self.starts, axis=1
        )
        return np.sqrt((span**2).sum(axis=0))


def kd_cells(points: np.ndarray, cell_size: int) -> Cells:
    """Median-split cells of about ``cell_size`` points (between 0.7x and 1.42x of it).

    The depth is round(log2(n / cell_size)), so a cell is never smaller than
    n / 2^depth >= cell_size / sqrt(2) points (for n >= cell_size).
    """
    n, m = points.shape
    depth = max(0, round(math.log2(n / cell_size))) if n > cell_size else 0
    # One row per cell. The sizes of a level differ by at most one, so the rows of a level are
    # padded to one width with index n: a point at +inf for the lows (and the sort keys, which
    # put it last) and at -inf for the highs. Coordinate-major, so gathers copy whole rows.
    padded = np.empty((2 * m, n + 1))
    padded[:m, :n] = padded[m:, :n] = points.T
    padded[:m, n], padded[m:, n] = np.inf, -np.inf
    order = np.arange(n)[None, :]
    sizes = np.array([n], dtype=np.int64)
    for level in range(depth):
        coordinates = np.take(padded, order, axis=1)  # (2m, cells, width)
        span = coordinates[m:].max(axis=2) - coordinates[:m].min(axis=2)
        key = coordinates[span.argmax(axis=0), np.arange(len(order))]  # each cell's widest coordinate
        # A row-wise partition at the half splits every cell at once in linear time; the last
        # level sorts instead, leaving every cell ordered along the coordinate it was split on,
        # so that the first s points of a cell are a slab at one end (the clustered method
        # reduces a larger cell's first s points). A sort at every level took twice as long.
        # The sizes of a level are s or s + 1, one of them even, 2h: every cell's lower half
        # gets h points (halves h - 1 and h of 2h - 1, or h and h + 1 of 2h + 1), so one
        # partition point serves every row (with two, numpy's selection is 1.4x slower).
        half = sizes.max() // 2 if sizes.max() % 2 == 0 else sizes.min() // 2
        split = np.argsort(key, axis=1) if level == depth - 1 else np.argpartition(key, half, axis=1)
        order = np.take(order, split + np.arange(0, order.size, order.shape[1])[:, None])  # each row by its split
        halves = np.full((len(order), 2, order.shape[1] - half), n)  # the upper halves are the wider
        halves[:, 0, :half] = order[:, :half]
        halves[:, 1] = order[:, half:]
        order = halves.reshape(2 * len(order), -1)
        sizes = np.stack([np.full_like(sizes, half), sizes - half], axis=1).ravel()
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    order = order[order < n]
    return Cells(order=order, starts=starts, sizes=sizes)


def merge_siblings(cells: Cells, keep: np.ndarray) -> Cells:
    """The cells one kd level up, over the points kept: each cell joined with its sibling.

    ``keep`` is a (n,) mask over the points ``cells`` partitions; the result indexes the kept
    points (0 .. keep.sum() - 1). ``kd_cells`` numbers the two halves of a split 2j and 2j + 1,
    next to each other in ``order``, so the parent of cell c is c // 2 and stays contiguous.
    """
    kept = keep[cells.order]
    position = np.cumsum(keep) - 1
    kept_before = np.concatenate([[0], np.cumsum(kept)])
    kept_per_cell = kept_before[cells.starts + cells.sizes] - kept_before[cells.starts]
    sizes = np.add.reduceat(kept_per_cell, np.arange(0, len(kept_per_cell), 2)) if len(kept_per_cell) else kept_per_cell
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    return Cells(order=position[cells.order[kept]], starts=starts, sizes=sizes)


def morton_order(points: np.ndarray) -> np.ndarray:
    """Permutation sorting points along a Z-order curve of their bounding box.

    Uses at most 10 bits per coordinate and 62 in total, over the coordinates of widest range (at
    most 31 of them); the order only needs to be spatially coherent, not exact.
    """
    n, m = points.shape
    span = points.max(axis=0) - points.min(axis=0)
    dims = np.argsort(-span)[: min(m, 31)]
    bits = min(10, 62 // len(dims))
    lo = points[:, dims].min(axis=0)
    width = np.where(span[dims] > 0, span[dims], 1.0)
    grid = ((points[:, dims] - lo) / width * ((1 << bits) - 1)).astype(np.int64)
    code = np.zeros(n, dtype=np.int64)
    for bit in range(bits - 1, -1, -1):
        for j in range(len(dims)):
            code = (code << 1) | ((grid[:, j] >> bit) & 1)
    return np.argsort(code, kind="stable")


def nearest_groups(
    points: np.ndarray,
    size: int,
    *,
    width: str,
    weights: np.ndarray | None = None,
    k: int | None = None,
    centre_stride: int = 4,
    sweeps: int = 10,
) -> np.ndarray:
    """Disjoint groups of ``size`` nearest neighbours, smallest first: (G, size) row positions.

    Every ``centre_stride``-th point proposes itself and its size - 1 nearest neighbours; the
    proposals are ranked by ``width``:

    - ``bound``: the group's term of the error bound, its mass (the sum of ``weights`` over its
      points) times R^(k+1), R the distance from the centre to its farthest neighbour: reducing
      the group moves the function's integral by at most that much times the (k+1)-th derivative
      (Taylor about the centre; SPEC section 3). Later in the compression the points carry
      unequal weights, and a heavy group waits longer than a light one of the same radius.
    - ``radius``: R alone. At the domain's boundary a group of as many points reaches farther: R
      grows by sqrt(2) at an edge and 2 at a corner of a square, so the boundary waits longer,
      where E7's 1 / (A + <w, x>) is steep (docs/performance.md).
    - ``box``: the diagonal of the group's bounding box, which grows 1.1x and 1x there.

    A proposal is taken when it ranks first among all the proposals that share a point with it,
    so that the taken ones are disjoint; up to ``sweeps`` times, over the proposals that touch no
    taken point. This is the greedy choice of the paper's Algorithm 1 (smallest diameter first
    there, as in the authors' final nearest-neighbour phase), a batch of disjoint groups at a time
    instead of one group. Every fourth point as a centre finds as many groups as every point (the
    groups of neighbouring centres overlap anyway) for a quarter of the neighbour queries.
    """
    check_choice("width", width, GROUP_WIDTHS)
    if width == "bound" and (weights is None or k is None):
        raise ValueError("width 'bound' needs the points' weights and the moment order k")
    if weights is not None and np.shape(weights) != (len(points),):
        raise ValueError(f"weights must have shape ({len(points)},), one per point; got {np.shape(weights)}")
    n = len(points)
    size = min(size, n)
    centres = points[::centre_stride]
    n_proposals = len(centres)
    distances, groups = cKDTree(points).query(centres, size)
    groups = groups.reshape(n_proposals, size)
    radii = distances.reshape(n_proposals, size)[:, -1]
    if width == "bound":
        widths = radii ** (k + 1) * weights[groups].sum(axis=1)
    elif width == "radius":
        widths = radii
    else:
        coordinates = np.take(np.ascontiguousarray(points.T), groups, axis=1)  # (m, G, size): contiguous rows
        widths = ((coordinates.max(axis=2) - coordinates.min(axis=2)) ** 2).sum(axis=0)
    rank = np.empty(n_proposals, dtype=np.int64)
    rank[np.argsort(widths, kind="stable")] = np.arange(n_proposals)  # distinct: ties by position
    eligible = np.ones(n_proposals, dtype=bool)
    taken = np.zeros(n, dtype=bool)
    picked = []
    for _ in range(sweeps):
        proposals = np.flatnonzero(eligible)
        if len(proposals) == 0:
            break
        best = np.full(n, n_proposals, dtype=np.int64)  # per point: the best rank of the proposals holding it
        np.minimum.at(best, groups[proposals].ravel(), np.repeat(rank[proposals], size))
        won = proposals[(best[groups[proposals]] == rank[proposals, None]).all(axis=1)]
        picked.append(won)
        taken[groups[won]] = True
        eligible &= ~taken[groups].any(axis=1)
    picked = np.concatenate(picked)
    return groups[picked[np.argsort(rank[picked])]]
