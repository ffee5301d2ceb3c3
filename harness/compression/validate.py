"""Input checks shared by every compression entry point: clear ValueErrors, float64 tensors out."""

from __future__ import annotations

import os

import numpy as np
import torch

from harness.compression.basis import RAW_MOMENTS_CHUNK, n_moments

# Refuse a compression whose working set would take more than this share of physical memory.
MEMORY_SHARE = 0.5


def check_inputs(points, weights, k) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate points (d, m), weights (d,) and degree k; return float64 tensors on points' device.

    A torch input keeps its device (so the linear algebra runs there); anything else becomes a
    CPU tensor. Raises ValueError naming the problem for NaN/inf, a wrong shape, negative or
    all-zero weights, or a bad k.
    """
    device = points.device if isinstance(points, torch.Tensor) else torch.device("cpu")
    x = _as_float64(points, "points", device)
    if x.ndim != 2:
        hint = " (for one coordinate per point use points.reshape(-1, 1))" if x.ndim == 1 else ""
        raise ValueError(f"points must be a 2-D (d, m) array; got shape {tuple(x.shape)}{hint}")
    d, m = x.shape
    if d == 0 or m == 0:
        raise ValueError(f"points must have at least one row and one column; got shape {(d, m)}")
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).any(dim=1).sum())
        raise ValueError(f"points contain NaN or inf in {bad} of {d} rows")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"k must be a non-negative integer (the highest moment degree); got {k!r}")
    if weights is None:
        w = torch.ones(d, dtype=torch.float64, device=device)
    else:
        w = _as_float64(weights, "weights", device)
        if w.shape != (d,):
            raise ValueError(f"weights must have shape ({d},) to match points; got {tuple(w.shape)}")
        if not torch.isfinite(w).all():
            raise ValueError("weights contain NaN or inf")
        if (w < 0).any():
            raise ValueError(f"weights must be >= 0; {int((w < 0).sum())} are negative (min {float(w.min()):.3g})")
        if not (w > 0).any():
            raise ValueError("weights are all zero: there is no mass to compress")
    return x, w


def check_memory(d: int, m: int, k: int, reduce: bool = True, device: torch.device | None = None) -> None:
    """Refuse a compression whose moment features (and, when ``reduce``, factorisations) would
    not fit in memory; called before anything of size N(m, k) is allocated.

    The error measurement runs on the host; the reduction runs on ``device`` (default the CPU), so
    for a CUDA device it is held to that GPU's memory and the measurement to the host's.
    """
    on_gpu = device is not None and device.type == "cuda"
    host = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if on_gpu:
        places = [("this machine's", host, False), (f"{device}'s", _device_memory(device), True)]
    else:
        places = [("this machine's", host, None)]
    for where, have, reduction in places:

        def need(j: int, reduction=reduction) -> int:
            if reduction is None:
                return memory_needed(d, m, j, reduce)
            return _reduction_bytes(d, m, j) if reduction else _measure_bytes(d, m, j)

        if need(k) > MEMORY_SHARE * have:
            fits = [j for j in range(k) if need(j) <= MEMORY_SHARE * have]
            advice = f"use k <= {fits[-1]}" if fits else "lower k"
            work = "reducing" if reduce and reduction is not False else "measuring the moments of"
            raise ValueError(
                f"N(m={m}, k={k}) = {n_moments(m, k):,} moments is too many: {work} {d:,} points would need "
                f"about {need(k) / 2**30:,.1f} GiB, more than {MEMORY_SHARE:.0%} of {where} "
                f"{have / 2**30:,.1f} GiB; {advice} or compress in a lower-dimensional space"
            )


def memory_needed(d: int, m: int, k: int, reduce: bool = True) -> int:
    """Bytes at the peak of a compression of d points on a CPU: the moment features of one chunk
    of ``raw_moments`` (the error measurement) and, when ``reduce``, the reduction's features and
    factorisations (the larger: they are held one after the other)."""
    return max(_measure_bytes(d, m, k), _reduction_bytes(d, m, k) if reduce else 0)


def _measure_bytes(d: int, m: int, k: int) -> int:
    """The error measurement: one chunk's (rows, N) float64 features and up to three temporaries of
    at most that size while ``product_features`` builds them."""
    return 8 * min(d, RAW_MOMENTS_CHUNK) * 4 * n_moments(m, k)


def _reduction_bytes(d: int, m: int, k: int) -> int:
    """The reduction's float64 features of every point and its factorisations."""
    n_features = n_moments(m, k)
    return 8 * (3 * d * n_features + 12 * n_features**2)


def _device_memory(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).total_memory


def _as_float64(array, name: str, device: torch.device) -> torch.Tensor:
    if isinstance(array, torch.Tensor):
        return array.detach().to(device=device, dtype=torch.float64)
    try:
        values = np.asarray(array, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric; {exc}") from exc
    return torch.as_tensor(values, device=device)
