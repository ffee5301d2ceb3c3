"""The typed configuration schema: loading, errors, overrides, run ids, flattening."""

import pytest

from harness.config import ARMS, Config, canonical, flatten, load_configs, parse_config, run_id, to_dict
from harness.errors import UsageError

BASE = {"experiment": "width", "task": {"name": "harmonic"}, "train": {"steps": 100}}


def error(raw, overrides=(), source="smoke.yaml") -> str:
    with pytest.raises(UsageError) as caught:
        parse_config(raw, source, overrides)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_a_valid_config_is_typed_with_defaults():
    config = parse_config({**BASE, "train": {"lr": "1e-3", "steps": 10, "betas": [0.8, 0.99]}})
    assert isinstance(config, Config)
    assert config.train.lr == 0.001 and config.train.betas == (0.8, 0.99)  # YAML reads 1e-3 as a string
    assert config.model.width == 100 and config.arm_names == ARMS["width"]


@pytest.mark.parametrize(
    "raw, expected",
    [
        ({**BASE, "train": {"lr": "fast", "steps": 1}}, "smoke.yaml: train.lr: expected a positive float, got 'fast'"),
        ({**BASE, "train": {"lr": -1, "steps": 1}}, "smoke.yaml: train.lr: expected a positive float, got -1"),
        ({**BASE, "train": {"lrr": 0.1}}, "smoke.yaml: train.lrr: unknown key (did you mean train.lr?)"),
        ({**BASE, "modle": {}}, "smoke.yaml: modle: unknown key (did you mean model?)"),
        ({"task": {}}, "smoke.yaml: experiment: required (one of width, data, attention, symmetric, runtime)"),
        (
            {**BASE, "experiment": "depth"},
            "smoke.yaml: experiment: expected one of width, data, attention, symmetric, runtime, got 'depth'",
        ),
        ({**BASE, "model": {"width": 10.5}}, "smoke.yaml: model.width: expected a positive integer, got 10.5"),
        ({**BASE, "model": {"width": True}}, "smoke.yaml: model.width: expected a positive integer, got True"),
        (
            {**BASE, "train": {"steps": 1, "momentum": 1.0}},
            "smoke.yaml: train.momentum: expected a float in [0, 1), got 1.0",
        ),
        ({**BASE, "compression": {"size": "lots"}}, "smoke.yaml: compression.size: size 'lots' is not a rule"),
        ({**BASE, "train": {}}, "smoke.yaml: train.steps: give exactly one of train.steps and train.epochs"),
        ({**BASE, "train": {"steps": 5, "epochs": 2}}, "give exactly one"),
        (
            {**BASE, "train": {"steps": 5, "optimizer": "gd", "batch_size": 32}},
            "smoke.yaml: train.batch_size: gd is full-batch",
        ),
        (
            {**BASE, "train": {"steps": 5, "batch_size": 20_000}},
            "train.batch_size: 20000 is larger than task.n_train (10000)",
        ),
        (
            {**BASE, "train": {"steps": 5, "optimizer": "rprop", "weight_decay": 0.1}},
            "train.weight_decay: rprop has no weight decay",
        ),
        ({**BASE, "arms": ["moment", "kmeans"]}, "smoke.yaml: arms: 'kmeans' is not an arm of the width experiment"),
        (
            {**BASE, "task": {"name": "piecewise"}},
            "smoke.yaml: task.name: the width experiment runs on teacher, harmonic",
        ),
        (
            {**BASE, "task": {"name": "harmonic", "segments": 4}},
            "smoke.yaml: task.segments: only read by task piecewise",
        ),
        (
            {**BASE, "model": {"heads": 8}},
            "smoke.yaml: model.heads: only read by the attention experiment(s), not width",
        ),
        ({**BASE, "task": "harmonic"}, "smoke.yaml: task: expected a section (mapping), got 'harmonic'"),
    ],
)
def test_bad_configs_give_one_line_naming_file_and_key(raw, expected):
    assert expected in error(raw)


def test_override_errors_name_the_override():
    assert error(BASE, ["train.lr=fast"]).startswith("--set: train.lr: expected a positive float, got 'fast'")
    assert "--set: train.lrr: unknown key" in error(BASE, ["train.lrr=1"])
    with pytest.raises(UsageError, match="expected KEY=VALUE"):
        parse_config(BASE, "x", ["train.lr"])


def test_overrides_are_read_as_yaml_never_evaluated():
    config = parse_config(
        BASE,
        "x",
        [
            "train.lr=0.05",
            "arms=[original, moment]",
            "compression.size=16*d^0.5",
            "train.batch_size=null",
            "task.noise=0",
        ],
    )
    assert config.train.lr == 0.05 and config.arms == ("original", "moment")
    assert config.compression.size == "16*d^0.5" and config.train.batch_size is None and config.task.noise == 0.0
    assert "expected a positive float, got \"__import__('os')\"" in error(BASE, ["train.lr=__import__('os')"])


