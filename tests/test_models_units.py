"""Models with unit multiplicities: forward passes against numpy, and gradient division against
its definition: a weighted network must train exactly like the network it stands for, in which
unit j is repeated c_j times."""

import numpy as np
import pytest
import torch

from harness.config import TrainConfig
from harness.models import HeadsAttention, init_attention, init_mlp
from harness.models.mlp import MLP
from harness.train import Arm, BatchSampler, squared_error, train_side_by_side


def relu(z):
    return np.maximum(z, 0.0)


def test_mlp_forward_is_the_weighted_sum_of_neurons():
    net = init_mlp([3, 7, 2], seed=1)
    c = np.array([1.0, 2.5, 0.5, 3.0, 1.0, 0.25, 4.0])
    net = net.select_units(0, np.arange(7), c)
    x = np.random.default_rng(0).normal(size=(5, 3))
    w1, b1 = net.weights[0].detach().numpy(), net.biases[0].detach().numpy()
    w2, b2 = net.weights[1].detach().numpy(), net.biases[1].detach().numpy()
    expected = (c * relu(x @ w1.T + b1)) @ w2.T + b2
    np.testing.assert_allclose(net(torch.as_tensor(x)).detach().numpy(), expected, rtol=1e-12)


@pytest.mark.parametrize("grad", [True, False], ids=["autograd", "no_grad"])
def test_deep_mlp_scales_each_layers_outgoing_columns_by_its_multiplicities(grad):
    """Both forward paths (without autograd the multiplicities are applied in place)."""
    net = init_mlp([2, 4, 3, 1], seed=2)
    c1, c2 = np.array([1.0, 2.0, 3.0, 0.5]), np.array([2.0, 1.0, 4.0])
    net = net.select_units(0, np.arange(4), c1).select_units(1, np.arange(3), c2)
    x = np.random.default_rng(1).normal(size=(6, 2))
    w = [p.detach().numpy() for p in net.weights]
    b = [p.detach().numpy() for p in net.biases]
    h1 = c1 * relu(x @ w[0].T + b[0])
    h2 = c2 * relu(h1 @ w[1].T + b[1])
    with torch.set_grad_enabled(grad):
        output = net(torch.as_tensor(x))
    np.testing.assert_allclose(output.detach().numpy(), h2 @ w[2].T + b[2], rtol=1e-12)
    np.testing.assert_array_equal(net.unit_multiplicities(0).numpy(), c1)  # buffers untouched
    np.testing.assert_array_equal(net.unit_multiplicities(1).numpy(), c2)


def test_init_is_pytorch_default_rule_and_independent_of_the_global_seed():
    torch.manual_seed(0)
    a = init_mlp([4, 50, 1], seed=7)
    torch.manual_seed(123)
    b = init_mlp([4, 50, 1], seed=7)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    assert a.weights[0].abs().max() <= 0.5 and a.weights[0].abs().max() > 0.45  # 1/sqrt(4)
    assert a.weights[1].abs().max() <= 1 / np.sqrt(50)
    c = init_mlp([4, 50, 1], seed=7, init="uniform", init_range=1.0)
    assert c.weights[1].abs().max() > 0.9
    assert not torch.equal(init_mlp([4, 50, 1], seed=8).weights[0], a.weights[0])


def test_unit_objects_and_select_units_agree():
    net = init_mlp([2, 10, 1], seed=0)
    objects = net.unit_objects(0)
    assert objects.shape == (10, 4)  # (w1, w2, b, v): m = 4 for 2-D input and scalar output
    rows = np.array([1, 4, 9])
    small = net.select_units(0, rows, np.array([2.0, 3.0, 5.0]))
    np.testing.assert_array_equal(small.unit_objects(0), objects[rows])
    np.testing.assert_array_equal(small.unit_multiplicities(0).numpy(), [2.0, 3.0, 5.0])
    magnitudes = net.unit_magnitudes(0)
    np.testing.assert_allclose(magnitudes, np.abs(objects[:, 3]) * np.linalg.norm(objects[:, :2], axis=1))


def _attention_reference(tokens, layer: HeadsAttention):
    """Full causal multi-head attention over every position in numpy; the output at the last one."""
    q, k, v, o = (p.detach().numpy() for p in (layer.query, layer.key, layer.value, layer.output))
    c, bias = layer.multiplicity.numpy(), layer.bias.detach().numpy()
    x = tokens[..., None]  # (B, T, 1)
    T = x.shape[1]
    Q = np.einsum("bte,hde->bhtd", x, q)
    K = np.einsum("bte,hde->bhtd", x, k)
    V = np.einsum("bte,hde->bhtd", x, v)
    scores = np.einsum("bhsd,bhtd->bhst", Q, K) / np.sqrt(q.shape[1])
    scores = np.where(np.tril(np.ones((T, T), dtype=bool)), scores, -np.inf)
    weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
    weights /= weights.sum(axis=-1, keepdims=True)
    heads = np.einsum("bhst,bhtd->bhsd", weights, V)
    out = np.einsum("bhsd,hod,h->bso", heads, o, c) + bias
    return out[:, -1]


