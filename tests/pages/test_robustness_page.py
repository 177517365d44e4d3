"""The Robustness page through `AppTest`, its figures recomputed from the runs' robustness files."""

from __future__ import annotations

import numpy as np
import pytest

from cifar.analysis.robustness import stratified_subset
from cifar.sources.corruptions import CORRUPTIONS
from tests.factory import labels_of, write_robustness
from tests.pages.test_pages import figure, no_exception, read_json, texts


def test_without_results_it_says_how_to_make_them(runs, open_page):
    app = open_page("robustness")
    no_exception(app)
    assert "No robustness results yet" in texts(app.info)
    assert "python -m cifar robustness" in app.code[0].value


@pytest.fixture
def evaluated(runs, cifar_npz):
    """Robustness results for two runs, of which the mCE reference, on 50 of the 100 test images."""
    labels = labels_of(cifar_npz)
    indices = stratified_subset(labels, 50)
    write_robustness("baseline-reference", labels, indices, 0.4, seed=10)
    write_robustness("transfer-reference", labels, indices, 0.7, seed=300)
    return ["baseline-reference", "transfer-reference"]


def accuracies(run_id: str) -> dict[tuple[str, int], float]:
    return {
        (s["corruption"], s["severity"]): s["accuracy"] for s in read_json(run_id, "robustness.json")["sets"]
    }


@pytest.mark.slow  # over 2 s: the quick loop leaves it to CI
def test_summary_heatmap_and_lines_show_each_run_s_own_results(evaluated, open_page):
    app = open_page("robustness")
    no_exception(app)
    assert {o.split(" ")[0] for o in app.multiselect(key="robustness-runs").options} == set(evaluated)
    app.multiselect(key="robustness-runs").set_value(evaluated).run()
    summary = app.dataframe[0].value.set_index("run")
    for run_id in evaluated:
        record = read_json(run_id, "robustness.json")
        assert summary.loc[run_id, "clean accuracy"] == pytest.approx(100 * record["clean_accuracy"])
        by_hand = 100 * np.mean(list(accuracies(run_id).values()))
        assert summary.loc[run_id, "mean corruption accuracy"] == pytest.approx(by_hand)
        assert summary.loc[run_id, "images"] == 50
    assert summary.loc["baseline-reference", "mCE"] == pytest.approx(100)
    ref, other = accuracies("baseline-reference"), accuracies("transfer-reference")
    ce = [
        sum(1 - other[name, s] for s in range(1, 6)) / sum(1 - ref[name, s] for s in range(1, 6))
        for name in CORRUPTIONS
    ]
    assert summary.loc["transfer-reference", "mCE"] == pytest.approx(100 * np.mean(ce))

    heatmap = figure(app, 0)["data"][0]
    assert heatmap["x"] == evaluated
    column = evaluated.index("transfer-reference")
    for row, name in enumerate(CORRUPTIONS):
        expected = np.mean([other[name, s] for s in range(1, 6)])
        assert heatmap["z"][row][column] == pytest.approx(expected)

    panels = figure(app, 1)["data"]
    for name in ("gaussian_noise", "jpeg_compression"):
        line = next(
            t
            for t in panels
            if t["name"] == "transfer-reference" and f"corruption={name}<" in t["hovertemplate"]
        )
        clean = read_json("transfer-reference", "robustness.json")["clean_accuracy"]
        assert line["x"] == [0, 1, 2, 3, 4, 5]
        assert line["y"] == pytest.approx([clean] + [other[name, s] for s in range(1, 6)])


@pytest.mark.slow  # over 2 s: the quick loop leaves it to CI
def test_the_reference_is_the_yardstick_even_when_not_chosen(evaluated, open_page):
    app = open_page("robustness")
    app.multiselect(key="robustness-runs").set_value(["transfer-reference"]).run()
    no_exception(app)
    summary = app.dataframe[0].value.set_index("run")
    assert list(summary.index) == ["transfer-reference"]
    assert summary.loc["transfer-reference", "mCE"] == pytest.approx(
        100
        * np.mean(
            [
                sum(1 - accuracies("transfer-reference")[n, s] for s in range(1, 6))
                / sum(1 - accuracies("baseline-reference")[n, s] for s in range(1, 6))
                for n in CORRUPTIONS
            ]
        )
    )


@pytest.mark.slow  # over 2 s: the quick loop leaves it to CI
def test_the_examples_show_one_test_image_under_every_set(evaluated, frost_textures, open_page):
    app = open_page("robustness")
    no_exception(app)
    indices = read_json("baseline-reference", "robustness.json")["test_indices"]
    app.slider(key="robustness-image").set_value(3).run()
    no_exception(app)
    assert len(app.image) == 15 * 6  # each corruption: the clean image and five severities
    assert f"Test image #{indices[3]}" in texts(app.caption)
    assert [m.value for m in app.markdown][-15:] == [name.replace("_", " ") for name in CORRUPTIONS]


def test_the_examples_need_the_frost_textures(evaluated, open_page):
    app = open_page("robustness")
    no_exception(app)
    assert "python -m cifar fetch" in texts(app.info)
