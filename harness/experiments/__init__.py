"""The experiments of SPEC 6, one module per kind, and how to run them.

width (E3, E4b) and attention (E6) compress units of one network (units.py); data (E2, E4a)
compresses the training set; symmetric (E1, E7) and runtime (E5) compress objects without
training. ``runner.RUNNERS`` maps a config's ``experiment`` to its module's ``run``.
"""

from harness.experiments.common import ArmResult
from harness.experiments.runner import RUNNERS, RunRecord, run_arms, run_config, run_one

__all__ = ["RUNNERS", "ArmResult", "RunRecord", "run_arms", "run_config", "run_one"]
