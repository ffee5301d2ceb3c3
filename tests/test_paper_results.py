"""The committed evidence of the paper's experiments (results/paper/<exp>/) is what the analysis
computes from the committed runs table.

Every ``results/paper/<exp>/analysis/fits.json`` records, per group, the x and y columns, the
grouping columns (the keys of ``group``), the bootstrap replicates and the level it was made with
(the bootstrap seed is the default, 0: `polyscale report` and `polyscale fit` without --seed).

- Fast (``make test``): every group's series (points, runs, x range) is rebuilt from
  runs.parquet and must match; one group per file (the smallest) is re-analysed in full with the
  recorded options and every field of its record must match. Groups are analysed independently
  (each with its own seeded generator, ``analysis.analyse.group_seed``), so one group recomputed
  alone must reproduce its committed record exactly; only the exponent ratios against the other
  groups are left to the slow test.
- Slow (``-m slow``): every fits.json recomputed whole, as `polyscale fit` does, ratios included.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from analysis.analyse import TableAnalysis, analyse_series, analyse_table
from analysis.load import make_series, read_source
from analysis.tables import group_record

ROOT = Path(__file__).resolve().parent.parent / "results" / "paper"
FITS = sorted(ROOT.glob("*/analysis/fits.json"))
REL = 1e-6  # floats may differ in the last digits across BLAS builds; structure and verdicts may not


def _ids(paths):
    return [p.parent.parent.name for p in paths]


def _options(records: list[dict]) -> tuple[str, str, list[str], int, float]:
    first = records[0]
    by = list(first["group"])
    for r in records:
        assert (r["x"], r["y"], list(r["group"]), r["n_boot"], r["level"]) == (first["x"], first["y"], by, first["n_boot"], first["level"])
    return first["x"], first["y"], by, first["n_boot"], first["level"]


def _same(got, want, where: str = "") -> None:
    """Equal JSON trees; floats to a relative 1e-6."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and set(got) == set(want), f"{where}: keys {sorted(got)} != {sorted(want)}"
        for key in want:
            _same(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{where}: {got!r} != {want!r}"
        for i, (g, w) in enumerate(zip(got, want)):
            _same(g, w, f"{where}[{i}]")
    elif isinstance(want, float) and not isinstance(want, bool) and isinstance(got, (int, float)):
        assert math.isclose(got, want, rel_tol=REL, abs_tol=1e-12), f"{where}: {got!r} != {want!r}"
    else:
        assert got == want, f"{where}: {got!r} != {want!r}"


def _roundtrip(record: dict) -> dict:
    """As written to fits.json (tuples become lists, numpy scalars plain)."""
    return json.loads(json.dumps(record))


def test_every_experiment_has_its_evidence():
    assert FITS, f"no committed fits under {ROOT}"
    for path in FITS:
        folder = path.parent.parent
        assert (folder / "runs.parquet").is_file(), f"{folder}: runs.parquet missing"
        assert (folder / "report.html").is_file(), f"{folder}: report.html missing"


@pytest.mark.parametrize("path", FITS, ids=_ids(FITS))
def test_fits_match_the_committed_table(path: Path):
    records = json.loads(path.read_text())
    x, y, by, n_boot, level = _options(records)
    source = read_source(path.parent.parent)
    series, _ = make_series(source.table, x, y, by, source.description)
    by_label = {s.label: s for s in series}
    assert sorted(by_label) == sorted(r["label"] for r in records)
    for r in records:
        s = by_label[r["label"]]
        assert (len(s.x), len(s.run_x)) == (r["n_points"], r["n_runs"]), r["label"]
        _same([float(s.x[0]), float(s.x[-1])], r["x_range"], r["label"])

    want = min(records, key=lambda r: (r["n_runs"], r["label"]))
    result = analyse_series(by_label[want["label"]], n_boot, 0, level=level)
    analysis = TableAnalysis(x, y, by, [result], [], [], n_boot, level, None)
    got = _roundtrip(group_record(result, analysis))
    got["alpha_ratios"] = want["alpha_ratios"]  # needs the other groups: the slow test checks them
    _same(got, want, want["label"])


@pytest.mark.slow
@pytest.mark.parametrize("path", FITS, ids=_ids(FITS))
def test_fits_match_the_committed_table_whole(path: Path):
    records = json.loads(path.read_text())
    x, y, by, n_boot, level = _options(records)
    source = read_source(path.parent.parent)
    analysis = analyse_table(source.table, x, y, by, n_boot, 0, None, level, source.description)
    _same(_roundtrip([group_record(r, analysis) for r in analysis.results]), records, path.parent.parent.name)
