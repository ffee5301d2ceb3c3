"""The one typed schema of a run configuration: load from YAML, override, validate, hash, flatten.

A configuration is a tree of frozen dataclasses (``Config`` with sections ``task``, ``model``,
``compression`` and ``train``). Each field declares its type, its default and, in its metadata, a
check (positive, one of ...), whether it is *cosmetic* (where results go, which device, tags: it
never changes the numbers, so it is not part of the run id) and, for fields that only one kind of
task or experiment reads, which ones do (setting it anywhere else is an error, so no run id
carries a key that changes nothing).

The same schema drives:
- loading: ``load_configs(path, overrides)``; every error is one line naming the file (or
  ``--set``) and the dotted key, e.g. ``smoke.yaml: train.lr: expected a positive float, got 'fast'``;
- ``--set key=value`` overrides (dotted keys, values read by ``yaml.safe_load``, never eval);
- the run id: ``run_id(config, arm)`` hashes the fields that differ from their defaults (cosmetic
  ones excluded) plus the arm, so adding a field with a default keeps every old id. The price:
  a default must never change meaning; add a field instead;
- the results table and any tracker's config: ``flatten(config)`` gives dotted names.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import math
import types
import typing
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from harness.compression import parse_size
from harness.errors import UsageError

EXPERIMENTS = ("width", "data", "attention", "symmetric", "runtime")
ARMS = {
    "width": ("original", "moment", "random", "magnitude"),
    "data": ("original", "moment", "random", "kmeans"),
    "attention": ("original", "moment", "random"),
    "symmetric": ("moment", "random", "kmeans"),
    "runtime": ("moment", "random", "kmeans"),
}
SUPERVISED_TASKS = ("teacher", "harmonic", "digits", "mnist", "fashion_mnist", "cifar10")
TORCHVISION_TASKS = ("mnist", "fashion_mnist", "cifar10")
TASKS_OF = {
    "width": SUPERVISED_TASKS,
    "data": SUPERVISED_TASKS,
    "attention": ("piecewise",),
    "symmetric": ("symmetric",),
    "runtime": ("symmetric",),
}
TRAINING_EXPERIMENTS = ("width", "data", "attention")
MLP_EXPERIMENTS = ("width", "data")
OPTIMIZERS = ("gd", "sgd", "adam", "adamw", "rprop", "rmsprop", "adamax")


class ConfigError(UsageError):
    """A bad configuration value; ``key`` is its dotted name. The loader adds the source."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.detail = message


@dataclass(frozen=True)
class Check:
    """A named condition on a value. The error reads 'expected a positive float' (``prefix``) or
    'expected a float in [0, 1)' (``suffix``)."""

    holds: Callable[[Any], bool]
    prefix: str = ""
    suffix: str = ""


POSITIVE = Check(lambda v: v > 0, prefix="positive")
NON_NEGATIVE = Check(lambda v: v >= 0, prefix="non-negative")
FRACTION = Check(lambda v: 0 <= v < 1, suffix="in [0, 1)")
BETAS = Check(lambda v: all(0 <= b < 1 for b in v), suffix="in [0, 1)")


def option(default: Any = MISSING, *, check: Check | None = None, choices: tuple | None = None,
           cosmetic: bool = False, tasks: tuple[str, ...] | None = None,
           experiments: tuple[str, ...] | None = None, factory: Callable | None = None,
           normal: Callable[[Any], Any] | None = None) -> Any:
    """A schema field. ``tasks``/``experiments``: the only ones that read it (None: all).
    ``normal``: the form the run id hashes, for values with several spellings."""
    metadata = {"check": check, "choices": choices, "cosmetic": cosmetic, "tasks": tasks, "experiments": experiments,
                "normal": normal}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def _size_problem(value) -> str | None:
    """parse_size's message for a bad size rule, or None when it is fine."""
    try:
        parse_size(value)
    except (ValueError, TypeError) as exc:
        return str(exc)
    return None


SIZE_RULE = Check(lambda v: _size_problem(v) is None)


