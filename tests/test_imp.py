"""The imp arm (iterative magnitude pruning with rewinding, harness/experiments/imp.py) against
truth computed here in numpy: the magnitude arm at initialisation, top-k of |v| ||w|| of trained
weights, the initial weights, the moment arm's width, the run alone and batched."""

import functools
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from harness import preempt
from harness.config import canonical, parse_config, run_id
from harness.config.sweep_spec import load_sweep
from harness.data import load_task
from harness.errors import UsageError
from harness.experiments import imp, run_arms, run_config
from harness.experiments.common import Seeds, tensor
from harness.experiments.units import compress_units, unit_targets
from harness.models import init_mlp
from harness.tracking.store import read_status, run_dir
from harness.train import loss_for, run_together

ROOT = Path(__file__).resolve().parents[1]
FLOAT64_TOLERANCE = 1e-10  # tests/test_train_batched.py's agreement of the two paths

# E3's task scaled down: a width-40 net pruned to N(4, 2) = 15 neurons, 30 steps of batch 32.
SMALL = {
    "experiment": "width",
    "seed": 3,
    "device": "cpu",
    "task": {"name": "harmonic", "n_train": 200, "n_test": 100, "order": 2, "frequency": 3.0},
    "model": {"width": 40},
    "compression": {"k": 2, "size": 15},
    "train": {"optimizer": "adamw", "lr": 0.01, "steps": 30, "batch_size": 32, "eval_every": 10, "dtype": "float64"},
}


def small(**changes):
    raw = json.loads(json.dumps(SMALL))
    for section, values in changes.items():
        if isinstance(values, dict):
            raw[section].update(values)
        else:
            raw[section] = values
    return parse_config(raw)


@pytest.fixture(autouse=True)
def quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # size warnings of the tiny configurations
        yield


def numpy_top(weights_in: np.ndarray, weights_out: np.ndarray, count: int) -> np.ndarray:
    """Indices of the ``count`` largest ||w_j|| ||v_j|| (rows of weights_in, columns of
    weights_out), increasing, ties to the lower index."""
    scores = np.linalg.norm(weights_in, axis=1) * np.linalg.norm(weights_out, axis=0)
    return np.sort(np.argsort(-scores, kind="stable")[:count])


def parts(config, hidden: list[int] | None = None):
    """The original network of ``config`` (or with these hidden widths), its training data as
    tensors, the loss and the seeds."""
    seeds = Seeds.of(config)
    data = load_task(config.task, seeds.data)
    hidden = hidden or [config.model.width] * config.model.depth
    original = init_mlp([data.n_inputs, *hidden, data.n_outputs], seed=seeds.init)
    x, y = (tensor(a, torch.device("cpu"), torch.float64) for a in (data.x_train, data.y_train))
    return original, x, y, loss_for(data.classification), seeds


# A deep net whose first layer can be pruned: its objects have 2 + 1 + 4 coordinates, so with
# k = 1 N(m, k) = 8 and size 10 keeps 10 of 60; the second layer (4 neurons) is kept whole.
DEEP = [60, 4]
DEEP_COMPRESSION = {"k": 1, "size": 10}


def test_rounds_keep_a_fixed_fraction_down_to_the_target():
    assert imp.kept_per_round(10_000, 1_000, 3) == [4642, 2154, 1000]  # 1e4 (1e-1)^(r/3)
    assert imp.kept_per_round(40, 15, 1) == [15]
    assert imp.kept_per_round(40, 40, 2) == [40, 40]  # a layer kept whole stays whole


@pytest.mark.parametrize("hidden", [[40], DEEP])
def test_one_round_without_training_is_the_magnitude_arm_at_initialisation(hidden):
    config = small(compression=DEEP_COMPRESSION) if len(hidden) > 1 else small()
    original, x, y, loss_fn, seeds = parts(config, hidden)
    train_round = imp.round_trainer(config, x, y, loss_fn, seeds.batches, 256, steps=0)
    kept, facts = imp.prune(original, unit_targets(original, config.compression), 1, train_round)
    assert facts == {"trained_neurons": [sum(hidden)], "seconds": [0.0], "diverged_rounds": 0}
    magnitude, _ = compress_units(original, "magnitude", config.compression, seeds.compression, "cpu")
    ticket, _ = compress_units(original, "imp", config.compression, seeds.compression, "cpu", kept)
    for a, b in zip(magnitude.state_dict().values(), ticket.state_dict().values()):
        assert a.equal(b)
    # and in numpy: layer 0's top 15 by |v| ||w||; layer 1's over layer 0's survivors
    weights = [w.detach().numpy() for w in original.weights]
    expected = numpy_top(weights[0], weights[1], 15 if len(hidden) == 1 else 10)
    np.testing.assert_array_equal(kept[0], expected)
    if len(hidden) > 1:
        np.testing.assert_array_equal(kept[1], np.arange(4))


