"""Every hyperparameter refuses bad values, with a message naming the field, on both paths in:
`parse_config` (which the Train page calls before it hands `start_job` a typed config) and the
CLI (`python -m cifar train ...`).

The fields are listed by `field_table(model)`, so a new field is covered automatically; the bounds
themselves are a literal spec in `tests/test_config.py`. The default run tries one bad value per
field and path (a different kind of value from field to field); the whole product is `slow`.
"""

from __future__ import annotations

import math
import subprocess

import pytest

from cifar import cli
from cifar.config import CONFIG_TYPES, BaselineConfig, ConfigError, artifacts_dir, field_table, parse_config
from cifar.service import jobs
from cifar.store.runs import RunError, runs_root

MODELS = sorted(CONFIG_TYPES)
# input_size != 224 needs a resize; the airbench options (stem, bias_lr_scale, ...) the airbench net and SGD
VALID_CONTEXT = {
    "baseline": {"architecture": "airbench", "optimizer": "sgd"},
    "transfer": {"resize": "bilinear"},
}


def bad_values(row: dict) -> dict[str, object]:
    """label -> value, every one of which must be refused for this field."""
    kind = row["type"]
    values: dict[str, object] = {
        "nan string": "nan",
        "NaN float": math.nan,
        "inf string": "inf",
        "-inf string": "-inf",
        "inf float": math.inf,
        "text": "abc",
        "empty string": "",
        "None": None,
        "list": [1],
        "dict": {"value": 1},
    }
    if kind in ("int", "float"):  # just outside each bound: tests/test_config.py, BOUNDS
        low = row.get("ge", row.get("gt"))
        high = row.get("le", row.get("lt"))
        if low is not None and low >= 0:
            values["negative"] = -1
            values["negative string"] = "-1"
        if high is not None:
            values["huge"] = 10**40
            values["huge string"] = "1" + "0" * 40
            values["1e400 string (overflows to inf)"] = "1e400"
        if kind == "int":
            values["fraction"] = 1.5
            values["fraction string"] = "2.5"
    elif kind == "bool":
        values.update({"number 2": 2, "fraction": 0.5, "word": "maybe"})
    elif kind == "choice":
        values.update(
            {"unknown choice": "definitely-not-a-choice", "number": 1, "upper case": "X" + row["choices"][0]}
        )
    return values


def product(values_of):
    """(model, field, value) for every bad value of every field; all but one per field `slow`.

    The one kept in the default run rotates through the kinds of value from field to field.
    """
    for model in MODELS:
        for position, row in enumerate(field_table(model)):
            values = values_of(row)
            representative = position % len(values)
            for index, (label, value) in enumerate(values.items()):
                marks = () if index == representative else (pytest.mark.slow,)
                yield pytest.param(
                    model, row["name"], value, id=f"{model}-{row['name']}-{label}", marks=marks
                )


def cases():
    return product(bad_values)


CASES = list(cases())


def test_every_field_is_covered_in_the_default_run():
    for cases_of_a_path in (CASES, CLI_CASES):
        default = [(p.values[0], p.values[1]) for p in cases_of_a_path if not p.marks]
        assert len(default) == len(set(default)), "one representative per field"
        for model in MODELS:
            fields = {row["name"] for row in field_table(model)}
            assert fields == {name for m, name in default if m == model}
            assert fields == set(CONFIG_TYPES[model].model_fields) - {"model"}


@pytest.mark.parametrize("model", MODELS)
def test_bounds_themselves_are_accepted(model):
    """The refused values are just outside the allowed range (so the tests above are not vacuous)."""
    for row in field_table(model):
        for bound in ("ge", "le"):
            if bound in row:
                config = parse_config(model, {**VALID_CONTEXT[model], row["name"]: row[bound]})
                assert getattr(config, row["name"]) == row[bound]
        if row["choices"]:
            for choice in row["choices"]:
                overrides = {**VALID_CONTEXT[model], row["name"]: choice}
                if row["name"] == "resize" and choice == "upsample7":
                    overrides["input_size"] = 224
                assert getattr(parse_config(model, overrides), row["name"]) == choice


