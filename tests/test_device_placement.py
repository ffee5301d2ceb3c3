"""Device placement without a GPU: the training and compression code run on CUDA tensors faked
by torch's FakeTensorMode (shapes, dtypes and devices, no values), and every output and state
tensor must be on the CUDA device; a stray CPU tensor (made without ``device=``) fails the test
or makes torch refuse the mixed-device operation.

FakeTensorMode has no values, so the two reads of a value these paths make are given: whether a
stack's multiplicities are all ones (both answers run), and the autograd engine, which on a
CPU-only build cannot run a CUDA backward pass, is replaced by calling each stacked layer's
``backward`` directly.
"""

import math
from types import SimpleNamespace

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from harness.compression.basis import product_features, to_box
from harness.compression.recombination import group_moments
from harness.config import TrainConfig
from harness.models import MLP
from harness.train import losses, stacked
from harness.train.stacked import StackedMLP, _Layer, _OneHiddenLayer
from harness.train.stacked_optim import RULES, StackedOptimizer

CUDA = torch.device("cuda", 0)


@pytest.fixture
def fake_cuda():
    with FakeTensorMode(allow_non_fake_inputs=True):
        yield


def on_cuda(*tensors) -> bool:
    return all(t is None or t.device == CUDA for t in tensors)


def cuda_mlp(sizes, dtype=torch.float32) -> MLP:
    pairs = list(zip(sizes[:-1], sizes[1:]))
    weights = [torch.randn(fan_out, fan_in, dtype=dtype, device=CUDA) for fan_in, fan_out in pairs]
    return MLP(weights, [torch.randn(fan_out, dtype=dtype, device=CUDA) for _, fan_out in pairs])


class Context:
    """What autograd hands a Function: the tensors it saved and which inputs need a gradient."""

    def __init__(self, inputs: int) -> None:
        self.needs_input_grad = (True,) * inputs

    def save_for_backward(self, *tensors) -> None:
        self.saved_tensors = tensors


def test_the_fake_tensors_are_cuda_tensors_on_this_machine(fake_cuda):
    x = torch.empty(3, 4, device="cuda")
    assert x.device == CUDA and x.is_cuda and (x @ x.T).device == CUDA


def test_mlp_forward_and_predict_stay_on_the_device(fake_cuda, monkeypatch):
    model = cuda_mlp([3, 16, 16, 2])
    assert on_cuda(*model.parameters(), *model.buffers())
    x = torch.randn(1000, 3, device=CUDA)
    calls = []
    forward = model.forward
    monkeypatch.setattr(model, "forward", lambda rows: calls.append(len(rows)) or forward(rows))
    out = losses.predict(model, x, chunk_rows=4)
    assert out.shape == (1000, 2) and on_cuda(out)
    # chunks scaled for the device: 4 x GPU_CHUNK_SCALE rows each
    assert calls[0] == 4 * losses.GPU_CHUNK_SCALE and len(calls) == math.ceil(1000 / calls[0])


@pytest.mark.parametrize("sizes", [[3, 8, 8, 2], [2, 8, 1]])
def test_models_predicted_together_stay_on_the_device(fake_cuda, monkeypatch, sizes):
    """Three same-shape MLPs as one stack (in chunks scaled for the device) and a wider one alone."""
    models = [cuda_mlp(sizes) for _ in range(3)] + [cuda_mlp([sizes[0], 24, *sizes[2:]])]
    x = torch.randn(1000, sizes[0], device=CUDA)
    calls = []
    call = stacked.EvaluationStack.__call__
    monkeypatch.setattr(
        stacked.EvaluationStack, "__call__", lambda self, rows: calls.append(len(rows)) or call(self, rows)
    )
    outputs = losses.predict_together(models, x, chunk_rows=4)
    assert [out.shape for out in outputs] == [(1000, sizes[-1])] * 4 and on_cuda(*outputs)
    # the stack's chunks: 4 x 24 // (3 x 8) rows, times GPU_CHUNK_SCALE on the device
    assert calls[0] == 4 * losses.GPU_CHUNK_SCALE and len(calls) == math.ceil(1000 / calls[0])


