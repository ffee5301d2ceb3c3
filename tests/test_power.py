"""`polyscale power`: the pilot's noise estimate, the simulated power and false-positive rate
against cases with a known answer and against a run-by-run loop, and the command's outputs."""

import json

import numpy as np
import pandas as pd
import pytest

from analysis.analyse import analyse_table
from analysis.defaults import LEVEL
from analysis.forms import log_model
from analysis.power import (
    alternative_theta,
    design_series,
    detection_rate,
    pilots,
    simulate_log_y,
    verdicts,
)
from analysis.verdict import LACK_OF_FIT_LEVEL
from harness.cli import main
from tests.analysis_fixtures import power_law_offset, runs_table

X = 2.0 ** np.arange(5, 15)
# Null: a power law with offset that is still far above its offset at the largest x.
NULL_THETA = np.array([0.05, 0.0, 0.5, 0.0])
N_BOOT = 49
SIMS = 100


def binomial_margin(rate: float, sims: int) -> float:
    """Three binomial standard errors of a rate estimated from `sims` draws."""
    return 3.0 * np.sqrt(rate * (1.0 - rate) / sims)


@pytest.fixture(scope="module")
def pilot_table():
    laws = {"a": lambda x: power_law_offset(x, 0.3, 5.0, 0.45), "b": lambda x: power_law_offset(x, 0.1, 2.0, 0.3)}
    table = runs_table(laws, X, 4, np.random.default_rng(3), sd=0.05)
    # Unequal seeds per x: drop one seed at two x values of arm a.
    return table.drop(table.index[(table["arm"] == "a") & (table["seed"] == 3) & table["d"].isin(X[:2])])


def test_noise_is_the_pooled_seed_sd_of_log_y(pilot_table):
    found, _ = pilots(pilot_table, "d", "test_loss", ["arm"])
    assert [p.label for p in found] == ["a", "b"]
    for pilot in found:
        part = pilot_table[pilot_table["arm"] == pilot.label]
        by_x = np.log(part["test_loss"]).groupby(part["d"])
        dof = (by_x.count() - 1).to_numpy()
        pooled = np.sqrt((dof * by_x.var(ddof=1).to_numpy()).sum() / dof.sum())
        assert pilot.noise_sd == pytest.approx(pooled, rel=1e-12)
        assert (pilot.x_min, pilot.x_max) == (X[0], X[-1])


def test_an_enormous_alternative_is_detected_but_for_the_lack_of_fit_check():
    """Noise 1e-3 against a slope that grows 20-fold: the test of gamma always rejects, and a data
    set is missed only when the lack-of-fit check rejects the true (nested) law, which it does at
    LACK_OF_FIT_LEVEL."""
    design = design_series_for(seeds=3, points=8)
    power = detection_rate(design, alternative_theta(NULL_THETA, 0.5), 1e-3, SIMS, N_BOOT, seed=0)
    assert power >= 1.0 - LACK_OF_FIT_LEVEL - binomial_margin(LACK_OF_FIT_LEVEL, SIMS)


def test_at_the_null_boundary_power_is_the_false_positive_rate_and_that_is_at_most_the_level():
    design = design_series_for(seeds=3, points=8)
    at_null = detection_rate(design, alternative_theta(NULL_THETA, 0.0), 0.05, SIMS, N_BOOT, seed=1)
    false_positive = detection_rate(design, NULL_THETA, 0.05, SIMS, N_BOOT, seed=1)
    assert at_null == false_positive
    assert false_positive <= LEVEL + binomial_margin(LEVEL, SIMS)


def test_with_huge_noise_power_falls_to_the_false_positive_rate():
    """Seed noise 1.0 in log loss against a slope that grows 3-fold (with 0.2 this design detects it
    in about a third of the data sets)."""
    design, sims = design_series_for(seeds=3, points=8), 60
    power = detection_rate(design, alternative_theta(NULL_THETA, 0.3), 1.0, sims, N_BOOT, seed=2)
    false_positive = detection_rate(design, NULL_THETA, 1.0, sims, N_BOOT, seed=2)
    assert abs(power - false_positive) <= binomial_margin(max(LEVEL, false_positive), sims) * np.sqrt(2)
    assert power <= LEVEL + binomial_margin(LEVEL, sims)


