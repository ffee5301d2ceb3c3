"""``compress``: moment-matching compression of a weighted point set, and its baselines."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from harness.compression.baselines import kmeans_centroids, random_subset
from harness.compression.basis import n_moments, raw_moments, relative_moment_error
from harness.compression.clustered import check_schedule, clustered_weights
from harness.compression.methods import METHODS, check_choice
from harness.compression.recombination import recombine
from harness.compression.size import SizeRule, parse_size
from harness.compression.validate import check_inputs, check_memory
from harness.device import one_cpu_thread
from harness.errors import warn_once


@dataclass(frozen=True)
class Compression:
    """The result of ``compress``.

    Attributes:
        indices: rows of the input that were kept (sorted), or None when the method makes new
            points (kmeans).
        weights: (d',) non-negative weights of the kept points; they sum to the input's total.
        points: (d', m) the kept points, float64, in the input's coordinates.
        k: the moment degree matched.
        n_moments: N(m, k) = C(m + k, k).
        moment_error: max over monomials of degree <= k of |compressed - original| moment,
            relative to the largest original moment (raw monomial basis).
        seconds: wall time of the compression (validation and error measurement excluded).
        method: the method used.
        target: the support size asked for, after clamping to at least N(m, k).
        clamped: True when the size rule asked for fewer than N(m, k) points.
    """

    indices: np.ndarray | None
    weights: np.ndarray
    points: np.ndarray
    k: int
    n_moments: int
    moment_error: float
    seconds: float
    method: str
    target: int
    clamped: bool

    @property
    def size(self) -> int:
        """Number of points kept."""
        return len(self.weights)


def compress(
    points,
    weights=None,
    *,
    k: int,
    size: int | float | str | SizeRule | None = None,
    method: str = "clustered",
    seed: int = 0,
    final_phase: float | None = None,
    round_fraction: float | None = None,
    group_width: str | None = None,
    final_drops: str | None = None,
) -> Compression:
    """Compress a weighted point set to about ``size`` points with the same moments of degree <= k.

    Args:
        points: (d, m) numpy array or torch tensor. For a tensor, the linear algebra of the
            ``clustered`` and ``global`` methods runs on its device.
        weights: (d,) non-negative weights, default all ones.
        k: highest moment degree to match.
        size: target support d': an int, a fraction in (0, 1), a rule string ("0.1d",
            "16*d^0.5", "20*ln(d)^2") or a SizeRule; None means N(m, k). Clamped up to N(m, k)
            with a warning. If d <= d' the input comes back unchanged at once (moment error 0),
            with a warning when N(m, k) or the size asked exceeds d.
        method: ``clustered`` (the paper's Algorithm 1), ``global`` (one reduction of the whole
            set to at most N(m, k) points, whatever the size), ``random`` (uniform subset,
            weights total/d') or ``kmeans`` (weighted centroids; new points).
        seed: seeds the baselines (the moment methods are deterministic).
        final_phase: ``clustered`` only: the nearest-neighbour phase starts at final_phase * d'
            live points (default 3, accuracy first, and from the start where N(m, k) < 8:
            ``clustered.default_final_phase``); 1 skips it (kd halving only: 2-4x faster, 2-4x
            larger function errors; bench/compress_accuracy.py --curve measures both).
        round_fraction: ``clustered`` only: the fraction in (0, 1] of the disjoint
            nearest-neighbour groups a final-phase round reduces, smallest first (default 0.25,
            accuracy first: it spares the domain's boundary longer). 1 reduces every group: 2.7-4x
            faster, with 1.8-3.7x larger errors on E7's 1 / (A + <w, x>)
            (bench/compress_accuracy.py --fractions measures both).
        group_width: ``clustered`` only: how the final phase ranks its groups, the smallest
            reduced first: ``bound`` (default; mass x radius^(k+1) about the group's centre
            point, its term of the error bound), ``radius`` (the radius alone) or ``box`` (the
            bounding box's diagonal); docs/performance.md compares them.
        final_drops: ``clustered`` only: how many points a final-phase group drops: ``balanced``
            (one point of N + 1, at the vertex that keeps the running change of the next
            moments smallest: the groups' errors cancel), ``taper`` (fewer as the live count
            nears d', toward the proof's one: 2-50x faster where N >= 10), ``scaled`` (N/4 x
            live / d' throughout), ``auto`` (default: balanced where N(m, k) < 8 or d' < 4 N,
            else taper) or ``balanced_below_8`` (balanced where N(m, k) < 8, else taper);
            docs/performance.md compares them.

    Raises:
        ValueError: for an unknown method, a bad size, NaN/inf, wrong shapes, negative or
            all-zero weights, k < 0, or more moments than memory allows (checked before
            anything of size N(m, k) is allocated).
    """
    check_choice("method", method, METHODS)
    options = {
        "final_phase": final_phase,
        "round_fraction": round_fraction,
        "group_width": group_width,
        "final_drops": final_drops,
    }
    for name, value in options.items():
        if value is not None and method != "clustered":
            raise ValueError(f"{name} applies to the clustered method only; got method {method!r}")
    check_schedule(**options)
    x, w = check_inputs(points, weights, k)
    d, m = x.shape
    n_features = n_moments(m, k)
    target, clamped = _resolve_target(size, d, m, k)
    host_points = x.cpu().numpy()
    host_weights = w.cpu().numpy()
    if d <= target:
        # Nothing to remove: the input is its own compression (moment error 0), and measuring
        # its N(m, k) moments could take more time and memory than anything else here.
        return Compression(
            indices=np.arange(d),
            weights=host_weights,
            points=host_points,
            k=k,
            n_moments=n_features,
            moment_error=0.0,
            seconds=0.0,
            method=method,
            target=target,
            clamped=clamped,
        )
    check_memory(d, m, k, reduce=method in ("clustered", "global"), device=x.device)
    start = time.perf_counter()
    if method in ("clustered", "global"):
        with one_cpu_thread(x.device):
            if method == "global":
                c = recombine(x, w, k)
            else:
                schedule = {name: value for name, value in options.items() if value is not None}
                c = clustered_weights(x, w, k, target, **schedule)
        keep = torch.nonzero(c > 0).squeeze(1)
        indices = keep.cpu().numpy()
        kept_weights, kept_points = c[keep].cpu().numpy(), host_points[indices]
    elif method == "random":
        indices, kept_weights = random_subset(d, target, float(host_weights.sum()), seed)
        kept_points = host_points[indices]
    else:
        indices = None
        kept_points, kept_weights = kmeans_centroids(host_points, host_weights, target, seed)
    seconds = time.perf_counter() - start
    error = relative_moment_error(raw_moments(host_points, host_weights, k), raw_moments(kept_points, kept_weights, k))
    return Compression(
        indices=indices,
        weights=kept_weights,
        points=kept_points,
        k=k,
        n_moments=n_features,
        moment_error=error,
        seconds=seconds,
        method=method,
        target=target,
        clamped=clamped,
    )


def _resolve_target(size, d: int, m: int, k: int) -> tuple[int, bool]:
    """The support size to compress to and whether it was clamped up to N(m, k). Warns when it is
    clamped, and (once per process) when every point is kept because N(m, k) or the size asked
    exceeds d."""
    floor = n_moments(m, k)
    rule = None if size is None else parse_size(size)
    wanted = floor if rule is None else rule.resolve(d)
    if floor >= d:
        lower = max((j for j in range(k) if n_moments(m, j) < d), default=None)
        advice = f"lower k: N(m={m}, k={lower}) = {n_moments(m, lower):,} < d" if lower is not None else "no k can"
        warn_once(
            f"N(m={m}, k={k}) = {floor:,} moments >= d = {d:,} points: nothing can be compressed, "
            f"every point is kept ({advice})",
            stacklevel=3,
        )
        return floor, wanted < floor
    if wanted > d:
        warn_once(
            f"size {rule} gives d' = {wanted:,} for d = {d:,} points, more than d: every point is kept", stacklevel=3
        )
        return wanted, False
    if wanted < floor:
        warnings.warn(
            f"size {rule} gives d' = {wanted} for d = {d}, below N(m={m}, k={k}) = {floor}; clamped to {floor}",
            stacklevel=3,
        )
        return floor, True
    return wanted, False
