"""A generic typed loader: a tree of frozen dataclasses from nested data (as read from YAML).

Each field is declared with ``option`` (default, check, choices and metadata the schema's rules
read); ``build(cls, raw)`` checks every key and value and raises ``ConfigError`` naming the dotted
key. Numbers are read the same way for every numeric field: a number, or a string that reads as
one (YAML 1.1 reads ``1e-3`` and ``1e3``, without a dot, as strings; a quoted number means the
number).

Files and overrides: ``read_yaml`` is the one reader of YAML files (a one-line error naming the
file and line of a parse error); ``with_values`` is the one setter of dotted keys in nested data;
``apply_overrides`` reads ``--set key=value`` texts (values by ``yaml.safe_load``, never eval).
This module knows nothing of the run schema (``harness.config.schema``).
"""

from __future__ import annotations

import copy
import difflib
import math
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml

from harness.errors import UsageError


class ConfigError(UsageError):
    """A bad configuration value; ``key`` is its dotted name. The loader adds the source."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.detail = message


@dataclass(frozen=True)
class Check:
    """A named condition on a value. The error reads 'expected a positive float' (``prefix``) or
    'expected a float in [0, 1)' (``suffix``); ``explain``, where given, says instead what is wrong
    with a value that fails."""

    holds: Callable[[Any], bool]
    prefix: str = ""
    suffix: str = ""
    explain: Callable[[Any], str] | None = None


POSITIVE = Check(lambda v: v > 0, prefix="positive")
NON_NEGATIVE = Check(lambda v: v >= 0, prefix="non-negative")
FRACTION = Check(lambda v: 0 <= v < 1, suffix="in [0, 1)")
BETAS = Check(lambda v: all(0 <= b < 1 for b in v), suffix="in [0, 1)")


def option(
    default: Any = MISSING,
    *,
    check: Check | None = None,
    choices: tuple | None = None,
    cosmetic: bool = False,
    tasks: tuple[str, ...] | None = None,
    experiments: tuple[str, ...] | None = None,
    arms: tuple[str, ...] | None = None,
    factory: Callable | None = None,
    normal: Callable[[Any], Any] | None = None,
    legacy: Any = MISSING,
) -> Any:
    """A schema field. ``tasks``/``experiments``: the only ones that read it (None: all).
    ``arms``: the only arms whose run id it is part of (None: all), for a field that only they read.
    ``normal``: the form the run id hashes, for values with several spellings.
    ``legacy``: for a field whose default changed, the value every run had before; the run id
    leaves out this value instead of the default, so older runs keep their ids and meaning."""
    metadata = {
        "check": check,
        "choices": choices,
        "cosmetic": cosmetic,
        "tasks": tasks,
        "experiments": experiments,
        "arms": arms,
        "normal": normal,
        "legacy": legacy,
    }
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


# ---------------------------------------------------------------------------------------------
# Files and dotted keys


def read_yaml(path: str | Path) -> list[Any]:
    """The documents of a YAML file (``---`` separated; empty ones dropped).

    UsageError, one line: ``PATH: no such file``, ``NAME: cannot read (...)`` or
    ``NAME: not valid YAML (line N): what the parser found``.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path.name}: cannot read ({exc})") from None
    try:
        return [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None)
        raise UsageError(f"{path.name}: not valid YAML{where}" + (f": {problem}" if problem else "")) from None


def with_values(tree: Mapping, values: Mapping[str, Any], source: str) -> dict:
    """A deep copy of ``tree`` with each dotted key of ``values`` set (missing sections created).

    ``source`` starts any error: ``SOURCE: a.b.c: a.b is not a section``.
    """
    result = copy.deepcopy(dict(tree))
    for key, value in values.items():
        if not all(key.split(".")):
            raise UsageError(f"{source}: {key!r}: expected a dotted key such as train.lr")
        *parents, leaf = key.split(".")
        node = result
        for depth, part in enumerate(parents):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise UsageError(f"{source}: {key}: {'.'.join(parents[: depth + 1])} is not a section")
            node = child
        node[leaf] = value
    return result


