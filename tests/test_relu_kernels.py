"""The fused one-hidden-layer kernels (harness/models/relu_kernels.py) against numpy sums."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.models import init_mlp, relu_kernels


def problem(models: int, rows: int, inputs: int, width: int, dtype=torch.float64, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)

    def draw(*shape):
        return torch.randn(*shape, dtype=dtype, generator=generator)

    return draw(models, rows, inputs), draw(models, inputs, width), draw(models, width), draw(models, width)


def numpy_preactivations(x, weight1_t, bias1) -> np.ndarray:
    x, w, b = (t.double().numpy() for t in (x, weight1_t, bias1))
    return np.einsum("kbi,kij->kbj", x, w) + b[:, None, :]


# 13 and 1003 neurons: vectorised loops with a remainder; odd and even rows (taken in pairs); 1 to
# MAX_INPUTS input coordinates.
SHAPES = [(1, 5, 1, 13), (3, 17, 2, 1003), (2, 10, 3, 40), (2, 33, relu_kernels.MAX_INPUTS, 64)]


@pytest.mark.parametrize("models, rows, inputs, width", SHAPES)
def test_relu_readout_is_the_sum_of_relu_times_outgoing(models, rows, inputs, width):
    x, weight1_t, bias1, outgoing = problem(models, rows, inputs, width)
    z = numpy_preactivations(x, weight1_t, bias1)
    expected = np.einsum("kbj,kj->kb", np.maximum(z, 0.0), outgoing.numpy())
    np.testing.assert_allclose(
        relu_kernels.relu_readout(x, weight1_t, bias1, outgoing).numpy(), expected, rtol=1e-12, atol=1e-12
    )


@pytest.mark.parametrize("models, rows, inputs, width", SHAPES)
def test_masked_products_sum_each_column_over_the_active_rows(models, rows, inputs, width):
    x, weight1_t, bias1, _ = problem(models, rows, inputs, width)
    per_example = torch.randn(models, rows, inputs + 1, dtype=torch.float64)
    mask = numpy_preactivations(x, weight1_t, bias1) > 0
    expected = np.einsum("kbc,kbj->kcj", per_example.numpy(), mask)
    got = relu_kernels.masked_products(x, weight1_t, bias1, per_example).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_strided_views_give_what_contiguous_copies_give():
    """Stacked parameters are strided views of one flat tensor; the kernels see their values."""
    x, weight1_t, bias1, outgoing = problem(4, 20, 2, 30)
    flat = torch.cat([weight1_t.reshape(4, -1), bias1, outgoing], dim=1)
    views = flat[:, :60].view(4, 2, 30), flat[:, 60:90], flat[:, 90:]
    assert not views[0].is_contiguous()
    np.testing.assert_array_equal(
        relu_kernels.relu_readout(x, *views).numpy(), relu_kernels.relu_readout(x, weight1_t, bias1, outgoing).numpy()
    )
    per_example = torch.randn(4, 20, 3, dtype=torch.float64)[:, :, [2, 0, 1]]  # not contiguous either
    np.testing.assert_array_equal(
        relu_kernels.masked_products(x, *views[:2], per_example).numpy(),
        relu_kernels.masked_products(x, weight1_t, bias1, per_example.contiguous()).numpy(),
    )


def test_float32_matches_the_float64_sums_to_float32_rounding():
    x, weight1_t, bias1, outgoing = problem(2, 64, 2, 1000, dtype=torch.float32)
    z = numpy_preactivations(x, weight1_t, bias1)
    expected = np.einsum("kbj,kj->kb", np.maximum(z, 0.0), outgoing.double().numpy())
    scale = np.einsum("kbj,kj->kb", np.abs(z), np.abs(outgoing.double().numpy()))  # the sum's magnitude
    got = relu_kernels.relu_readout(x, weight1_t, bias1, outgoing).double().numpy()
    assert np.all(np.abs(got - expected) <= 1e-5 * scale)


def test_a_nan_parameter_makes_its_model_nan_and_leaves_the_others_alone():
    """Divergence detection sees NaN in a model's output: the relu must not turn NaN into 0."""
    x, weight1_t, bias1, outgoing = problem(3, 8, 2, 20)
    clean = relu_kernels.relu_readout(x, weight1_t, bias1, outgoing)
    bias1[1, 5] = float("nan")
    out = relu_kernels.relu_readout(x, weight1_t, bias1, outgoing)
    assert torch.isnan(out[1]).all()
    torch.testing.assert_close(out[[0, 2]], clean[[0, 2]], rtol=0, atol=0)


def test_applies_to_a_few_float_inputs_on_a_cpu_only():
    assert relu_kernels.applies(torch.zeros(3, relu_kernels.MAX_INPUTS))
    assert not relu_kernels.applies(torch.zeros(3, relu_kernels.MAX_INPUTS + 1))
    assert not relu_kernels.applies(torch.zeros(3, 2, dtype=torch.float16))
    assert not relu_kernels.applies(torch.zeros(3, 2, device="meta"))


@pytest.mark.parametrize("sizes", [[2, 50, 1], [3, 7, 1]])
def test_mlp_evaluation_through_the_kernel_is_the_layer_by_layer_forward(sizes):
    """Without autograd a one-hidden-layer MLP evaluates through relu_readout, multiplicities
    included; with autograd it runs layer by layer (the reference here)."""
    model = init_mlp(sizes, seed=1).select_units(0, np.arange(sizes[1]), np.linspace(0.5, 2.0, sizes[1]))
    x = torch.randn(300, sizes[0], dtype=torch.float64)
    layer_by_layer = model(x).detach()
    with torch.no_grad():
        assert model._fused_evaluation(x)
        torch.testing.assert_close(model(x), layer_by_layer, rtol=1e-12, atol=1e-12)


def test_mismatched_operands_are_refused_not_read_past():
    """The compiled loops have no bounds checks: a wrong shape must fail before them."""
    x, weight1_t, bias1, outgoing = problem(2, 8, 2, 20)
    with pytest.raises(ValueError, match=r"weight1_t has shape \(2, 3, 20\); expected \(2, 2, 20\)"):
        relu_kernels.relu_readout(x, torch.randn(2, 3, 20, dtype=torch.float64), bias1, outgoing)
    with pytest.raises(ValueError, match=r"outgoing has shape \(2, 19\)"):
        relu_kernels.relu_readout(x, weight1_t, bias1, outgoing[:, :19])
    with pytest.raises(ValueError, match=r"per_example has shape \(2, 8, 2\); expected \(2, 8, 3\)"):
        relu_kernels.masked_products(x, weight1_t, bias1, torch.randn(2, 8, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="bias1 is torch.float32"):
        relu_kernels.relu_readout(x, weight1_t, bias1.float(), outgoing)


def test_an_mlp_given_inputs_of_the_wrong_width_raises_torchs_error():
    model = init_mlp([2, 50, 1], seed=0)
    with torch.no_grad(), pytest.raises(RuntimeError, match="cannot be multiplied"):
        model(torch.randn(10, 3, dtype=torch.float64))
