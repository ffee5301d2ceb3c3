"""Sweep specs: expansion, run-id stability, and one-line errors that name the key."""

from __future__ import annotations

import textwrap

import pytest

from harness.config.sweep_spec import load_sweep
from harness.errors import UsageError

BASE = """\
    name: tiny
    experiment: data
    task: {name: teacher, n_train: 256, n_test: 500}
    model: {width: 20}
    compression: {k: 2, size: "4*d^0.5"}
    train: {optimizer: adamw, lr: 0.001, steps: 50, batch_size: 32}
"""


def write(tmp_path, text, name="tiny.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_grid_zip_and_seeds_expand_to_their_product(tmp_path):
    path = write(
        tmp_path,
        BASE
        + """\
    grid:
      task.n_train: [128, 256, 512]
    zip:
      train.lr: [0.001, 0.003]
      train.steps: [50, 80]
    seeds: [0, 4]
    """,
    )
    sweep = load_sweep(path)
    configs = {tuple(sorted(r.varied.items())) for r in sweep.runs}
    assert len(configs) == 3 * 2 * 2
    assert len(sweep.runs) == 12 * 4  # data experiment: original, moment, random, kmeans
    assert len({r.run_id for r in sweep.runs}) == len(sweep.runs)
    run = next(
        r for r in sweep.runs if r.varied == {"task.n_train": 512, "train.lr": 0.003, "train.steps": 80, "seed": 4}
    )
    assert (run.config.task.n_train, run.config.train.lr, run.config.train.steps, run.config.seed) == (
        512,
        0.003,
        80,
        4,
    )
    assert sweep.varied_keys == ("task.n_train", "train.lr", "train.steps", "seed")


def test_run_ids_ignore_cosmetic_changes_and_follow_semantic_ones(tmp_path):
    ids = lambda text: [r.run_id for r in load_sweep(write(tmp_path, text)).runs]  # noqa: E731
    base = ids(BASE)
    # reordered keys, a new name, tags, output folder, device: same runs
    cosmetic = BASE.replace("name: tiny", "name: renamed\n    tags: [a, b]\n    out: elsewhere\n    device: cpu")
    assert ids(cosmetic) == base
    # a default written out explicitly is the same configuration
    assert ids(BASE.replace("lr: 0.001,", "lr: 0.001, schedule: cosine,")) == base
    # anything that changes the numbers changes every id
    for changed in (BASE.replace("lr: 0.001", "lr: 0.002"), BASE.replace("k: 2", "k: 3"), BASE + "    seed: 1\n"):
        assert set(ids(changed)).isdisjoint(base)


def test_overrides_apply_to_the_base(tmp_path):
    sweep = load_sweep(write(tmp_path, BASE), ["train.lr=0.01", "compression.k=3"])
    assert {r.config.train.lr for r in sweep.runs} == {0.01}
    assert {r.config.compression.k for r in sweep.runs} == {3}


@pytest.mark.parametrize(
    "extra, message",
    [
        (
            "grid:\n      task.n_trian: [1, 2]\n",
            r"tiny.yaml \[task.n_trian=1, seed=0\]: task.n_trian: unknown key \(did you mean task.n_train\?\)",
        ),
        ("grid:\n      train.lr: [0.1, fast]\n", r"train.lr: expected a positive float, got 'fast'"),
        ("grid:\n      train.lr: 0.1\n", r"tiny.yaml: grid.train.lr: expected a non-empty list"),
        (
            "zip:\n      train.lr: [0.1, 0.2]\n      train.steps: [5]\n",
            r"zip: the lists must have one length \(train.lr has 2, train.steps has 1\)",
        ),
        ("seeds: 0\n", r"seeds: a count must be at least 1"),
        ("seeds: [1, 1]\n", r"seeds: a seed is listed twice"),
        ("grid:\n      seed: [1, 2]\n", r"vary the seed with 'seeds:'"),
        ("grid:\n      device: [cpu, cuda]\n", r"give the same run .*a varied key changes nothing"),
        ("grid:\n      train.lr: [0.1]\n    zip:\n      train.lr: [0.2]\n", r"train.lr: in both grid and zip"),
    ],
)
def test_bad_specs_give_one_line_errors_naming_the_key(tmp_path, extra, message):
    with pytest.raises(UsageError, match=message) as caught:
        load_sweep(write(tmp_path, BASE + "    " + extra))
    assert "\n" not in str(caught.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(UsageError, match="no such file"):
        load_sweep(tmp_path / "nope.yaml")
    with pytest.raises(UsageError, match=r"bad.yaml: not valid YAML \(line \d+\)"):
        load_sweep(write(tmp_path, "a: 1\nb: [unclosed\n", "bad.yaml"))


def test_dry_run_lists_runs_whose_varied_values_are_lists(tmp_path, capsys):
    from harness.cli import main

    path = write(
        tmp_path,
        BASE
        + """\
    zip:
      arms: [[original], [moment, random]]
      task.n_train: [256, 512]
""",
    )
    assert main(["sweep", str(path), "--dry-run"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "3 runs (2 configurations x arms) in sweep tiny"


def test_worker_threads_follow_the_option_then_the_environment_then_the_cores(monkeypatch):
    import os

    from harness.sweep.launch import worker_threads

    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert worker_threads(1, 2) == 1
    assert worker_threads(None, 2) == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert worker_threads(None, 2) == 4 and worker_threads(None, 16) == 1


def test_the_tune_block_and_seeds_read_quoted_numbers_as_the_run_schema_does(tmp_path):
    quoted = load_sweep(
        write(
            tmp_path,
            BASE
            + """\
    seeds: "2"
    tune:
      params: {train.lr: {low: 1e-4, high: 1e-1, log: true}}
      trials: "3"
      validation: "0.25"
""",
            "quoted.yaml",
        )
    )
    plain = load_sweep(
        write(
            tmp_path,
            BASE
            + """\
    seeds: 2
    tune:
      params: {train.lr: {low: 0.0001, high: 0.1, log: true}}
      trials: 3
      validation: 0.25
""",
            "plain.yaml",
        )
    )
    assert quoted.tune == plain.tune and [r.run_id for r in quoted.runs] == [r.run_id for r in plain.runs]
    assert (plain.tune.params[0].low, plain.tune.trials, plain.tune.validation) == (1e-4, 3, 0.25)
    with pytest.raises(UsageError, match=r"tune\.trials: expected a positive integer, got 'many'$"):
        load_sweep(
            write(tmp_path, BASE + "    tune:\n      params: {train.lr: {choices: [0.1]}}\n      trials: many\n")
        )
    with pytest.raises(UsageError, match=r"tune\.seed: expected a non-negative integer, got 'first'$"):
        load_sweep(
            write(
                tmp_path,
                BASE + "    tune:\n      params: {train.lr: {choices: [0.1]}}\n      trials: 2\n      seed: first\n",
            )
        )