def apply_overrides(raw: Mapping, overrides: Sequence[str]) -> tuple[dict, list[str]]:
    """A copy of ``raw`` with each ``dotted.key=value`` set (value read by yaml.safe_load), and the
    keys set."""
    values = {}
    for text in overrides:
        key, sep, value_text = text.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise UsageError(f"--set {text!r}: expected KEY=VALUE with a dotted key, e.g. train.lr=0.01")
        try:
            value = yaml.safe_load(value_text) if value_text.strip() else ""
        except yaml.YAMLError:
            value = value_text
        values.pop(key, None)  # a key given again: its last value, set after the keys given before it
        values[key] = value
    return with_values(raw, values, "--set"), list(values)


# ---------------------------------------------------------------------------------------------
# Typed building


def build(cls, raw: Any, prefix: str = ""):
    """An instance of dataclass ``cls`` from nested data; ``prefix`` is the dotted key of ``raw``
    (with its final dot). Raises ConfigError naming the first bad key."""
    if not isinstance(raw, dict):
        raise ConfigError(prefix.rstrip(".") or "(top level)", f"expected a section (mapping), got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    for key in raw:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean {prefix}{close[0]}?)" if close else f" (known: {', '.join(names)})"
            raise ConfigError(f"{prefix}{key}", f"unknown key{hint}")
    values = {}
    for f in fields(cls):
        key = f"{prefix}{f.name}"
        hint = hints[f.name]
        if is_dataclass(hint):
            section = raw.get(f.name)
            values[f.name] = build(hint, {} if section is None else section, key + ".")
            continue
        if f.name not in raw:
            if f.default is MISSING and f.default_factory is MISSING:
                raise ConfigError(key, f"required{_choices_hint(f)}")
            continue
        values[f.name] = _validate(raw[f.name], hint, f, key)
    return cls(**values)


def _choices_hint(f) -> str:
    choices = f.metadata.get("choices")
    return f" (one of {', '.join(choices)})" if choices else ""


def _validate(value: Any, hint, f, key: str):
    check, choices = f.metadata.get("check"), f.metadata.get("choices")
    try:
        result = coerce(value, hint)
    except TypeError:
        result = _INVALID
    if choices is not None and result not in (_INVALID, None) and result not in choices:
        raise ConfigError(key, f"expected one of {', '.join(choices)}, got {value!r}")
    fails = result is not _INVALID and check is not None and result is not None and not check.holds(result)
    if fails and check.explain is not None:
        raise ConfigError(key, check.explain(result))
    if result is _INVALID or fails:
        words = " ".join(w for w in (check and check.prefix, _type_name(hint), check and check.suffix) if w)
        article = "an" if words[0] in "aeiou" else "a"
        raise ConfigError(key, f"expected {article} {words}, got {value!r}")
    return result


_INVALID = object()


def coerce(value: Any, hint):
    """``value`` as type ``hint`` (int, float, str, bool, tuples, unions with None); else TypeError."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None:
            if type(None) in options:
                return None
            raise TypeError
        if isinstance(value, str) and str in options:  # "60" stays a string where strings are allowed
            return value
        for option_type in options:
            if option_type is type(None):
                continue
            try:
                return coerce(value, option_type)
            except TypeError:
                continue
        raise TypeError
    if origin is tuple:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise TypeError
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(v, args[0]) for v in value)
        if len(value) != len(args):
            raise TypeError
        return tuple(coerce(v, a) for v, a in zip(value, args))
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise TypeError
    if hint is int:
        value = _number(value)
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise TypeError
    if hint is float:
        try:
            value = float(_number(value))
        except OverflowError:
            raise TypeError from None
        if math.isfinite(value):
            return value
        raise TypeError
    if hint is str:
        if isinstance(value, str):
            return value
        raise TypeError
    raise TypeError


def _number(value: Any) -> int | float:
    """An int or float from a number or a string that reads as one (never a bool); else TypeError."""
    if isinstance(value, str):
        for kind in (int, float):
            try:
                return kind(value)
            except ValueError:
                continue
        raise TypeError
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError
    return value


def _type_name(hint) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        names = [_type_name(a) for a in typing.get_args(hint) if a is not type(None)]
        suffix = " or null" if type(None) in typing.get_args(hint) else ""
        return " or ".join(names) + suffix
    if origin is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {_type_name(args[0])}s"
        return f"list of {len(args)} {_type_name(args[0])}s"
    return {int: "integer", float: "float", str: "string", bool: "boolean (true/false)"}.get(hint, str(hint))
