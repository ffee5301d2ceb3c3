"""Training machinery: batch samplers, schedule, optimisers, divergence, and the exactness of
full-batch training on a moment-compressed dataset for a model whose loss is a polynomial of
degree <= k in the data point."""

import contextlib
import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from harness.compression import compress
from harness.config import TrainConfig
from harness.train import (
    Arm,
    BatchSampler,
    make_optimizer,
    make_schedule,
    mean_loss,
    sampling,
    squared_error,
    train_side_by_side,
)


def test_full_batch_gives_the_exact_weighted_mean():
    c = np.array([1.0, 3.0, 0.5, 2.5])
    rows, loss_weights = BatchSampler(c, None, "proportional", seed=0).next()
    assert rows is None
    np.testing.assert_allclose(loss_weights.numpy(), c / c.sum())


def test_proportional_sampling_draws_in_proportion_to_the_weights():
    c = np.array([1.0, 2.0, 3.0, 4.0])
    sampler = BatchSampler(c, 100, "proportional", seed=0)
    counts = np.zeros(4)
    for _ in range(2000):
        rows, loss_weights = sampler.next()
        counts += np.bincount(rows.numpy(), minlength=4)
        assert torch.allclose(loss_weights, torch.full((100,), 0.01, dtype=torch.float64))
    # 200k draws: the binomial sd of each share is below 0.0011
    np.testing.assert_allclose(counts / counts.sum(), c / c.sum(), atol=0.005)


def test_weighted_loss_mode_sees_each_point_once_per_epoch_with_weighted_batch_loss():
    c = np.arange(1.0, 13.0)
    sampler = BatchSampler(c, 4, "weighted_loss", seed=3)
    for _ in range(2):  # two epochs of 3 batches
        seen = []
        for _ in range(3):
            rows, loss_weights = sampler.next()
            np.testing.assert_allclose(loss_weights.numpy(), c[rows.numpy()] / c[rows.numpy()].sum())
            seen += rows.tolist()
        assert sorted(seen) == list(range(12))


def test_equal_weights_get_shuffled_epochs_in_either_mode():
    sampler = BatchSampler(np.full(10, 7.0), 5, "proportional", seed=1)
    rows = torch.cat([sampler.next()[0] for _ in range(2)])
    assert sorted(rows.tolist()) == list(range(10))


def test_samplers_with_one_seed_give_one_order():
    a = BatchSampler(np.ones(100), 10, "proportional", seed=5)
    b = BatchSampler(np.ones(100), 10, "proportional", seed=5)
    c = BatchSampler(np.ones(100), 10, "proportional", seed=6)
    first = [a.next()[0] for _ in range(20)]
    assert all(torch.equal(x, b.next()[0]) for x in first)
    assert not all(torch.equal(x, c.next()[0]) for x in first)


@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_proportional_batches_are_one_multinomial_draw_per_batch_and_resume_mid_block(batch_size, monkeypatch):
    """On a CUDA device the sampler draws an epoch of batches at once (made so here on the CPU);
    each batch must be what one torch.multinomial call per batch on the same generator gives, and
    a sampler restored from ``state()`` in the middle of a block must go on with the same batches."""
    monkeypatch.setattr(sampling, "batches_per_draw", lambda n, batch_size, device: 5 if batch_size > 1 else 1)
    c = np.linspace(0.5, 3.0, 37)
    generator = torch.Generator().manual_seed(9)
    expected = [
        torch.multinomial(torch.as_tensor(c), batch_size, replacement=True, generator=generator) for _ in range(30)
    ]
    sampler = BatchSampler(c, batch_size, "proportional", seed=9)
    assert sampler._block == (5 if batch_size > 1 else 1)
    drawn = [sampler.next()[0] for _ in range(11)]
    restored = BatchSampler(c, batch_size, "proportional", seed=0)
    restored.load_state(sampler.state())
    drawn += [restored.next()[0] for _ in range(19)]
    assert all(torch.equal(got, want) for got, want in zip(drawn, expected, strict=True))


def test_cosine_schedule_goes_to_zero():
    model = nn.Linear(1, 1)
    train = TrainConfig(optimizer="sgd", lr=0.5, steps=10)
    optimizer = make_optimizer(model.parameters(), train)
    schedule = make_schedule(optimizer, train, 10)
    lrs = []
    for _ in range(10):
        lrs.append(schedule.get_last_lr()[0])
        optimizer.step()
        schedule.step()
    np.testing.assert_allclose(lrs, [0.5 * 0.5 * (1 + math.cos(math.pi * t / 10)) for t in range(10)])
    assert schedule.get_last_lr()[0] == pytest.approx(0.0, abs=1e-15)


def test_optimizer_defaults_follow_spec():
    params = [nn.Parameter(torch.zeros(2))]
    adamw = make_optimizer(params, TrainConfig(optimizer="adamw", lr=1e-3, steps=1)).param_groups[0]
    assert (adamw["betas"], adamw["weight_decay"], adamw["eps"]) == ((0.9, 0.999), 0.01, 1e-8)
    assert make_optimizer(params, TrainConfig(optimizer="adam", steps=1)).param_groups[0]["weight_decay"] == 0.0
    for name, cls in [
        ("gd", torch.optim.SGD),
        ("sgd", torch.optim.SGD),
        ("rprop", torch.optim.Rprop),
        ("rmsprop", torch.optim.RMSprop),
        ("adamax", torch.optim.Adamax),
    ]:
        assert isinstance(make_optimizer(params, TrainConfig(optimizer=name, steps=1)), cls)


