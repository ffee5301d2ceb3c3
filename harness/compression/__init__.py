"""Moment-matching compression (SPEC sections 2-3).

``compress`` is the entry point; ``reduce_support`` the exact global Caratheodory reduction;
``parse_size`` reads size rules; ``n_moments(m, k)`` is N(m, k) = C(m + k, k).

The names below are imported on first use (``harness.lazy``), so that the size rules
(``harness.compression.size``, no dependencies), which the configuration schema reads, and the
method names (``harness.compression.methods``), which the command line lists, do not import torch
and scikit-learn with the rest of the package.
"""

from __future__ import annotations

from harness.lazy import lazy_names

_MODULE_OF = {
    "METHODS": "methods",
    "Compression": "api",
    "compress": "api",
    "exponents": "basis",
    "n_moments": "basis",
    "raw_moments": "basis",
    "relative_moment_error": "basis",
    "reduce_support": "recombination",
    "SizeRule": "size",
    "parse_size": "size",
}

__all__ = sorted(_MODULE_OF)

__getattr__, __dir__ = lazy_names(__name__, _MODULE_OF)