def test_each_round_keeps_the_top_k_of_the_trained_network_and_rewinds_the_survivors():
    config = small(compression={**DEEP_COMPRESSION, "imp_rounds": 2})
    original, x, y, loss_fn, seeds = parts(config, DEEP)
    train_round = imp.round_trainer(config, x, y, loss_fn, seeds.batches, 256, steps=config.total_steps())
    seen = []  # (the network a round starts from, the trained one) of each round

    def spy(r, ticket):
        start = [w.detach().clone().numpy() for w in ticket.weights]
        trained, finite, seconds = train_round(r, ticket)
        seen.append((start, [w.detach().clone().numpy() for w in trained.weights]))
        return trained, finite, seconds

    targets = unit_targets(original, config.compression)
    kept, facts = imp.prune(original, targets, 2, spy)
    assert len(facts["seconds"]) == 2 and facts["diverged_rounds"] == 0
    init = [w.detach().numpy() for w in original.weights]
    assert targets == [10, 4]
    survivors = [np.arange(60), np.arange(4)]
    for r, (start, trained) in enumerate(seen):
        # rewinding: round r starts from the survivors' initial weights
        np.testing.assert_array_equal(start[0], init[0][survivors[0]])
        np.testing.assert_array_equal(start[1], init[1][np.ix_(survivors[1], survivors[0])])
        assert not np.array_equal(trained[0], start[0])  # it did train
        counts = [imp.kept_per_round(d, t, 2)[r] for d, t in zip(DEEP, targets)]
        first = numpy_top(trained[0], trained[1], counts[0])
        second = numpy_top(trained[1][:, first], trained[2], counts[1])
        survivors = [survivors[0][first], survivors[1][second]]
    np.testing.assert_array_equal(kept[0], survivors[0])
    np.testing.assert_array_equal(kept[1], survivors[1])
    ticket, _ = compress_units(original, "imp", config.compression, seeds.compression, "cpu", kept)
    np.testing.assert_array_equal(ticket.weights[1].detach().numpy(), init[1][np.ix_(kept[1], kept[0])])
    np.testing.assert_array_equal(ticket.biases[0].detach().numpy(), original.biases[0].detach().numpy()[kept[0]])


def test_the_ticket_is_as_wide_as_the_moment_arm_starts_at_its_initial_weights_and_records_its_cost():
    config = small(compression={"imp_rounds": 2, "imp_budget": 0.5})
    results = run_arms(config, ("moment", "imp"), device="cpu")
    moment, ticket = results["moment"].summary, results["imp"].summary
    assert ticket["width_eff_layers"] == moment["width_eff_layers"] == "15"
    steps = math.ceil(0.5 * 30)
    rounds = [40, imp.kept_per_round(40, 15, 2)[0]]  # neurons trained in each round
    assert ticket["imp_steps"] == 2 * steps
    assert ticket["imp_neuron_steps"] == steps * sum(rounds) and ticket["imp_diverged_rounds"] == 0
    assert ticket["imp_seconds"] > 0 and "imp_steps" not in moment
    # the step-0 training loss is that of the kept neurons at their initial weights, in numpy
    original, x, y, loss_fn, seeds = parts(config)
    train_round = imp.round_trainer(config, x, y, loss_fn, seeds.batches, 256, steps=steps)
    kept, _ = imp.prune(original, unit_targets(original, config.compression), 2, train_round)
    w, b, v, c = (
        p.detach().numpy() for p in (original.weights[0], original.biases[0], *original.weights[1:], original.biases[1])
    )
    j = kept[0]
    f = np.maximum(x.numpy() @ w[j].T + b[j], 0) @ v[:, j].T + c
    assert results["imp"].metrics[0]["train_loss"] == pytest.approx(np.mean((f - y.numpy()) ** 2), rel=1e-12)
    assert len(results["imp"].metrics) == 4  # steps 0, 10, 20, 30: the ticket's own training


