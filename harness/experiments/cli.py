"""``polyscale run``: run every arm of one configuration and record the results."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
from pathlib import Path

from harness import preempt
from harness.config import Config, load_configs, read_yaml
from harness.config.sweep_spec import load_sweep
from harness.errors import UsageError

SWEEP_ONLY_KEYS = ("grid", "zip", "seeds", "tune")

EPILOG = """\
Each arm of the configuration is one run, named by a hash of the configuration (cosmetic keys such
as out, device, name and tags excluded) and the arm. Finished runs (done or diverged) are skipped;
an unfinished one (killed, stopped, failed) goes on from its last checkpoint, written every
train.checkpoint_every steps and every 10 minutes into OUT/runs/<run_id>/checkpoints/.

results:
  OUT/runs/<run_id>/{config.json, status.json, metrics.jsonl, summary.json}
  OUT/runs.parquet   one row per run: run_id, experiment, arm, seed, d, d_eff, width, width_eff, k,
                     optimizer, lr, steps, test_loss, train_loss, compress_seconds, train_seconds,
                     moment_error, status, the arm's extras and every config key (dotted names)

A YAML file may hold several configurations separated by '---'; each is run in turn. A sweep
file (grid:, zip:, seeds:) is expanded and its configurations run in turn in this process; use
`polyscale sweep` for parallel workers, queues, W&B and tuning.

examples:
  polyscale run sweeps/every-experiment.yaml --out results/scratch
  polyscale run sweeps/smoke.yaml --out results/smoke
  polyscale run e3.yaml --set train.lr=1e-3 --set arms=[original,moment] --device cuda
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run every arm of one configuration and record the results",
        description="Train (or compress) the original, the moment-compressed and the baseline arms side by side.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("spec", type=Path, metavar="SPEC.yaml", help="the configuration (see harness/config/schema.py)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key (dotted, value read as YAML); repeatable",
    )
    parser.add_argument("--out", type=Path, help="results folder (default: the config's `out`)")
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: the config's `device`; auto = cuda if present)")
    parser.add_argument("--force", action="store_true", help="run again arms whose runs are finished")
    parser.add_argument(
        "--keep-checkpoints", action="store_true", help="keep a finished run's last checkpoint (default: removed)"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    configs = (
        sweep_configs(args.spec, args.overrides)
        if is_sweep_file(args.spec)
        else load_configs(args.spec, args.overrides)
    )
    from harness.experiments.runner import run_config  # torch: only once the configurations are valid

    # SIGTERM, SIGUSR1 and Ctrl-C checkpoint the runs in training and end with 75 (130 after Ctrl-C):
    # the same command resumes them (harness/preempt.py). The caller's handlers come back after.
    previous = {number: signal.getsignal(number) for number in preempt.STOP_SIGNALS}
    preempt.stop_on_signals(lambda: os._exit(preempt.exit_code()))
    try:
        failed, tables = _run_all(configs, args, run_config)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    for table in tables:
        print(f"table: {table}")
    return 1 if failed else 0


def _run_all(configs: list[Config], args: argparse.Namespace, run_config) -> tuple[int, list[Path]]:
    from harness.tracking.store import ensure_writable, table_path

    failed, tables = 0, []
    for config in configs:
        changes = {"out": str(args.out)} if args.out is not None else {}
        if args.device is not None:
            changes["device"] = args.device
        config = dataclasses.replace(config, **changes)
        ensure_writable(config.out)
        for record in run_config(config, force=args.force, keep_checkpoints=args.keep_checkpoints):
            failed += record.status == "failed"
            print(_line(record))
        table = table_path(config.out)
        tables += [table] if table not in tables else []
    return failed, tables


def _line(record) -> str:
    if record.skipped:
        return f"{record.run_id:<34} {record.status:<9} (finished before: skipped)"
    row = record.row
    if record.status == "failed":
        return f"{record.run_id:<34} failed    {record.error}"
    parts = [f"{record.run_id:<34} {record.status:<9}"]
    for key in ("test_loss", "max_train_gap", "error", "d_eff", "width_eff", "compress_seconds", "train_seconds"):
        value = row.get(key)
        unchanged = (key, value) in (("d_eff", row.get("d")), ("width_eff", row.get("width")))
        if value is not None and not unchanged:
            parts.append(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}")
    return "  ".join(parts)


def is_sweep_file(path: Path) -> bool:
    """A single YAML document with grid:, zip:, seeds: or tune: (unreadable files: False, and
    ``load_configs`` reports what is wrong with them)."""
    try:
        documents = read_yaml(path)
    except UsageError:
        return False
    return (
        len(documents) == 1 and isinstance(documents[0], dict) and any(key in documents[0] for key in SWEEP_ONLY_KEYS)
    )


def sweep_configs(path: Path, overrides: list[str]) -> list[Config]:
    """The distinct configurations of a sweep file, in the sweep's order."""
    sweep = load_sweep(path, overrides)
    if sweep.tune is not None:
        raise UsageError(f"{path.name}: tune: searching first needs `polyscale sweep {path}`")
    configs: dict[str, Config] = {}
    for planned in sweep.runs:
        configs.setdefault(json.dumps(planned.varied, sort_keys=True, default=str), planned.config)
    return list(configs.values())
