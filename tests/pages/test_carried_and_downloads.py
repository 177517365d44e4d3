"""Runs chosen once are carried from page to page; Comparison's downloads."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from cifar.calibration import temperature_scaled
from cifar.store.runs import load_run
from cifar.store.tables import predictions_csv
from tests.factory import PAGES, labels_of, write_run
from tests.pages.test_pages import no_exception, read_json


@pytest.mark.slow  # over 2 s: the quick loop leaves it to CI
def test_runs_chosen_on_one_page_are_chosen_on_the_next(runs, open_page):
    app = open_page("comparison")
    app.multiselect(key="comparison-runs").set_value(["transfer-reference", "baseline-reference"]).run()
    for page, key in (("per_class", "per-class-runs"), ("misclassified", "misclassified-runs")):
        app.switch_page(PAGES[page]).run()
        no_exception(app)
        assert app.multiselect(key=key).value == ["transfer-reference", "baseline-reference"], page
    app.multiselect(key="misclassified-runs").set_value(["baseline-best"]).run()
    app.switch_page(PAGES["comparison"]).run()
    assert app.multiselect(key="comparison-runs").value == ["baseline-best"]


def test_classify_keeps_its_own_choice(runs, open_page):
    """Each model chosen on Classify is loaded: a long list from Comparison is not carried there."""
    app = open_page("comparison")
    app.multiselect(key="comparison-runs").set_value(runs).run()
    app.switch_page(PAGES["classify"]).run()
    assert app.multiselect(key="classify-runs").value != runs


def test_comparison_offers_each_run_s_predictions_and_model(runs, open_page):
    app = open_page("comparison")
    app.multiselect(key="comparison-runs").set_value(runs[:2]).run()
    no_exception(app)
    buttons = [element.proto for element in app.get("download_button")]
    labels = [button.label for button in buttons]
    assert labels == ["Test predictions (CSV)", "Model (.keras)"] * 2
    # Fixture runs hold no weights: the model button says why it is off.
    assert all(b.disabled and "no trained weights" in b.help for b in buttons[1::2])


def test_the_predictions_file_holds_the_calibrated_probabilities_of_every_test_image(artifacts, cifar_npz):
    labels = labels_of(cifar_npz)
    write_run(artifacts, "c", "baseline", labels, 0.7, seed=4, val_labels=np.arange(60) % 10)
    run = load_run("c")
    table = pd.read_csv(io.BytesIO(predictions_csv(run)))
    probabilities = np.load(run.path / "test_predictions.npy")
    expected = temperature_scaled(probabilities, read_json("c", "calibration.json")["temperature"])
    assert list(table["test_index"]) == list(range(len(labels)))
    assert list(table["true"]) == [run.class_names[i] for i in labels]
    assert list(table["predicted"]) == [run.class_names[i] for i in expected.argmax(1)]
    np.testing.assert_allclose(table[[f"p_{n}" for n in run.class_names]].to_numpy(), expected, atol=1e-6)
    assert not np.allclose(expected, probabilities, atol=1e-3), "calibration changes the numbers"
    assert table.shape == (len(labels), 13) and pytest.approx(1, abs=1e-4) == table.iloc[0, 3:].sum()
