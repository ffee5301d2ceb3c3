"""One options type for the coordinator and its workers, and its round trip through a worker's
command line as the real ``polyscale`` parser reads it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from harness.cli import build_parser
from harness.sweep.options import STORAGE_ENV, SweepOptions, default_storage, from_args, worker_command


def worker_options(argv: list[str], env: dict[str, str]) -> SweepOptions:
    args = build_parser().parse_args(["worker", "--sweep", "e4", *argv])
    return from_args(args, Path("results") / "e4", environ=env)


def test_every_option_survives_the_worker_command_line(tmp_path):
    options = SweepOptions(
        out=tmp_path / "elsewhere",
        storage="postgresql://u:p@ss@db-host/polyscale",
        device="cuda:1",
        wandb_mode="online",
        wandb_project="another",
        retries=3,
        grace_seconds=7.25,
        batch_models=5,
        threads=2,
        keep_checkpoints=True,
    )
    for field in dataclasses.fields(SweepOptions):  # the test covers every field, none at its default
        assert getattr(options, field.name) != field.default, field.name
    argv, env = worker_command(options)
    assert worker_options(argv, env) == options
    assert "p@ss" not in " ".join(argv) and env[STORAGE_ENV] == options.storage  # never on the command line


def test_one_at_a_time_and_the_default_storage_survive_too(tmp_path):
    options = SweepOptions(out=tmp_path / "results", batch_models=1)
    back = worker_options(*worker_command(options))
    assert back == dataclasses.replace(options, storage=default_storage(options.out))
    assert back.storage_url == options.storage_url == str(tmp_path / "results" / "queue.journal")


def test_sweep_and_worker_read_the_same_flags_the_same_way(tmp_path):
    flags = [
        "--out",
        str(tmp_path),
        "--device",
        "cpu",
        "--wandb",
        "disabled",
        "--retries",
        "0",
        "--grace",
        "3",
        "--no-batch",
        "--threads",
        "1",
        "--storage",
        "sqlite:///q.db",
    ]
    parser = build_parser()
    as_sweep = from_args(parser.parse_args(["sweep", "s.yaml", *flags]), Path("unused"), environ={})
    as_worker = from_args(parser.parse_args(["worker", "--sweep", "s", *flags]), Path("unused"), environ={})
    assert (
        as_sweep
        == as_worker
        == SweepOptions(
            out=tmp_path,
            storage="sqlite:///q.db",
            device="cpu",
            wandb_mode="disabled",
            retries=0,
            grace_seconds=3.0,
            batch_models=1,
            threads=1,
        )
    )


def test_the_storage_comes_from_the_environment_unless_given():
    parser = build_parser()
    args = parser.parse_args(["worker", "--sweep", "s"])
    assert from_args(args, Path("results/s"), environ={STORAGE_ENV: "journal:/q"}).storage == "journal:/q"
    args = parser.parse_args(["worker", "--sweep", "s", "--storage", "sqlite:///x.db"])
    assert from_args(args, Path("results/s"), environ={STORAGE_ENV: "journal:/q"}).storage == "sqlite:///x.db"
