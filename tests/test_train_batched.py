"""Batched training (harness/train/batched.py) against its truth, the one-at-a-time loop.

Every comparison runs the same configurations twice: each alone through ``run_arms`` (the loop of
harness/train/loop.py with torch.optim), and all together through ``run_together`` (stacked MLPs,
vectorised optimizers), then holds every number of every record at every logged step to 1e-10.
Evaluation of a run's arms together (``predict_together``, stacks of same-shape MLPs) is held
likewise against evaluating each arm by itself.
"""

from __future__ import annotations

import functools
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from harness.config import OPTIMIZERS, Config, TrainConfig, parse_config, run_id
from harness.config.identity import canonical
from harness.config.sweep_spec import expand_sweep
from harness.experiments import data as data_experiment
from harness.experiments import units
from harness.experiments.runner import run_arms, run_config, run_configs
from harness.experiments.units import compress_units
from harness.models import init_mlp, relu_kernels
from harness.sweep.batching import batch_key, claim_compatible
from harness.sweep.execute import job_id
from harness.sweep.launch import jobs
from harness.sweep.options import SweepOptions
from harness.sweep.queue import RunQueue
from harness.sweep.worker import work
from harness.train import batched, predict, predict_together, run_together, stacked
from harness.train.optim import make_optimizer
from harness.train.stacked_optim import StackedOptimizer

# Where the configurations run: the CPU, or a GPU when bench/gpu_check.py runs these tests there.
DEVICE = os.environ.get("POLYSCALE_TEST_DEVICE", "cpu")
FLOAT64_TOLERANCE = 1e-10
# float32, 40 steps, every optimizer, both experiments: the losses of the two paths differed by at
# most 6.3e-7 relative (rounding, ~6e-8 per operation, grown by training); differences of losses
# (train_gap, test_gap) by up to 3.4e-5 relative, as a difference of near-equal numbers must.
FLOAT32_TOLERANCE = 1e-5
LOSSES = ("train_loss", "test_loss", "full_train_loss")


def config(
    experiment: str = "data",
    optimizer: str = "adamw",
    lr: float = 0.01,
    seed: int = 0,
    *,
    dtype: str = "float64",
    task: dict | None = None,
    **train,
) -> Config:
    """Small configurations: a teacher task (data) or a harmonic one with 40 neurons -> 15 (width)."""
    if optimizer != "gd":
        train.setdefault("batch_size", 32)
    raw = {
        "experiment": experiment,
        "seed": seed,
        "device": DEVICE,
        "train": {"optimizer": optimizer, "lr": lr, "steps": 40, "eval_every": 10, "dtype": dtype, **train},
    }
    if experiment == "data":
        raw.update(
            task={"name": "teacher", "n_train": 200, "n_test": 100},
            model={"width": 8},
            compression={"k": 2, "size": 30},
        )
    else:
        raw.update(
            task={"name": "harmonic", "n_train": 200, "n_test": 100, "order": 2, "frequency": 3.0},
            model={"width": 40},
            compression={"k": 2, "size": 15},
        )
    if task:
        raw["task"].update(task)
    return parse_config(raw)


@pytest.fixture(autouse=True)
def quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # compression size warnings of the tiny configurations
        yield


@pytest.fixture
def stack_sizes(monkeypatch) -> list[int]:
    """The number of models in every stack built (so a test knows batching really happened)."""
    sizes = []
    original = stacked.StackedMLP.of.__func__

    def spy(cls, models):
        sizes.append(len(models))
        return original(cls, models)

    monkeypatch.setattr(stacked.StackedMLP, "of", classmethod(spy))
    return sizes


def solo_and_together(configs: list[Config]):
    solo = [run_arms(c) for c in configs]
    together = run_together([functools.partial(run_arms, c) for c in configs])
    for result in together:
        assert not isinstance(result, BaseException), result
    return solo, together


