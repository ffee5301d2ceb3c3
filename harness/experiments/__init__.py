"""The experiments of SPEC 6, one module per kind, and how to run them.

width (E3, E4b) and attention (E6) compress units of one network (units.py); data (E2, E4a)
compresses the training set; symmetric (E1, E7) and runtime (E5) compress objects without
training. ``runner.RUNNERS`` maps a config's ``experiment`` to its module's ``run``.

The names below are imported on first use (``harness.lazy``): ``polyscale run``'s parser
(``harness.experiments.cli``) must not import torch.
"""

from __future__ import annotations

from harness.lazy import lazy_names

_MODULE_OF = {
    "ArmResult": "common",
    "RUNNERS": "runner",
    "RunRecord": "runner",
    "run_arms": "runner",
    "run_config": "runner",
    "run_one": "runner",
}

__all__ = sorted(_MODULE_OF)

__getattr__, __dir__ = lazy_names(__name__, _MODULE_OF)
