"""``polyscale run``: the command line over run_config."""

import pandas as pd

from harness.cli import main
from harness.config import load_configs

TINY = """\
experiment: width
task: {name: teacher, n_train: 100, n_test: 50}
model: {width: 30}
compression: {k: 1, size: 10}
train: {optimizer: adamw, lr: 0.01, steps: 6, batch_size: 20, eval_every: 3}
"""


def test_run_records_every_arm_and_skips_them_the_second_time(tmp_path, capsys):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY)
    out = tmp_path / "results"
    assert main(["run", str(spec), "--out", str(out), "--device", "cpu", "--set", "arms=[original, moment]"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert (
        len(printed) == 3
        and all(" done " in line for line in printed[:2])
        and printed[2] == f"table: {out / 'runs.parquet'}"
    )
    table = pd.read_parquet(out / "runs.parquet")
    assert sorted(table["arm"]) == ["moment", "original"] and set(table["device"]) == {"cpu"}
    assert main(["run", str(spec), "--out", str(out), "--set", "arms=[original, moment]"]) == 0
    assert all("skipped" in line for line in capsys.readouterr().out.splitlines()[:2])


def test_run_expands_a_sweep_file_and_runs_each_configuration_once(tmp_path, capsys):
    spec = tmp_path / "grid.yaml"
    spec.write_text(TINY + "arms: [original, moment]\ngrid:\n  task.n_train: [80, 100]\nseeds: [0, 3]\n")
    out = tmp_path / "results"
    assert main(["run", str(spec), "--out", str(out), "--device", "cpu"]) == 0
    table = pd.read_parquet(out / "runs.parquet")
    assert len(table) == 2 * 2 * 2 and table["run_id"].is_unique
    assert sorted(zip(table["task.n_train"], table["seed"], table["arm"])) == sorted(
        (n, seed, arm) for n in (80, 100) for seed in (0, 3) for arm in ("moment", "original")
    )
    spec.write_text(
        TINY + "grid:\n  task.n_train: [80]\ntune:\n  params: {train.lr: {low: 0.001, high: 0.1}}\n  trials: 2\n"
    )
    capsys.readouterr()
    assert main(["run", str(spec)]) == 2
    assert "tune: searching first needs `polyscale sweep" in capsys.readouterr().err


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY)
    assert main(["run", str(spec), "--set", "train.lr=fast"]) == 2
    assert capsys.readouterr().err == "polyscale run: error: --set: train.lr: expected a positive float, got 'fast'\n"
    spec.write_text(TINY.replace("width: 30", "widht: 30"))
    assert main(["run", str(spec)]) == 2
    assert (
        capsys.readouterr().err
        == "polyscale run: error: tiny.yaml: model.widht: unknown key (did you mean model.width?)\n"
    )
    assert main(["run", str(tmp_path / "none.yaml")]) == 2
    assert "none.yaml: no such file" in capsys.readouterr().err


def test_example_configs_are_valid_and_cover_every_training_experiment(repo_root):
    configs = load_configs(repo_root / "sweeps" / "every-experiment.yaml")
    assert [c.experiment for c in configs] == ["width", "data", "attention", "symmetric"]


def test_the_demos_smoke_sweep_is_a_grid_the_fit_can_test(repo_root):
    from harness.config.sweep_spec import load_sweep

    sweep = load_sweep(repo_root / "sweeps" / "smoke.yaml")
    sizes = {run.config.task.n_train for run in sweep.runs}
    assert len(sizes) >= 6 and max(sizes) / min(sizes) >= 8  # d and d' = 0.1 d span the factor the fit needs
    assert {run.arm for run in sweep.runs} == {"original", "moment", "random", "kmeans"}
