"""Moment features: multi-indices of degree <= k, raw monomials and the Legendre basis.

Matching the moments of all monomials x^a with |a| <= k is the same condition as matching the
Legendre products P_a(x) = prod_j P_{a_j}(x_j) with |a| <= k (both span the polynomials of total
degree <= k), but the Legendre products of points scaled into [-1, 1]^m are well conditioned
where raw monomials are not. The reduction works in the Legendre basis; errors are reported in
the raw basis (SPEC section 2).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

RAW_MOMENTS_CHUNK = 1 << 15  # rows of features ``raw_moments`` holds at once


def n_moments(m: int, k: int) -> int:
    """N(m, k) = C(m + k, k): the number of monomials of degree <= k in m variables."""
    return math.comb(m + k, k)


@lru_cache(maxsize=64)
def graded_exponents(m: int, k: int) -> np.ndarray:
    """All multi-indices a in N^m with |a| <= k, graded (degree 0 first), shape (N(m,k), m).

    Graded order makes the indices of degree <= r a prefix, for every r.
    """
    if m == 0:
        return np.zeros((1, 0), dtype=np.int64)  # the empty index, of degree 0
    rows = [np.zeros((1, m), dtype=np.int64)]
    current = np.zeros((1, m), dtype=np.int64)
    for _ in range(k):
        # Each index of degree t+1 is an index of degree t plus one unit in a coordinate at or
        # after its last non-zero coordinate: this enumerates every index exactly once.
        last = np.where(current.any(axis=1), m - 1 - np.argmax(current[:, ::-1] > 0, axis=1), 0)
        grown = []
        for j in range(m):
            base = current[last <= j]
            step = base.copy()
            step[:, j] += 1
            grown.append(step)
        current = np.concatenate(grown)
        rows.append(current)
    table = np.concatenate(rows)
    table.setflags(write=False)
    return table


@lru_cache(maxsize=64)
def exponents(m: int, k: int) -> np.ndarray:
    """The multi-indices of ``product_features``' columns, shape (N(m,k), m); (0, ..., 0) first.

    Blocks by the power i = 0..k of the last coordinate, each holding the graded indices of
    degree <= k - i of the other coordinates: each block is then one product of a prefix of the
    graded features of m - 1 coordinates with one row of the last coordinate's table.
    """
    blocks = [
        np.concatenate([graded_exponents(m - 1, k - i), np.full((n_moments(m - 1, k - i), 1), i)], axis=1)
        for i in range(k + 1)
    ]
    table = np.concatenate(blocks)
    table.setflags(write=False)
    return table


def _legendre_table(x: torch.Tensor, k: int) -> torch.Tensor:
    """Q_0..Q_k at every coordinate of x (..., n, m) by the three-term recurrence: (k+1, m, ..., n).

    Q_p = sqrt(2p+1) P_p, the Legendre polynomials scaled to unit L2 norm on [-1, 1] under the
    uniform measure; this keeps the feature columns of comparable size at high degree. From
    (p+1) P_{p+1} = (2p+1) t P_p - p P_{p-1}: Q_{p+1} = a_p t Q_p - b_p Q_{p-1} with
    a_p = sqrt((2p+3)(2p+1)) / (p+1) and b_p = p sqrt((2p+3) / (2p-1)) / (p+1), two fused
    operations per degree written straight into the table.
    """
    t = x.movedim(-1, 0)
    table = x.new_empty(k + 1, *t.shape)
    table[0] = 1.0
    if k >= 1:
        torch.mul(t, math.sqrt(3.0), out=table[1])
    for p in range(1, k):
        a = math.sqrt((2 * p + 3) * (2 * p + 1)) / (p + 1)
        b = p * math.sqrt((2 * p + 3) / (2 * p - 1)) / (p + 1)
        torch.mul(table[p - 1], -b, out=table[p + 1])
        table[p + 1].addcmul_(t, table[p], value=a)
    return table


def _power_table(x: torch.Tensor, k: int) -> torch.Tensor:
    """x^0..x^k at every coordinate of x (..., n, m): (k+1, m, ..., n)."""
    powers = torch.arange(k + 1, dtype=x.dtype, device=x.device).view(-1, *[1] * x.dim())
    return x.movedim(-1, 0).unsqueeze(0) ** powers


def product_features(x: torch.Tensor, k: int, basis: str = "legendre") -> torch.Tensor:
    """Features prod_j B_{a_j}(x_j) for every multi-index a of ``exponents(m, k)``: (n, N(m,k)).

    ``basis`` is ``"legendre"`` (normalised Legendre polynomials; use on points in [-1, 1]^m) or
    ``"monomial"`` (raw powers). ``x`` may carry leading batch dimensions: (..., n, m) -> (..., n, N).
    """
    m = x.shape[-1]
    # Degree-major table (k+1, m, ..., n): every recurrence step and every product below runs
    # over whole rows of length n. They are contiguous when x is a view of a coordinate-major
    # array, as the clustered method passes it (2-3x faster than strided rows).
    table = _legendre_table(x, k) if basis == "legendre" else _power_table(x, k)
    # The graded features of the first m - 1 coordinates (the head) are gathers of whole rows,
    # each block of the result one broadcast product written in place, and the (..., n, N)
    # result is a transposed view: the column-major layout LAPACK wants. Only the head
    # (N(m-1, k) rows) is gathered; the full N(m, k) rows are written once.
    if m <= 2:  # the graded indices of one coordinate are 0..k in order (of none, the empty one)
        head = table[: k + 1 if m == 2 else 1, 0]
    else:
        index = torch.tensor(graded_exponents(m - 1, k), device=x.device)  # (N(m-1,k), m-1)
        head = table[:, 0].index_select(0, index[:, 0])
        for j in range(1, m - 1):
            head = head * table[:, j].index_select(0, index[:, j])
    features = x.new_empty(*x.shape[:-2], n_moments(m, k), x.shape[-2])
    offset = 0
    for i in range(k + 1):
        size = n_moments(m - 1, k - i)
        block = features[..., offset : offset + size, :].movedim(-2, 0)
        torch.mul(head[:size], table[i, m - 1], out=block)
        offset += size
    return features.transpose(-1, -2)


def box_affine(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Centre and half-width that map the bounding box of x (..., n, m) onto [-1, 1]^m.

    A dimension of zero width gets half-width 1 (it is constant; any scale matches it).
    """
    columns = x.transpose(-1, -2)
    if columns.stride(-1) != 1:
        # Reduced along contiguous rows, one per coordinate: torch's CPU min and max over a
        # short strided axis (the points of a row-major (n, m) array) are 5-15x slower than
        # this copy.
        columns = columns.contiguous()
    lo = columns.amin(dim=-1).unsqueeze(-2)
    half = (columns.amax(dim=-1).unsqueeze(-2) - lo) / 2
    centre = lo + half
    return centre, half.masked_fill_(half <= 0, 1.0)


def to_box(x: torch.Tensor) -> torch.Tensor:
    """x mapped affinely into [-1, 1]^m (per batch element when x has leading dimensions)."""
    centre, half = box_affine(x)
    return (x - centre) / half


def raw_moments(points: np.ndarray, weights: np.ndarray, k: int, chunk: int = RAW_MOMENTS_CHUNK) -> np.ndarray:
    """sum_i w_i x_i^a for every |a| <= k, in float64, without holding all features at once."""
    x = torch.as_tensor(np.asarray(points, dtype=np.float64))
    w = torch.as_tensor(np.asarray(weights, dtype=np.float64))
    total = torch.zeros(n_moments(x.shape[1], k), dtype=torch.float64)
    for start in range(0, x.shape[0], chunk):
        feats = product_features(x[start : start + chunk], k, basis="monomial")
        total += w[start : start + chunk] @ feats
    return total.numpy()


def relative_moment_error(reference: np.ndarray, approx: np.ndarray) -> float:
    """max_a |approx_a - reference_a| / max_a |reference_a| (SPEC: raw basis, relative)."""
    scale = float(np.max(np.abs(reference)))
    if scale == 0.0:
        return float(np.max(np.abs(approx)))
    return float(np.max(np.abs(approx - reference)) / scale)