def test_imp_alone_matches_imp_among_all_arms_and_batched_matches_one_by_one():
    configs = [small(seed=seed, train={"lr": lr}) for seed, lr in [(0, 0.01), (1, 0.003)]]
    everything = run_arms(configs[0], device="cpu")
    assert set(everything) == {"original", "moment", "random", "magnitude", "imp"}
    alone = [run_arms(c, ("imp",), device="cpu") for c in configs]
    assert set(alone[0]) == {"imp"}  # the original trains alongside as the reference, unrecorded
    assert alone[0]["imp"].metrics == everything["imp"].metrics
    together = run_together([functools.partial(run_arms, c, ("imp",), device="cpu") for c in configs])
    for solo, batched in zip(alone, together):
        assert not isinstance(batched, BaseException), batched
        a, b = solo["imp"], batched["imp"]
        assert a.status == b.status == "done" and len(a.metrics) == len(b.metrics)
        for ra, rb in zip(a.metrics, b.metrics):
            for key, value in ra.items():
                if isinstance(value, float):
                    assert abs(value - rb[key]) <= FLOAT64_TOLERANCE * abs(value), key
        assert {k: v for k, v in a.summary.items() if k.startswith("imp_") and k != "imp_seconds"} == {
            k: v for k, v in b.summary.items() if k.startswith("imp_") and k != "imp_seconds"
        }


def test_a_stopped_imp_run_resumes_from_its_checkpoint_to_the_uninterrupted_result(tmp_path):
    config = small(arms=["imp"], train={"steps": 60, "checkpoint_every": 20})
    rid = run_id(config, "imp")
    run_config(config, tmp_path / "reference")

    class StopAt40:
        """Asks for a stop when a run records step 40; notes the steps logged."""

        def __init__(self):
            self.logged = []

        def run_started(self, *args):
            pass

        def run_finished(self, *args):
            pass

        def run_logged(self, run, record):
            self.logged.append(record["step"])
            if record["step"] == 40:
                preempt.request_stop("test")

    preempt.clear()
    try:
        with pytest.raises(preempt.Preempted):
            run_config(config, tmp_path / "cut", observers=[StopAt40()])
    finally:
        preempt.clear()
    assert read_status(tmp_path / "cut", rid) == "running"
    rerun = StopAt40()
    run_config(config, tmp_path / "cut", observers=[rerun])
    assert rerun.logged == [50, 60]  # the ticket went on from its checkpoint at step 40
    assert read_status(tmp_path / "cut", rid) == "done"
    read = [(run_dir(out, rid) / "metrics.jsonl").read_text() for out in (tmp_path / "reference", tmp_path / "cut")]
    assert read[0] == read[1]
    summaries = [
        json.loads((run_dir(out, rid) / "summary.json").read_text())
        for out in (tmp_path / "reference", tmp_path / "cut")
    ]
    assert summaries[0]["imp_steps"] == summaries[1]["imp_steps"] == 3 * 60


@pytest.mark.parametrize(
    "changes, key",
    [
        ({"compression": {"imp_rounds": 0}}, "compression.imp_rounds"),
        ({"compression": {"imp_budget": 0}}, "compression.imp_budget"),
        ({"compression": {"imp_budget": -0.5}}, "compression.imp_budget"),
        ({"compression": {"imp_rounds": 2.5}}, "compression.imp_rounds"),
    ],
)
def test_bad_imp_settings_are_refused_in_one_line(changes, key):
    with pytest.raises(UsageError) as error:
        small(**changes)
    assert str(error.value).startswith(f"config: {key}: expected a positive") and "\n" not in str(error.value)


def test_imp_settings_are_only_read_by_the_width_experiment():
    raw = {"experiment": "data", "task": {"name": "teacher"}, "train": {"steps": 5}, "compression": {"imp_rounds": 2}}
    with pytest.raises(UsageError, match="compression.imp_rounds: only read by the width"):
        parse_config(raw)