def test_the_batch_agrees_with_a_loop_over_simulated_tables():
    """Each data set simulated by hand and analysed alone as a runs table by ``analyse_table``: the
    data are the batch's exactly; the verdicts differ only through the bootstrap draws (a batch
    draws all its data sets' replicates from one generator), so the counts agree to within them."""
    sims, seeds, points, sd, gamma = 40, 3, 8, 0.2, 0.3
    design = design_series_for(seeds, points)
    theta = alternative_theta(NULL_THETA, gamma)
    rng = np.random.default_rng(7)
    batch_log_y = simulate_log_y(design, theta, sd, sims, rng)
    batch = verdicts(design, batch_log_y, N_BOOT, rng, LEVEL)

    x = np.geomspace(X[0], X[-1], points)
    law = np.exp(log_model(theta, np.log(x / x[0])))
    loop_rng = np.random.default_rng(7)
    loop = []
    for i in range(sims):
        rows = [(xj, law[j] * np.exp(sd * loop_rng.standard_normal())) for j, xj in enumerate(x) for _ in range(seeds)]
        table = pd.DataFrame(rows, columns=["d", "test_loss"]).assign(status="done")
        np.testing.assert_allclose(np.log(table["test_loss"]), batch_log_y[i], rtol=0, atol=1e-12)
        loop.append(analyse_table(table, "d", "test_loss", [], N_BOOT, seed=i).results[0].verdict)
    batch_count = int((batch == "superpolynomial").sum())
    loop_count = loop.count("superpolynomial")
    assert 0 < loop_count < sims  # a design between the extremes, where the comparison means something
    share = loop_count / sims
    assert abs(batch_count - loop_count) / sims <= binomial_margin(share, sims)


def design_series_for(seeds: int, points: int):
    from analysis.power import Pilot

    pilot = Pilot({}, "all", float(X[0]), float(X[-1]), 0.05, NULL_THETA, None)
    return design_series(pilot, seeds, points)


def test_cli_writes_json_csv_and_plot(pilot_table, tmp_path, capsys):
    source = tmp_path / "pilot.csv"
    pilot_table.to_csv(source, index=False)
    out = tmp_path / "power"
    argv = ["power", str(source), "--x", "d", "--by", "arm", "--gamma", "0.3", "--seeds", "3,5", "--points", "6"]
    assert main([*argv, "--sims", "20", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    table = pd.read_csv(out / "power.csv")
    assert list(table.columns) == ["group", "seeds", "points", "power", "false_positive_rate"]
    assert sorted(zip(table["group"], table["seeds"], table["points"])) == [
        ("a", 3, 6),
        ("a", 5, 6),
        ("b", 3, 6),
        ("b", 5, 6),
    ]
    assert table["power"].between(0, 1).all() and table["false_positive_rate"].between(0, 1).all()
    record = json.loads((out / "power.json").read_text())
    assert [g["label"] for g in record["groups"]] == ["a", "b"]
    assert all(g["gamma"] == 0.3 for g in record["groups"])
    assert all(set(g["null_power_law_offset"]) == {"L0", "A", "alpha"} for g in record["groups"])
    assert len(record["designs"]) == len(table)
    assert (out / "power.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "wrote" in printed and ("smallest design" in printed or "no design tried" in printed)


def test_cli_without_m_says_gamma_is_one_third(pilot_table, tmp_path, capsys):
    source = tmp_path / "pilot.csv"
    pilot_table[pilot_table["arm"] == "b"].to_csv(source, index=False)
    argv = ["power", str(source), "--x", "d", "--seeds", "3", "--points", "6", "--sims", "10"]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 0
    assert "gamma = 1/3" in capsys.readouterr().out
    assert json.loads((tmp_path / "out" / "power.json").read_text())["groups"][0]["gamma"] == pytest.approx(1 / 3)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--seeds", "3,five"], "--seeds '3,five': expected comma-separated integers"),
        (["--seeds", "1,3"], "--seeds '1,3': each value must be at least 2"),
        (["--points", "4"], "--points '4': each value must be at least 6"),
        (["--n-boot", "20"], "--n-boot 20: no p-value can fall below"),
    ],
)
def test_bad_options_are_one_line_errors(pilot_table, tmp_path, capsys, args, message):
    source = tmp_path / "pilot.csv"
    pilot_table.to_csv(source, index=False)
    assert main(["power", str(source), "--x", "d", *args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_a_pilot_without_done_runs_is_a_one_line_error(pilot_table, tmp_path, capsys):
    source = tmp_path / "failed.csv"
    pilot_table.assign(status="failed").to_csv(source, index=False)
    assert main(["power", str(source), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "no run has status 'done'" in err and "failed.csv" in err and "\n" not in err


def test_a_pilot_without_seeds_is_a_one_line_error(pilot_table, tmp_path, capsys):
    source = tmp_path / "one-seed.csv"
    pilot_table[pilot_table["seed"] == 0].to_csv(source, index=False)
    assert main(["power", str(source), "--x", "d", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "no group has seeds" in err and "\n" not in err
