"""Moment-matching compression (SPEC sections 2-3).

``compress`` is the entry point; ``reduce_support`` the exact global Caratheodory reduction;
``parse_size`` reads size rules; ``n_moments(m, k)`` is N(m, k) = C(m + k, k).

The names below are imported on first use (PEP 562), so that the size rules
(``harness.compression.size``, no dependencies), which the configuration schema reads, do not
import torch and scikit-learn with the rest of the package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.compression.api import METHODS, Compression, compress
    from harness.compression.basis import exponents, n_moments, raw_moments, relative_moment_error
    from harness.compression.recombination import reduce_support
    from harness.compression.size import SizeRule, parse_size

_MODULE_OF = {
    "METHODS": "api",
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


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_MODULE_OF])
