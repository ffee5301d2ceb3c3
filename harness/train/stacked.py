"""K same-shape MLPs as one model: each parameter stacked along a leading model axis.

``weights_t[l]`` is (K, n_l, n_{l+1}) (each model's weight matrix transposed, so that the batched
matmuls and their backward passes read contiguous memory), ``biases[l]`` (K, n_{l+1}) and
``multiplicities[l]`` (K, n_l); the forward pass is one batched matmul per layer on inputs
(K, B, n_0), so K small models cost about what one model K times wider does. A net with one
hidden layer and one output runs both passes on its ReLU mask alone (``_OneHiddenLayer``), and on
a CPU with a few inputs through fused kernels that never store the mask
(harness/models/relu_kernels.py). Slice k computes what MLP k computes (harness/models/mlp.py; the
same sums, in another order), with its own multiplicities and the same gradient division.

``bind`` makes each member MLP's parameters views of its slice, so code that evaluates a member
(``predict(arm.model, x)``) sees the stacked training without copies.

``EvaluationStack`` is the evaluation-only counterpart: same-shape MLPs given the same inputs
(``predict_together``, harness/train/losses.py), one batched pass per layer for all of them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from harness.models import MLP, relu_kernels


def shape_of(model: MLP) -> tuple:
    """What MLPs must share to be stacked: layer shapes, dtype and device."""
    weight = model.weights[0]
    return tuple(tuple(w.shape) for w in model.weights), weight.dtype, weight.device


class StackedMLP:
    """K MLPs of one shape, trained as one (see the module docstring)."""

    def __init__(
        self, weights_t: Sequence[torch.Tensor], biases: Sequence[torch.Tensor], multiplicities: Sequence[torch.Tensor]
    ) -> None:
        tensors = [t.detach() for t in (*weights_t, *biases)]
        models = tensors[0].shape[0]
        # Row k of ``flat`` holds all of model k's parameters (each parameter is a view of it), so
        # that the optimizer updates everything in one set of operations on ``flat`` and
        # ``flat.grad`` (filled by ``gather_grad``).
        self.flat = torch.cat([t.reshape(models, -1) for t in tensors], dim=1)
        self.flat.grad = torch.zeros_like(self.flat)
        parameters, start = [], 0
        for t in tensors:
            end = start + t[0].numel()
            parameters.append(self.flat[:, start:end].view(t.shape).requires_grad_())
            start = end
        self.weights_t, self.biases = parameters[: len(weights_t)], parameters[len(weights_t) :]
        self.multiplicities = [c.detach().clone() for c in multiplicities]
        # Multiplying by ones changes nothing, bit for bit: skipped (a third of a step's memory traffic).
        self._scaled = [not _all_ones(c) for c in self.multiplicities]

    @classmethod
    def of(cls, models: Sequence[MLP]) -> StackedMLP:
        if len({shape_of(m) for m in models}) != 1:
            raise ValueError("stacked MLPs must share layer shapes, dtype and device")
        depth = models[0].depth
        return cls(
            [torch.stack([m.weights[layer].detach().T for m in models]) for layer in range(depth + 1)],
            [torch.stack([m.biases[layer].detach() for m in models]) for layer in range(depth + 1)],
            [torch.stack([m.unit_multiplicities(layer) for m in models]) for layer in range(depth)],
        )

    @property
    def parameters(self) -> list[torch.Tensor]:
        return self.weights_t + self.biases

    def gather_grad(self) -> None:
        """Copy every parameter's gradient into ``flat.grad`` and let go of them."""
        grads = [parameter.grad.reshape(len(self.flat), -1) for parameter in self.parameters]
        torch.cat(grads, dim=1, out=self.flat.grad)
        for parameter in self.parameters:
            parameter.grad = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(K, B, n_0) -> (K, B, outputs)."""
        scaled = [c if self._scaled[layer] else None for layer, c in enumerate(self.multiplicities)]
        if len(scaled) == 1 and self.weights_t[1].shape[2] == 1 and not x.requires_grad:
            return _OneHiddenLayer.apply(
                x, self.weights_t[0], self.biases[0], self.weights_t[1], self.biases[1], scaled[0]
            )
        h = x
        for layer, c in enumerate(scaled):
            h = _Layer.apply(h, self.weights_t[layer], self.biases[layer], c)
        return _Layer.apply(h, self.weights_t[-1], self.biases[-1], None, False)

    @torch.no_grad()
    def divide_gradients(self) -> None:
        """MLP.divide_gradients for every model at once."""
        for layer, c in enumerate(self.multiplicities):
            if not self._scaled[layer]:
                continue  # dividing by ones changes nothing
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
        return StackedMLP(
            [w[rows] for w in self.weights_t], [b[rows] for b in self.biases], [c[rows] for c in self.multiplicities]
        )


class EvaluationStack:
    """Same-shape MLPs evaluated on shared inputs: (rows, n_0) -> (rows, K, outputs), slice k what
    MLP k's own forward pass gives without autograd (harness/models/mlp.py), to rounding.

    Where the MLPs fit the fused CPU kernels, ``relu_readout`` of all K at once (the same sums as
    MLP.forward's, bit for bit). Otherwise the activations are kept as (K, units, rows): the first
    layers of all K models are one wide layer, a single product of their (K * n_1, n_0) weights
    with the shared inputs, and every later layer one batched product, each hidden layer's
    multiplicities folded into the next layer's weights (W_{l+1} diag(c_l): the same function). So
    a chunk costs one matmul and one in-place ReLU per hidden layer plus the output's matmul for
    all K models, where K models' own passes take four kernels each, one of them a pass over the
    activations to multiply them by c.

    The parameters are stacked (copied) when it is made: it evaluates the models as they are then.
    """

    def __init__(self, models: Sequence[MLP]) -> None:
        if len({shape_of(m) for m in models}) != 1:
            raise ValueError("stacked MLPs must share layer shapes, dtype and device")
        depth = models[0].depth
        with torch.no_grad():
            weights = [torch.stack([m.weights[layer] for m in models]) for layer in range(depth + 1)]
            self.biases = [torch.stack([m.biases[layer] for m in models]) for layer in range(depth + 1)]
            c = [torch.stack([m.unit_multiplicities(layer) for m in models]) for layer in range(depth)]
            self.fused = models[0].fits_relu_kernels
            if self.fused:  # relu_readout's operands, as MLP.forward passes them
                self.weight1_t = weights[0].transpose(1, 2).contiguous()
                self.outgoing = weights[1][:, 0] * c[0]
            # (K * n_1, n_0): the first layers side by side; (K, n_{l+1}, n_l) scaled by c_l after it.
            self.wide = weights[0].flatten(0, 1)
            self.later = [weights[layer + 1] * c[layer][:, None] for layer in range(depth)]

    @property
    def width(self) -> int:
        """Units in each model's widest hidden layer."""
        return max(b.shape[1] for b in self.biases[:-1])

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        models = len(self.biases[0])
        if self.fused and relu_kernels.applies(x):
            inputs = x.expand(models, *x.shape)
            readout = relu_kernels.relu_readout(inputs, self.weight1_t, self.biases[0], self.outgoing)
            return (readout + self.biases[1]).T[:, :, None]
        h = torch.addmm(self.biases[0].reshape(-1, 1), self.wide, x.T).relu_().view(models, -1, len(x))
        for layer, weight in enumerate(self.later):
            h = torch.baddbmm(self.biases[layer + 1][:, :, None], weight, h)
            if layer + 1 < len(self.later):
                h.relu_()
        return h.permute(2, 0, 1)


def _all_ones(values: torch.Tensor) -> bool:
    """Whether every value is 1 (read once per stack: the one host sync in building it)."""
    return bool((values == 1).all())


def batched_matmul(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """a @ b for (K, r, n) and (K, n, c), plus bias (K, c) on every row, in a fast orientation.

    On a CPU, torch.bmm is 3-10x slower when the product has fewer columns than rows, or when n is 1,
    than the same product computed as (b^T a^T)^T, or as a broadcast outer product (figures in
    docs/performance.md). Products with as many columns as rows take the same time either way.

    The result is stored (K, c, r) when c < r and (K, r, c) otherwise, whatever the path, so that a
    layer's activations and the gradient that comes back to them share one memory layout
    (elementwise operations on two layouts are much slower).
    """
    transposed = b.shape[2] < a.shape[1]
    if a.shape[2] == 1:
        shape = (a.shape[0], b.shape[2], a.shape[1]) if transposed else (a.shape[0], a.shape[1], b.shape[2])
        product = a.new_empty(shape)
        torch.mul(a, b, out=product.transpose(1, 2) if transposed else product)
        if bias is not None:
            product.add_(bias[:, :, None] if transposed else bias[:, None])
    elif transposed:
        at, bt = a.transpose(1, 2), b.transpose(1, 2)
        product = torch.bmm(bt, at) if bias is None else torch.baddbmm(bias[:, :, None], bt, at)
    else:
        return torch.bmm(a, b) if bias is None else torch.baddbmm(bias[:, None], a, b)
    return product.transpose(1, 2) if transposed else product


class _Layer(torch.autograd.Function):
    """One layer of K MLPs: h = x W^T + b, then (hidden layers) relu, then the multiplicities c.

    Forward and backward go through ``batched_matmul``; otherwise this is what autograd would
    compute for baddbmm, relu and the product with c (the same sums, in another orientation).
    """

    @staticmethod
    def forward(ctx, x, weight_t, bias, multiplicity, relu=True):
        h = batched_matmul(x, weight_t, bias)
        if relu:
            h.relu_()
        ctx.relu = relu
        ctx.save_for_backward(x, weight_t, h if relu else None, multiplicity)
        return h if multiplicity is None else h * multiplicity[:, None]

    @staticmethod
    def backward(ctx, grad):
        x, weight_t, h, multiplicity = ctx.saved_tensors
        if multiplicity is not None:
            grad = grad * multiplicity[:, None]
        if ctx.relu:
            grad = torch.ops.aten.threshold_backward(grad, h, 0)
        grad_x = batched_matmul(grad, weight_t.transpose(1, 2)) if ctx.needs_input_grad[0] else None
        return grad_x, batched_matmul(x.transpose(1, 2), grad), grad.sum(dim=1), None, None


class _OneHiddenLayer(torch.autograd.Function):
    """K MLPs with one hidden layer and one output, on inputs that need no gradient.

    y = (relu(z) * c) w2 + b2 with z = x W1^T + b1, so with mask = (z > 0) and v = c * w2:
    relu(z) = mask * z, and both passes need only the mask. Forward:
    y = sum_j x_j (mask (W1^T[j] v)^T) + mask (b1 v)^T + b2, one product of the mask with n_0 + 1
    columns. Backward: the output's gradient dy (one number per example) makes the hidden layer's
    gradient rank one, dz = mask * (dy v^T), so one product P = [x * dy, dy]^T mask gives
    dW1^T = P[:n_0] scaled by v, db1 = P[n_0] scaled by v, and the output weights' gradient
    h^T dy = sum_j W1^T[j] * P[j] + b1 * P[n_0]. Neither relu(z) nor dz is ever formed: five
    passes over the (K, B, width) activations in all (z, the mask in place, two products) where
    layer by layer takes eleven; the same sums in another order, bound by memory traffic rather
    than arithmetic.

    Where ``relu_kernels.applies`` (a CPU, at most MAX_INPUTS inputs) the forward pass is
    ``relu_readout`` and P comes from ``masked_products``, which recompute the mask from x and the
    weights: no pass over stored activations at all.
    """

    @staticmethod
    def forward(ctx, x, weight1_t, bias1, weight2_t, bias2, multiplicity):
        outgoing = weight2_t[:, :, 0] if multiplicity is None else weight2_t[:, :, 0] * multiplicity
        if relu_kernels.applies(x):  # z never stored: recomputed in the backward pass
            ctx.save_for_backward(x, None, weight1_t, bias1, outgoing, multiplicity)
            return relu_kernels.relu_readout(x, weight1_t, bias1, outgoing)[:, :, None] + bias2[:, None]
        mask = batched_matmul(x, weight1_t, bias1).gt_(0.0)  # z, then 1.0 where z > 0, in place
        folded = torch.cat([weight1_t * outgoing[:, None], (bias1 * outgoing)[:, None]], dim=1)  # (K, n_0 + 1, width)
        through_mask = batched_matmul(mask, folded.transpose(1, 2))  # (K, B, n_0 + 1)
        ctx.save_for_backward(x, mask, weight1_t, bias1, outgoing, multiplicity)
        return (through_mask[:, :, :-1] * x).sum(dim=2, keepdim=True) + through_mask[:, :, -1:] + bias2[:, None]

    @staticmethod
    def backward(ctx, grad):
        x, mask, weight1_t, bias1, outgoing, multiplicity = ctx.saved_tensors
        per_example = torch.cat([x * grad, grad], dim=2)  # (K, B, n_0 + 1)
        if mask is None:
            through_mask = relu_kernels.masked_products(x, weight1_t, bias1, per_example)  # (K, n_0 + 1, width)
        else:
            through_mask = torch.bmm(per_example.transpose(1, 2), mask)
        grad_weight2 = (weight1_t * through_mask[:, :-1]).sum(dim=1) + bias1 * through_mask[:, -1]  # h^T dy
        if multiplicity is not None:
            grad_weight2 = grad_weight2 * multiplicity
        through_mask *= outgoing[:, None]
        return (None, through_mask[:, :-1], through_mask[:, -1], grad_weight2[:, :, None], grad.sum(dim=1), None)
