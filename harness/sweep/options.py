"""How a sweep's runs are run: one options type for the coordinator (``polyscale sweep``) and its
workers (``polyscale worker``), their command-line flags, and the one translation of options into
a worker's command line (``worker_command``) and back (``from_args``).

The storage URL travels to a worker in its environment, never on its command line, so that a
password in it does not show in a process list.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from harness.sweep.storage import STORAGE_ENV
from harness.tracking.wandb_mirror import MODES, resolve_mode


@dataclass(frozen=True)
class SweepOptions:
    """Where results go, the queue's storage (None: a journal in the results folder), device, W&B
    mode and project, retries of a failed run, seconds without a heartbeat before a worker is taken
    for dead, compatible jobs trained at once (None: by memory, 1: one at a time) and CPU threads
    per worker (None: $OMP_NUM_THREADS, else the cores divided among the workers), and whether a
    finished run keeps its last checkpoint."""

    out: Path
    storage: str | None = None
    device: str = "auto"
    wandb_mode: str = "offline"
    wandb_project: str = "polyscale"
    retries: int = 1
    grace_seconds: float = 20.0
    batch_models: int | None = None
    threads: int | None = None
    keep_checkpoints: bool = False

    @property
    def storage_url(self) -> str:
        return self.storage or default_storage(self.out)

    @property
    def heartbeat_seconds(self) -> float:
        """How often a worker beats: several times per grace period, at most every 5 s."""
        return max(0.5, min(5.0, self.grace_seconds / 6))


def default_storage(out: Path) -> str:
    """A journal file inside the results folder: many local processes, no server."""
    return str(out / "queue.journal")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``SweepOptions`` (``--out`` is added by each command: its default differs)."""
    parser.add_argument("--device", default="auto", help="auto (cuda if present), cpu, cuda or cuda:N")
    parser.add_argument("--wandb", choices=MODES, default=None, help="W&B mode (default: $WANDB_MODE or offline)")
    parser.add_argument("--wandb-project", default="polyscale", help="W&B project (default polyscale)")
    parser.add_argument(
        "--storage",
        default=None,
        help=f"Optuna storage URL: a journal file path, sqlite:///F.db or postgresql://... "
        f"(default: RESULTS/queue.journal; also read from ${STORAGE_ENV})",
    )
    parser.add_argument("--retries", type=int, default=1, help="re-run a failed run up to this many times (default 1)")
    parser.add_argument(
        "--grace",
        type=float,
        default=20.0,
        help="seconds without a heartbeat before a run's worker is taken for dead (default 20)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="CPU threads of each worker's torch (default: $OMP_NUM_THREADS if set, else the "
        "cores divided among the workers); 1 is often fastest for small models on shared cores",
    )
    parser.add_argument(
        "--keep-checkpoints", action="store_true", help="keep a finished run's last checkpoint (default: removed)"
    )
    batching = parser.add_mutually_exclusive_group()
    batching.add_argument(
        "--batch-models",
        type=int,
        default=None,
        metavar="K",
        help="train up to K compatible configurations (same shapes; other seeds, learning rates, "
        "data) as one batched model (default: as many as fit in memory, at most 64 on a CPU)",
    )
    batching.add_argument(
        "--no-batch", dest="batch_models", action="store_const", const=1, help="train one configuration at a time"
    )


def from_args(args: argparse.Namespace, default_out: Path, environ: Mapping[str, str] = os.environ) -> SweepOptions:
    """The options of parsed ``add_arguments`` flags; the storage from ``--storage``, else from
    ``$POLYSCALE_STORAGE`` in ``environ``."""
    return SweepOptions(
        out=args.out or default_out,
        storage=args.storage or environ.get(STORAGE_ENV),
        device=args.device,
        wandb_mode=resolve_mode(args.wandb),
        wandb_project=args.wandb_project,
        retries=args.retries,
        grace_seconds=args.grace,
        batch_models=args.batch_models,
        threads=args.threads,
        keep_checkpoints=args.keep_checkpoints,
    )


def worker_command(options: SweepOptions) -> tuple[list[str], dict[str, str]]:
    """The ``polyscale worker`` flags that give a worker ``options`` (read back by ``from_args``),
    and the environment variables it needs besides (the storage URL)."""
    argv = [
        "--out",
        str(options.out),
        "--device",
        options.device,
        "--wandb",
        options.wandb_mode,
        "--wandb-project",
        options.wandb_project,
        "--retries",
        str(options.retries),
        "--grace",
        str(options.grace_seconds),
    ]
    if options.batch_models is not None:
        argv += ["--batch-models", str(options.batch_models)]
    if options.threads is not None:
        argv += ["--threads", str(options.threads)]
    if options.keep_checkpoints:
        argv.append("--keep-checkpoints")
    return argv, {STORAGE_ENV: options.storage_url}