@pytest.mark.parametrize(("model", "name", "value"), CASES)
def test_parse_config_refuses_bad_value_naming_the_field(model, name, value):
    with pytest.raises(ConfigError) as error:
        parse_config(model, {**VALID_CONTEXT[model], name: value})
    assert name in str(error.value), str(error.value)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("key", ["epoch", "learning_rat", "lr", "__class__", "model_config", "Epochs"])
def test_unknown_key_is_refused_naming_it(model, key):
    with pytest.raises(ConfigError) as error:
        parse_config(model, {key: 1})
    assert key in str(error.value) and "unknown" in str(error.value)


def test_non_string_key_is_refused():
    with pytest.raises(ConfigError):
        parse_config("baseline", {1: 2})


@pytest.mark.parametrize("model", MODELS)
def test_booleans_are_not_numbers(model):
    for row in field_table(model):
        if row["type"] in ("int", "float"):
            with pytest.raises(ConfigError, match=row["name"]):
                parse_config(model, {**VALID_CONTEXT[model], row["name"]: True})


# ----------------------------------------------------------------------------- the CLI


def nothing_written() -> None:
    root = runs_root()
    leftovers = sorted(p.name for p in root.iterdir()) if root.exists() else []
    assert leftovers == [], f"a refused config left {leftovers} in {root}"


CLI_VALUES = ["nan", "inf", "-1", "1e400", "abc", ""]


def cli_values(row: dict) -> dict[str, str]:
    return {
        value or "empty": value for value in CLI_VALUES if not (row["type"] == "choice" and value == "-1")
    }


CLI_CASES = list(product(cli_values))


@pytest.mark.parametrize(("model", "name", "value"), CLI_CASES)
def test_cli_train_refuses_bad_value(model, name, value, capsys):
    flag = f"--{name.replace('_', '-')}"
    context = ["--resize", "bilinear"] if model == "transfer" and name != "resize" else []
    code = cli.main(["train", model, *context, f"{flag}={value}"])
    captured = capsys.readouterr()
    assert code == 2
    assert name in captured.err and "error" in captured.err, captured.err
    assert "Traceback" not in captured.err
    nothing_written()


@pytest.mark.parametrize("model", MODELS)
def test_cli_train_epochs_nan_as_two_tokens(model, capsys):
    assert cli.main(["train", model, "--epochs", "nan"]) == 2
    assert "epochs" in capsys.readouterr().err
    nothing_written()


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "baseline", "--epochs"],
        ["train", "baseline", "--no-such-field", "3"],
        ["train", "baseline", "epochs", "3"],
        ["train", "transfer", "--input-size", "100"],  # needs resize != upsample7
        ["extract", "--input-size", "nan"],
    ],
    ids=["missing value", "unknown field", "no dashes", "input size with upsample7", "extract nan"],
)
def test_cli_other_bad_arguments(argv, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "error" in err and "Traceback" not in err
    word = argv[2].lstrip("-").replace("-", "_") if len(argv) > 2 else argv[1]
    assert word in err or word.replace("_", "-") in err, err
    nothing_written()


# ----------------------------------------------------------------------------- start_job


@pytest.fixture
def no_process(monkeypatch):
    """No job process may start: Popen fails the test if called."""
    started = []

    def popen(*args, **kwargs):
        started.append(args)
        raise AssertionError("start_job started a process for a refused job")

    monkeypatch.setattr(subprocess, "Popen", popen)
    return started


@pytest.mark.parametrize("model", MODELS)
def test_start_job_takes_only_a_parsed_config(model, no_process):
    """The Train page parses first (`parse_config`, tested above); raw values never reach a job."""
    bad = {**VALID_CONTEXT[model], "epochs": "nan"}
    with pytest.raises(TypeError):
        jobs.start_job(bad)
    with pytest.raises(ConfigError, match="^epochs:"):
        parse_config(model, bad)
    assert no_process == []
    assert jobs.active_job() is None
    assert not artifacts_dir().exists(), "a refused job created folders"


def test_start_job_refuses_bad_run_ids(no_process):
    for run_id in ("../escape", "a/b", "/abs", ".hidden", "..", "x" * 101):
        with pytest.raises(RunError):
            jobs.start_job(BaselineConfig(epochs=1), run_id=run_id)
    assert no_process == []
    assert jobs.active_job() is None
