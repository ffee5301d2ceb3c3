"""Run identity: a configuration as plain data, its canonical form, and the run id it hashes to.

``run_id(config, arm)`` hashes the fields that differ from their defaults (cosmetic ones, and
those that only other arms read, excluded) plus the arm, so adding a field with a default keeps
every old id, and setting an arm's own field (``compression.imp_rounds``) renames that arm's runs
alone. The price: a default must never change meaning silently. A field whose default changes
declares the value it had before (``legacy``): the id leaves out that value instead, so the runs
made before keep their ids, and runs with the new default get new ones.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import MISSING, fields, is_dataclass

from harness.config.schema import ARMS, Config


def to_dict(config) -> dict:
    """The full configuration as plain nested data (tuples as lists)."""
    out = {}
    for f in fields(config):
        value = getattr(config, f.name)
        out[f.name] = to_dict(value) if is_dataclass(value) else list(value) if isinstance(value, tuple) else value
    return out


def canonical(config, arm: str | None = None) -> dict:
    """The non-default, non-cosmetic fields, nested: what identifies a configuration (with
    ``arm``: what identifies that arm's run, leaving out the fields that only other arms read).
    A field with a ``legacy`` value is left out at that value, and kept at any other, its default
    included.

    Values with several spellings are compared and stored in their normal form (size 60, "60" and
    "60*d^1"... are one size; "0.1d" and 0.1 are one rule).
    """
    out = {}
    for f in fields(config):
        value = getattr(config, f.name)
        if f.metadata.get("cosmetic"):
            continue
        if arm is not None and f.metadata.get("arms") is not None and arm not in f.metadata["arms"]:
            continue
        if is_dataclass(value):
            inner = canonical(value, arm)
            if inner:
                out[f.name] = inner
            continue
        normal = f.metadata.get("normal") or (lambda v: v)
        unnamed = f.metadata.get("legacy", MISSING)
        unnamed = f.default if unnamed is MISSING else unnamed
        if unnamed is MISSING or normal(value) != normal(unnamed):
            value = normal(value)
            out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def run_id(config: Config, arm: str) -> str:
    """``<experiment>-<arm>-<12 hex>``: a hash of the canonical configuration and the arm."""
    if arm not in ARMS[config.experiment]:
        raise ValueError(f"{arm!r} is not an arm of the {config.experiment} experiment")
    text = json.dumps({"config": canonical(config, arm), "arm": arm}, sort_keys=True, separators=(",", ":"))
    return f"{config.experiment}-{arm}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"
