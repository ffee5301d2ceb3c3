"""Global reduction to at most N(m,k) points by recombination (Tchernychova and Lyons).

Split the live points into 2N spatially coherent groups, replace each group by its barycentre
(carrying the group's mass), and eliminate N groups at once with one factorisation of a
2N x N matrix. Points of a surviving group keep their relative weights, rescaled by the group's
new mass. Each round halves the support for O(n N + N^3) work, so n points cost
O(n N + N^3 log(n / N)) instead of the O(n N^3) of one elimination per factorisation.
"""

from __future__ import annotations

import numpy as np
import torch

from harness.compression.basis import n_moments, product_features, to_box
from harness.compression.caratheodory import eliminate
from harness.compression.partition import morton_order
from harness.compression.validate import check_inputs, check_memory

# Points whose features are built at a time: small enough to stay in cache, large enough to
# amortise the Python overhead. The n x N feature matrix is never held whole.
CHUNK = 1 << 13


@torch.inference_mode()  # thousands of small ops: skipping autograd's bookkeeping saves about 8%
def recombine(x: torch.Tensor, weights: torch.Tensor, k: int) -> torch.Tensor:
    """Weights on the rows of x (n, m): at most N(m,k) non-zero, with the same moments of degree <= k.

    ``x`` and ``weights`` are float64 tensors on one device; zero weights are allowed and stay zero.
    The result is an inference tensor (read it; do not modify it in place).
    """
    unit = to_box(x)
    groups = 2 * n_moments(x.shape[1], k)
    c = weights.clone()
    order = torch.as_tensor(morton_order(x.cpu().numpy()), device=x.device)
    live = order[c[order] > 0]
    while len(live) > groups:
        label = torch.arange(len(live), device=x.device) * groups // len(live)
        mass = torch.zeros(groups, dtype=c.dtype, device=c.device).index_add_(0, label, c[live])
        barycentres = group_moments(unit, c, live, label, groups, k) / mass.unsqueeze(1)
        new_mass = eliminate(barycentres.unsqueeze(0), mass.unsqueeze(0), torch.tensor([groups]))[0]
        factor = (new_mass / mass)[label]
        c[live] = c[live] * factor
        live = live[factor > 0]
    if len(live):
        features = product_features(unit[live], k)
        c[live] = eliminate(
            features.unsqueeze(0), c[live].unsqueeze(0), torch.tensor([len(live)]), rank_revealing=True
        )[0]
    return c


def group_moments(
    unit: torch.Tensor, c: torch.Tensor, live: torch.Tensor, label: torch.Tensor, groups: int, k: int
) -> torch.Tensor:
    """sum over the live points of each group of c_i F(x_i): (groups, N), built chunk by chunk."""
    total = None
    for start in range(0, len(live), CHUNK):
        rows = live[start : start + CHUNK]
        weighted = product_features(unit[rows], k) * c[rows].unsqueeze(1)
        if total is None:
            total = torch.zeros(groups, weighted.shape[1], dtype=c.dtype, device=c.device)
        total.index_add_(0, label[start : start + CHUNK], weighted)
    return total


def reduce_support(points, weights=None, k: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Exact Caratheodory reduction of a weighted point set to at most N(m,k) points.

    Args:
        points: (d, m) float array or tensor (a tensor's device is used for the linear algebra).
        weights: (d,) non-negative weights; default all ones.
        k: highest moment degree to preserve.

    Returns:
        ``(indices, weights)``: the kept rows of ``points`` (sorted) and their new weights, whose
        moments of every degree <= k equal the input's to round-off.
    """
    x, w = check_inputs(points, weights, k)
    check_memory(*x.shape, k, device=x.device)
    c = recombine(x, w, k)
    keep = torch.nonzero(c > 0).squeeze(1)
    return keep.cpu().numpy(), c[keep].cpu().numpy()
