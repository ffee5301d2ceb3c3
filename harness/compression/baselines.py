"""Baselines at the same budget d': a uniform random subset and weighted k-means centroids."""

from __future__ import annotations

import logging

import numpy as np
from sklearn.cluster import KMeans

# Points x clusters beyond which k-means is announced as slow: it runs on the host (scikit-learn)
# whatever the device, in time about proportional to d x d' (docs/performance.md has times).
KMEANS_SLOW_WORK = 1 << 32
logger = logging.getLogger(__name__)


def random_subset(d: int, size: int, total: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``size`` distinct rows chosen uniformly (sorted), each weighted total / size (the paper's naive)."""
    rows = np.sort(np.random.default_rng(seed).choice(d, size=size, replace=False))
    return rows, np.full(size, total / size)


def kmeans_centroids(points: np.ndarray, weights: np.ndarray, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Weighted k-means with ``size`` clusters: (centroids, cluster masses); empty clusters dropped.

    The centroids are new points, so they match the mass and the mean (degree <= 1) but not the
    higher moments.
    """
    if (warning := kmeans_cost_warning(len(points), size)) is not None:
        logger.warning(warning)
    model = KMeans(n_clusters=size, n_init=1, random_state=seed).fit(points, sample_weight=weights)
    mass = np.bincount(model.labels_, weights=weights, minlength=size)
    keep = mass > 0
    return model.cluster_centers_[keep], mass[keep]


def kmeans_cost_warning(d: int, size: int) -> str | None:
    """A one-line warning when k-means of d points into ``size`` clusters will be slow, else None."""
    if d * size < KMEANS_SLOW_WORK:
        return None
    return (
        f"k-means of {d:,} points into {size:,} clusters runs on the host CPU (scikit-learn) whatever the "
        f"device, in time about proportional to d x d' = {d * size:.1e}: expect minutes or more "
        "(docs/performance.md)"
    )
