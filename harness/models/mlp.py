"""A ReLU MLP whose hidden neurons carry fixed multiplicities (SPEC section 4).

    h_0 = x,   h_l = relu(W_l (c_{l-1} * h_{l-1}) + b_l)   (l = 1..L, c_0 = 1),
    f(x) = W_out (c_L * h_L) + b_out.

Hidden neuron j of layer l stands for c_l[j] identical neurons of the original network, so its
outgoing column counts c_l[j] times: the next layer sees c_l * h_l. With one hidden layer this
is f(x) = sum_j c_j v_j relu(w_j . x + b_j) + b0. The multiplicities are buffers (never trained).

Gradient division: in the original network each copy of neuron j moves by its own gradient. In
the weighted network the gradient of neuron j's parameters is c_j times that of one copy (its
output counts c_j times), so ``divide_gradients`` divides neuron j's incoming row, bias and
outgoing column by c_j after each backward pass. A weight W_{l+1}[i, j] joins neuron i of layer
l+1 (incoming) and neuron j of layer l (outgoing) and stands for c_{l+1}[i] * c_l[j] original
connections; it is divided by both, which is exactly the per-copy gradient. The output bias and
output units are shared (multiplicity 1) and are not divided.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness.models import relu_kernels


class MLP(nn.Module):
    """``weights[l]``: (n_{l+1}, n_l); ``biases[l]``: (n_{l+1},); one multiplicity vector per hidden layer."""

    def __init__(
        self,
        weights: Sequence[torch.Tensor],
        biases: Sequence[torch.Tensor],
        multiplicities: Sequence[torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        if len(weights) < 2 or len(weights) != len(biases):
            raise ValueError("an MLP needs at least one hidden layer and one bias per weight matrix")
        self.weights = nn.ParameterList(nn.Parameter(w) for w in weights)
        self.biases = nn.ParameterList(nn.Parameter(b) for b in biases)
        if multiplicities is None:
            multiplicities = [torch.ones(w.shape[0], dtype=w.dtype, device=w.device) for w in weights[:-1]]
        if len(multiplicities) != len(weights) - 1:
            raise ValueError(f"expected {len(weights) - 1} multiplicity vectors (one per hidden layer)")
        for layer, c in enumerate(multiplicities):
            self.register_buffer(
                f"multiplicity{layer}", torch.as_tensor(c, dtype=weights[0].dtype, device=weights[0].device)
            )

    @property
    def depth(self) -> int:
        """Hidden layers."""
        return len(self.weights) - 1

    @property
    def unit_layers(self) -> int:
        """Layers of interchangeable units: the hidden layers."""
        return self.depth

    @property
    def widths(self) -> list[int]:
        """Neurons in each hidden layer."""
        return [w.shape[0] for w in self.weights[:-1]]

    def unit_multiplicities(self, layer: int) -> torch.Tensor:
        """The multiplicity buffer of hidden layer ``layer``: (n_layer,)."""
        return getattr(self, f"multiplicity{layer}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._fused_evaluation(x):
            # One fused pass, no (rows, width) activations in memory (harness/models/relu_kernels.py).
            outgoing = self.weights[1][0] * self.unit_multiplicities(0)
            readout = relu_kernels.relu_readout(x[None], self.weights[0].T[None], self.biases[0][None], outgoing[None])
            return readout[0, :, None] + self.biases[1]
        h = x
        for layer in range(self.depth):
            # In place where autograd allows: a linear layer's output is not saved for backward,
            # a ReLU's is, so evaluation without autograd allocates one activation buffer per layer.
            h = F.linear(h, self.weights[layer], self.biases[layer]).relu_()
            c = self.unit_multiplicities(layer)
            h = h * c if torch.is_grad_enabled() else h.mul_(c)
        return F.linear(h, self.weights[-1], self.biases[-1])

    @property
    def fits_relu_kernels(self) -> bool:
        """One hidden layer, one output and a few float inputs on a CPU: what the fused kernels
        (harness/models/relu_kernels.py) compute, here for evaluation, in stacked.py for training."""
        return self.depth == 1 and self.weights[1].shape[0] == 1 and relu_kernels.applies(self.weights[0])

    def _fused_evaluation(self, x: torch.Tensor) -> bool:
        """Whether to evaluate x through the fused kernel: no autograd, and x as the first layer
        takes it (anything else goes layer by layer, and gets torch's own errors)."""
        weight = self.weights[0]
        return (
            not torch.is_grad_enabled()
            and self.fits_relu_kernels
            and x.dim() == 2
            and x.shape[1] == weight.shape[1]
            and x.dtype == weight.dtype
            and x.device == weight.device
        )

    @torch.no_grad()
    def divide_gradients(self) -> None:
        """Divide each hidden neuron's incoming row, bias and outgoing column grads by its multiplicity."""
        for layer in range(self.depth):
            inverse = 1.0 / self.unit_multiplicities(layer)
            self.weights[layer].grad.mul_(inverse[:, None])
            self.biases[layer].grad.mul_(inverse)
            self.weights[layer + 1].grad.mul_(inverse[None, :])

    @torch.no_grad()
    def unit_objects(self, layer: int) -> np.ndarray:
        """Hidden layer ``layer``'s neurons as objects (incoming row, bias, outgoing column): (n, m), float64."""
        parts = [self.weights[layer], self.biases[layer][:, None], self.weights[layer + 1].T]
        return torch.cat(parts, dim=1).double().cpu().numpy()

    @torch.no_grad()
    def unit_magnitudes(self, layer: int) -> np.ndarray:
        """||incoming weights|| * ||outgoing column|| of each neuron (|v| ||w|| for scalar output)."""
        incoming = self.weights[layer].double().norm(dim=1)
        outgoing = self.weights[layer + 1].double().norm(dim=0)
        return (incoming * outgoing).cpu().numpy()

    @torch.no_grad()
    def select_units(self, layer: int, indices: np.ndarray, multiplicities: np.ndarray) -> MLP:
        """A new MLP keeping neurons ``indices`` of hidden layer ``layer`` with the given multiplicities."""
        rows = torch.as_tensor(np.asarray(indices), dtype=torch.long, device=self.weights[0].device)
        weights = [w.detach().clone() for w in self.weights]
        biases = [b.detach().clone() for b in self.biases]
        mults = [self.unit_multiplicities(i).clone() for i in range(self.depth)]
        weights[layer] = weights[layer][rows]
        biases[layer] = biases[layer][rows]
        weights[layer + 1] = weights[layer + 1][:, rows]
        mults[layer] = torch.as_tensor(np.asarray(multiplicities), dtype=weights[0].dtype, device=rows.device)
        return MLP(weights, biases, mults)


def init_mlp(sizes: Sequence[int], *, seed: int, init: str = "default", init_range: float = 1.0) -> MLP:
    """A float64 MLP with layer sizes (inputs, hidden..., outputs), drawn from its own generator.

    ``default`` is PyTorch's nn.Linear rule, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and
    biases; ``uniform`` draws everything U(-init_range, init_range) (SPEC E2's teacher-style init).
    The global torch seed plays no part.
    """
    generator = torch.Generator().manual_seed(seed)
    weights, biases = [], []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        bound = 1.0 / math.sqrt(fan_in) if init == "default" else init_range
        weights.append(_uniform((fan_out, fan_in), bound, generator))
        biases.append(_uniform((fan_out,), bound, generator))
    return MLP(weights, biases)


def _uniform(shape: tuple[int, ...], bound: float, generator: torch.Generator) -> torch.Tensor:
    return (torch.rand(shape, generator=generator, dtype=torch.float64) * 2 - 1) * bound