def test_load_configs_reads_every_document_and_names_the_file(tmp_path):
    path = tmp_path / "two.yaml"
    path.write_text("experiment: width\ntrain: {steps: 3}\n---\nexperiment: symmetric\ntask: {name: symmetric}\n")
    first, second = load_configs(path, ["seed=4"])
    assert (first.experiment, second.experiment, first.seed, second.seed) == ("width", "symmetric", 4, 4)
    path.write_text("experiment: width\ntrain: {steps: 3, lr: fast}\n")
    with pytest.raises(UsageError, match=r"^two\.yaml: train\.lr: expected a positive float, got 'fast'$"):
        load_configs(path)
    path.write_text("experiment: [unclosed\n")
    with pytest.raises(UsageError, match="two.yaml: not valid YAML"):
        load_configs(path)
    with pytest.raises(UsageError, match="no such file"):
        load_configs(tmp_path / "missing.yaml")


def test_run_id_ignores_cosmetic_keys_and_explicit_defaults():
    config = parse_config(BASE)
    same = parse_config(
        {
            **BASE,
            "out": "elsewhere",
            "device": "cpu",
            "name": "nice",
            "tags": ["a"],
            "arms": ["moment"],
            "model": {"width": 100},
            "train": {"steps": 100, "lr": 0.001},
        }
    )
    assert run_id(config, "moment") == run_id(same, "moment")
    assert run_id(config, "moment") != run_id(config, "random")
    assert run_id(config, "moment") != run_id(parse_config(BASE, "x", ["seed=1"]), "moment")
    assert run_id(config, "moment") != run_id(parse_config(BASE, "x", ["train.dtype=float64"]), "moment")
    assert run_id(config, "moment").startswith("width-moment-")
    with pytest.raises(ValueError):
        run_id(config, "kmeans")


def test_run_id_hashes_only_non_default_fields_so_new_defaulted_fields_keep_old_ids():
    before = {"experiment": "width", "task": {"name": "harmonic"}, "train": {"steps": 100}}
    # compression.round_fraction's default changed from 1 (its legacy value) to 0.25, and
    # group_width's from box to radius and then bound, final_drops' from scaled to taper, then
    # null (balanced below N = 8) and then auto, final_phase's from 3 to null: the id names the
    # new defaults (and taper and null, which the runs between the changes name), and the legacy
    # values hash as before, each on its own.
    legacy = [
        "compression.round_fraction=1",
        "compression.group_width=box",
        "compression.final_drops=scaled",
        "compression.final_phase=3",
    ]
    assert canonical(parse_config(BASE, "x", legacy)) == before
    assert canonical(parse_config(BASE, "x", legacy[1:])) == {**before, "compression": {"round_fraction": 0.25}}
    assert canonical(parse_config(BASE, "x", legacy[2:])) == {
        **before,
        "compression": {"round_fraction": 0.25, "group_width": "bound"},
    }
    assert canonical(parse_config(BASE, "x", legacy[3:])) == {
        **before,
        "compression": {"round_fraction": 0.25, "group_width": "bound", "final_drops": "auto"},
    }
    for drops in ("taper", "null", "balanced_below_8"):
        named = None if drops in ("null", "balanced_below_8") else drops  # one id for the two spellings
        assert canonical(parse_config(BASE, "x", [*legacy[3:], f"compression.final_drops={drops}"])) == {
            **before,
            "compression": {"round_fraction": 0.25, "group_width": "bound", "final_drops": named},
        }
    assert canonical(parse_config(BASE)) == {
        **before,
        "compression": {"round_fraction": 0.25, "group_width": "bound", "final_drops": "auto", "final_phase": None},
    }


def test_flatten_gives_dotted_scalar_columns():
    flat = flatten(parse_config(BASE, "x", ["tags=[a, b]", "compression.size=60"]))
    assert flat["train.lr"] == 0.001 and flat["task.name"] == "harmonic" and flat["model.width"] == 100
    assert flat["tags"] == "a,b" and flat["train.betas"] == "0.9,0.999" and flat["compression.size"] == "60"
    assert all(not isinstance(v, (list, dict, tuple)) for v in flat.values())
    assert flatten(to_dict(parse_config(BASE))) == flatten(parse_config(BASE))


def test_epochs_become_steps_over_the_original_training_set():
    config = parse_config(
        {**BASE, "task": {"name": "harmonic", "n_train": 1000}, "train": {"epochs": 3, "batch_size": 128}}
    )
    assert config.total_steps() == 3 * 8  # ceil(1000 / 128) = 8 batches per epoch
    full = parse_config({**BASE, "train": {"epochs": 5}})
    assert full.total_steps() == 5


