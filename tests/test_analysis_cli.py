"""`polyscale fit | plot | report` on small synthetic results folders: outputs, verdicts, bad input,
W&B logging."""

import json

import numpy as np
import pandas as pd
import pytest

from analysis.load import choose_x, make_series, read_source
from harness.cli import main
from harness.errors import UsageError
from tests.analysis_fixtures import power_law, power_law_offset, results_folder, runs_table, stretched_exp

X = 2.0 ** np.arange(5, 15)
LAWS = {
    "original": lambda x: power_law_offset(x, 0.3, 5.0, 0.45),
    "compressed": lambda x: stretched_exp(x, 0.2, 3.0, 0.5, 0.3),
    "naive": lambda x: power_law(x, 4.0, 0.25),
}
N_BOOT = "200"


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    table = runs_table(LAWS, X, 4, np.random.default_rng(0))
    return results_folder(tmp_path_factory.mktemp("sweep") / "smoke", table, failed=3)


@pytest.fixture(scope="module")
def fitted(results):
    assert main(["fit", str(results), "--x", "d", "--n-boot", N_BOOT]) == 0
    return json.loads((results / "analysis" / "fits.json").read_text())


def test_fit_writes_one_object_per_group_with_the_documented_fields(fitted, results):
    assert sorted(g["label"] for g in fitted) == ["compressed", "naive", "original"]
    for group in fitted:
        for key in (
            "group",
            "n_points",
            "verdict",
            "p_value",
            "gamma",
            "gamma_ci",
            "alpha",
            "alpha_ci",
            "forms",
            "reason",
        ):
            assert key in group
        assert set(group["forms"]) == {"power_law", "power_law_offset", "stretched_exp", "nested"}
        for form in group["forms"].values():
            assert set(form["params"]) == set(form["param_ci"])
            assert {"aicc", "extrapolation_rmse"} <= set(form)
    by_arm = {g["group"]["arm"]: g for g in fitted}
    assert by_arm["original"]["n_runs"] == 40 and by_arm["naive"]["n_runs"] == 37  # 3 failed runs skipped
    csv = pd.read_csv(results / "analysis" / "fits.csv")
    assert len(csv) == 12 and {"arm", "verdict", "form", "aicc"} <= set(csv.columns)
    seeds = pd.read_csv(results / "analysis" / "seeds.csv")
    assert seeds["n_seeds"].sum() == 117


def test_fit_verdicts_follow_the_generating_laws(fitted):
    by_arm = {g["group"]["arm"]: g for g in fitted}
    assert by_arm["compressed"]["verdict"] == "superpolynomial"
    assert by_arm["compressed"]["gamma_ci"][0] <= 0.3 <= by_arm["compressed"]["gamma_ci"][1]
    assert by_arm["original"]["verdict"] == "power_law"
    # one draw of a pure power law: not superpolynomial (how often it is power_law is for the calibration tests)
    assert by_arm["naive"]["verdict"] != "superpolynomial" and by_arm["naive"]["p_value"] >= by_arm["naive"]["level"]
    lo, hi = by_arm["original"]["alpha_ci"]
    assert lo <= 0.45 <= hi
    ratio = by_arm["original"]["alpha_ratios"]["naive"]
    assert ratio["ci"][0] <= 0.45 / 0.25 <= ratio["ci"][1]


