"""What the schema and the command line import: nothing heavy until a command runs.

Each check runs in a fresh interpreter (this one has torch loaded by conftest) and reads
``sys.modules`` there, so it fails the moment a module-level import of torch, pandas and the like
creeps back into the schema or into a command module's parser.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys

import pytest

HEAVY = ("torch", "sklearn", "numba", "pandas", "scipy", "optuna", "wandb", "matplotlib", "sqlalchemy")
COMMANDS = ("compress", "fit", "plot", "report", "power", "run", "sweep", "worker", "status", "cancel", "collect")


def heavy_modules_after(code: str, repo_root) -> list[str]:
    """The heavy top-level packages in sys.modules after ``code`` runs in a fresh interpreter."""
    report = f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))))"
    probe = f"{code}\nimport json, sys\n{report}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo_root), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=repo_root, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_the_schema_and_the_sweep_files_import_nothing_heavy(repo_root):
    code = (
        "import harness.config, harness.config.sweep_spec\n"
        "from harness.config import Config, load_configs, run_id, flatten"
    )
    assert heavy_modules_after(code, repo_root) == []


def test_loading_and_expanding_a_sweep_file_imports_nothing_heavy(repo_root):
    code = "from harness.config.sweep_spec import load_sweep\nassert load_sweep('sweeps/smoke.yaml').runs"
    assert heavy_modules_after(code, repo_root) == []


@pytest.mark.parametrize("argv", [["--help"], *([command, "--help"] for command in COMMANDS), ["run"], ["nosuch"]])
def test_help_and_usage_errors_import_nothing_heavy(argv, repo_root):
    code = (
        "from harness.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit as exit:\n"
        f"    assert exit.code == {0 if '--help' in argv else 2}, exit.code\n"
        "else:\n"
        "    raise AssertionError('argparse did not exit')"
    )
    assert heavy_modules_after(code, repo_root) == []


def test_a_config_error_is_reported_before_torch_is_imported(tmp_path, repo_root):
    spec = tmp_path / "bad.yaml"
    spec.write_text("experiment: width\ntrain: {steps: ten}\n")
    code = f"from harness.cli import main\nassert main(['run', {str(spec)!r}]) == 2"
    assert heavy_modules_after(code, repo_root) == []


def test_experiments_never_import_the_sweep_package(repo_root):
    """sweep runs experiments; the reverse edge would be an import cycle (sweep files are read by
    harness.config.sweep_spec, which both use)."""
    offenders = []
    for path in sorted((repo_root / "harness" / "experiments").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            offenders += [f"{path.name}: {name}" for name in names if name.split(".")[:2] == ["harness", "sweep"]]
    assert offenders == []
