"""The ``polyscale`` command line.

Each command lives in the module that owns its work and exposes ``register(subparsers)``, which adds
its parser and sets ``handler=`` to a function taking the parsed ``argparse.Namespace`` and returning
an exit code. A ``UsageError`` (or ``ValueError`` from input validation) anywhere in a handler becomes
one line on stderr and exit code 2, never a traceback.

Building the parsers imports nothing heavy (the handlers import torch, pandas, optuna and wandb),
so ``--help`` and usage errors answer at once; tests/test_cli_imports.py holds every command
module to that.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from harness import preempt
from harness.allocator import retain_freed_memory
from harness.errors import UsageError
from harness.redact import redact
from harness.tracking.wandb_mirror import forget_inherited_service

COMMAND_MODULES = (
    "harness.compression.cli",
    "analysis.cli",
    "harness.experiments.cli",
    "harness.sweep.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="polyscale",
        description=(
            "Test moment-matching compression of network width and training data, and the scaling "
            "laws it predicts. Run `polyscale COMMAND --help` for each command."
        ),
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Anything that reads the command line later (W&B's run metadata, tracebacks) must not see a
    # password given in a storage URL: keep only the redacted form once the arguments are parsed.
    sys.argv[:] = [redact(arg) for arg in sys.argv]
    forget_inherited_service()
    retain_freed_memory()
    try:
        return int(args.handler(args) or 0)
    except (UsageError, ValueError, FileNotFoundError) as exc:
        print(f"polyscale {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except preempt.Preempted as exc:  # after a stop signal: what was finished is kept, the rest resumes
        print(f"polyscale {args.command}: {exc}", file=sys.stderr)
        return preempt.exit_code()
    except KeyboardInterrupt:
        if not getattr(args, "quiet", False):  # a sweep's worker: its coordinator says it once
            print(f"polyscale {args.command}: interrupted", file=sys.stderr)
        return preempt.EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
