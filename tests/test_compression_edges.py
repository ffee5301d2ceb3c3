"""Rough edges of compression a new user hit: more moments than points (returned at once, nothing
built), the memory guard on every method, and a size larger than d (one warning per process)."""

import math
import re
import warnings

import numpy as np
import pytest

import harness.compression.api as api
import harness.compression.validate as validate
from harness import errors
from harness.cli import main
from harness.compression import compress


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch):
    """Each test starts with no message given yet (warn_once remembers them per process)."""
    monkeypatch.setattr(errors, "_warned", set())


@pytest.fixture
def nothing_built(monkeypatch):
    """Any moment features, reduction or error measurement fails the test."""

    def forbidden(*args, **kwargs):
        raise AssertionError("moment features were built")

    for name in ("raw_moments", "clustered_weights", "recombine", "random_subset", "kmeans_centroids"):
        monkeypatch.setattr(api, name, forbidden)


def _recorded(call):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = call()
    return result, [str(w.message) for w in caught]


@pytest.mark.parametrize("k", [8, 12, 40])
@pytest.mark.parametrize("method", ["clustered", "random"])
def test_more_moments_than_points_returns_the_input_at_once(nothing_built, k, method):
    points = np.random.default_rng(k).uniform(-1, 1, (2000, 12))
    result, messages = _recorded(lambda: compress(points, k=k, method=method))
    assert result.size == 2000 and result.moment_error == 0.0 and result.n_moments == math.comb(12 + k, k)
    np.testing.assert_array_equal(result.points, points)
    np.testing.assert_array_equal(result.indices, np.arange(2000))
    lower = max(j for j in range(k) if math.comb(12 + j, j) < 2000)  # 4: N(12, 4) = 1820
    assert messages == [
        f"N(m=12, k={k}) = {math.comb(12 + k, k):,} moments >= d = 2,000 points: nothing can be compressed, "
        f"every point is kept (lower k: N(m=12, k={lower}) = {math.comb(12 + lower, lower):,} < d)"
    ]


def test_compress_cli_with_too_many_moments_is_one_warning_line(tmp_path, capsys, nothing_built):
    points = np.random.default_rng(0).uniform(-1, 1, (2000, 12))
    np.save(tmp_path / "x.npy", points)
    assert main(["compress", str(tmp_path / "x.npy"), "--k", "40", "--out", str(tmp_path / "y.npz")]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("polyscale compress: warning: N(m=12, k=40) = 206,379,406,870 moments")
    np.testing.assert_array_equal(np.load(tmp_path / "y.npz")["points"], points)


MEASURING = "measuring the moments of"


@pytest.mark.parametrize(
    "method, work", [("clustered", "reducing"), ("global", "reducing"), ("random", MEASURING), ("kmeans", MEASURING)]
)
def test_the_memory_guard_comes_first_for_every_method(monkeypatch, nothing_built, method, work):
    # A machine that allows 1 MiB: the guard must refuse before building anything.
    physical = validate.os.sysconf("SC_PAGE_SIZE") * validate.os.sysconf("SC_PHYS_PAGES")
    monkeypatch.setattr(validate, "MEMORY_SHARE", 2**20 / physical)
    points = np.random.default_rng(1).uniform(-1, 1, (3000, 6))
    with pytest.raises(ValueError) as raised:
        compress(points, k=4, size=300, method=method)
    message = str(raised.value)
    assert message.startswith(f"N(m=6, k=4) = 210 moments is too many: {work} 3,000 points would need about ")
    assert "\n" not in message
    # the advice is true: the k it names passes the guard, the next one does not
    fits = int(re.search(r"use k <= (\d+)", message).group(1))
    reduce = method in ("clustered", "global")
    assert validate.memory_needed(3000, 6, fits, reduce) <= 2**20 < validate.memory_needed(3000, 6, fits + 1, reduce)
    # and the estimate covers what the error measurement holds: one chunk of float64 features
    assert validate.memory_needed(3000, 6, 4, reduce) >= 8 * 3000 * math.comb(10, 4)


def test_a_size_larger_than_d_keeps_every_point_with_one_warning(nothing_built):
    points = np.random.default_rng(2).uniform(-1, 1, (300, 2))

    def twice():
        return [
            compress(points, k=2, size=size, method=method)
            for size in ("1000", 1000)
            for method in ("clustered", "random")
        ]

    results, messages = _recorded(twice)
    assert all(r.size == 300 and r.moment_error == 0.0 for r in results)
    assert messages == ["size 1000 gives d' = 1,000 for d = 300 points, more than d: every point is kept"]


def test_compress_cli_size_larger_than_d_warns(tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.random.default_rng(3).uniform(-1, 1, (400, 3)))
    command = ["compress", str(tmp_path / "x.npy"), "--k", "2", "--out", str(tmp_path / "y.npz")]
    assert main([*command, "--size", "0.5*d^1"]) == 0
    captured = capsys.readouterr()
    assert '"kept": 200' in captured.out and captured.err == ""
    assert main([*command, "--size", "5000"]) == 0
    captured = capsys.readouterr()
    assert '"kept": 400' in captured.out
    assert captured.err == (
        "polyscale compress: warning: size 5000 gives d' = 5,000 for d = 400 points, more than d: every point is kept\n"
    )


SYMMETRIC = """\
experiment: symmetric
task: {name: symmetric, n_train: 150, input_dim: 2, probes: 3}
compression: {k: 2, size: 500}
arms: [moment, random, kmeans]
seeds: [0, 1, 2]
"""
WIDTH = """\
experiment: width
task: {name: teacher, n_train: 60, n_test: 30}
model: {width: 20}
compression: {k: 1, size: 64}
train: {optimizer: adamw, lr: 0.01, steps: 2, batch_size: 20, eval_every: 2}
arms: [original, moment, random, magnitude]
seeds: [0, 1]
"""


@pytest.mark.parametrize(
    "spec, expected",
    [
        (SYMMETRIC, "size 500 gives d' = 500 for d = 150 points, more than d: every point is kept"),
        (WIDTH, "size 64 asks for more units than every layer has (layer 0: 64 of 20): every unit is kept"),
    ],
    ids=["points", "units"],
)
def test_run_warns_once_for_a_size_larger_than_d_not_per_arm_or_seed(tmp_path, capsys, spec, expected):
    (tmp_path / "spec.yaml").write_text(spec)
    command = ["run", str(tmp_path / "spec.yaml"), "--out", str(tmp_path / "r"), "--device", "cpu"]
    code, messages = _recorded(lambda: main(command))
    assert code == 0
    assert [m for m in messages if "kept" in m] == [expected]


def test_kmeans_announces_its_cost_when_large(monkeypatch, caplog):
    from harness.compression import baselines

    assert baselines.kmeans_cost_warning(1000, 100) is None
    assert "524,288 points into 52,429 clusters" in baselines.kmeans_cost_warning(2**19, 52429)
    monkeypatch.setattr(baselines, "KMEANS_SLOW_WORK", 40 * 4)
    points = np.random.default_rng(0).uniform(-1, 1, (40, 2))
    with caplog.at_level("WARNING", logger="harness.compression.baselines"):
        centroids, mass = baselines.kmeans_centroids(points, np.ones(40), 4, seed=0)
    assert [r.message for r in caplog.records] == [baselines.kmeans_cost_warning(40, 4)]
    assert len(centroids) == 4 and mass.sum() == pytest.approx(40)
