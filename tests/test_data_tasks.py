"""Tasks: shapes, determinism, and labels against closed forms computed here."""

import struct

import numpy as np
import pytest
from scipy.special import jv

from harness.config import TaskConfig
from harness.data import load_task
from harness.data.piecewise import piecewise_values
from harness.data.symmetric import symmetric_problem, symmetric_value
from harness.errors import UsageError

SYNTHETIC = {
    "teacher": (2, 1),
    "harmonic": (2, 1),
    "piecewise": (17, 1),  # 8 (x, y) pairs and the query x
}


@pytest.mark.parametrize("name", [*SYNTHETIC, "digits"])
def test_shapes_and_determinism(name):
    task = TaskConfig(name=name, n_train=300, n_test=200)
    a, b = load_task(task, seed=4), load_task(task, seed=4)
    inputs, outputs = SYNTHETIC.get(name, (64, 10))
    assert a.x_train.shape == (300, inputs) and a.y_train.shape == (300, outputs)
    assert a.x_test.shape == (200, inputs) and a.y_test.shape == (200, outputs)
    for field in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
        assert np.isfinite(getattr(a, field)).all()
    other = load_task(task, seed=5)
    assert not np.array_equal(a.x_train, other.x_train)
    assert a.objects.shape == (300, inputs + outputs)


@pytest.mark.parametrize("name", list(SYNTHETIC))
def test_training_set_does_not_depend_on_the_test_size(name):
    small = load_task(TaskConfig(name=name, n_train=100, n_test=10), seed=0)
    large = load_task(TaskConfig(name=name, n_train=100, n_test=500), seed=0)
    np.testing.assert_array_equal(small.x_train, large.x_train)
    np.testing.assert_array_equal(small.y_train, large.y_train)


def test_task_seed_overrides_the_run_seed():
    pinned = TaskConfig(name="teacher", n_train=50, n_test=10, seed=7)
    np.testing.assert_array_equal(load_task(pinned, seed=0).x_train, load_task(pinned, seed=1).x_train)


def test_teacher_seed_fixes_the_teacher_while_the_points_vary():
    def relu_teacher(x, seed, width=50):  # the teacher of teacher_task, drawn here from its stream
        params = np.random.default_rng([seed, 0])
        w1, b1 = params.uniform(-1, 1, (width, 2)), params.uniform(-1, 1, width)
        w2, b2 = params.uniform(-1, 1, (1, width)), params.uniform(-1, 1, 1)
        return np.maximum(x @ w1.T + b1, 0.0) @ w2.T + b2

    pinned = TaskConfig(name="teacher", n_train=50, n_test=400, teacher_seed=9)
    a, b = load_task(pinned, seed=0), load_task(pinned, seed=1)
    assert not np.array_equal(a.x_test, b.x_test) and not np.array_equal(a.x_train, b.x_train)
    for data in (a, b):
        np.testing.assert_allclose(data.y_test, relu_teacher(data.x_test, 9), rtol=1e-12, atol=1e-12)
    # the default draws the teacher from the run's seed, as teacher_seed = seed does
    unpinned = load_task(TaskConfig(name="teacher", n_train=50, n_test=400), seed=1)
    np.testing.assert_allclose(unpinned.y_test, relu_teacher(unpinned.x_test, 1), rtol=1e-12, atol=1e-12)
    same = load_task(TaskConfig(name="teacher", n_train=50, n_test=400, teacher_seed=1), seed=1)
    np.testing.assert_array_equal(same.y_train, unpinned.y_train)


def test_harmonic_labels_are_the_bessel_target_plus_noise():
    data = load_task(TaskConfig(name="harmonic", n_train=20_000, n_test=1000, order=3, frequency=7.0), seed=0)
    x, y = data.x_test[:, 0], data.x_test[:, 1]
    r, theta = np.sqrt(x**2 + y**2), np.arctan2(y, x)
    np.testing.assert_allclose(data.y_test[:, 0], jv(3, 7.0 * r) * np.cos(3 * theta), rtol=1e-12, atol=1e-15)
    assert np.abs(data.x_train).max() <= 1.0
    xt = data.x_train
    clean = jv(3, 7.0 * np.hypot(xt[:, 0], xt[:, 1])) * np.cos(3 * np.arctan2(xt[:, 1], xt[:, 0]))
    assert np.std(data.y_train[:, 0] - clean) == pytest.approx(0.2, rel=0.03)  # SPEC E3 noise


