"""The paper's Algorithm 1: reduce small-diameter groups one at a time until d' points remain.

Global moment matching keeps N(m,k) points but approximates a non-polynomial function poorly;
matching the moments of each small ball separately is what drives the error down (SPEC
section 3). Each round here:

1. splits the live points into kd cells of about 2N points (small diameter, similar sizes);
2. orders the cells by diameter and picks the smallest ones until their combined capacity
   (cell size - N) covers the excess over the target, the last one only partly, as the
   proof's greedy smallest-diameter choice does;
3. reduces all picked cells at once with the batched Caratheodory elimination, each cell in its
   own [-1, 1]^m box and Legendre basis (so the moments of each cell are preserved exactly).

A round removes up to half of the live points, so d -> d' takes about log2(d / d') rounds, each
one batched factorisation over all picked cells.
"""

from __future__ import annotations

import numpy as np
import torch

from harness.compression.basis import n_moments, product_features, to_box
from harness.compression.caratheodory import eliminate
from harness.compression.partition import kd_cells

# Bytes of null vectors one batched elimination may hold. Each step updates all of them, so on a
# CPU they should stay in cache (many small batches); a GPU wants wide batches instead.
WORKING_SET_BYTES = {"cpu": 8 << 20, "cuda": 1 << 30}


def clustered_weights(x: torch.Tensor, weights: torch.Tensor, k: int, target: int) -> torch.Tensor:
    """Weights on the rows of x (n, m) with at most ``target`` non-zero and equal moments per cell.

    ``target`` must be at least N(m,k). ``x`` and ``weights`` are float64 tensors on one device.
    """
    n_features = n_moments(x.shape[1], k)
    unit = to_box(x)
    grid = unit.cpu().numpy()
    c = weights.clone()
    live = np.flatnonzero(c.cpu().numpy() > 0)
    while len(live) > target:
        for members, remove in _pick_cells(grid[live], len(live) - target, n_features):
            size = members.shape[1]
            per_batch = max(1, WORKING_SET_BYTES.get(x.device.type, WORKING_SET_BYTES['cpu']) // (8 * size * max(1, size - n_features)))
            for start in range(0, len(members), per_batch):
                rows = torch.as_tensor(live[members[start : start + per_batch]], device=x.device)
                features = product_features(to_box(unit[rows]), k)
                cut = torch.as_tensor(remove[start : start + per_batch], device=x.device)
                c[rows] = eliminate(features, c[rows], cut)
        survivors = (c[torch.as_tensor(live, device=x.device)] > 0).cpu().numpy()
        if survivors.all():
            raise RuntimeError("clustered compression made no progress; please report this input")
        live = live[survivors]
    return c


def _pick_cells(points: np.ndarray, excess: int, n_features: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Cells to reduce this round, batched by cell size, and how many points each drops.

    Returns one ``(members, remove)`` pair per distinct cell size (kd cells have at most two):
    members (B, s) are row positions into ``points``; remove (B,) how many of each cell's points
    to drop. The removals add up to min(excess, total capacity).
    """
    cells = kd_cells(points, 2 * n_features)
    capacity = np.maximum(cells.sizes - n_features, 0)
    by_diameter = np.argsort(cells.diameters(points), kind="stable")
    reach = np.cumsum(capacity[by_diameter])
    n_picked = min(int(np.searchsorted(reach, excess)) + 1, len(by_diameter))
    picked = by_diameter[:n_picked]
    remove = capacity[picked].copy()
    remove[-1] -= max(0, int(reach[n_picked - 1]) - excess)
    batches = []
    for size in np.unique(cells.sizes[picked]):
        same = cells.sizes[picked] == size
        members = cells.order[cells.starts[picked[same], None] + np.arange(size)]
        batches.append((members, remove[same]))
    return batches
