"""The schema of a run configuration: its sections, fields, defaults and checks, and the rules
that span fields.

A configuration is a tree of frozen dataclasses (``Config`` with sections ``task``, ``model``,
``compression`` and ``train``). Each field declares its type, its default and, in its metadata, a
check (positive, one of ...), whether it is *cosmetic* (where results go, which device, tags: it
never changes the numbers, so it is not part of the run id) and, for fields that only one kind of
task or experiment reads, which ones do (setting it anywhere else is an error, so no run id
carries a key that changes nothing).

The same schema drives loading (``harness.config.parse``: every error one line naming the file, or
``--set``, and the dotted key), the run id (``harness.config.identity``: a default must never
change meaning; add a field instead) and the results table (``harness.config.table``).
Importing it imports nothing heavy (no torch, numpy or pandas): every command reads it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from harness.compression.methods import FINAL_DROPS, GROUP_WIDTHS, NULL_FINAL_DROPS
from harness.compression.size import parse_size
from harness.config.loader import BETAS, FRACTION, NON_NEGATIVE, POSITIVE, Check, ConfigError, option

EXPERIMENTS = ("width", "data", "attention", "symmetric", "runtime")
ARMS = {
    "width": ("original", "moment", "random", "magnitude", "imp"),
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


def _size_problem(value) -> str | None:
    """parse_size's message for a bad size rule, or None when it is fine."""
    try:
        parse_size(value)
    except (ValueError, TypeError) as exc:
        return str(exc)
    return None


UNIT_FRACTION = Check(lambda v: 0 < v <= 1, suffix="in (0, 1]")
AT_LEAST_ONE = Check(lambda v: v >= 1, suffix=">= 1")
SIZE_RULE = Check(lambda v: _size_problem(v) is None, explain=_size_problem)
# SPEC 2: k is the highest degree of the moments matched; degree 0 alone is only the total weight.
DEGREE = Check(
    lambda v: v >= 1, prefix="positive", suffix="(the highest moment degree matched; 0 matches only the total weight)"
)


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
    # Seed of the teacher network alone; None: the data seed. Fixed, every seed learns one target
    # function (its training and test points still vary), so the spread over seeds is the
    # sampling and training noise alone, not the difference between teachers.
    teacher_seed: int | None = option(None, check=NON_NEGATIVE, tasks=("teacher",))
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

    k: int = option(5, check=DEGREE)
    # A count, a fraction of d in (0, 1), or a rule of d: "0.1d", "16*d^0.5", "20*ln(d)^2"; null:
    # N(m, k). Raised to N(m, k) (see harness.compression.parse_size).
    size: int | float | str | None = option(
        "0.1d", check=SIZE_RULE, normal=lambda v: None if v is None else str(parse_size(v))
    )
    method: str = option("clustered", choices=("clustered", "global"))  # the moment arm's algorithm
    # Where the clustered method's nearest-neighbour phase starts, as a multiple of d' live points
    # (kd cells halve the support above it; harness/compression/clustered.py); null: 3, or the
    # first round where N(m, k) < 8, where the nearest-neighbour groups alone are the more
    # accurate against the authors' compressor (docs/performance.md); 1: kd halving only. Every
    # run before null became the default had 3: those runs keep their ids. Read by the moment arm.
    final_phase: float | None = option(None, check=AT_LEAST_ONE, arms=("moment",), legacy=3.0)
    # The clustered method's share of the disjoint nearest-neighbour groups that a final-phase
    # round reduces, smallest first by group_width (harness/compression/clustered.py); the global
    # method ignores it. 0.25 keeps the domain's boundary denser: the authors' accuracy on SPEC E1
    # and E7; 1 is the faster schedule, with larger errors (docs/performance.md). Every run before
    # 0.25 became the default had 1: those runs keep their ids. Read by the moment arm.
    round_fraction: float = option(0.25, check=UNIT_FRACTION, arms=("moment",), legacy=1.0)
    # How the clustered method's final phase ranks its groups, the smallest reduced first
    # (harness/compression/partition.py): "bound", a group's term of the error bound (mass x
    # radius^(k+1) about its centre point), "radius" alone, or "box", the bounding box's diagonal;
    # bound is the most accurate against the authors' compressor (docs/performance.md). Every run
    # before radius became the default had box: those runs keep their ids. Read by the moment arm.
    group_width: str = option("bound", choices=GROUP_WIDTHS, arms=("moment",), legacy="box")
    # How many points a group of the clustered method's final phase drops: "balanced", one point of
    # N + 1 at the vertex that keeps the running change of the next moments smallest
    # (harness/compression/balance.py); "taper", fewer as the live count nears d', toward the
    # proof's one, the faster schedule; "scaled", N/4 x live / d' throughout; "auto", balanced
    # where N(m, k) < 8 or d' < 4 N(m, k), else taper, at most the authors' compressor's error on
    # every setting measured (docs/performance.md); "balanced_below_8", balanced where N(m, k) < 8,
    # else taper.
    # Every run before taper became the default had scaled, which its id leaves out; the runs from
    # then on name theirs. null is balanced_below_8, which it meant while it was the default: the
    # two are one id. Read by the moment arm.
    final_drops: str | None = option(
        "auto",
        choices=FINAL_DROPS,
        arms=("moment",),
        legacy="scaled",
        normal=lambda v: None if v == NULL_FINAL_DROPS else v,
    )
    # The imp arm (iterative magnitude pruning, harness/experiments/imp.py): rounds of train ->
    # prune -> rewind, each round keeping a fixed fraction of the neurons so that the last leaves
    # the moment arm's width (3 rounds from E3's 1e4 to 1e3 keep (1e3/1e4)^(1/3) = 46% each), and
    # each round's training as a fraction of the run's own steps: 1.0 trains every round as long
    # as the run, as Frankle & Carbin (arXiv:1803.03635) train each round to completion.
    imp_rounds: int = option(3, check=POSITIVE, experiments=("width",), arms=("imp",))
    imp_budget: float = option(1.0, check=POSITIVE, experiments=("width",), arms=("imp",))


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
    # Steps between checkpoints inside a run (harness/train/checkpoint.py), besides one every 10
    # minutes of wall clock; null: by the clock alone. Cosmetic: a resumed run's numbers are the same.
    checkpoint_every: int | None = option(None, check=POSITIVE, cosmetic=True)
    # float32 matrix products on a CUDA device in TensorFloat-32 (10-bit mantissa, faster on
    # Ampere and later); false: full float32. No effect on a CPU or in float64.
    tf32: bool = option(False)


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

    def imp_round_steps(self) -> int:
        """Optimiser steps of each of the imp arm's pruning rounds: ``compression.imp_budget`` of
        the run's own steps, at least one."""
        return max(1, math.ceil(self.compression.imp_budget * self.total_steps()))