@dataclass(frozen=True)
class TaskConfig:
    """What to learn (or, for symmetric/runtime, which objects to compress). See harness/data."""

    name: str = option("teacher", choices=tuple(sorted({t for ts in TASKS_OF.values() for t in ts})))
    # Training points d (objects for symmetric/runtime; sequences for piecewise) and test points.
    n_train: int = option(10_000, check=POSITIVE)
    n_test: int = option(10_000, check=POSITIVE)
    # Sd of the Gaussian noise on training labels; test labels are clean. None: the task's own
    # default (teacher 3.0, harmonic 0.2, piecewise 0.3: SPEC E2, E3, E6).
    noise: float | None = option(None, check=NON_NEGATIVE, tasks=("teacher", "harmonic", "piecewise"))
    # Seed of the data alone; None: the run's seed (so seeds vary data and initialisation together).
    seed: int | None = option(None, check=NON_NEGATIVE)
    # Input dimension (teacher) or object dimension m (symmetric).
    input_dim: int = option(2, check=POSITIVE, tasks=("teacher", "symmetric"))
    teacher_width: int = option(50, check=POSITIVE, tasks=("teacher",))
    teacher_range: float = option(1.0, check=POSITIVE, tasks=("teacher",))  # teacher weights U(-r, r)
    order: int = option(6, check=NON_NEGATIVE, tasks=("harmonic",))  # n of J_n(a r) cos(n theta)
    frequency: float = option(20.0, check=POSITIVE, tasks=("harmonic",))  # a of J_n(a r) cos(n theta)
    segments: int = option(16, check=POSITIVE, tasks=("piecewise",))
    context: int = option(8, check=POSITIVE, tasks=("piecewise",))  # (x, y) pairs before the query
    function: str = option("sigmoid", choices=("sigmoid", "inverse"), tasks=("symmetric",))
    probes: int = option(10, check=POSITIVE, tasks=("symmetric",))  # the x_a the function averages over
    offset: float | None = option(None, check=POSITIVE, tasks=("symmetric",))  # A of 1/(A + <w,x>); None: m + 0.05
    # > 0: evaluate on ceil(validation * n_train) extra points from the training distribution
    # instead of the test split (what `tune:` optimises, so tuning never sees the test set).
    validation: float = option(0.0, check=FRACTION, tasks=(*SUPERVISED_TASKS, "piecewise"))
    data_root: str = option("data", cosmetic=True, tasks=TORCHVISION_TASKS)
    download: bool = option(False, cosmetic=True, tasks=TORCHVISION_TASKS)


@dataclass(frozen=True)
class ModelConfig:
    """The network: an MLP (width, data) or one causal multi-head attention layer (attention)."""

    width: int = option(100, check=POSITIVE, experiments=MLP_EXPERIMENTS)  # hidden neurons per layer
    depth: int = option(1, check=POSITIVE, experiments=MLP_EXPERIMENTS)  # hidden layers
    heads: int = option(64, check=POSITIVE, experiments=("attention",))
    head_dim: int = option(2, check=POSITIVE, experiments=("attention",))
    # default: PyTorch's nn.Linear rule, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases;
    # uniform: every weight and bias U(-init_range, init_range).
    init: str = option("default", choices=("default", "uniform"), experiments=TRAINING_EXPERIMENTS)
    init_range: float = option(1.0, check=POSITIVE, experiments=TRAINING_EXPERIMENTS)


