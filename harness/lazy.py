"""Package namespaces whose names are imported on first use (PEP 562).

A package ``__init__`` that imports its submodules makes every submodule as heavy as the heaviest:
``import harness.compression.size`` would import torch with ``harness.compression.api``. With
``__getattr__, __dir__ = lazy_names(__name__, {"compress": "api", ...})`` the package's names
stay importable as before (``from harness.compression import compress``) but each submodule is
imported only when one of its names is first read.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_names(package: str, module_of: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package``, whose name N lives in submodule
    ``module_of[N]``."""

    def __getattr__(name: str) -> Any:
        if name not in module_of:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module_of[name]}"), name)
        setattr(sys.modules[package], name, value)  # later reads skip this function
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *module_of})

    return __getattr__, __dir__