def test_spellings_of_one_size_rule_share_a_run_id():
    def rid(size):
        return run_id(parse_config({**BASE, "compression": {"size": size}}), "moment")

    assert rid(60) == rid("60") == rid(60.0) != rid(61)
    assert rid("16*sqrt(d)") == rid("16*d^0.5") == rid("16 * d**0.5")
    assert rid(0.1) == rid("0.1*d") == run_id(parse_config(BASE), "moment")  # the default, 0.1d


def numeric_fields() -> list:
    """(section class, field name, a valid value) for every int or float field of the schema."""
    import dataclasses
    import typing

    from harness.config import CompressionConfig, ModelConfig, TaskConfig, TrainConfig

    fields = []
    for section in (Config, TaskConfig, ModelConfig, CompressionConfig, TrainConfig):
        hints = typing.get_type_hints(section)
        for f in dataclasses.fields(section):
            hint = hints[f.name]
            kinds = set(typing.get_args(hint)) if typing.get_origin(hint) is not tuple else set()
            if (kinds or {hint}) & {int, float} and str not in kinds:
                value = f.default if isinstance(f.default, (int, float)) and not isinstance(f.default, bool) else 1
                fields.append(pytest.param(section, f.name, value, id=f"{section.__name__}.{f.name}"))
    return fields


@pytest.mark.parametrize("section, name, value", numeric_fields())
def test_every_numeric_field_reads_a_quoted_number_as_that_number(section, name, value):
    from harness.config.loader import build

    required = {"experiment": "width"} if section is Config else {}
    quoted, plain = build(section, {**required, name: str(value)}), build(section, {**required, name: value})
    assert getattr(quoted, name) == value and type(getattr(quoted, name)) is type(getattr(plain, name))


def test_quoted_numbers_are_read_alike_for_integers_and_floats(tmp_path):
    path = tmp_path / "quoted.yaml"  # YAML 1.1 reads 1e3 and 1e-3 (no dot) as strings
    path.write_text('experiment: width\ntask: {name: harmonic, n_train: "2000"}\ntrain: {steps: 1e3, lr: 1e-3}\n')
    (config,) = load_configs(path)
    assert (config.task.n_train, config.train.steps, config.train.lr) == (2000, 1000, 0.001)
    assert run_id(config, "moment") == run_id(
        parse_config({**BASE, "task": {"name": "harmonic", "n_train": 2000}, "train": {"steps": 1000, "lr": 0.001}}),
        "moment",
    )
    for text in ("ten", "2.5"):
        expected = f"smoke.yaml: train.steps: expected a positive integer or null, got {text!r}"
        assert error({**BASE, "train": {"steps": text}}) == expected
    assert error({**BASE, "seed": "-1"}) == "smoke.yaml: seed: expected a non-negative integer, got '-1'"


def test_k_zero_is_refused_as_no_moment_degree():
    assert error({**BASE, "compression": {"k": 0}}) == (
        "smoke.yaml: compression.k: expected a positive integer (the highest moment degree matched; "
        "0 matches only the total weight), got 0"
    )
    assert parse_config({**BASE, "compression": {"k": 1}}).compression.k == 1


def test_a_file_that_does_not_parse_names_the_file_and_the_line(tmp_path):
    from harness.config import read_yaml

    path = tmp_path / "broken.yaml"
    path.write_text("experiment: width\ntrain:\n  steps: [1, 2\n  lr: 0.1\n")
    with pytest.raises(UsageError) as caught:
        read_yaml(path)
    message = str(caught.value)
    assert message.startswith("broken.yaml: not valid YAML (line 4): ") and "\n" not in message
    path.write_text("a: 1\n---\nb: 2\n---\n")
    assert read_yaml(path) == [{"a": 1}, {"b": 2}]


def test_overrides_and_sweep_values_share_one_setter_and_its_error(tmp_path):
    from harness.config import with_values
    from harness.config.sweep_spec import load_sweep

    raw = {"train": {"lr": 0.1}}
    expected = {"train": {"lr": 0.1, "steps": 5}, "model": {"width": 3}}
    assert with_values(raw, {"train.steps": 5, "model.width": 3}, "x") == expected
    assert raw == {"train": {"lr": 0.1}}  # a copy: the base is never changed
    assert error(BASE, ["train.steps.max=3"]) == "--set: train.steps.max: train.steps is not a section"
    path = tmp_path / "grid.yaml"
    path.write_text("experiment: width\ntask: {name: harmonic}\ntrain: {steps: 10}\ngrid:\n  train.steps.max: [1, 2]\n")
    with pytest.raises(UsageError, match=r"^grid\.yaml: train\.steps\.max: train\.steps is not a section$"):
        load_sweep(path)
