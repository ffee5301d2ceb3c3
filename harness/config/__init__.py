"""The one typed schema of a run configuration, in layers that import nothing heavy.

- ``loader``: the generic typed loader (``option``, ``Check``, ``build``), the one YAML reader
  (``read_yaml``) and the one dotted-key setter (``with_values``, ``apply_overrides``);
- ``schema``: the sections and fields of a run configuration and the rules that span them;
- ``parse``: configurations from YAML files and ``--set`` overrides (``load_configs``,
  ``parse_config``);
- ``identity``: ``to_dict``, ``canonical`` and ``run_id``;
- ``table``: ``flatten``, the dotted columns of the results table;
- ``sweep_spec``: sweep files (a base configuration plus grid, zip, seeds and tune), expanded into
  runs; imported by name, not re-exported here.
"""

from harness.config.identity import canonical, run_id, to_dict
from harness.config.loader import (
    BETAS,
    FRACTION,
    NON_NEGATIVE,
    POSITIVE,
    Check,
    ConfigError,
    apply_overrides,
    option,
    read_yaml,
    with_values,
)
from harness.config.parse import load_configs, parse_config
from harness.config.schema import (
    ARMS,
    DEGREE,
    EXPERIMENTS,
    MLP_EXPERIMENTS,
    OPTIMIZERS,
    SIZE_RULE,
    SUPERVISED_TASKS,
    TASKS_OF,
    TORCHVISION_TASKS,
    TRAINING_EXPERIMENTS,
    CompressionConfig,
    Config,
    ModelConfig,
    TaskConfig,
    TrainConfig,
)
from harness.config.table import flatten

__all__ = [
    "ARMS",
    "BETAS",
    "DEGREE",
    "EXPERIMENTS",
    "FRACTION",
    "MLP_EXPERIMENTS",
    "NON_NEGATIVE",
    "OPTIMIZERS",
    "POSITIVE",
    "SIZE_RULE",
    "SUPERVISED_TASKS",
    "TASKS_OF",
    "TORCHVISION_TASKS",
    "TRAINING_EXPERIMENTS",
    "Check",
    "CompressionConfig",
    "Config",
    "ConfigError",
    "ModelConfig",
    "TaskConfig",
    "TrainConfig",
    "apply_overrides",
    "canonical",
    "flatten",
    "load_configs",
    "option",
    "parse_config",
    "read_yaml",
    "run_id",
    "to_dict",
    "with_values",
]
