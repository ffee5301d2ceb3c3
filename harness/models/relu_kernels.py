"""Fused CPU kernels for stacks of one-hidden-layer ReLU nets on inputs of a few coordinates.

With n_0 = 2 inputs (the teacher and harmonic tasks) each (model, example, neuron) costs a
handful of flops, and torch's batched passes (stacked._OneHiddenLayer) are bound by memory: they
write the (K, B, width) pre-activations, turn them into a mask and read that mask twice more.
These kernels recompute each pre-activation z = b1 + x W1^T in registers wherever it is needed
and never store it:

- ``relu_readout``: y[k, b] = sum_j relu(z[k, b, j]) v[k, j], the forward pass;
- ``masked_products``: P[k, c, j] = sum_b e[k, b, c] [z[k, b, j] > 0], the product of the
  backward pass (e = [x * dy, dy], see stacked._OneHiddenLayer).

They are compiled by numba on first use, one kernel per dtype and input count (a second or so
each; then cached on disk beside this file or in numba's cache directory). Float sums are
reassociated (vectorised), so results match torch's to rounding, not bit for bit; NaN still
propagates, which divergence detection relies on.
"""

from __future__ import annotations

import numba
import numpy as np
import torch

# Input coordinates up to which the fused kernels beat torch's batched passes. Forward and backward,
# a stack of 8 at width 1000, batch 128, ms per model-step, fused / torch: 1 input 0.044 / 0.097,
# 2: 0.053 / 0.115, 3: 0.064 / 0.124, 4: 0.076 / 0.198, but 5: 0.37 / 0.15 and 8: 0.60 / 0.19
# (at width 50, batch 512, the same turn between 4 and 5).
MAX_INPUTS = 4

# Reassociation lets the sums vectorise; no nnan/ninf, so that NaN and inf come through.
_FASTMATH = {"reassoc", "contract", "arcp", "nsz"}


def applies(x: torch.Tensor) -> bool:
    """Whether the kernels take inputs x (..., n_0): float, on a CPU, with at most MAX_INPUTS coordinates."""
    return x.device.type == "cpu" and x.shape[-1] <= MAX_INPUTS and x.dtype in (torch.float32, torch.float64)


def relu_readout(x: torch.Tensor, weight1_t: torch.Tensor, bias1: torch.Tensor, outgoing: torch.Tensor) -> torch.Tensor:
    """(K, B): sum_j relu(bias1[k, j] + x[k, b] . weight1_t[k, :, j]) outgoing[k, j]."""
    _check_shapes(x, weight1_t, bias1, outgoing=(outgoing, (x.shape[0], bias1.shape[-1])))
    out = x.new_empty(x.shape[:2])
    _relu_readout(*_arrays(x, weight1_t, bias1, outgoing), _count(x), out.numpy())
    return out


def masked_products(
    x: torch.Tensor, weight1_t: torch.Tensor, bias1: torch.Tensor, per_example: torch.Tensor
) -> torch.Tensor:
    """(K, n_0 + 1, width): sum_b per_example[k, b, c] [bias1[k, j] + x[k, b] . weight1_t[k, :, j] > 0]."""
    _check_shapes(x, weight1_t, bias1, per_example=(per_example, (*x.shape[:2], x.shape[-1] + 1)))
    out = x.new_empty((x.shape[0], x.shape[2] + 1, bias1.shape[1]))
    _masked_products(*_arrays(x, weight1_t, bias1, per_example), _count(x), out.numpy())
    return out


def _check_shapes(
    x: torch.Tensor, weight1_t: torch.Tensor, bias1: torch.Tensor, **last: tuple[torch.Tensor, tuple[int, ...]]
) -> None:
    """The compiled loops index without bounds checks: mismatched operands would read past them."""
    if x.dim() != 3:
        raise ValueError(f"relu_kernels: x must be (models, rows, inputs); got shape {tuple(x.shape)}")
    models, _, inputs = x.shape
    width = bias1.shape[-1]
    expected = {"weight1_t": (weight1_t, (models, inputs, width)), "bias1": (bias1, (models, width)), **last}
    for name, (tensor, shape) in expected.items():
        if tuple(tensor.shape) != shape:
            raise ValueError(
                f"relu_kernels: {name} has shape {tuple(tensor.shape)}; expected {shape} "
                f"for x of shape {tuple(x.shape)}"
            )
        if tensor.dtype != x.dtype or tensor.device != x.device:
            raise ValueError(f"relu_kernels: {name} is {tensor.dtype} on {tensor.device}; x is {x.dtype} on {x.device}")


def _arrays(*tensors: torch.Tensor) -> list[np.ndarray]:
    # Contiguous copies where needed (parameters are strided views of one flat tensor): on strided
    # arrays the compiled loops cannot vectorise their loads.
    return [t.detach().contiguous().numpy() for t in tensors]


def _count(x: torch.Tensor) -> tuple:
    # The input count as a tuple's length, which is part of its numba type: one kernel per count,
    # in which it is a constant (numba.literally does the same at a large cost per call).
    return (0,) * x.shape[2]


@numba.njit(fastmath=_FASTMATH, cache=True)
def _relu_readout(x, weight1_t, bias1, outgoing, count, out):
    inputs = len(count)
    models, rows, _ = x.shape
    width = bias1.shape[1]
    zero = bias1.dtype.type(0)
    coordinates = np.empty(inputs, x.dtype)
    for k in range(models):
        for b in range(rows):
            for i in range(inputs):
                coordinates[i] = x[k, b, i]
            total = zero
            for j in range(width):
                z = bias1[k, j]
                for i in range(inputs):
                    z += coordinates[i] * weight1_t[k, i, j]
                total += (zero if z <= zero else z) * outgoing[k, j]
            out[k, b] = total


@numba.njit(fastmath=_FASTMATH, cache=True)
def _masked_products(x, weight1_t, bias1, per_example, count, out):
    # Rows go in pairs, which share each load of weights and each update of ``out`` (half the
    # memory traffic of row by row); an odd last row is paired with itself, its twin's factors zero.
    inputs = len(count)
    models, rows, _ = x.shape
    width = bias1.shape[1]
    one, zero = bias1.dtype.type(1), bias1.dtype.type(0)
    first, second = np.empty(inputs, x.dtype), np.empty(inputs, x.dtype)
    first_factors, second_factors = np.empty(inputs + 1, x.dtype), np.empty(inputs + 1, x.dtype)
    out[:] = zero
    for k in range(models):
        for b in range(0, rows, 2):
            twin = min(b + 1, rows - 1)
            for i in range(inputs):
                first[i] = x[k, b, i]
                second[i] = x[k, twin, i]
            for c in range(inputs + 1):
                first_factors[c] = per_example[k, b, c]
                second_factors[c] = per_example[k, twin, c] if twin > b else zero
            for j in range(width):
                z_first = z_second = bias1[k, j]
                for i in range(inputs):
                    z_first += first[i] * weight1_t[k, i, j]
                    z_second += second[i] * weight1_t[k, i, j]
                mask_first = one if z_first > zero else zero
                mask_second = one if z_second > zero else zero
                for c in range(inputs + 1):
                    out[k, c, j] += mask_first * first_factors[c] + mask_second * second_factors[c]