@pytest.mark.parametrize("all_ones", [True, False])
@pytest.mark.parametrize("sizes", [[3, 8, 8, 2], [2, 8, 1]])
def test_stacked_layers_forward_backward_and_gradients_stay_on_the_device(fake_cuda, monkeypatch, all_ones, sizes):
    monkeypatch.setattr(stacked, "_all_ones", lambda values: all_ones)
    models = [cuda_mlp(sizes) for _ in range(3)]
    stack = StackedMLP.of(models)
    stack.bind(models)
    assert on_cuda(stack.flat, stack.flat.grad, *stack.parameters, *stack.multiplicities)
    assert on_cuda(*(p for model in models for p in model.parameters()))
    x = torch.randn(3, 5, sizes[0], device=CUDA)
    assert on_cuda(stack.forward(x))
    scaled = [None if all_ones else c for c in stack.multiplicities]
    if len(sizes) == 3:  # one hidden layer, one output: the mask-only path
        ctx = Context(6)
        args = (x, stack.weights_t[0], stack.biases[0], stack.weights_t[1], stack.biases[1], scaled[0])
        out = _OneHiddenLayer.forward(ctx, *args)
        grads = _OneHiddenLayer.backward(ctx, torch.ones_like(out))
    else:
        ctx = Context(5)
        out = _Layer.forward(ctx, x, stack.weights_t[0], stack.biases[0], scaled[0])
        grads = _Layer.backward(ctx, torch.ones_like(out))
    assert on_cuda(out, *grads)
    for parameter in stack.parameters:
        parameter.grad = torch.ones_like(parameter)
    stack.divide_gradients()
    stack.gather_grad()
    assert on_cuda(stack.flat.grad)
    kept = stack.keep(torch.tensor([0, 2], device=CUDA))
    assert on_cuda(kept.flat, *kept.parameters, *kept.multiplicities)


@pytest.mark.parametrize("optimizer", sorted(RULES))
def test_every_stacked_optimizer_rule_keeps_parameters_and_state_on_the_device(fake_cuda, optimizer):
    flat = torch.randn(4, 30, device=CUDA)
    flat.grad = torch.randn_like(flat)
    train = TrainConfig(optimizer=optimizer.lower(), momentum=0.5 if optimizer in ("SGD", "RMSprop") else 0.0)
    rule = StackedOptimizer([flat], train)
    for _ in range(2):
        rule.step(torch.full((4,), 1e-3, dtype=torch.float64, device=CUDA))
    assert on_cuda(flat, flat.grad, *rule.state[0].values())
    rule.keep(torch.tensor([1, 3], device=CUDA), [flat[[1, 3]]])
    assert on_cuda(*rule.state[0].values())


def test_compression_features_stay_on_the_device(fake_cuda):
    x = torch.rand(50, 3, dtype=torch.float64, device=CUDA)
    unit = to_box(x)
    features = product_features(unit, 4)
    assert on_cuda(unit, features) and features.shape == (50, math.comb(3 + 4, 4))
    live = torch.arange(50, device=CUDA)
    weights = torch.rand(50, dtype=torch.float64, device=CUDA)
    moments = group_moments(unit, weights, live, live % 5, 5, 4)
    assert on_cuda(moments) and moments.shape == (5, features.shape[1])
    assert on_cuda(product_features(torch.rand(2, 7, 2, dtype=torch.float64, device=CUDA), 3, basis="monomial"))


def test_the_memory_guard_holds_a_cuda_reduction_to_the_gpus_memory(monkeypatch):
    from harness.compression import validate

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: SimpleNamespace(total_memory=2**30))
    need = validate._reduction_bytes(200_000, 6, 4)
    assert (
        2**29
        < need
        < validate.MEMORY_SHARE * validate.os.sysconf("SC_PAGE_SIZE") * validate.os.sysconf("SC_PHYS_PAGES")
    )
    validate.check_memory(200_000, 6, 4, device=torch.device("cpu"))  # fits this machine's memory
    with pytest.raises(ValueError, match=r"reducing 200,000 points .* more than 50% of cuda:0's 1.0 GiB; use k <= 3"):
        validate.check_memory(200_000, 6, 4, device=CUDA)