def largest_difference(solo: dict, together: dict, keys: tuple[str, ...] | None = None) -> float:
    """The largest relative difference of any number (of ``keys``) in any record; identical keys
    and statuses."""
    worst = 0.0
    assert solo.keys() == together.keys()
    for arm in solo:
        a, b = solo[arm], together[arm]
        assert a.status == b.status and len(a.metrics) == len(b.metrics) and a.summary.keys() == b.summary.keys()
        for ra, rb in zip(a.metrics, b.metrics):
            assert ra.keys() == rb.keys()
            for key, value in ra.items():
                if keys is not None and key not in keys:
                    continue
                if isinstance(value, float):
                    worst = max(worst, abs(value - rb[key]) / max(abs(value), 1e-300))
                else:
                    assert value == rb[key], (arm, key)
    return worst


@pytest.mark.parametrize(
    "sizes, rows",
    [
        ([1, 30, 1], 20),  # a contraction of 1 (the input layer) and a single output
        ([2, 40, 1], 16),  # one hidden layer, one output: the first layer's gradients through the mask
        ([3, 8, 1], 50),  # the same with fewer units than rows
        ([3, 8, 8, 4], 50),  # fewer units than rows: products computed transposed
        ([5, 60, 40, 1], 12),  # more units than rows
        ([2, 16, 3], 16),  # as many as rows
    ],
)
@pytest.mark.parametrize("fused", [True, False], ids=["fused kernels", "torch passes"])
def test_stacked_forward_and_gradients_match_each_mlp(sizes, rows, fused, monkeypatch):
    """Every orientation of batched_matmul, and the one-hidden-layer pass through the fused CPU
    kernels and through torch (as on a GPU): outputs and every parameter's gradient of three stacked
    MLPs (one with multiplicities) against each MLP's own autograd, in float64."""
    if not fused:
        monkeypatch.setattr(relu_kernels, "applies", lambda x: False)
    models = [init_mlp(sizes, seed=seed) for seed in range(3)]
    models[1] = models[1].select_units(0, np.arange(sizes[1]), np.linspace(0.5, 3.0, sizes[1]))
    stack = stacked.StackedMLP.of(models)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(3, rows, sizes[0], dtype=torch.float64, generator=generator)
    upstream = torch.randn(3, rows, sizes[-1], dtype=torch.float64, generator=generator)
    out = stack.forward(x)
    (out * upstream).sum().backward()
    for k, model in enumerate(models):
        expected = model(x[k])
        (expected * upstream[k]).sum().backward()
        torch.testing.assert_close(out[k], expected, rtol=1e-12, atol=1e-12)
        for layer in range(model.depth + 1):
            torch.testing.assert_close(
                stack.weights_t[layer].grad[k], model.weights[layer].grad.T, rtol=1e-12, atol=1e-12
            )
            torch.testing.assert_close(stack.biases[layer].grad[k], model.biases[layer].grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("sizes", [[1, 30, 1], [2, 40, 1], [3, 8, 1], [3, 8, 8, 4], [5, 60, 40, 1], [2, 16, 3]])
@pytest.mark.parametrize("fused", [True, False], ids=["fused kernels", "torch passes"])
def test_an_evaluation_stack_gives_each_mlps_outputs_and_keeps_nan_to_its_own(sizes, fused, monkeypatch):
    """Three MLPs (one with multiplicities, one with NaN weights, as a diverged arm has) evaluated
    as a stack on shared inputs: the others' outputs are each MLP's own forward pass without
    autograd, bit for bit through the fused kernels, to rounding through torch's passes."""
    if not fused:
        monkeypatch.setattr(relu_kernels, "applies", lambda x: False)
    models = [init_mlp(sizes, seed=seed) for seed in range(3)]
    models[1] = models[1].select_units(0, np.arange(sizes[1]), np.linspace(0.5, 3.0, sizes[1]))
    with torch.no_grad():
        models[2].weights[0][0, 0] = float("nan")
    x = torch.randn(50, sizes[0], dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = stacked.EvaluationStack(models)(x)
        expected = [model(x) for model in models]
    assert out.shape == (50, 3, sizes[-1])
    tolerance = 0.0 if fused and models[0].fits_relu_kernels else 1e-12
    for k in (0, 1):
        torch.testing.assert_close(out[:, k], expected[k], rtol=tolerance, atol=tolerance)
    assert out[:, :2].isfinite().all() and out[:, 2].isnan().any()


@pytest.mark.parametrize("fused", [True, False], ids=["fused kernels", "torch passes"])
def test_predict_together_is_predict_of_each_model(fused, monkeypatch):
    """Models of three shapes and one that is no MLP: same-shape MLPs stacked, each stack in chunks
    holding as many activations as the widest model's (chunk_rows * 40 // (K w) rows), or of
    chunk_rows through the fused kernels (which hold none)."""
    if not fused:
        monkeypatch.setattr(relu_kernels, "applies", lambda x: False)
    models = [init_mlp([2, 40, 1], seed=0), init_mlp([2, 40, 1], seed=1), init_mlp([2, 7, 1], seed=2)]
    models += [init_mlp([2, 15, 1], seed=seed) for seed in (3, 4, 5)] + [torch.nn.Linear(2, 1).double()]
    models[4] = models[4].select_units(0, np.arange(15), np.linspace(0.5, 3.0, 15))
    chunks = []
    call = stacked.EvaluationStack.__call__
    monkeypatch.setattr(stacked.EvaluationStack, "__call__", lambda self, x: chunks.append(len(x)) or call(self, x))
    x = torch.randn(77, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    outputs = predict_together(models, x, chunk_rows=10)
    # two stacks (2 x width 40: 5 rows a chunk; 3 x width 15: 8 rows), the others alone
    assert chunks == ([10] * 7 + [7]) * 2 if fused else [5] * 15 + [2] + [8] * 9 + [5]
    for model, out in zip(models, outputs):
        expected = predict(model, x, 10)
        torch.testing.assert_close(out, expected, rtol=0.0 if fused else 1e-12, atol=0.0 if fused else 1e-12)


def per_arm(models, x, chunk_rows):
    """Evaluation arm by arm, the reference of ``predict_together``."""
    return [predict(model, x, chunk_rows) for model in models]


# Records that are differences of near-equal losses, or of outputs: compared absolutely. Through
# torch's passes in float32 the records of the two evaluations differed by at most 2.6e-8 relative
# (losses) and 1.2e-7 absolute (gaps, output differences): the tests allow 1e-6.
DIFFERENCES = ("train_gap", "test_gap", "max_output_diff")


@pytest.mark.parametrize(
    "experiment, changes, fused, stack",
    [
        # regression: the original (width 40) alone, the 4 compressed arms (width 15) as one stack
        ("width", {}, True, 4),
        ("width", {}, False, 4),
        # layer by layer; equal widths have too many moments to compress: all 5 arms in a stack
        ("width", {"model": {"depth": 2}}, False, 5),
        (  # classification on 64 inputs: m = 64 + 1 + 10, N(m, 1) = 76 of 100 neurons
            "width",
            {
                "task": {"name": "digits", "n_train": 200, "n_test": 100},
                "model": {"width": 100},
                "compression": {"k": 1, "size": 80},
            },
            False,
            4,
        ),
        ("data", {}, True, 4),  # 4 arms of one shape: the test and full training sets in one stack
        ("data", {}, False, 4),
    ],
    ids=["width fused", "width torch passes", "deep width", "digits width", "data fused", "data torch passes"],
)
@pytest.mark.parametrize("lockstep", [False, True], ids=["loop", "lockstep"])
def test_evaluations_of_arms_together_are_reproduced_arm_by_arm(
    experiment, changes, fused, stack, lockstep, monkeypatch
):
    """float32 runs of every arm, in the loop and in a lockstep, evaluated arm by arm and together:
    the same records, bit for bit through the fused CPU kernels, to float32 rounding through torch's
    passes (the GPU's)."""
    if not fused:
        monkeypatch.setattr(relu_kernels, "applies", lambda x: False)
    raw = {**canonical(config(experiment, "sgd", 0.05, dtype="float32")), "device": DEVICE}
    for section, values in changes.items():
        raw[section] = values if section == "task" else {**raw[section], **values}
    configuration = parse_config(raw)
    stacks = []
    init = stacked.EvaluationStack.__init__
    monkeypatch.setattr(
        stacked.EvaluationStack, "__init__", lambda self, models: stacks.append(len(models)) or init(self, models)
    )

    def run():
        return run_together([functools.partial(run_arms, configuration)])[0] if lockstep else run_arms(configuration)

    together = run()
    assert stacks and set(stacks) == {stack}
    for module in (units, data_experiment):
        monkeypatch.setattr(module, "predict_together", per_arm)
    alone = run()
    assert len(alone) == (5 if experiment == "width" else 4)
    assert largest_difference(alone, together, (*LOSSES, "test_accuracy")) <= 1e-6
    for arm in alone:
        for a, b in zip(alone[arm].metrics, together[arm].metrics):
            for key in DIFFERENCES:
                if a.get(key) is not None:
                    assert abs(a[key] - b[key]) <= 1e-6, (arm, key)
        if fused and DEVICE == "cpu":  # elsewhere the kernels never apply
            assert alone[arm].metrics == together[arm].metrics


@pytest.mark.parametrize("r, n, c", [(6, 1, 4), (6, 1, 9), (6, 3, 4), (6, 3, 9)])
def test_batched_matmul_is_bmm_stored_with_the_longer_side_contiguous(r, n, c):
    a = torch.randn(2, r, n, dtype=torch.float64)
    b = torch.randn(2, n, c, dtype=torch.float64)
    bias = torch.randn(2, c, dtype=torch.float64)
    product = stacked.batched_matmul(a, b, bias)
    torch.testing.assert_close(product, torch.bmm(a, b) + bias[:, None], rtol=1e-14, atol=1e-14)
    fastest = 1 if c < r else 2  # the dimension whose elements are adjacent in memory
    assert product.stride(fastest) == 1


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("variant", [{}, {"momentum": 0.9, "weight_decay": 0.05}])
def test_stacked_optimizers_reproduce_torch_optim(optimizer, variant):
    if optimizer == "rprop":
        variant = {}  # no weight decay, no momentum
    elif optimizer in ("adam", "adamw", "adamax"):
        variant = {key: value for key, value in variant.items() if key != "momentum"}
    generator = torch.Generator().manual_seed(0)
    lrs = torch.tensor([0.01, 0.03, 0.002], dtype=torch.float64)
    start = torch.randn(3, 4, 5, dtype=torch.float64, generator=generator)
    grads = [torch.randn(3, 4, 5, dtype=torch.float64, generator=generator) for _ in range(25)]
    stack = start.clone().requires_grad_()
    ours = StackedOptimizer([stack], TrainConfig(optimizer=optimizer, lr=1.0, steps=1, **variant))
    theirs = []
    for k in range(3):
        p = start[k].clone().requires_grad_()
        theirs.append((p, make_optimizer([p], TrainConfig(optimizer=optimizer, lr=float(lrs[k]), steps=1, **variant))))
    for g in grads:
        stack.grad = g.clone()
        ours.step(lrs)
        for k, (p, optimizer_k) in enumerate(theirs):
            p.grad = g[k].clone()
            optimizer_k.step()
    for k, (p, _) in enumerate(theirs):
        torch.testing.assert_close(stack.detach()[k], p.detach(), rtol=0, atol=FLOAT64_TOLERANCE)


@pytest.mark.parametrize("experiment", ["data", "width"])
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_batched_runs_reproduce_the_loop_at_every_logged_step(experiment, optimizer, stack_sizes):
    """Three configurations with their own seeds (data, initialisation, batches) and learning rates."""
    extra = {"momentum": 0.5} if optimizer in ("sgd", "rmsprop") else {}
    configs = [config(experiment, optimizer, lr, seed, **extra) for seed, lr in [(0, 0.01), (1, 0.003), (2, 0.02)]]
    solo, together = solo_and_together(configs)
    for a, b in zip(solo, together):
        assert largest_difference(a, b) <= FLOAT64_TOLERANCE
        assert all(len(arm.metrics) == 5 for arm in a.values())  # steps 0, 10, 20, 30, 40
    # data arms share one shape: one stack of 12 on mini-batches; full batches (gd) stack by training-set
    # size, the 3 originals and the 9 compressed arms; width: the 3 originals and the 12 compressed
    # (moment, random, magnitude and imp), and each configuration's 3 imp pruning rounds as stacks of
    # one (harness/experiments/imp.py), both when run alone and together: 18
    expected = (
        [12] if experiment == "data" and optimizer != "gd" else [3, 9] if experiment == "data" else [1] * 18 + [3, 12]
    )
    assert sorted(stack_sizes) == expected


@pytest.mark.parametrize("inputs", [6, 2])
def test_a_small_cpu_stack_budget_splits_stacks_evenly_and_still_reproduces_the_loop(inputs, stack_sizes, monkeypatch):
    """12 data arms of width 8, batch 32 in float64: 2 KiB of activations each; a 10 KiB budget
    gives 3 stacks of 4. With 2 inputs the fused kernels keep no activations: one stack of 12."""
    assert (inputs <= relu_kernels.MAX_INPUTS) == (inputs == 2)
    monkeypatch.setattr(batched, "CPU_STACK_BYTES", 10 << 10)
    configs = [
        config("data", "adamw", lr, seed, task={"input_dim": inputs}) for seed, lr in [(0, 0.01), (1, 0.003), (2, 0.02)]
    ]
    solo, together = solo_and_together(configs)
    for a, b in zip(solo, together):
        assert largest_difference(a, b) <= FLOAT64_TOLERANCE
    assert stack_sizes == ([4, 4, 4] if inputs == 6 else [12])


@pytest.mark.parametrize("inputs, fused", [(2, True), (6, False)])
def test_fused_stacks_train_on_one_cpu_thread_and_restore_the_setting(inputs, fused, monkeypatch):
    """Fused stacks step on one torch thread (their small ops were slower on two); others keep the
    worker's setting, and it is the same afterwards either way."""
    seen = []
    step = batched._Stack.step

    def spy(self, *args):
        seen.append((self.fused, torch.get_num_threads()))
        return step(self, *args)

    monkeypatch.setattr(batched._Stack, "step", spy)
    torch.set_num_threads(2)  # the autouse fixture restores the suite's setting
    run_together([functools.partial(run_arms, config("data", task={"input_dim": inputs}, steps=3))])
    assert seen and set(seen) == {(fused, 1 if fused else 2)}
    assert torch.get_num_threads() == 2


def test_multiplicities_and_their_gradient_division_are_reproduced(stack_sizes):
    """The width moment arm carries non-unit multiplicities; with and without dividing gradients."""
    for divide in (True, False):
        configs = [config("width", "sgd", lr, seed, divide_gradients=divide) for seed, lr in [(3, 0.05), (4, 0.02)]]
        solo, together = solo_and_together(configs)
        for a, b in zip(solo, together):
            assert largest_difference(a, b) <= FLOAT64_TOLERANCE
        if divide:
            divided = solo[0]["moment"].metrics[-1]["train_loss"]
        else:
            assert solo[0]["moment"].metrics[-1]["train_loss"] != divided  # the division matters here
    moment, _ = compress_units(init_mlp([2, 40, 1], seed=0), "moment", configs[0].compression, 0, torch.device("cpu"))
    assert not torch.all(moment.unit_multiplicities(0) == 1)


@pytest.mark.parametrize("sampling", ["proportional", "weighted_loss"])
def test_weighted_training_sets_are_reproduced(sampling):
    """The data experiment's compressed arms are weighted sets of other sizes than the original."""
    configs = [config("data", "adam", lr, seed, sampling=sampling) for seed, lr in [(5, 0.01), (6, 0.02)]]
    solo, together = solo_and_together(configs)
    for a, b in zip(solo, together):
        assert largest_difference(a, b) <= FLOAT64_TOLERANCE
    assert solo[0]["moment"].summary["d_eff"] < solo[0]["original"].summary["d"]


@pytest.mark.parametrize("optimizer, state", [("gd", {}), ("sgd", {"momentum": 0.9})])
def test_a_diverging_model_is_dropped_and_the_others_go_on_unchanged(optimizer, state):
    """With momentum, the survivors' optimizer state must follow them into the smaller stack."""
    calm = [config("data", optimizer, 0.05, seed, **state) for seed in (0, 1)]
    wild = config("data", optimizer, 1e6, 2, **state)  # its arms diverge before step 40
    with_wild = run_together([functools.partial(run_arms, c) for c in (calm[0], wild, calm[1])])
    without = run_together([functools.partial(run_arms, c) for c in calm])
    alone = run_arms(wild)
    for arm, result in with_wild[1].items():
        assert result.status == "diverged" and alone[arm].status == "diverged"
        assert result.metrics[-1]["train_loss"] is None and result.metrics[-1]["step"] < 40
    assert largest_difference(alone, with_wild[1]) <= FLOAT64_TOLERANCE
    for a, b in ((without[0], with_wild[0]), (without[1], with_wild[2])):
        assert largest_difference(a, b) == 0.0  # bit for bit
        assert all(result.status == "done" and result.metrics[-1]["step"] == 40 for result in b.values())


@pytest.mark.parametrize("experiment, optimizer", [("data", "adamw"), ("width", "sgd")])
def test_float32_batched_losses_stay_within_the_measured_tolerance(experiment, optimizer):
    configs = [config(experiment, optimizer, lr, seed, dtype="float32") for seed, lr in [(0, 0.01), (1, 0.003)]]
    solo, together = solo_and_together(configs)
    for a, b in zip(solo, together):
        assert largest_difference(a, b, LOSSES) <= FLOAT32_TOLERANCE


def test_run_configs_records_what_run_config_records(tmp_path):
    configs = [config("data", "adamw", lr, seed) for seed, lr in [(0, 0.01), (1, 0.02)]]
    broken = config("data", task={"name": "mnist", "n_train": 100, "n_test": 50, "data_root": str(tmp_path)})
    for c in configs:
        run_config(c, tmp_path / "solo", refresh_table=False)
    results = run_configs([(c, None) for c in [configs[0], broken, configs[1]]], tmp_path / "batched")
    assert isinstance(results[1], Exception)  # a missing dataset fails its own runs only
    for records in (results[0], results[2]):
        assert [r.status for r in records] == ["done"] * 4
    batched = pd.read_parquet(tmp_path / "batched" / "runs.parquet").set_index("run_id")
    assert set(batched.loc[batched["experiment"] == "data", "status"]) == {"done", "failed"}
    for records in (results[0], results[2]):
        for record in records:
            solo_dir, batched_dir = (tmp_path / where / "runs" / record.run_id for where in ("solo", "batched"))
            a, b = (json.loads((d / "status.json").read_text())["status"] for d in (solo_dir, batched_dir))
            assert a == b == "done"
            lines = [
                [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
                for d in (solo_dir, batched_dir)
            ]
            assert [r.keys() for r in lines[0]] == [r.keys() for r in lines[1]]
            np.testing.assert_allclose(
                [r["test_loss"] for r in lines[1]], [r["test_loss"] for r in lines[0]], rtol=FLOAT64_TOLERANCE
            )
            summaries = [json.loads((d / "summary.json").read_text()) for d in (solo_dir, batched_dir)]
            assert summaries[0].keys() == summaries[1].keys()


def test_batch_keys_join_seeds_and_learning_rates_only_where_shapes_match():
    base = config("data", "adamw", 0.01, 0)
    assert batch_key(base) == batch_key(config("data", "adamw", 0.003, 7)) is not None
    assert batch_key(base) != batch_key(config("data", "adam", 0.01, 0))
    assert batch_key(config("data", "gd")) != batch_key(config("data", "gd", task={"n_train": 300}))
    attention = parse_config({"experiment": "attention", "task": {"name": "piecewise"}, "train": {"steps": 5}})
    assert batch_key(attention) is None


SWEEP = {
    "name": "batched",
    "experiment": "data",
    "arms": ["original", "moment"],
    "task": {"name": "teacher", "n_train": 120, "n_test": 60},
    "model": {"width": 6},
    "compression": {"k": 2, "size": 20},
    "train": {"optimizer": "adamw", "steps": 30, "batch_size": 16, "eval_every": 10, "dtype": "float64"},
    "grid": {"train.lr": [0.01, 0.003], "model.width": [6, 7]},
    "seeds": 2,
}


def test_the_worker_batches_compatible_jobs_and_matches_one_at_a_time(tmp_path, monkeypatch):
    import harness.sweep.execute as execute

    sweep = expand_sweep(SWEEP, Path("batched.yaml"))
    batches = []
    original = execute.execute_jobs
    monkeypatch.setattr(execute, "execute_jobs", lambda jobs, *a: batches.append(len(jobs)) or original(jobs, *a))
    tables = {}
    for mode, k in (("batched", 3), ("alone", 1)):
        out = tmp_path / mode
        queue = RunQueue(str(tmp_path / f"{mode}.journal"), sweep.name, grace_seconds=60)
        queue.enqueue(jobs(sweep.runs))
        tally = work(queue, SweepOptions(out=out, device="cpu", wandb_mode="disabled", batch_models=k))
        assert tally == {"done": 8}
        tables[mode] = pd.read_parquet(out / "runs.parquet").set_index("run_id").sort_index()
    assert batches == [3, 3]  # per width 4 jobs (2 lrs x 2 seeds): 3 batched, 1 alone (run_claim)
    assert list(tables["batched"].index) == sorted(run.run_id for run in sweep.runs)
    assert (tables["batched"]["status"] == "done").all()
    np.testing.assert_allclose(tables["batched"]["test_loss"], tables["alone"]["test_loss"], rtol=FLOAT64_TOLERANCE)


def test_claims_take_only_compatible_waiting_jobs(tmp_path):
    sweep = expand_sweep(SWEEP, Path("batched.yaml"))
    queue = RunQueue(str(tmp_path / "queue.journal"), sweep.name)
    queue.enqueue(jobs(sweep.runs))
    first = queue.claim()
    more = claim_compatible(queue, first, limit=10)
    width = first.payload["config"]["model"]["width"]
    assert len(more) == 3 and all(c.payload["config"]["model"]["width"] == width for c in more)
    assert len({job_id(parse_config(c.payload["config"])) for c in [first, *more]}) == 4
    assert queue.counts()["running"] == 4 and queue.counts()["waiting"] == 4


def test_a_job_queued_before_a_default_changed_fails_instead_of_recording_unplanned_runs(tmp_path):
    """A payload whose configuration names other runs today (queued before round_fraction's
    default changed, leaving the key out) is refused in one line; nothing is trained or recorded."""
    raw = {
        "experiment": "data",
        "task": {"name": "teacher", "n_train": 64, "n_test": 32},
        "model": {"width": 6},
        "compression": {"k": 2, "size": 16},
        "train": {"optimizer": "sgd", "steps": 5, "batch_size": 16},
        "arms": ["moment"],
    }
    then = parse_config({**raw, "compression": {**raw["compression"], "round_fraction": 1}})
    queue = RunQueue(str(tmp_path / "queue.journal"), "stale", grace_seconds=60)
    queue.enqueue([(run_id(then, "moment"), {"config": raw, "runs": {"moment": run_id(then, "moment")}})])
    tally = work(
        queue, SweepOptions(out=tmp_path / "out", device="cpu", wandb_mode="disabled", batch_models=1, retries=0)
    )
    assert tally == {"failed": 1}
    (error,) = queue.failures().values()
    today = run_id(parse_config(raw), "moment")
    assert f"names run {today} today, not {run_id(then, 'moment')}: a default changed" in error.splitlines()[-1]
    assert not (tmp_path / "out" / "runs" / today).exists()