class Quadratic(nn.Module):
    """f(x) = theta . (1, x1, x2, x1^2, x1 x2, x2^2): its squared error is degree 4 in (x, y)."""

    def __init__(self, theta: torch.Tensor) -> None:
        super().__init__()
        self.theta = nn.Parameter(theta.clone())

    def forward(self, x):
        x1, x2 = x[:, 0], x[:, 1]
        features = torch.stack([torch.ones_like(x1), x1, x2, x1 * x1, x1 * x2, x2 * x2], dim=1)
        return (features @ self.theta)[:, None]


def test_full_batch_training_on_moment_compressed_data_matches_the_original_exactly():
    rng = np.random.default_rng(0)
    d = 3000
    x = rng.uniform(-1, 1, (d, 2))
    y = np.sin(3 * x[:, :1]) + 0.3 * rng.standard_normal((d, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        small = compress(np.concatenate([x, y], axis=1), k=4, size=100, seed=0)
    assert small.size == 100
    xs, ys = torch.as_tensor(x), torch.as_tensor(y)
    kept = small.indices
    theta = torch.as_tensor(rng.normal(size=6))

    # the loss itself, at an arbitrary parameter
    original_loss = mean_loss(squared_error, Quadratic(theta)(xs), ys)
    compressed_loss = mean_loss(squared_error, Quadratic(theta)(xs[kept]), ys[kept], torch.as_tensor(small.weights))
    assert abs(compressed_loss - original_loss) / original_loss < 1e-9

    # and 60 full-batch GD steps through the training loop: the same trajectory
    train = TrainConfig(optimizer="gd", lr=0.1, steps=60, eval_every=1, dtype="float64")
    arms = [
        Arm("original", Quadratic(theta), xs, ys, BatchSampler(np.ones(d), None, "proportional", 0)),
        Arm("moment", Quadratic(theta), xs[kept], ys[kept], BatchSampler(small.weights, None, "proportional", 0)),
    ]

    def evaluate(live):
        with torch.no_grad():
            return {
                arm.name: {"train_loss": mean_loss(squared_error, arm.model(xs), ys), "test_loss": 0.0} for arm in live
            }

    train_side_by_side(arms, train, 60, squared_error, evaluate, epoch_size=d)
    original, moment = (np.array([r["train_loss"] for r in arm.history]) for arm in arms)
    assert original[-1] < 0.5 * original[0]
    assert np.max(np.abs(moment - original) / original) <= 1e-6
    # a random subset of the same size (weights d/d') does not have this property
    subset = rng.choice(d, 100, replace=False)
    random_loss = mean_loss(squared_error, Quadratic(theta)(xs[subset]), ys[subset])
    assert abs(random_loss - original_loss) / original_loss > 1e-3


def test_divergence_stops_the_arm_and_records_it():
    x = torch.linspace(-1, 1, 32, dtype=torch.float64)[:, None]
    y = 3 * x
    train = TrainConfig(optimizer="gd", lr=50.0, steps=200, eval_every=5, dtype="float64")
    sampler = BatchSampler(np.ones(32), None, "proportional", 0)
    stable = TrainConfig(optimizer="gd", lr=0.1, steps=200, eval_every=5, dtype="float64")
    arms = [Arm("wild", nn.Linear(1, 1, dtype=torch.float64), x, y, sampler)]

    def evaluate(live):
        with torch.no_grad():
            return {
                arm.name: {"train_loss": mean_loss(squared_error, arm.model(x), y), "test_loss": 0.0} for arm in live
            }

    train_side_by_side(arms, train, 200, squared_error, evaluate, epoch_size=32)
    assert arms[0].status == "diverged"
    assert arms[0].history[-1]["train_loss"] is None  # NaN/inf are stored as null
    assert arms[0].history[-1]["step"] < 200
    calm = [Arm("calm", nn.Linear(1, 1, dtype=torch.float64), x, y, sampler)]
    train_side_by_side(calm, stable, 200, squared_error, evaluate, epoch_size=32)
    assert calm[0].status == "done" and calm[0].history[-1]["step"] == 200


class _FakeEvent:
    """A CUDA event stand-in on a fake device clock that each ``record`` moves on by 2.5 ms (so a
    step between two records takes 2.5 ms); ``synchronize`` counts the waits."""

    waits = 0
    clock = 0.0

    def __init__(self, enable_timing=False):
        assert enable_timing
        self.at = None

    def record(self):
        _FakeEvent.clock += 2.5
        self.at = _FakeEvent.clock

    def synchronize(self):
        _FakeEvent.waits += 1

    def elapsed_time(self, end):
        return end.at - self.at


class _CudaStepper:
    def __init__(self, arms):
        self.arms = arms
        self.device = torch.device("cuda", 0)


def test_cuda_steps_are_timed_by_events_read_at_settle_without_a_sync_per_step(monkeypatch):
    from harness.train import loop

    monkeypatch.setattr(torch.cuda, "Event", _FakeEvent)
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: pytest.fail("synchronised the device"))
    monkeypatch.setattr(_FakeEvent, "waits", 0)
    monkeypatch.setattr(loop, "MAX_PENDING_EVENTS", 7)
    arms = [Arm(name, None, None, None, None) for name in "ab"]
    stepper, clock = _CudaStepper(arms), loop.StepClock()
    for _ in range(6):
        with clock.timing(stepper):
            pass
    assert _FakeEvent.waits == 0 and [arm.seconds for arm in arms] == [0.0, 0.0]  # nothing read yet
    clock.settle()
    assert _FakeEvent.waits == 6 and clock.pending == []
    assert [arm.seconds for arm in arms] == pytest.approx([6 * 2.5e-3 / 2] * 2)  # 2.5 ms a step, shared
    for _ in range(7):  # the seventh pending step makes it read them all
        with clock.timing(stepper):
            pass
    assert _FakeEvent.waits == 13 and clock.pending == []