def test_fit_prints_the_table_and_is_deterministic(results, tmp_path, capsys):
    assert main(["fit", str(results), "--x", "d", "--n-boot", N_BOOT, "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert "superpolynomial" in out and "compressed / naive" in out
    assert main(["fit", str(results), "--x", "d", "--n-boot", N_BOOT, "--out", str(tmp_path / "b")]) == 0
    assert (tmp_path / "a" / "fits.json").read_text() == (tmp_path / "b" / "fits.json").read_text()


def test_fit_reads_csv_and_parquet_tables(results, tmp_path):
    table = pd.read_parquet(results / "runs.parquet")
    table.to_csv(tmp_path / "runs.csv", index=False)
    assert main(["fit", str(tmp_path / "runs.csv"), "--x", "d", "--by", "arm", "--n-boot", "50"]) == 0
    assert (tmp_path / "runs-analysis" / "fits.json").is_file()


def test_joint_fit_writes_the_law_and_intervals(tmp_path):
    n = np.repeat(np.geomspace(1e3, 1e5, 5), 5)
    d = np.tile(np.geomspace(1e3, 1e6, 5), 5)
    loss = 0.5 + 30 / n**0.4 + 60 / d**0.3
    pd.DataFrame({"width": n, "d": d, "test_loss": loss}).to_csv(tmp_path / "grid.csv", index=False)
    assert (
        main(["fit", str(tmp_path / "grid.csv"), "--joint", "width,d", "--n-boot", "10", "--out", str(tmp_path / "j")])
        == 0
    )
    (record,) = json.loads((tmp_path / "j" / "fits.json").read_text())
    for key, value in {"E": 0.5, "A": 30, "B": 60, "alpha": 0.4, "beta": 0.3}.items():
        assert record[key] == pytest.approx(value, rel=1e-3)
        assert len(record[f"{key}_ci"]) == 2


@pytest.mark.parametrize(
    "args, message",
    [
        (["--x", "width_eff"], "missing column(s) 'width_eff'"),
        (["--x", "d", "--y", "nope"], "missing column(s) 'nope'"),
        (["--x", "d", "--by", "arm,optimizer"], "missing column(s) 'optimizer'"),
        (["--joint", "d"], "expected two columns"),
        (["--by", "optimizer"], "missing grouping column(s) 'optimizer'"),
    ],
)
def test_bad_columns_are_one_line_errors(results, capsys, args, message):
    assert main(["fit", str(results), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_bad_tables_are_one_line_errors(tmp_path, capsys):
    base = runs_table({"a": power_law}, X, 2, np.random.default_rng(1))
    cases = {
        "negative.csv": base.assign(test_loss=np.where(base["d"] == X[3], -0.1, base["test_loss"])),
        "few.csv": base[base["d"] <= X[1]],
    }
    expected = {"negative.csv": "non-positive", "few.csv": "too few points"}
    for name, table in cases.items():
        table.to_csv(tmp_path / name, index=False)
        assert main(["fit", str(tmp_path / name), "--x", "d"]) == 2
        err = capsys.readouterr().err.strip()
        assert expected[name] in err and name in err and "\n" not in err
    assert main(["fit", str(tmp_path / "absent.parquet")]) == 2
    assert "no such file" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["fit", str(tmp_path / "empty")]) == 2
    assert "no runs.parquet" in capsys.readouterr().err


def test_wandb_source_needs_online_mode(monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert main(["fit", "wandb:someone/sweep"]) == 2
    assert "needs online mode" in capsys.readouterr().err


def test_series_aggregate_seeds_as_replicates(results):
    table = pd.read_parquet(results / "runs.parquet")
    series, notes = make_series(table, "d", "test_loss", ["arm"])
    assert any("not 'done'" in note for note in notes)
    done = table[table["status"] == "done"]
    for s in series:
        expected = done[done["arm"] == s.group["arm"]].groupby("d")["test_loss"].agg(lambda v: np.log(v).mean())
        assert np.allclose(s.x, expected.index) and np.allclose(s.means(), expected.to_numpy())
        assert s.n.sum() == len(done[done["arm"] == s.group["arm"]])


def test_default_x_is_the_column_that_varies(results):
    table = pd.read_parquet(results / "runs.parquet").assign(d_eff=lambda t: t["d"], width_eff=64)
    assert choose_x(table, ["arm"]) == "d_eff"
    with pytest.raises(UsageError, match="--x"):
        choose_x(table.drop(columns=["d_eff", "d"]), ["arm"])
    assert read_source(results).name == "smoke"


def test_plot_writes_readable_pngs(results, tmp_path, capsys):
    assert main(["plot", str(results), "--x", "d", "--n-boot", "50", "--out", str(tmp_path)]) == 0
    names = {p.name for p in tmp_path.glob("*.png")}
    assert names == {"loss_vs_d.png", "local_slope_d.png", "trajectories.png"}
    for path in tmp_path.glob("*.png"):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    assert "no error-vs-d plot" in capsys.readouterr().out  # no moment_error column in this table


def test_plot_without_trajectories_notes_it(tmp_path, capsys):
    folder = results_folder(
        tmp_path / "r", runs_table({"a": power_law}, X, 2, np.random.default_rng(2)), trajectories=False
    )
    assert main(["plot", str(folder), "--x", "d", "--n-boot", "20"]) == 0
    assert "no trajectories" in capsys.readouterr().out
    assert not (folder / "analysis" / "trajectories.png").exists()


def test_report_is_one_self_contained_page(results, capsys):
    assert main(["report", str(results), "--x", "d", "--n-boot", "50"]) == 0
    page = (results / "report.html").read_text()
    assert str((results / "report.html").resolve()) in capsys.readouterr().out
    assert page.count("data:image/png;base64,") == 3
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert "superpolynomial" in page and "power_law" in page
    assert "RuntimeError: diverged in naive-" in page and "Traceback" not in page  # error head only
    assert "Failures (3)" in page and ">117<" in page  # done runs counted


def test_report_of_a_sweep_without_fits_still_lists_the_failures(tmp_path):
    table = runs_table({"a": power_law}, X[:4], 1, np.random.default_rng(3))
    folder = results_folder(tmp_path / "bad", table, failed=2, trajectories=False)
    assert main(["report", str(folder), "--x", "d"]) == 0
    page = (folder / "report.html").read_text()
    assert "No fits" in page and "Failures (2)" in page


def test_wandb_offline_logs_the_fit_table_and_plots(results, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert (
        main(
            ["plot", str(results), "--x", "d", "--n-boot", "20", "--out", str(tmp_path / "plots"), "--wandb", "offline"]
        )
        == 0
    )
    (run,) = (tmp_path / "wandb").glob("offline-run-*")
    assert list(run.glob("run-*.wandb"))
    (table,) = run.glob("files/media/table/fits_*.table.json")
    logged = json.loads(table.read_text())
    assert "verdict" in logged["columns"] and {row[logged["columns"].index("label")] for row in logged["data"]} == set(
        LAWS
    )
    assert len(list(run.glob("files/media/images/*.png"))) == 3


def test_a_wandb_failure_only_warns(results, tmp_path, monkeypatch, capsys):
    import wandb

    def broken(*args, **kwargs):
        raise RuntimeError("no W&B service")

    monkeypatch.setattr(wandb, "init", broken)
    assert main(["fit", str(results), "--x", "d", "--n-boot", "20", "--out", str(tmp_path), "--wandb", "online"]) == 0
    assert (tmp_path / "fits.json").is_file()
    assert "W&B logging failed" in capsys.readouterr().err


def test_a_truncated_metrics_line_is_skipped(tmp_path):
    folder = results_folder(tmp_path / "r", runs_table({"a": power_law}, X, 2, np.random.default_rng(4)))
    metrics = next((folder / "runs").glob("*/metrics.jsonl"))
    metrics.write_text(metrics.read_text() + '{"step": 350, "test_lo')
    assert main(["plot", str(folder), "--x", "d", "--n-boot", "20"]) == 0
    assert (folder / "analysis" / "trajectories.png").is_file()


@pytest.mark.parametrize("command", ["plot", "report"])
def test_a_string_where_metrics_have_a_number_is_read_as_missing_with_a_note(tmp_path, capsys, command):
    folder = results_folder(tmp_path / "r", runs_table({"a": power_law}, X, 2, np.random.default_rng(4)))
    metrics = next((folder / "runs").glob("*/metrics.jsonl"))
    lines = [json.loads(line) for line in metrics.read_text().splitlines()]
    lines[2]["test_loss"] = "n/a"
    metrics.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert main([command, str(folder), "--x", "d", "--n-boot", "20"]) == 0
    printed = capsys.readouterr().out
    assert f"note: {metrics}: not a number, read as missing: test_loss='n/a' (line 3)" in printed
    assert (folder / "analysis" / "trajectories.png").is_file()


def test_trajectory_panels_colour_each_arm_alike(tmp_path, monkeypatch):
    """A panel lacking an arm (E3's imp, finished under one optimiser only) keeps every other arm's colour."""
    from matplotlib.colors import to_hex

    from analysis import plots

    steps = np.arange(0, 50, 10)
    rows = [
        {
            "experiment": "width",
            "train.optimizer": opt,
            "arm": arm,
            "run_id": f"{opt}-{arm}",
            "step": s,
            "test_loss": 1.0 / (s + 1),
        }
        for opt, arms in (("adamw", ("moment", "original")), ("sgd", ("imp", "moment", "original")))
        for arm in arms
        for s in steps
    ]
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or path)
    plots.plot_trajectories(pd.DataFrame(rows), "test_loss", tmp_path / "t.png")
    colours = {}
    for ax in figures[0].axes:
        for line in ax.get_lines():
            arm = line.get_label().split(" ")[0]
            colours.setdefault(arm, set()).add(to_hex(line.get_color()))
    assert set(colours) == {"imp", "moment", "original"}
    assert all(len(c) == 1 for c in colours.values()) and len(set.union(*colours.values())) == 3