@dataclass(frozen=True)
class CompressionConfig:
    """How the compressed arms are built (harness.compression.compress)."""

    k: int = option(5, check=NON_NEGATIVE)
    # A count, a fraction of d in (0, 1), or a rule of d: "0.1d", "16*d^0.5", "20*ln(d)^2"; null:
    # N(m, k). Raised to N(m, k) (see harness.compression.parse_size).
    size: int | float | str | None = option("0.1d", check=SIZE_RULE, normal=lambda v: None if v is None else str(parse_size(v)))
    method: str = option("clustered", choices=("clustered", "global"))  # the moment arm's algorithm


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation. Give ``steps`` or ``epochs`` (epochs of the original training set)."""

    optimizer: str = option("adamw", choices=OPTIMIZERS)
    lr: float = option(1e-3, check=POSITIVE)
    steps: int | None = option(None, check=POSITIVE)
    epochs: float | None = option(None, check=POSITIVE)
    batch_size: int | None = option(None, check=POSITIVE)  # null: full batch
    schedule: str = option("cosine", choices=("cosine", "constant"))
    weight_decay: float | None = option(None, check=NON_NEGATIVE)  # null: 0.01 for adamw, else 0
    momentum: float = option(0.0, check=FRACTION)  # sgd and rmsprop
    betas: tuple[float, float] = option((0.9, 0.999), check=BETAS)
    eps: float = option(1e-8, check=POSITIVE)
    # Batches of a weighted training set: i.i.d. draws with probability proportional to the
    # weights, or shuffled epochs with the loss weighted by them. Equal weights: shuffled epochs.
    sampling: str = option("proportional", choices=("proportional", "weighted_loss"))
    eval_every: int = option(50, check=POSITIVE)  # steps between evaluations (and step 0, the last)
    dtype: str = option("float32", choices=("float32", "float64"))
    # SPEC 4: the gradients of a kept unit are divided by its multiplicity. false: the ablation.
    divide_gradients: bool = option(True)


@dataclass(frozen=True)
class Config:
    """One configuration. Each arm of it is one run; ``run_id(config, arm)`` names the run."""

    experiment: str = option(choices=EXPERIMENTS)
    seed: int = option(0, check=NON_NEGATIVE)
    # Which arms to run (each is its own run, whose id carries its arm); empty: all of them.
    arms: tuple[str, ...] = option((), cosmetic=True)
    task: TaskConfig = option(factory=TaskConfig)
    model: ModelConfig = option(factory=ModelConfig)
    compression: CompressionConfig = option(factory=CompressionConfig)
    train: TrainConfig = option(factory=TrainConfig)
    name: str = option("", cosmetic=True)
    tags: tuple[str, ...] = option((), cosmetic=True)
    out: str = option("results/scratch", cosmetic=True)  # results store folder
    device: str = option("auto", cosmetic=True)  # auto | cpu | cuda | cuda:N

    @property
    def arm_names(self) -> tuple[str, ...]:
        """The arms to run: ``arms`` or, when empty, every arm of the experiment."""
        return self.arms or ARMS[self.experiment]

    def total_steps(self) -> int:
        """Optimiser steps: ``train.steps``, or ``train.epochs`` over the *original* training set.

        Every arm runs this many steps, whatever the size of its own (compressed) training set.
        """
        if self.train.steps is not None:
            return self.train.steps
        per_epoch = 1 if self.train.batch_size is None else math.ceil(self.task.n_train / self.train.batch_size)
        return max(1, math.ceil(self.train.epochs * per_epoch))


# ---------------------------------------------------------------------------------------------
# Loading


def load_configs(path: str | Path, overrides: typing.Sequence[str] = ()) -> list[Config]:
    """Every configuration in a YAML file (one per ``---`` document), each with the overrides."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    try:
        documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise UsageError(f"{path.name}: not valid YAML{where}") from exc
    if not documents:
        raise UsageError(f"{path.name}: no configuration in the file")
    configs = []
    for number, raw in enumerate(documents, start=1):
        source = path.name if len(documents) == 1 else f"{path.name} (document {number})"
        configs.append(parse_config(raw, source, overrides))
    return configs


def parse_config(raw: Any, source: str = "config", overrides: typing.Sequence[str] = ()) -> Config:
    """A validated Config from a nested dict (as read from YAML) and ``key=value`` overrides."""
    if not isinstance(raw, dict):
        raise UsageError(f"{source}: expected a mapping of keys to values, got {type(raw).__name__}")
    raw, overridden = apply_overrides(raw, overrides)
    try:
        config = _build(Config, raw, "")
        _check_consistency(config)
    except ConfigError as exc:
        from_override = any(exc.key == k or exc.key.startswith(k + ".") or k.startswith(exc.key + ".") for k in overridden)
        raise UsageError(f"{'--set' if from_override else source}: {exc}") from None
    return config


def apply_overrides(raw: dict, overrides: typing.Sequence[str]) -> tuple[dict, list[str]]:
    """A copy of ``raw`` with each ``dotted.key=value`` set (value read by yaml.safe_load)."""
    result = copy.deepcopy(raw)
    keys = []
    for text in overrides:
        key, sep, value_text = text.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise UsageError(f"--set {text!r}: expected KEY=VALUE with a dotted key, e.g. train.lr=0.01")
        try:
            value = yaml.safe_load(value_text) if value_text.strip() else ""
        except yaml.YAMLError:
            value = value_text
        node = result
        *parents, leaf = key.split(".")
        for depth, part in enumerate(parents):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise UsageError(f"--set {key}: {'.'.join(parents[: depth + 1])} is not a section")
            node = child
        node[leaf] = value
        keys.append(key)
    return result, keys


def _build(cls, raw: Any, prefix: str):
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
            values[f.name] = _build(hint, {} if section is None else section, key + ".")
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
        result = _coerce(value, hint)
    except TypeError:
        result = _INVALID
    if choices is not None and result is not _INVALID and result not in choices:
        raise ConfigError(key, f"expected one of {', '.join(choices)}, got {value!r}")
    if result is not _INVALID and check is SIZE_RULE and result is not None and _size_problem(result):
        raise ConfigError(key, _size_problem(result))
    if result is _INVALID or (check is not None and result is not None and not check.holds(result)):
        words = " ".join(w for w in (check and check.prefix, _type_name(hint), check and check.suffix) if w)
        article = "an" if words[0] in "aeiou" else "a"
        raise ConfigError(key, f"expected {article} {words}, got {value!r}")
    return result


