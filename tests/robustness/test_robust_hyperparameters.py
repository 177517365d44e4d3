"""Every hyperparameter refuses bad values, with a message naming the field, on all three paths:
`parse_config`, the CLI (`python -m cifar train ...`) and `cifar.jobs.start_job` (the dashboard).

The bad values are generated from `field_table(model)`, so a new field is covered automatically.
"""

from __future__ import annotations

import math

import pytest

from cifar import cli, jobs
from cifar.config import CONFIG_TYPES, ConfigError, artifacts_dir, field_table, parse_config
from cifar.runs import RunError, runs_root

MODELS = sorted(CONFIG_TYPES)
VALID_CONTEXT = {"baseline": {}, "transfer": {"resize": "bilinear"}}  # input_size != 224 needs it


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
    if kind in ("int", "float"):
        low = row.get("ge", row.get("gt"))
        high = row.get("le", row.get("lt"))
        if "ge" in row:
            values["below minimum"] = row["ge"] - (1 if kind == "int" else 1e-6 * max(1, abs(row["ge"])))
        if "gt" in row:
            values["at exclusive minimum"] = row["gt"]
        if "le" in row:
            values["above maximum"] = row["le"] + (1 if kind == "int" else 1e-6 * max(1, abs(row["le"])))
        if "lt" in row:
            values["at exclusive maximum"] = row["lt"]
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


def cases():
    for model in MODELS:
        for row in field_table(model):
            for label, value in bad_values(row).items():
                yield pytest.param(model, row["name"], value, id=f"{model}-{row['name']}-{label}")


CASES = list(cases())


def test_every_field_is_covered():
    names = {(p.values[0], p.values[1]) for p in CASES}
    for model in MODELS:
        fields = {row["name"] for row in field_table(model)}
        assert fields == {name for m, name in names if m == model}
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


def cli_cases():
    for model in MODELS:
        for row in field_table(model):
            for value in CLI_VALUES:
                if row["type"] == "choice" and value == "-1":
                    continue
                yield pytest.param(model, row["name"], value, id=f"{model}-{row['name']}-{value or 'empty'}")


@pytest.mark.parametrize(("model", "name", "value"), list(cli_cases()))
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
    """start_job must not start a process for a refused config: Popen fails the test if called."""
    started = []

    def popen(*args, **kwargs):
        started.append(args)
        raise AssertionError("start_job started a process for a refused config")

    monkeypatch.setattr(jobs.subprocess, "Popen", popen)
    return started


def job_cases():
    for model in MODELS:
        for row in field_table(model):
            for label in ("nan string", "inf float", "text", "None"):
                value = bad_values(row)[label]
                yield pytest.param(model, row["name"], value, id=f"{model}-{row['name']}-{label}")
            numeric = [k for k in bad_values(row) if k in ("below minimum", "above maximum", "negative")]
            for label in numeric:
                yield pytest.param(
                    model, row["name"], bad_values(row)[label], id=f"{model}-{row['name']}-{label}"
                )


@pytest.mark.parametrize(("model", "name", "value"), list(job_cases()))
def test_start_job_refuses_bad_value(model, name, value, no_process):
    with pytest.raises(ConfigError) as error:
        jobs.start_job(model, {**VALID_CONTEXT[model], name: value})
    assert name in str(error.value)
    assert no_process == []
    assert not jobs.lock_path().exists()
    assert not artifacts_dir().exists(), "a refused job created folders"


def test_start_job_refuses_unknown_key_and_bad_run_id(no_process):
    with pytest.raises(ConfigError, match="epoch"):
        jobs.start_job("baseline", {"epoch": 3})
    for run_id in ("../escape", "a/b", "/abs", ".hidden", "..", "x" * 101):
        with pytest.raises(RunError):
            jobs.start_job("baseline", {"epochs": 1}, run_id=run_id)
    assert no_process == []
    assert not jobs.lock_path().exists()
    assert jobs.active_job() is None
