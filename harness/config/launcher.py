"""Where a sweep's workers run: the ``launcher:`` block of a sweep file, and the same options given
as ``polyscale sweep`` flags (the flags win)::

    launcher:
      name: slurm              # local (the default: worker processes on this machine) or slurm
      partition: gpu           # sbatch --partition (default: the cluster's default partition)
      account: my-lab          # --account
      qos: normal              # --qos
      time: "4:00:00"          # --time: minutes, or [D-]HH:MM[:SS]; a task past it is requeued
      gpus_per_task: 1         # --gpus-per-task
      cpus_per_task: 4         # --cpus-per-task (default 1)
      mem: 16G                 # --mem: a number of megabytes, or with a K, M, G or T suffix
      tasks: 8                 # array tasks, one worker each (default: --workers, else 1)
      array_parallelism: 4     # at most this many tasks at once (the array's %N)
      shared_fs: false         # the results folder (and a journal file) is on a filesystem every
                               # node sees; needed for a journal-file queue on several nodes
      sbatch: ["--constraint=a100", "--exclusive"]   # further sbatch options, one per item

This module validates; ``harness.sweep.slurm`` submits. It imports nothing heavy.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from harness.errors import UsageError

LAUNCHERS = ("local", "slurm")
MEMORY = re.compile(r"^\d+[KMGT]?$")
SBATCH_OPTION = re.compile(r"^--([a-z][a-z0-9-]*)(=.+)?$")
# [D-]HH:MM[:SS], MM[:SS] as sbatch reads --time
TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


@dataclass(frozen=True)
class LauncherSpec:
    """The validated launcher options (see the module docstring); None: not given."""

    name: str = "local"
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: int | None = None  # minutes
    gpus_per_task: int | None = None
    cpus_per_task: int | None = None
    mem: str | None = None
    tasks: int | None = None
    array_parallelism: int | None = None
    shared_fs: bool = False
    sbatch: tuple[str, ...] = ()


KEYS = tuple(field.name for field in dataclasses.fields(LauncherSpec))


def parse_launcher(raw: Any, where: str) -> LauncherSpec:
    """The ``launcher:`` block read from ``where`` (e.g. "e4.yaml: launcher"), validated."""
    if isinstance(raw, str):
        raw = {"name": raw}
    if not isinstance(raw, dict):
        raise UsageError(f"{where}: expected a mapping (name: slurm, partition: ..., ...), got {raw!r}")
    for key in raw:
        if key not in KEYS:
            raise UsageError(f"{where}.{key}: unknown key (expected one of {', '.join(KEYS)})")
    return with_options(LauncherSpec(), raw, where)


def with_options(spec: LauncherSpec, values: dict[str, Any], where: str) -> LauncherSpec:
    """``spec`` with ``values`` (launcher keys; None: unchanged) validated and applied; errors
    name ``where`` and the key."""
    changes: dict[str, Any] = {}
    for key, value in values.items():
        if value is None:
            continue
        at = f"{where}.{key}"
        if key == "name":
            if value not in LAUNCHERS:
                raise UsageError(f"{at}: expected one of {', '.join(LAUNCHERS)}, got {value!r}")
        elif key in ("partition", "account", "qos"):
            if not isinstance(value, str) or not value or any(c.isspace() for c in value):
                raise UsageError(f"{at}: expected a name without spaces, got {value!r}")
        elif key == "time":
            value = minutes(value, at)
        elif key in ("gpus_per_task", "cpus_per_task", "tasks", "array_parallelism"):
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if key == "gpus_per_task" else 1):
                least = 0 if key == "gpus_per_task" else 1
                raise UsageError(f"{at}: expected an integer >= {least}, got {value!r}")
        elif key == "mem":
            value = str(value)
            if not MEMORY.match(value):
                raise UsageError(f"{at}: expected megabytes or a size like 16G, got {value!r}")
        elif key == "shared_fs":
            if not isinstance(value, bool):
                raise UsageError(f"{at}: expected true or false, got {value!r}")
        elif key == "sbatch":
            items = [value] if isinstance(value, str) else value
            if not isinstance(items, (list, tuple)) or not all(
                isinstance(item, str) and SBATCH_OPTION.match(item) for item in items
            ):
                raise UsageError(f"{at}: expected sbatch options such as --constraint=a100, got {value!r}")
            value = (*spec.sbatch, *items)
        changes[key] = value
    return dataclasses.replace(spec, **changes)


def minutes(value: Any, where: str) -> int:
    """A time limit in whole minutes (rounded up): a number of minutes or [D-]HH:MM[:SS]."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise UsageError(f"{where}: expected a positive number of minutes, got {value}")
        return value
    match = TIME.match(str(value).strip())
    if not match:
        raise UsageError(f"{where}: expected minutes or [D-]HH:MM[:SS], got {value!r}")
    days, first, second, third = (int(group) if group else 0 for group in match.groups())
    if match.group(1) is None and match.group(3) is None:  # MM
        seconds = first * 60
    elif match.group(1) is None and match.group(4) is None:  # MM:SS, as sbatch reads two fields
        seconds = first * 60 + second
    else:  # [D-]HH[:MM[:SS]]
        seconds = first * 3600 + second * 60 + third
    total = days * 86400 + seconds
    if total < 1:
        raise UsageError(f"{where}: expected a positive time, got {value!r}")
    return -(-total // 60)


def sbatch_parameters(options: tuple[str, ...]) -> dict[str, str | bool]:
    """The ``sbatch:`` options as submitit's additional parameters (``--exclusive`` -> True)."""
    parameters: dict[str, str | bool] = {}
    for option in options:
        name, _, value = option[2:].partition("=")
        parameters[name] = value if value else True
    return parameters
