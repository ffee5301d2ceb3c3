"""Models whose interchangeable units (hidden neurons, attention heads) carry multiplicities.

Both models offer the same small interface the width experiments use: ``unit_layers`` and
``widths``, ``unit_objects(layer)`` (the units as points to compress), ``unit_multiplicities(layer)``,
``select_units(layer, indices, multiplicities)`` (a new model keeping some units with new
multiplicities) and ``divide_gradients()`` (SPEC 4's gradient division, after each backward pass).
"""

from harness.models.attention import HeadsAttention, init_attention
from harness.models.mlp import MLP, init_mlp

__all__ = ["MLP", "HeadsAttention", "init_attention", "init_mlp"]
