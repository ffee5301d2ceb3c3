"""A configuration as the columns of the results table and of any tracker's config."""

from __future__ import annotations

from dataclasses import is_dataclass

from harness.config.identity import to_dict
from harness.config.schema import Config


def flatten(config: Config | dict) -> dict:
    """Every field as ``section.key: scalar`` (lists become comma-joined strings, size a string).

    Takes a Config or its ``to_dict`` form (as stored in a run's config.json).
    """
    flat = {}
    for key, value in _walk(to_dict(config) if is_dataclass(config) else config):
        if isinstance(value, list):
            value = ",".join(str(v) for v in value)
        elif key == "compression.size" and value is not None:
            value = str(value)
        flat[key] = value
    return flat


def _walk(tree: dict, prefix: str = ""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _walk(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value