def test_teacher_noise_is_gaussian_with_the_configured_sd_and_test_labels_are_clean():
    noisy = load_task(TaskConfig(name="teacher", n_train=20_000, n_test=100), seed=1)
    clean = load_task(TaskConfig(name="teacher", n_train=20_000, n_test=100, noise=0.0), seed=1)
    np.testing.assert_array_equal(noisy.x_train, clean.x_train)
    np.testing.assert_array_equal(noisy.y_test, clean.y_test)
    residual = noisy.y_train - clean.y_train
    assert residual.std() == pytest.approx(3.0, rel=0.03) and abs(residual.mean()) < 0.1  # SPEC E2


def test_piecewise_values_match_linear_interpolation_between_knots():
    rng = np.random.default_rng(0)
    start, slopes = rng.normal(size=5), rng.normal(size=(5, 16))
    x = rng.uniform(0, 1, (5, 40))
    knots_x = np.linspace(0, 1, 17)
    knots_y = np.concatenate([start[:, None], start[:, None] + np.cumsum(slopes, axis=1) / 16], axis=1)
    expected = np.stack([np.interp(x[i], knots_x, knots_y[i]) for i in range(5)])
    np.testing.assert_allclose(piecewise_values(x, start, slopes), expected, rtol=1e-12, atol=1e-14)


def test_piecewise_sequences_interleave_x_and_y_tokens():
    # one segment and no noise: each function is a line, so every (x, y) pair and the query's
    # (x_q, target) lie on one line
    data = load_task(TaskConfig(name="piecewise", n_train=20, n_test=20, segments=1, noise=0.0), seed=0)
    tokens, target = data.x_test, data.y_test[:, 0]
    xs, ys = tokens[:, 0:-1:2], tokens[:, 1:-1:2]
    assert ((xs >= 0) & (xs <= 1)).all()
    slope = (ys[:, 1] - ys[:, 0]) / (xs[:, 1] - xs[:, 0])
    np.testing.assert_allclose(ys, ys[:, :1] + slope[:, None] * (xs - xs[:, :1]), atol=1e-10)
    np.testing.assert_allclose(target, ys[:, 0] + slope * (tokens[:, -1] - xs[:, 0]), atol=1e-10)


def test_digits_are_scaled_one_hot_and_bounded_by_the_dataset():
    data = load_task(TaskConfig(name="digits", n_train=1000, n_test=797), seed=0)
    assert data.classification and 0 <= data.x_train.min() and data.x_train.max() <= 1
    np.testing.assert_array_equal(data.y_train.sum(axis=1), 1)
    assert set(np.argmax(data.y_test, axis=1)) == set(range(10))
    with pytest.raises(UsageError, match="digits has only 1797"):
        load_task(TaskConfig(name="digits", n_train=1000, n_test=800), seed=0)


def _write_idx(path, array, magic):
    with open(path, "wb") as f:
        f.write(struct.pack(">i", magic) + b"".join(struct.pack(">i", n) for n in array.shape))
        f.write(array.astype(np.uint8).tobytes())


def test_mnist_loads_from_a_local_torchvision_folder(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 30), ("t10k", 12)):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)), 2051)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n), 2049)
    data = load_task(TaskConfig(name="mnist", n_train=20, n_test=12, data_root=str(tmp_path)), seed=0)
    assert data.x_train.shape == (20, 784) and data.y_test.shape == (12, 10)
    assert 0 <= data.x_train.min() and data.x_train.max() <= 1 and data.x_train.max() > 0.9
    with pytest.raises(UsageError, match="task.n_train: 31 is more than the 30"):
        load_task(TaskConfig(name="mnist", n_train=31, n_test=12, data_root=str(tmp_path)), seed=0)


@pytest.mark.parametrize(
    "name, folder", [("mnist", "MNIST/raw"), ("fashion_mnist", "FashionMNIST/raw"), ("cifar10", "cifar-10-batches-py")]
)
def test_a_missing_dataset_names_its_folder_and_the_download_option(tmp_path, name, folder):
    with pytest.raises(UsageError) as error:
        load_task(TaskConfig(name=name, n_train=10, n_test=10, data_root=str(tmp_path)), seed=0)
    message = str(error.value)
    assert str(tmp_path / folder) in message and "task.download: true" in message and "\n" not in message


def test_symmetric_values_against_their_definitions():
    objects, probes = symmetric_problem(500, 2, 10, seed=0)
    assert objects.shape == (500, 2) and probes.shape == (10, 2)
    weights = np.random.default_rng(0).uniform(0, 2, 500)
    dots = objects @ probes.T
    sigmoid = np.mean(weights[:, None] / (1 + np.exp(-dots)), axis=1).sum() / 500
    assert symmetric_value("sigmoid", objects, weights, probes, 500) == pytest.approx(sigmoid, rel=1e-12)
    inverse = np.mean(weights[:, None] / (2.05 + dots), axis=1).sum() / 500
    assert symmetric_value("inverse", objects, weights, probes, 500) == pytest.approx(inverse, rel=1e-12)
