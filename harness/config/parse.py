"""Configurations from YAML files, nested data and ``--set`` overrides.

``load_configs(path, overrides)`` reads every document of a file; ``parse_config(raw, source,
overrides)`` one nested dict. Every error is one line naming the file (or ``--set``) and the
dotted key, e.g. ``smoke.yaml: train.lr: expected a positive float, got 'fast'``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.config.loader import ConfigError, apply_overrides, build, read_yaml
from harness.config.schema import Config, check_consistency
from harness.errors import UsageError


def load_configs(path: str | Path, overrides: Sequence[str] = ()) -> list[Config]:
    """Every configuration in a YAML file (one per ``---`` document), each with the overrides."""
    path = Path(path)
    documents = read_yaml(path)
    if not documents:
        raise UsageError(f"{path.name}: no configuration in the file")
    configs = []
    for number, raw in enumerate(documents, start=1):
        source = path.name if len(documents) == 1 else f"{path.name} (document {number})"
        configs.append(parse_config(raw, source, overrides))
    return configs


def parse_config(raw: Any, source: str = "config", overrides: Sequence[str] = ()) -> Config:
    """A validated Config from a nested dict (as read from YAML) and ``key=value`` overrides."""
    if not isinstance(raw, dict):
        raise UsageError(f"{source}: expected a mapping of keys to values, got {type(raw).__name__}")
    raw, overridden = apply_overrides(raw, overrides)
    try:
        config = build(Config, raw)
        check_consistency(config)
    except ConfigError as exc:
        from_override = any(
            exc.key == k or exc.key.startswith(k + ".") or k.startswith(exc.key + ".") for k in overridden
        )
        raise UsageError(f"{'--set' if from_override else source}: {exc}") from None
    return config