def check_consistency(config: Config) -> None:
    """Rules that span fields: arms of the experiment, tasks, fields read only by some, steps."""
    experiment = config.experiment
    for arm in config.arms:
        if arm not in ARMS[experiment]:
            raise ConfigError(
                "arms", f"{arm!r} is not an arm of the {experiment} experiment (arms: {', '.join(ARMS[experiment])})"
            )
    if len(set(config.arms)) != len(config.arms):
        raise ConfigError("arms", f"an arm is listed twice: {list(config.arms)}")
    task = config.task.name
    if task not in TASKS_OF[experiment]:
        raise ConfigError(
            "task.name", f"the {experiment} experiment runs on {', '.join(TASKS_OF[experiment])}; got {task!r}"
        )
    for section in ("task", "model", "compression", "train"):
        value = getattr(config, section)
        for f in fields(value):
            if getattr(value, f.name) == f.default:
                continue
            readers = f.metadata.get("tasks")
            if readers is not None and task not in readers:
                raise ConfigError(
                    f"{section}.{f.name}", f"only read by task {', '.join(readers)} (this config's task is {task})"
                )
            readers = f.metadata.get("experiments")
            if readers is not None and experiment not in readers:
                raise ConfigError(
                    f"{section}.{f.name}", f"only read by the {', '.join(readers)} experiment(s), not {experiment}"
                )
    if experiment in TRAINING_EXPERIMENTS:
        train = config.train
        if (train.steps is None) == (train.epochs is None):
            raise ConfigError("train.steps", "give exactly one of train.steps and train.epochs")
        if train.optimizer == "gd" and train.batch_size is not None:
            raise ConfigError("train.batch_size", "gd is full-batch gradient descent: leave batch_size null or use sgd")
        if train.optimizer == "rprop" and train.weight_decay:
            raise ConfigError("train.weight_decay", "rprop has no weight decay")
        if train.batch_size is not None and train.batch_size > config.task.n_train:
            raise ConfigError(
                "train.batch_size", f"{train.batch_size} is larger than task.n_train ({config.task.n_train})"
            )
