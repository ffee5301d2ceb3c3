"""K same-shape MLPs as one model: each parameter stacked along a leading model axis.

``weights_t[l]`` is (K, n_l, n_{l+1}) (each model's weight matrix transposed, so that the batched
matmuls and their backward passes read contiguous memory), ``biases[l]`` (K, n_{l+1}) and
``multiplicities[l]`` (K, n_l); the forward pass is one batched matmul per layer on inputs
(K, B, n_0), so K small models cost about what one model K times wider does. Slice k computes exactly what MLP k computes
(harness/models/mlp.py), with its own multiplicities and the same gradient division.

``bind`` makes each member MLP's parameters views of its slice, so code that evaluates a member
(``predict(arm.model, x)``) sees the stacked training without copies.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from harness.models import MLP


def shape_of(model: MLP) -> tuple:
    """What MLPs must share to be stacked: layer shapes, dtype and device."""
    weight = model.weights[0]
    return tuple(tuple(w.shape) for w in model.weights), weight.dtype, weight.device


class StackedMLP:
    """K MLPs of one shape, trained as one (see the module docstring)."""

    def __init__(self, weights_t: Sequence[torch.Tensor], biases: Sequence[torch.Tensor],
                 multiplicities: Sequence[torch.Tensor]) -> None:
        self.weights_t = [w.detach().contiguous().requires_grad_() for w in weights_t]
        self.biases = [b.detach().clone().requires_grad_() for b in biases]
        self.multiplicities = [c.detach().clone() for c in multiplicities]
        # Multiplying by ones changes nothing, bit for bit: skipped (a third of a step's memory traffic).
        self._scaled = [not bool((c == 1).all()) for c in self.multiplicities]

    @classmethod
    def of(cls, models: Sequence[MLP]) -> StackedMLP:
        if len({shape_of(m) for m in models}) != 1:
            raise ValueError("stacked MLPs must share layer shapes, dtype and device")
        depth = models[0].depth
        return cls([torch.stack([m.weights[l].detach().T for m in models]) for l in range(depth + 1)],
                   [torch.stack([m.biases[l].detach() for m in models]) for l in range(depth + 1)],
                   [torch.stack([m.unit_multiplicities(l) for m in models]) for l in range(depth)])

    @property
    def parameters(self) -> list[torch.Tensor]:
        return self.weights_t + self.biases

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(K, B, n_0) -> (K, B, outputs)."""
        h = x
        for layer, c in enumerate(self.multiplicities):
            h = torch.baddbmm(self.biases[layer][:, None], h, self.weights_t[layer]).relu_()
            if self._scaled[layer]:
                h = h * c[:, None]
        return torch.baddbmm(self.biases[-1][:, None], h, self.weights_t[-1])

    @torch.no_grad()
    def divide_gradients(self) -> None:
        """MLP.divide_gradients for every model at once."""
        for layer, c in enumerate(self.multiplicities):
            inverse = 1.0 / c
            self.weights_t[layer].grad.mul_(inverse[:, None, :])  # incoming rows: columns of W^T
            self.biases[layer].grad.mul_(inverse)
            self.weights_t[layer + 1].grad.mul_(inverse[:, :, None])  # outgoing columns: rows of W^T

    def bind(self, models: Sequence[MLP]) -> None:
        """Make model k's parameters views of slice k (they then follow every update)."""
        for k, model in enumerate(models):
            for stacked, parameter in zip(self.weights_t, model.weights):
                parameter.data = stacked.detach()[k].T
            for stacked, parameter in zip(self.biases, model.biases):
                parameter.data = stacked.detach()[k]

    def keep(self, rows: torch.Tensor) -> StackedMLP:
        """A new stack of models ``rows`` only (the others keep their last values in their views)."""
        return StackedMLP([w[rows] for w in self.weights_t], [b[rows] for b in self.biases],
                          [c[rows] for c in self.multiplicities])
