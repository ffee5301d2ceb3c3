"""Moment-matching compression (SPEC sections 2-3).

``compress`` is the entry point; ``reduce_support`` the exact global Caratheodory reduction;
``parse_size`` reads size rules; ``n_moments(m, k)`` is N(m, k) = C(m + k, k).
"""

from harness.compression.api import METHODS, Compression, compress
from harness.compression.basis import exponents, n_moments, raw_moments, relative_moment_error
from harness.compression.recombination import reduce_support
from harness.compression.size import SizeRule, parse_size

__all__ = [
    "METHODS",
    "Compression",
    "SizeRule",
    "compress",
    "exponents",
    "n_moments",
    "parse_size",
    "raw_moments",
    "reduce_support",
    "relative_moment_error",
]
