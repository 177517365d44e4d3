"""Typed configs, string parsing, refusals, and the CLI's `--key value` overrides."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cifar import cli
from cifar.config import (
    CLASS_NAMES,
    CONFIG_TYPES,
    BaselineConfig,
    ConfigError,
    TransferConfig,
    field_table,
    load_config,
    parse_config,
)
from tests.factory import REPO


def test_class_names_are_cifar10_in_label_order():
    assert CLASS_NAMES == (
        "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
    )  # fmt: skip


def test_transfer_defaults_are_the_reference_model():
    config = TransferConfig()
    assert config.model == "transfer"
    assert config.resize == "upsample7"
    assert config.input_size == 224 == 32 * 7
    assert config.head_units == 256
    assert config.dropout == 0.5
    assert config.architecture == "keras"
    assert config.optimizer == "adam"
    assert config.learning_rate == 1e-3
    assert config.flip_features is False and config.tta_flip is False
    assert config.batch_size == 64


def test_baseline_defaults_are_the_tutorial_cnn():
    config = BaselineConfig()
    assert config.model == "baseline"
    assert config.architecture == "tutorial"
    assert config.batch_size == 32
    assert config.augment is False and config.tta_flip is False
    assert config.dropout == 0.0


def test_parse_config_converts_strings():
    config = parse_config(
        "baseline", {"epochs": "20", "augment": "true", "learning_rate": "1e-4", "dropout": "0.25"}
    )
    assert isinstance(config, BaselineConfig)
    assert config.epochs == 20 and isinstance(config.epochs, int)
    assert config.augment is True
    assert config.learning_rate == pytest.approx(1e-4)
    assert config.dropout == 0.25
    assert parse_config("baseline", {"augment": "false"}).augment is False


def test_parse_config_accepts_dashes_and_ignores_model_key():
    config = parse_config("transfer", {"learning-rate": "0.01", "model": "baseline"})
    assert isinstance(config, TransferConfig)
    assert config.learning_rate == 0.01


def test_parse_config_none_gives_defaults():
    assert parse_config("transfer") == TransferConfig()
    assert parse_config("baseline", None) == BaselineConfig()


BAD_VALUES = [
    ("baseline", "epochs", "0"),
    ("baseline", "epochs", "-1"),
    ("baseline", "epochs", -1),
    ("baseline", "epochs", "501"),
    ("baseline", "epochs", "99999999999999999999999999"),
    ("baseline", "epochs", "abc"),
    ("baseline", "epochs", "2.5"),
    ("baseline", "epochs", "nan"),
    ("baseline", "epochs", ""),
    ("baseline", "learning_rate", "nan"),
    ("baseline", "learning_rate", float("nan")),
    ("baseline", "learning_rate", "inf"),
    ("baseline", "learning_rate", "-inf"),
    ("baseline", "learning_rate", math.inf),
    ("baseline", "learning_rate", "1e309"),
    ("baseline", "learning_rate", "0"),
    ("baseline", "learning_rate", "-1e-3"),
    ("baseline", "learning_rate", "11"),
    ("baseline", "learning_rate", "fast"),
    ("baseline", "batch_size", "0"),
    ("baseline", "batch_size", "4097"),
    ("baseline", "dropout", "1"),
    ("baseline", "dropout", "-0.1"),
    ("baseline", "label_smoothing", "1.0"),
    ("baseline", "weight_decay", "-1"),
    ("baseline", "validation_size", "-5"),
    ("baseline", "seed", str(2**31)),
    ("baseline", "seed", "-1"),
    ("baseline", "optimizer", "adagrad"),
    ("baseline", "architecture", "resnet"),
    ("baseline", "augment", "maybe"),
    ("baseline", "width", "4"),
    ("transfer", "head_units", "0"),
    ("transfer", "head_units", "1e12"),
    ("transfer", "resize", "lanczos"),
    ("transfer", "architecture", "inception4"),
    ("transfer", "weights", "imagenet21k"),
    ("transfer", "dropout", "nan"),
]


@pytest.mark.parametrize(("model", "field", "value"), BAD_VALUES)
def test_parse_config_rejects_bad_values_naming_the_field(model, field, value):
    overrides = {field: value}
    if model == "transfer":
        overrides["resize"] = overrides.get("resize", "bilinear")
    with pytest.raises(ConfigError) as error:
        parse_config(model, overrides)
    assert str(error.value).startswith(f"{field}:"), str(error.value)


def test_input_size_out_of_range_is_refused():
    for size in ("74", "513", "-224", "big"):
        with pytest.raises(ConfigError, match=r"^input_size:"):
            parse_config("transfer", {"resize": "bilinear", "input_size": size})


def test_unknown_key_is_refused_and_named():
    with pytest.raises(ConfigError) as error:
        parse_config("baseline", {"epoch": "3"})
    message = str(error.value)
    known = ", ".join(row["name"] for row in field_table("baseline"))
    assert message == f"epoch: unknown field for baseline; known fields: {known}"
    assert known.startswith("epochs, batch_size, ")
    with pytest.raises(ConfigError, match="head_units: unknown field for baseline"):
        parse_config("baseline", {"head_units": "3"})


def test_unknown_model_is_refused():
    with pytest.raises(ConfigError, match="unknown model"):
        parse_config("resnet", {})


def test_several_problems_are_all_named():
    with pytest.raises(ConfigError) as error:
        parse_config("baseline", {"epochs": "0", "dropout": "2"})
    assert str(error.value) == (
        "epochs: Input should be greater than or equal to 1 (got '0'); "
        "dropout: Input should be less than 1 (got '2')"
    )


def test_a_problem_of_the_whole_config_is_named_config():
    with pytest.raises(ConfigError) as error:
        parse_config("baseline", {"alternating_flip": "true"})
    assert str(error.value).startswith("config: Value error, alternating_flip is a kind of augmentation")


def test_upsample7_requires_224():
    with pytest.raises(ConfigError, match="input_size=224"):
        parse_config("transfer", {"resize": "upsample7", "input_size": "299"})
    with pytest.raises(ConfigError):
        parse_config("transfer", {"input_size": "299"})  # resize defaults to upsample7
    assert parse_config("transfer", {"resize": "bilinear", "input_size": "299"}).input_size == 299


def test_configs_are_frozen():
    config = BaselineConfig()
    with pytest.raises(ValueError):
        config.epochs = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    "config",
    [
        BaselineConfig(),
        BaselineConfig(epochs=3, augment=True, tta_flip=True, learning_rate=1e-5, lr_schedule="onecycle"),
        TransferConfig(),
        TransferConfig(resize="bicubic", input_size=139, architecture="exact2015", flip_features=True),
    ],
)
def test_string_round_trip_as_jobs_pass_it(config):
    """Jobs pass every field as `--key str(value)`: that must give back the same config."""
    as_strings = {key: str(value) for key, value in config.model_dump().items()}
    assert parse_config(config.model, as_strings) == config
    assert load_config(config.model_dump()) == config


# ----------------------------------------------------------------------------- the bounds, as a spec
# Written out here, not read from the code: a loosened bound in config.py fails these tests.
# field -> (type, lower bound, upper bound); ("ge", x) includes x, ("gt", x) excludes it.
SHARED_BOUNDS = {
    "epochs": (int, ("ge", 1), ("le", 500)),
    "batch_size": (int, ("ge", 1), ("le", 4096)),
    "learning_rate": (float, ("gt", 0), ("le", 10)),
    "label_smoothing": (float, ("ge", 0), ("lt", 1)),
    "weight_decay": (float, ("ge", 0), ("le", 1)),
    "validation_size": (int, ("ge", 0), ("le", 25000)),
    "early_stopping_patience": (int, ("ge", 0), ("le", 100)),
    "seed": (int, ("ge", 0), ("le", 2**31 - 1)),
}
BOUNDS = {
    "baseline": {
        **SHARED_BOUNDS,
        "width": (int, ("ge", 8), ("le", 512)),
        "dropout": (float, ("ge", 0), ("lt", 1)),
        "momentum": (float, ("ge", 0), ("lt", 1)),
        "bias_lr_scale": (float, ("ge", 1), ("le", 1024)),
    },
    "transfer": {
        **SHARED_BOUNDS,
        "input_size": (int, ("ge", 75), ("le", 512)),
        "head_units": (int, ("ge", 1), ("le", 8192)),
        "dropout": (float, ("ge", 0), ("lt", 1)),
    },
}
# input_size other than 224 needs a resize; bias_lr_scale other than 1 the airbench net and SGD
CONTEXT = {"baseline": {"architecture": "airbench", "optimizer": "sgd"}, "transfer": {"resize": "bilinear"}}


def boundary_values(kind: type, bound: tuple[str, float], inward: float) -> tuple[object, object]:
    """(just inside, just outside) the bound; `inward` is +1 for a lower bound, -1 for an upper."""
    op, edge = bound
    if kind is int:
        return (edge, edge - inward) if op in ("ge", "le") else (edge + inward, edge)
    step_in = math.nextafter(edge, edge + inward)
    step_out = math.nextafter(edge, edge - inward)
    return (edge, step_out) if op in ("ge", "le") else (step_in, edge)


def bound_cases():
    for model, fields in BOUNDS.items():
        for name, (kind, low, high) in fields.items():
            for side, bound, inward in (("low", low, 1), ("high", high, -1)):
                inside, outside = boundary_values(kind, bound, inward)
                yield pytest.param(model, name, inside, outside, id=f"{model}-{name}-{side}")


@pytest.mark.parametrize(("model", "name", "inside", "outside"), list(bound_cases()))
@pytest.mark.parametrize("as_text", [False, True], ids=["value", "text"])
def test_each_bound_accepts_just_inside_and_refuses_just_outside(model, name, inside, outside, as_text):
    def given(value):  # the CLI and the form hand over text; repr keeps every float digit
        return repr(value) if as_text else value

    config = parse_config(model, {**CONTEXT[model], name: given(inside)})
    assert getattr(config, name) == inside
    with pytest.raises(ConfigError, match=rf"^{name}:"):
        parse_config(model, {**CONTEXT[model], name: given(outside)})


@pytest.mark.parametrize("model", BOUNDS)
def test_the_bounds_spec_covers_every_numeric_field(model):
    numeric = {
        name
        for name, info in CONFIG_TYPES[model].model_fields.items()
        if info.annotation in (int, float) and name != "model"
    }
    assert numeric and set(BOUNDS[model]) == numeric
    for name, (kind, _, _) in BOUNDS[model].items():
        assert CONFIG_TYPES[model].model_fields[name].annotation is kind, name


@pytest.mark.parametrize("model", BOUNDS)
def test_field_table_shows_the_spec_bounds(model):
    """The form and `--help` show what the spec says (they read `field_table`)."""
    rows = {row["name"]: row for row in field_table(model)}
    for name, (_, (low_op, low), (high_op, high)) in BOUNDS[model].items():
        shown = {key: rows[name][key] for key in ("ge", "gt", "le", "lt") if key in rows[name]}
        assert shown == {low_op: low, high_op: high}, name


# Fields whose name says it all; every other field has a help text on the form and in `--help`.
WITHOUT_HELP = {"optimizer", "seed", "dropout"}


@pytest.mark.parametrize("model", BOUNDS)
def test_every_field_but_the_self_explanatory_has_its_help(model):
    rows = {row["name"]: row for row in field_table(model)}
    assert {name for name, row in rows.items() if not row["help"]} == WITHOUT_HELP
    note = " (Keras' default)" if model == "baseline" else ""
    assert rows["batch_size"]["help"] == f"images per gradient step{note}"


def test_field_table_lists_every_field_with_bounds():
    rows = {row["name"]: row for row in field_table("baseline")}
    assert "model" not in rows
    assert set(rows) == set(BaselineConfig.model_fields) - {"model"}
    assert rows["epochs"]["ge"] == 1 and rows["epochs"]["le"] == 500
    assert rows["optimizer"]["type"] == "choice" and "adam" in rows["optimizer"]["choices"]


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=-10_000, max_value=10_000))
def test_epochs_bounds_property(epochs):
    if 1 <= epochs <= 500:
        assert parse_config("baseline", {"epochs": str(epochs)}).epochs == epochs
    else:
        with pytest.raises(ConfigError, match="^epochs:"):
            parse_config("baseline", {"epochs": str(epochs)})


@settings(max_examples=40, deadline=None)
@given(st.floats(allow_nan=True, allow_infinity=True))
def test_learning_rate_bounds_property(value):
    if math.isfinite(value) and 0 < value <= 10:
        assert parse_config("baseline", {"learning_rate": repr(value)}).learning_rate == value
    else:
        with pytest.raises(ConfigError, match="^learning_rate:"):
            parse_config("baseline", {"learning_rate": repr(value)})


# ----------------------------------------------------------------------------- CLI overrides


def test_parse_overrides_space_and_equals_forms():
    assert cli.parse_overrides(["--epochs", "20", "--learning-rate=1e-4", "--augment", "true"]) == {
        "epochs": "20",
        "learning_rate": "1e-4",
        "augment": "true",
    }
    assert cli.parse_overrides([]) == {}
    assert cli.parse_overrides(["--epochs", "-1"]) == {"epochs": "-1"}
    assert cli.parse_overrides(["--name=a=b"]) == {"name": "a=b"}


@pytest.mark.parametrize("tokens", [["--epochs"], ["--epochs", "--seed", "1"], ["--seed", "1", "--epochs"]])
def test_parse_overrides_missing_value(tokens):
    with pytest.raises(ConfigError, match="--epochs: missing value"):
        cli.parse_overrides(tokens)


def test_parse_overrides_rejects_bare_words():
    with pytest.raises(ConfigError, match="expected --key value"):
        cli.parse_overrides(["epochs", "3"])


def _no_training(*args, **kwargs):
    raise AssertionError("an invalid config must not start training")


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (["train", "baseline", "--epochs", "-1"], "epochs"),
        (["train", "baseline", "--epochs=-1"], "epochs"),
        (["train", "transfer", "--dropout", "1.5"], "dropout"),
        (["train", "baseline", "--bogus", "3"], "bogus"),
        (["train", "baseline", "--epochs"], "--epochs"),
    ],
)
def test_cli_train_with_bad_config_exits_2_naming_the_field(argv, field, capsys, monkeypatch):
    import cifar.training.train

    monkeypatch.setattr(cifar.training.train, "train", _no_training)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert f"{field}:" in err


def test_cli_rejects_extra_arguments_for_other_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["runs", "--epochs", "3"])
    assert exit_info.value.code == 2


def test_cli_runs_with_no_runs_says_where_it_looked(capsys):
    from cifar.store.runs import runs_root

    assert cli.main(["runs"]) == 0
    out = capsys.readouterr().out
    assert f"no runs yet in {runs_root()}" in out and "CIFAR_ARTIFACTS" in out


def test_cli_evaluate_unknown_run_exits_1(capsys):
    assert cli.main(["evaluate", "nope"]) == 1
    assert "no run 'nope'" in capsys.readouterr().err


def test_bare_boolean_flags():
    flags = cli.boolean_fields("baseline")
    assert "augment" in flags and "epochs" not in flags
    assert cli.parse_overrides(["--augment", "--epochs", "3"], flags) == {"augment": "true", "epochs": "3"}
    assert cli.parse_overrides(["--no-augment", "--tta-flip"], flags) == {
        "augment": "false",
        "tta_flip": "true",
    }
    assert cli.parse_overrides(["--augment", "false"], flags) == {"augment": "false"}
    with pytest.raises(ConfigError, match="--epochs: missing value"):
        cli.parse_overrides(["--epochs", "--augment"], flags)
    with pytest.raises(ConfigError, match="--augment: missing value"):
        cli.parse_overrides(["--augment"])  # not a flag where none are declared
    assert cli.parse_config("baseline", cli.parse_overrides(["--augment"], flags)).augment is True


def test_data_and_runs_live_where_the_readme_says_unless_the_environment_says_otherwise(
    monkeypatch, tmp_path
):
    from pathlib import Path

    from cifar.config import artifacts_dir, keras_home
    from tests.factory import REPO

    monkeypatch.delenv("KERAS_HOME", raising=False)
    monkeypatch.delenv("CIFAR_ARTIFACTS", raising=False)
    assert keras_home() == Path.home() / ".keras"
    assert artifacts_dir() == REPO / "artifacts"
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "k"))
    monkeypatch.setenv("CIFAR_ARTIFACTS", str(tmp_path / "a"))
    assert (keras_home(), artifacts_dir()) == (tmp_path / "k", tmp_path / "a")


def test_a_saved_config_that_cannot_be_read_is_refused_with_the_reason():
    from cifar.config import ConfigError, load_config

    with pytest.raises(ConfigError) as without_model:
        load_config({})
    assert str(without_model.value) == "unknown model '': choose one of ['baseline', 'transfer']"
    with pytest.raises(ConfigError) as ensemble:
        load_config({"model": "ensemble", "members": "cnn"})
    assert str(ensemble.value) == "ensemble config: Input should be a valid list"
    assert ensemble.value.kinds == ("list_type",)  # what run_files tells damage from an old format by


def test_bounds_read_as_people_write_them():
    from cifar.config import allowed_range

    assert allowed_range({"ge": 1, "le": 500, "name": "epochs"}) == ">= 1, <= 500"
    assert allowed_range({"gt": 0, "lt": 1}) == "> 0, < 1"
    assert allowed_range({"name": "optimizer"}) == ""


@pytest.mark.parametrize("value", ["", None], ids=["set but empty", "unset"])
def test_an_empty_artifacts_variable_is_unset_not_the_current_folder(value, monkeypatch, tmp_path):
    """#30 defect 8: CIFAR_ARTIFACTS="" was the current folder (`runs` then said "no runs yet")."""
    from cifar.config import artifacts_dir

    monkeypatch.chdir(tmp_path)
    if value is None:
        monkeypatch.delenv("CIFAR_ARTIFACTS")
    else:
        monkeypatch.setenv("CIFAR_ARTIFACTS", value)
    assert artifacts_dir() == REPO / "artifacts"


def test_an_empty_keras_home_variable_is_unset_not_the_current_folder(monkeypatch, tmp_path):
    from cifar.config import keras_home

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KERAS_HOME", "")
    assert keras_home() == Path.home() / ".keras"