def test_the_imp_defaults_keep_every_committed_run_id():
    """New fields with defaults hash nothing: every run of every committed sweep is still planned
    under its id by the sweep file it came from, and only imp runs are new. (round_fraction's,
    group_width's, final_drops' and final_phase's defaults changed: their legacy values, which the
    sweep files of the committed runs pin, hash nothing.)"""
    legacy = {"round_fraction": 1, "group_width": "box", "final_drops": "scaled", "final_phase": 3}
    assert canonical(small(compression=legacy))["compression"] == {"k": 2, "size": "15"}
    for path in sorted(ROOT.glob("results/paper/*/sweep.json")):
        recorded = json.loads(path.read_text())
        planned = {run.run_id: run.arm for run in load_sweep(ROOT / recorded["source"]).runs}
        ids = {run["run_id"] for run in recorded["runs"]}
        assert ids <= planned.keys(), path
        assert {planned[i] for i in planned.keys() - ids} <= {"imp"}, path


def test_a_run_stopped_in_a_pruning_round_goes_on_from_that_round(tmp_path, monkeypatch):
    """Round 1 is saved when done and round 2 checkpoints; the rerun trains neither again from
    its start and ends where an uninterrupted run ends."""
    config = small(arms=["imp"], compression={"imp_rounds": 2}, train={"steps": 60, "checkpoint_every": 20})
    rid = run_id(config, "imp")
    run_config(config, tmp_path / "reference")
    draws = []

    class Counting(imp.BatchSampler):
        def next(self):
            draws.append(1)
            if len(draws) == stop_after:
                preempt.request_stop("test")
            return super().next()

    monkeypatch.setattr(imp, "BatchSampler", Counting)
    stop_after = 60 + 30  # round 2, step 30
    preempt.clear()
    try:
        with pytest.raises(preempt.Preempted):
            run_config(config, tmp_path / "cut")
    finally:
        preempt.clear()
    stages = run_dir(tmp_path / "cut", rid) / "checkpoints"
    assert (stages / "imp-round-1" / "result.pt").exists() and not (stages / "imp-round-2" / "result.pt").exists()
    assert sorted(p.name for p in (stages / "imp-round-2").glob("step-*.pt")) == [
        "step-000000020.pt",
        "step-000000030.pt",
    ]
    draws.clear()
    stop_after = None
    run_config(config, tmp_path / "cut")
    assert len(draws) == 30  # round 2's last 30 steps, nothing of round 1
    read = [(run_dir(out, rid) / "metrics.jsonl").read_text() for out in (tmp_path / "reference", tmp_path / "cut")]
    assert read[0] == read[1]
    assert not stages.exists()  # a finished run's checkpoints, stages included, are removed


def test_a_network_kept_whole_trains_no_round_and_its_ticket_is_the_original():
    config = small(compression={"k": 2, "size": 40})  # d' = d = 40
    results = run_arms(config, ("original", "imp"), device="cpu")
    assert results["imp"].summary["imp_steps"] == results["imp"].summary["imp_neuron_steps"] == 0
    assert [r["train_loss"] for r in results["imp"].metrics] == [r["train_loss"] for r in results["original"].metrics]


def test_the_imp_settings_name_the_imp_runs_alone():
    """compression.imp_rounds/imp_budget are read by the imp arm only, so only its run id carries
    them: a cheaper IMP can be added to a sweep whose other arms have run."""
    default, cheaper = small(), small(compression={**SMALL["compression"], "imp_budget": 0.1, "imp_rounds": 2})
    for arm in ("original", "moment", "random", "magnitude"):
        assert run_id(cheaper, arm) == run_id(default, arm)
    assert run_id(cheaper, "imp") != run_id(default, "imp")
    assert canonical(cheaper, "moment") == canonical(default, "moment")
    assert canonical(cheaper, "imp")["compression"] == {"k": 2, "size": "15", "imp_rounds": 2, "imp_budget": 0.1}


def test_a_sweep_over_the_imp_budget_plans_the_shared_arms_once(tmp_path):
    spec = tmp_path / "imp-budget.yaml"
    spec.write_text(json.dumps({**SMALL, "grid": {"compression.imp_budget": [0.1, 0.5, 1.0]}, "seeds": 2}))
    runs = load_sweep(spec).runs
    by_arm = {arm: [r for r in runs if r.arm == arm] for arm in ("original", "moment", "random", "magnitude", "imp")}
    assert {arm: len(planned) for arm, planned in by_arm.items()} == {
        "original": 2,
        "moment": 2,
        "random": 2,
        "magnitude": 2,
        "imp": 6,
    }
    assert len({r.run_id for r in runs}) == len(runs)
    for arm in ("original", "moment", "random", "magnitude"):  # each under the id a default config gives it
        assert {r.run_id for r in by_arm[arm]} == {run_id(small(seed=s), arm) for s in (0, 1)}