_INVALID = object()


def _coerce(value: Any, hint):
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
                return _coerce(value, option_type)
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
            return tuple(_coerce(v, args[0]) for v in value)
        if len(value) != len(args):
            raise TypeError
        return tuple(_coerce(v, a) for v, a in zip(value, args))
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise TypeError
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise TypeError
    if hint is float:
        if isinstance(value, bool):
            raise TypeError
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise TypeError from None
        if isinstance(value, (int, float)) and math.isfinite(value):
            return float(value)
        raise TypeError
    if hint is str:
        if isinstance(value, str):
            return value
        raise TypeError
    raise TypeError


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


def _check_consistency(config: Config) -> None:
    """Rules that span fields: arms of the experiment, tasks, fields read only by some, steps."""
    experiment = config.experiment
    for arm in config.arms:
        if arm not in ARMS[experiment]:
            raise ConfigError("arms", f"{arm!r} is not an arm of the {experiment} experiment (arms: {', '.join(ARMS[experiment])})")
    if len(set(config.arms)) != len(config.arms):
        raise ConfigError("arms", f"an arm is listed twice: {list(config.arms)}")
    task = config.task.name
    if task not in TASKS_OF[experiment]:
        raise ConfigError("task.name", f"the {experiment} experiment runs on {', '.join(TASKS_OF[experiment])}; got {task!r}")
    for section in ("task", "model", "compression", "train"):
        value = getattr(config, section)
        for f in fields(value):
            if getattr(value, f.name) == f.default:
                continue
            readers = f.metadata.get("tasks")
            if readers is not None and task not in readers:
                raise ConfigError(f"{section}.{f.name}", f"only read by task {', '.join(readers)} (this config's task is {task})")
            readers = f.metadata.get("experiments")
            if readers is not None and experiment not in readers:
                raise ConfigError(f"{section}.{f.name}", f"only read by the {', '.join(readers)} experiment(s), not {experiment}")
    if experiment in TRAINING_EXPERIMENTS:
        train = config.train
        if (train.steps is None) == (train.epochs is None):
            raise ConfigError("train.steps", "give exactly one of train.steps and train.epochs")
        if train.optimizer == "gd" and train.batch_size is not None:
            raise ConfigError("train.batch_size", "gd is full-batch gradient descent: leave batch_size null or use sgd")
        if train.optimizer == "rprop" and train.weight_decay:
            raise ConfigError("train.weight_decay", "rprop has no weight decay")
        if train.batch_size is not None and train.batch_size > config.task.n_train:
            raise ConfigError("train.batch_size", f"{train.batch_size} is larger than task.n_train ({config.task.n_train})")


# ---------------------------------------------------------------------------------------------
# Identity and tables


def to_dict(config) -> dict:
    """The full configuration as plain nested data (tuples as lists)."""
    out = {}
    for f in fields(config):
        value = getattr(config, f.name)
        out[f.name] = to_dict(value) if is_dataclass(value) else list(value) if isinstance(value, tuple) else value
    return out


def canonical(config) -> dict:
    """The non-default, non-cosmetic fields, nested: what identifies a configuration.

    Values with several spellings are compared and stored in their normal form (size 60, "60" and
    "60*d^1"... are one size; "0.1d" and 0.1 are one rule).
    """
    out = {}
    for f in fields(config):
        value = getattr(config, f.name)
        if f.metadata.get("cosmetic"):
            continue
        if is_dataclass(value):
            inner = canonical(value)
            if inner:
                out[f.name] = inner
            continue
        normal = f.metadata.get("normal") or (lambda v: v)
        if f.default is MISSING or normal(value) != normal(f.default):
            value = normal(value)
            out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def run_id(config: Config, arm: str) -> str:
    """``<experiment>-<arm>-<12 hex>``: a hash of the canonical configuration and the arm."""
    if arm not in ARMS[config.experiment]:
        raise ValueError(f"{arm!r} is not an arm of the {config.experiment} experiment")
    text = json.dumps({"config": canonical(config), "arm": arm}, sort_keys=True, separators=(",", ":"))
    return f"{config.experiment}-{arm}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


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