def test_attention_equals_a_causal_layer_read_at_the_last_position():
    layer = init_attention(6, 2, seed=3)
    layer = layer.select_units(0, np.arange(6), np.array([1.0, 2.0, 0.5, 3.0, 1.0, 1.5]))
    tokens = np.random.default_rng(0).normal(size=(4, 9))
    np.testing.assert_allclose(
        layer(torch.as_tensor(tokens)).detach().numpy(), _attention_reference(tokens, layer), rtol=1e-10
    )
    assert layer.unit_objects().shape == (6, 8)  # m = 8: Q, K, V (2x1 each) and O (1x2)


# ---- gradient division: the weighted network trains exactly like its expanded original ----


def _expand_mlp(net: MLP, counts: list[np.ndarray]) -> MLP:
    """The unweighted network that ``net`` stands for: neuron j of layer l repeated counts[l][j] times."""
    weights = [w.detach().clone() for w in net.weights]
    biases = [b.detach().clone() for b in net.biases]
    for layer, count in enumerate(counts):
        repeat = torch.as_tensor(count)
        weights[layer] = weights[layer].repeat_interleave(repeat, dim=0)
        biases[layer] = biases[layer].repeat_interleave(repeat)
        weights[layer + 1] = weights[layer + 1].repeat_interleave(repeat, dim=1)
    return MLP(weights, biases)


def _train_pair(weighted, expanded, optimizer, divide, x, y, steps=25, batch_size=None):
    train = TrainConfig(
        optimizer=optimizer,
        lr=0.05 if optimizer == "gd" else 0.01,
        steps=steps,
        eval_every=1,
        dtype="float64",
        batch_size=batch_size,
        divide_gradients=divide,
    )
    sampler = BatchSampler(np.ones(len(x)), batch_size, "proportional", seed=0)
    arms = [Arm("weighted", weighted, x, y, sampler), Arm("expanded", expanded, x, y, sampler)]

    def evaluate(live):
        with torch.no_grad():
            return {
                arm.name: {"train_loss": float(squared_error(arm.model(x), y).mean()), "test_loss": 0.0} for arm in live
            }

    train_side_by_side(arms, train, steps, squared_error, evaluate, epoch_size=len(x))
    return [np.array([r["train_loss"] for r in arm.history]) for arm in arms]


@pytest.mark.parametrize("optimizer", ["gd", "adamw", "rmsprop"])
@pytest.mark.parametrize("hidden", [[6], [5, 4]])
def test_weighted_mlp_trains_like_the_network_with_repeated_neurons(optimizer, hidden):
    rng = np.random.default_rng(0)
    counts = [rng.integers(1, 5, size=h) for h in hidden]
    weighted = init_mlp([2, *hidden, 1], seed=4)
    for layer, count in enumerate(counts):
        weighted = weighted.select_units(layer, np.arange(hidden[layer]), count.astype(float))
    expanded = _expand_mlp(weighted, counts)
    x = torch.as_tensor(rng.uniform(-1, 1, (64, 2)))
    y = torch.sin(3 * x[:, :1]) + x[:, 1:] ** 2
    loss_weighted, loss_expanded = _train_pair(weighted, expanded, optimizer, True, x, y, batch_size=16)
    assert loss_weighted[-1] < 0.9 * loss_weighted[0]  # it did train
    np.testing.assert_allclose(loss_weighted, loss_expanded, rtol=1e-10)
    # each kept neuron ended exactly where each of its copies did
    np.testing.assert_allclose(
        expanded.weights[0].detach().numpy(),
        np.repeat(weighted.weights[0].detach().numpy(), counts[0], axis=0),
        rtol=1e-9,
        atol=1e-12,
    )


def test_without_division_the_weighted_mlp_leaves_its_expanded_original():
    rng = np.random.default_rng(1)
    counts = [rng.integers(2, 6, size=6)]
    weighted = init_mlp([2, 6, 1], seed=5).select_units(0, np.arange(6), counts[0].astype(float))
    expanded = _expand_mlp(weighted, counts)
    x = torch.as_tensor(rng.uniform(-1, 1, (64, 2)))
    y = torch.sin(3 * x[:, :1])
    loss_weighted, loss_expanded = _train_pair(weighted, expanded, "gd", False, x, y)
    assert np.max(np.abs(loss_weighted - loss_expanded) / loss_expanded) > 0.05


def test_weighted_attention_trains_like_the_layer_with_repeated_heads():
    rng = np.random.default_rng(2)
    counts = rng.integers(1, 4, size=5)
    weighted = init_attention(5, 2, seed=6).select_units(0, np.arange(5), counts.astype(float))
    repeat = torch.as_tensor(counts)
    maps = [
        p.detach().repeat_interleave(repeat, dim=0)
        for p in (weighted.query, weighted.key, weighted.value, weighted.output)
    ]
    expanded = HeadsAttention(*maps, weighted.bias.detach().clone())
    x = torch.as_tensor(rng.uniform(-1, 1, (32, 7)))
    y = x.mean(dim=1, keepdim=True)
    loss_weighted, loss_expanded = _train_pair(weighted, expanded, "adam", True, x, y)
    assert loss_weighted[-1] < loss_weighted[0]
    np.testing.assert_allclose(loss_weighted, loss_expanded, rtol=1e-10)
