"""The Train page's form through `AppTest`: an out-of-range value stays what was typed, is named in
an error with its range, and keeps Start disabled; valid values reach `start_job` (a fake here)."""

from __future__ import annotations

import pytest

from cifar.config import field_table, parse_config


def errors(app) -> str:
    return "\n".join(str(element.value) for element in app.error)


OUT_OF_RANGE = [
    ("baseline", "epochs", 600, "less than or equal to 500"),
    ("transfer", "epochs", 600, "less than or equal to 500"),
    ("baseline", "epochs", 0, "greater than or equal to 1"),
    ("baseline", "batch_size", 5000, "less than or equal to 4096"),
    ("baseline", "validation_size", -1, "greater than or equal to 0"),
    ("transfer", "input_size", 1000, "less than or equal to 512"),
    ("transfer", "dropout", 1.0, "less than 1"),
    ("baseline", "dropout", 1.0, "less than 1"),
    ("baseline", "learning_rate", 0.0, "greater than 0"),
    ("transfer", "learning_rate", 11.0, "less than or equal to 10"),
    ("baseline", "weight_decay", 2.0, "less than or equal to 1"),
]


@pytest.mark.slow  # over 2 s: the quick loop leaves it to CI
@pytest.mark.parametrize(("model", "name", "value", "bound"), OUT_OF_RANGE)
def test_an_out_of_range_value_is_named_and_disables_start(model, name, value, bound, started, open_page):
    app = open_page("train")
    field = app.number_input(key=f"train-{model}-{name}")
    field.set_value(value).run()
    assert not app.exception, [e.value for e in app.exception]
    assert app.number_input(key=f"train-{model}-{name}").value == value  # not replaced by the last valid one
    assert f"{name}: Input should be {bound} (got {value!r})" in errors(app)
    assert app.button(key=f"train-{model}-start").disabled  # AppTest, like a browser, cannot click it
    assert not started


def test_the_form_recovers_when_the_value_is_corrected(started, open_page):
    app = open_page("train")
    app.number_input(key="train-baseline-epochs").set_value(600).run()
    assert app.button(key="train-baseline-start").disabled
    app.number_input(key="train-baseline-epochs").set_value(500).run()
    assert not errors(app) and not app.button(key="train-baseline-start").disabled


@pytest.mark.slow  # over 2 s: the quick loop leaves it to CI
@pytest.mark.parametrize("model", ["baseline", "transfer"])
def test_a_valid_change_reaches_start_job(model, started, open_page):
    app = open_page("train")
    app.number_input(key=f"train-{model}-epochs").set_value(3).run()
    app.button(key=f"train-{model}-start").click().run()
    assert not app.exception, [e.value for e in app.exception]
    assert started == [(parse_config(model, {"epochs": 3}), None)]
    assert started[0][0].epochs == 3


def test_each_number_field_shows_its_allowed_range_in_the_help(open_page):
    app = open_page("train")
    for model in ("baseline", "transfer"):
        for row in field_table(model):
            if row["type"] not in ("int", "float"):
                continue
            help_text = app.number_input(key=f"train-{model}-{row['name']}").help
            for op, symbol in {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}.items():
                if op in row:
                    assert f"{symbol} {row[op]}" in help_text, (model, row["name"], help_text)


@pytest.mark.slow  # over 2 s: the quick loop leaves it to CI
@pytest.mark.parametrize("unit", ["cpu", "emulated", "gpu", None])
def test_precision_help_says_what_would_compute_bfloat16_here(unit, monkeypatch, open_page):
    from dashboard import text, train_sections

    monkeypatch.setattr(train_sections, "bfloat16_unit", lambda: unit)
    help_text = open_page("train").selectbox(key="train-baseline-precision").help
    assert help_text.startswith("mixed_bfloat16: layers compute in bfloat16")
    if unit is None:  # /proc could not tell: the field's own help, nothing said of this machine
        assert "here:" not in help_text
    else:
        assert help_text.endswith(text.BFLOAT16_HERE[unit])
