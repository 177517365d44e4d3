"""The dashboard through `AppTest`: every page renders (with runs and without), and shows the
values of the runs' own files, recomputed here by hand from metrics.json, config.json,
history.csv and the saved predictions.

Expensive calls (a model's Predictor, a training job) are replaced by fakes; everything else is
the real code reading fixture run folders written by `RunWriter`.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
import shutil
import time

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cifar.config import CLASS_NAMES, REFERENCE_FIGURES, parse_config
from cifar.service import jobs, standby
from cifar.store.runs import partial_path, runs_root
from dashboard import pages, train_sections
from dashboard.text import plain
from dashboard.widgets import upscale
from tests.factory import (
    PAGES,
    REPO,
    labels_of,
    partial_run,
    plain_id,
    take_slot,
    write_ensemble,
    write_run,
)


def texts(elements) -> str:
    return "\n".join(str(element.value) for element in elements)


def no_exception(app) -> None:
    assert not app.exception, [e.value for e in app.exception]


def png(color=(200, 30, 30), size=(48, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def figure(app, index: int = 0) -> dict:
    """The Plotly figure (data and layout) of the page's `index`-th chart, arrays as lists."""
    return json.loads(app.get("plotly_chart")[index].proto.spec, object_hook=_typed_array)


def _typed_array(value: dict):
    """Plotly writes numpy arrays as {"dtype", "bdata": base64[, "shape"]}."""
    if set(value) - {"shape"} != {"dtype", "bdata"}:
        return value
    array = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
    if "shape" in value:
        array = array.reshape([int(n) for n in str(value["shape"]).split(",")])
    return array.tolist()


def accuracy_curves(learning_curves: dict) -> dict[str, list]:
    """trace name -> accuracy per epoch (the left panel of `plots.learning_curves`)."""
    return {t["name"]: t["y"] for t in learning_curves["data"] if t.get("xaxis", "x") == "x"}


def read_json(run_id: str, name: str) -> dict:
    return json.loads((runs_root() / run_id / name).read_text())


def arrays(run_id: str) -> tuple[np.ndarray, np.ndarray]:
    folder = runs_root() / run_id
    return np.load(folder / "test_predictions.npy"), np.load(folder / "test_labels.npy").astype(int)


def accuracy(run_id: str) -> float:
    probs, labels = arrays(run_id)
    return float(np.mean(probs.argmax(axis=1) == labels))


def confusion(run_id: str) -> np.ndarray:
    probs, labels = arrays(run_id)
    counts = np.zeros((10, 10), int)
    for true, predicted in zip(labels, probs.argmax(axis=1), strict=True):
        counts[true, predicted] += 1
    return counts


def pp(value: float, reference: float) -> str:
    return f"{(value - reference) * 100:+.2f} pp vs write-up"


# ----------------------------------------------------------------------------- smoke


@pytest.mark.slow  # over 2 s: the quick loop leaves it to CI
@pytest.mark.parametrize("with_runs", [True, False], ids=["runs", "empty"])
@pytest.mark.parametrize("page", [None, *PAGES])
def test_every_page_renders(page, with_runs, request, open_page):
    if with_runs:
        request.getfixturevalue("runs")
    app = open_page(page)
    no_exception(app)
    registered = next(p for p in pages.PAGES if p.name == (page or pages.PAGES[0].name))
    assert app.title[0].value == registered.heading, "the page's title is the one registered"
    if not with_runs and page not in (None, "overview", "train"):
        assert "No runs yet" in texts(app.info)


@pytest.mark.slow  # over 2 s: the quick loop leaves it to CI
def test_pages_import_no_tensorflow_and_stay_readable():
    """Pages stay light: TensorFlow loads only when a model is used (Classify, training jobs)."""
    import ast
    import subprocess
    import sys

    pages = [REPO / "streamlit_app.py", *(REPO / "app_pages").glob("*.py")]
    assert sorted(pages[1:]) == sorted(REPO / file for file in PAGES.values()), "every page is registered"
    for page in pages:
        tree = ast.parse(page.read_text())
        names = [
            alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
        ]
        names += [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
        assert not [n for n in names if n.split(".")[0] in ("tensorflow", "keras")], page
        assert len(page.read_text().splitlines()) <= 150, f"{page.name}: move sections to dashboard/"
    code = (
        "import sys, dashboard.cache, dashboard.widgets, dashboard.text, dashboard.train_sections\n"
        "import cifar.analysis.plots, cifar.store.runs, cifar.analysis.evaluate, cifar.inference.predict\n"
        "import cifar.service.jobs, cifar.modeling.features\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'TensorFlow was imported'"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=120)


# ----------------------------------------------------------------------------- overview


def test_overview_leads_with_each_family_s_best_run_and_the_write_up_s_recipe_rerun(runs, open_page):
    app = open_page("overview")
    base, best, transfer = "baseline-reference", "baseline-best", "transfer-reference"
    assert accuracy(best) > accuracy(base)  # so the baseline card leads with baseline-best
    write_up = {model: REFERENCE_FIGURES[model]["test_accuracy"] for model in REFERENCE_FIGURES}
    shown = [(metric.label, metric.value, metric.delta) for metric in app.metric]
    assert shown == [
        (f"Best: {best}", f"{accuracy(best):.2%}", pp(accuracy(best), write_up["baseline"])),
        (f"Best: {transfer}", f"{accuracy(transfer):.2%}", pp(accuracy(transfer), write_up["transfer"])),
    ]
    captions = texts(app.caption)
    train = {run_id: read_json(run_id, "metrics.json")["train_accuracy"] for run_id in (best, transfer)}
    assert f"Train {train[best]:.2%} · write-up: 71.10% test" in captions
    assert f"Train {train[transfer]:.2%} · write-up: 85.51% train / 83.75% test" in captions
    low, high = wilson_of(base)
    assert f"The write-up's recipe, rerun: `{base}` {accuracy(base):.2%} ({low:.2%}".replace("%", "") in (
        captions.replace("%", "")
    )
    assert f"The write-up's recipe, rerun: `{transfer}`" not in captions  # it is the best run itself
    for run_id in (best, transfer):
        low, high = wilson_of(run_id)
        assert f"95 % interval {low:.2%}".removesuffix("%") + f"-{high:.2%}" in captions
    bars = {trace["name"]: trace["y"] for trace in figure(app)["data"]}
    assert bars["best run"] == pytest.approx([accuracy(best), accuracy(transfer)])
    rerun = [accuracy(base), accuracy(transfer)]
    assert bars["the write-up's recipe, rerun"] == pytest.approx(rerun)
    assert bars["the write-up"] == [0.711, 0.8375]
    assert "python -m cifar fetch" in texts(app.code)  # weights are not cached in the sandbox


def wilson_of(run_id: str) -> tuple[float, float]:
    """The Wilson interval of a run's test accuracy, by formula (not by the code under test)."""
    n = len(np.load(runs_root() / run_id / "test_labels.npy"))
    p, z = accuracy(run_id), 1.959963984540054
    centre, half = (p + z * z / (2 * n)), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)


def test_overview_picks_the_best_run_when_no_reference(artifacts, cifar_npz, open_page):
    labels = labels_of(cifar_npz)
    write_run(artifacts, "baseline-a", "baseline", labels, 0.3, seed=1)
    write_run(artifacts, "baseline-b", "baseline", labels, 0.9, seed=2)
    app = open_page("overview")
    assert [(metric.label, metric.value) for metric in app.metric] == [
        ("Best: baseline-b", f"{accuracy('baseline-b'):.2%}")
    ]
    assert "write-up's recipe, rerun" not in texts(app.caption)
    assert "No transfer run yet" in texts(app.info)
    assert "python -m cifar train transfer" in texts(app.code)


def test_overview_shows_the_best_ensemble_and_its_members(artifacts, open_page):
    write_ensemble(artifacts, np.arange(40) % 10)
    app = open_page("overview")
    assert [metric.label for metric in app.metric] == ["Best: b", "Best: ab"]  # a and b: both baselines
    assert "Pools `a`, `b`" in texts(app.caption)


def test_overview_cards_give_the_best_run_s_cost(runs, open_page):
    from dashboard.text import cost_line

    metrics = read_json("baseline-best", "metrics.json")
    metrics.update(
        parameters=1_980_000, trainable_parameters=1_970_000, flops_per_image=320_000_000, views=2,
        model_bytes=8_000_000, latency_ms={"1": 4.0, "256": 900.0}, latency_device="CPU",
        total_seconds=5760.0,
    )  # fmt: skip
    (runs_root() / "baseline-best" / "metrics.json").write_text(json.dumps(metrics))
    app = open_page("overview")
    no_exception(app)
    assert f"`baseline-best` costs {cost_line(metrics)}" in texts(app.caption)
    assert "costs" not in texts(app.caption).replace("`baseline-best` costs", "")  # the others: unmeasured


def test_overview_empty_state(open_page):
    app = open_page()
    no_exception(app)
    info = texts(app.info)
    assert "No baseline run yet" in info and "No transfer run yet" in info
    assert "CIFAR-10 is not cached" in texts(app.warning)
    assert "Feature cache: 0 feature set(s), 0.0 GB" in texts(app.caption)
    assert not app.get("plotly_chart")


def test_overview_counts_the_feature_cache_and_points_at_prune(tmp_path, open_page):
    from cifar.modeling.features import FeatureSpec

    spec = FeatureSpec("keras", "0" * 64, "keras", "bilinear", 224, "train", False, "1" * 64)
    for name in (spec.name, spec.name.replace("-r2", "")):  # today's name, and one from before it
        folder = tmp_path / "keras" / "features" / name
        folder.mkdir(parents=True)
        (folder / "manifest.json").write_text(json.dumps({**spec.__dict__, "n_images": 10}))
    caption = texts(open_page().caption)
    assert "Feature cache: 1 feature set(s)" in caption
    assert "1 obsolete: `python -m cifar features --prune` removes them" in caption


# ----------------------------------------------------------------------------- comparison


def test_comparison_shows_each_run_s_metrics_and_hyperparameters(runs, open_page):
    app = open_page("comparison")
    table = app.dataframe[0].value.set_index("run")
    assert sorted(table.index) == sorted(runs)
    results = ["train_accuracy", "val_accuracy", "test_accuracy", "seconds", "epochs_run"]
    for run_id in runs:
        metrics, config = read_json(run_id, "metrics.json"), read_json(run_id, "config.json")["config"]
        assert table.loc[run_id, results].tolist() == pytest.approx([metrics[name] for name in results])
        assert table.loc[run_id, "test_accuracy"] == pytest.approx(accuracy(run_id))
        for name, value in config.items():
            if name != "model" and not pd.isna(table.loc[run_id, name]):
                assert table.loc[run_id, name] == value, (run_id, name)
        assert table.loc[run_id, "model"] == config["model"]
    bars = {trace["name"]: dict(zip(trace["x"], trace["y"], strict=True)) for trace in figure(app, 0)["data"]}
    for run_id in runs:
        metrics = read_json(run_id, "metrics.json")
        assert bars["train"][run_id] == pytest.approx(metrics["train_accuracy"])
        assert bars["validation"][run_id] == pytest.approx(metrics["val_accuracy"])
        assert bars["test"][run_id] == pytest.approx(accuracy(run_id))
    curves = accuracy_curves(figure(app, 1))
    for run_id in runs:
        history = pd.read_csv(runs_root() / run_id / "history.csv")
        assert curves[f"{run_id} train"] == pytest.approx(history["accuracy"].tolist())


@pytest.mark.slow  # over 2 s: the quick loop leaves it to CI
def test_comparison_follows_the_chosen_runs_and_the_chosen_hyperparameter(runs, open_page):
    app = open_page("comparison")
    app.selectbox(key="comparison-hparam-parameter").set_value("learning_rate").run()
    app.selectbox(key="comparison-hparam-metric").set_value("train_accuracy").run()
    points = {
        name: (x, y)
        for trace in figure(app, 2)["data"]
        for name, x, y in zip(trace["hovertext"], trace["x"], trace["y"], strict=True)
    }
    assert points == {
        run_id: (
            read_json(run_id, "config.json")["config"]["learning_rate"],
            pytest.approx(read_json(run_id, "metrics.json")["train_accuracy"]),
        )
        for run_id in runs
    }
    app.multiselect(key="comparison-runs").set_value(["baseline-best"]).run()
    assert list(app.dataframe[0].value["run"]) == ["baseline-best"]
    app.multiselect(key="comparison-runs").set_value([]).run()
    assert "Choose at least one run" in texts(app.info)


@pytest.mark.slow  # over 2 s: the quick loop leaves it to CI
def test_comparison_shows_each_calibrated_run_s_reliability_and_ece(runs, artifacts, cifar_npz, open_page):
    """Points recomputed by hand from the files: softmax(log p / T) of test_predictions.npy."""
    from scipy.special import softmax

    from cifar.calibration import reliability_table

    labels = labels_of(cifar_npz)
    val_labels = np.arange(300) % 10
    write_run(artifacts, "calibrated", "baseline", labels, 0.8, seed=7, val_labels=val_labels)
    app = open_page("comparison")
    app.multiselect(key="comparison-runs").set_value([*runs, "calibrated"]).run()
    no_exception(app)
    record = read_json("calibrated", "calibration.json")
    probs = np.load(runs_root() / "calibrated" / "test_predictions.npy").astype(np.float64)
    by_hand = reliability_table(softmax(np.log(probs) / record["temperature"], axis=1), labels)
    by_hand = by_hand[by_hand["count"] > 0]
    lines = {trace["name"]: trace for trace in figure(app, 3)["data"]}
    assert set(lines) == {"perfect", "calibrated"}, "only calibrated runs have a line"
    assert lines["calibrated"]["x"] == pytest.approx(by_hand["confidence"].tolist(), abs=1e-5)
    assert lines["calibrated"]["y"] == pytest.approx(by_hand["accuracy"].tolist())
    table = app.dataframe[1].value.set_index("run")  # after the runs table
    assert table.loc["calibrated", "temperature"] == pytest.approx(record["temperature"])
    assert table.loc["calibrated", "test_ece_after"] == pytest.approx(record["test"]["ece_after"])

    app.toggle(key="comparison-calibrated").set_value(False).run()
    raw = reliability_table(probs, labels)
    raw = raw[raw["count"] > 0]
    lines = {trace["name"]: trace for trace in figure(app, 3)["data"]}
    assert lines["calibrated"]["x"] == pytest.approx(raw["confidence"].tolist(), abs=1e-5)

    app.multiselect(key="comparison-runs").set_value(runs).run()
    assert "None of these runs is calibrated yet" in texts(app.info)


def test_comparison_draws_accuracy_against_cost_with_the_pareto_front(runs, open_page):
    flops = {"baseline-reference": 1_000_000, "baseline-best": 5_000_000, "transfer-reference": 4_000_000}
    for run_id, value in flops.items():
        metrics = read_json(run_id, "metrics.json")
        metrics.update(
            parameters=10, trainable_parameters=10, flops_per_image=value, views=2, model_bytes=100,
            latency_ms={"1": 1.0, "256": 9.0}, latency_device="CPU: test", total_seconds=1.0,
        )  # fmt: skip
        (runs_root() / run_id / "metrics.json").write_text(json.dumps(metrics))
    app = open_page("comparison")
    no_exception(app)
    accuracy = {run_id: read_json(run_id, "metrics.json")["test_accuracy"] for run_id in flops}
    by_cost = sorted(flops, key=flops.get)
    front = [r for i, r in enumerate(by_cost) if all(accuracy[r] > accuracy[o] for o in by_cost[:i])]
    traces = {trace["name"]: trace for trace in figure(app, 3)["data"]}
    assert traces["Pareto front"]["x"] == [2 * flops[r] for r in front]  # both views
    assert traces["Pareto front"]["y"] == pytest.approx([accuracy[r] for r in front])
    assert f"On the dotted front: {', '.join(front)}" in texts(app.caption)
    points = {
        run_id: (x, trace["marker"]["symbol"])
        for name, trace in traces.items()
        if name != "Pareto front"
        for run_id, x in zip(trace["hovertext"], trace["x"], strict=True)
    }
    assert points == {
        "baseline-reference": (2_000_000, "circle"),
        "baseline-best": (10_000_000, "circle"),
        "transfer-reference": (8_000_000, "diamond"),
    }

    app.selectbox(key="comparison-cost").set_value("latency_ms_1").run()
    assert [x for trace in figure(app, 3)["data"][:-1] for x in trace["x"]] == [1.0, 1.0, 1.0]


@pytest.mark.slow  # over 2 s: the quick loop leaves it to CI
def test_comparison_shows_a_newly_published_run(runs, cifar_npz, artifacts, open_page):
    app = open_page("comparison")
    write_run(artifacts, "fresh-job", "baseline", labels_of(cifar_npz), 0.5, seed=9)
    app.switch_page(PAGES["overview"]).run()  # leave and come back, as a user would
    app.switch_page(PAGES["comparison"]).run()
    picker = app.multiselect(key="comparison-runs")
    assert "fresh-job" in [option.split(" ")[0] for option in picker.options]
    picker.set_value([*picker.value, "fresh-job"]).run()  # (the runs chosen before are carried)
    table = app.dataframe[0].value.set_index("run")
    assert table.loc["fresh-job", "test_accuracy"] == pytest.approx(accuracy("fresh-job"))


# ----------------------------------------------------------------------------- per class


def test_per_class_metrics_come_from_the_confusion_matrix(runs, open_page):
    app = open_page("per_class")
    chosen = [name for name in app.multiselect(key="per-class-runs").value]
    assert chosen == ["baseline-reference", "transfer-reference", "baseline-best"]
    table = app.dataframe[0].value
    for index, run_id in enumerate(chosen):
        counts = confusion(run_id)
        recall = counts.diagonal() / counts.sum(axis=1)
        precision = counts.diagonal() / np.maximum(counts.sum(axis=0), 1)
        assert table[(run_id, "recall")].tolist() == pytest.approx(recall.tolist())
        assert table[(run_id, "precision")].tolist() == pytest.approx(precision.tolist())
        assert table[(run_id, "support")].tolist() == counts.sum(axis=1).tolist()
        assert figure(app, 1 + index)["data"][0]["z"] == counts.tolist()  # the confusion heatmaps
        off = counts * (1 - np.eye(10, dtype=int))
        true, predicted = np.unravel_index(off.argmax(), off.shape)  # first in row order on ties
        pairs = app.dataframe[1 + index].value
        assert pairs.iloc[0].tolist() == [CLASS_NAMES[true], CLASS_NAMES[predicted], off.max()]
    f1 = {trace["name"]: trace["y"] for trace in figure(app, 0)["data"]}
    assert f1.keys() == set(chosen)
    assert f1["baseline-best"] == pytest.approx(table[("baseline-best", "f1")].tolist())

    app.toggle(key="per-class-confusion-normalized").set_value(True).run()
    counts = confusion("baseline-reference")
    assert np.asarray(figure(app, 1)["data"][0]["z"]) == pytest.approx(
        counts / counts.sum(axis=1, keepdims=True)
    )


def test_per_class_disagreement_of_the_first_two_runs(runs, open_page):
    app = open_page("per_class")
    (pa, labels), (pb, _) = arrays("baseline-reference"), arrays("transfer-reference")
    a, b = pa.argmax(axis=1) == labels, pb.argmax(axis=1) == labels
    expected = {
        "Same prediction": np.mean(pa.argmax(axis=1) == pb.argmax(axis=1)),
        "Both right": np.mean(a & b),
        "Only baseline-reference right": np.mean(a & ~b),
        "Only transfer-reference right": np.mean(~a & b),
        "Both wrong": np.mean(~a & ~b),
    }
    assert {metric.label: metric.value for metric in app.metric} == {
        label: f"{share:.2%}" for label, share in expected.items()
    }
    bars = {trace["name"]: trace["y"] for trace in figure(app, -1)["data"]}
    only_a = [int(np.sum(a & ~b & (labels == k))) for k in range(10)]
    assert bars["only baseline-reference right"] == only_a
    app.multiselect(key="per-class-runs").set_value(["transfer-reference"]).run()
    assert "Choose two runs" in texts(app.info)


# ----------------------------------------------------------------------------- misclassified


def mistakes_by_hand(run_ids: list[str]) -> list[tuple[int, float]]:
    """(image, largest loss of the runs) of every image some run gets wrong, highest loss first."""
    labels = arrays(run_ids[0])[1]
    wrong = np.zeros(len(labels), bool)
    loss = np.zeros(len(labels))
    for run_id in run_ids:
        probs, _ = arrays(run_id)
        wrong |= probs.argmax(axis=1) != labels
        loss = np.maximum(loss, -np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-7, 1)))
    rows = [(int(i), float(loss[i])) for i in np.flatnonzero(wrong)]
    return sorted(rows, key=lambda row: -row[1])


def cards(app) -> list[str]:
    return [caption.value for caption in app.caption if caption.value.startswith("#")]


def test_misclassified_without_data_says_how_to_fetch(runs, monkeypatch, open_page):
    monkeypatch.delenv("CIFAR10_NPZ")
    app = open_page("misclassified")
    no_exception(app)
    assert "python -m cifar fetch" in texts(app.info)
    assert not app.image


def test_misclassified_gallery_starts_with_the_highest_loss_mistake(runs, open_page):
    app = open_page("misclassified")
    chosen = app.multiselect(key="misclassified-runs").value
    assert chosen == ["baseline-reference", "transfer-reference", "baseline-best"]
    expected = mistakes_by_hand(chosen)
    assert f"{len(expected):,} images match; showing 1–24." in texts(app.caption)
    shown = cards(app)
    assert len(shown) == len(app.image) - 1 == 24  # (and the image opened under "Why")
    assert [int(card.split(" ")[0][1:]) for card in shown] == [index for index, _ in expected[:24]]
    first = expected[0][0]
    lines = shown[0].split("  \n")
    assert lines[0] == f"#{first} · true **{CLASS_NAMES[arrays(chosen[0])[1][first]]}**"
    for line, run_id in zip(lines[1:], chosen, strict=True):
        probs, labels = arrays(run_id)
        mark = ":green[✓]" if probs[first].argmax() == labels[first] else ":red[✗]"
        assert line == f"{mark} {run_id}: {CLASS_NAMES[probs[first].argmax()]} {probs[first].max():.0%}"


@pytest.mark.slow  # over 2 s: the quick loop leaves it to CI
def test_misclassified_filters(runs, open_page):
    app = open_page("misclassified")
    labels = arrays("baseline-reference")[1]
    app.multiselect(key="misclassified-filter-true").set_value(["cat"]).run()
    cats = [index for index, _ in mistakes_by_hand(runs) if CLASS_NAMES[labels[index]] == "cat"]
    assert cats and [int(card.split(" ")[0][1:]) for card in cards(app)] == cats
    app.multiselect(key="misclassified-filter-true").set_value([]).run()
    app.selectbox(key="misclassified-filter-model").set_value("transfer-reference").run()
    expected = mistakes_by_hand(["transfer-reference"])
    assert f"{len(expected):,} images match" in texts(app.caption)
    shown = cards(app)
    assert shown and all(":red[✗] transfer-reference" in card for card in shown)
    app.radio(key="misclassified-filter-sort").set_value("index").run()
    assert [int(card.split(" ")[0][1:]) for card in cards(app)] == sorted(i for i, _ in expected)[:24]
    app.toggle(key="misclassified-filter-only-one").set_value(True).run()
    no_exception(app)
    shown = cards(app)
    assert shown and all(card.count(":red[✗]") == 1 for card in shown)


def test_misclassified_leaves_out_runs_tested_on_other_images(runs, artifacts, open_page):
    write_run(artifacts, "other-images", "baseline", np.zeros(100, np.uint8), 0.5, seed=7)
    app = open_page("misclassified")
    app.multiselect(key="misclassified-runs").set_value(["other-images", "baseline-best"]).run()
    assert "other-images" in texts(app.warning)
    shown = cards(app)
    assert shown and all("other-images" not in card for card in shown)
    assert f"{len(mistakes_by_hand(['baseline-best'])):,} images match" in texts(app.caption)


# ----------------------------------------------------------------------------- classify


class FakePredictor:
    """Answers with fixed probabilities of its own per run and resolution (`probabilities`)."""

    loaded: list[str] = []

    def __init__(self, run):
        FakePredictor.loaded.append(run.run_id)
        self.run = run
        self.resolutions = ("full", "cifar") if run.model == "transfer" else ("cifar",)

    @staticmethod
    def probabilities(run_id: str, resolution: str = "cifar") -> np.ndarray:
        return np.random.default_rng(len(run_id) + 100 * (resolution == "full")).dirichlet(np.ones(10))

    def model_input(self, image, resolution: str):
        from cifar.sources.images import as_model_input

        return as_model_input(image, 75 if resolution == "full" else 32)

    def predict(self, source, top_k=3, resolution="cifar"):
        from cifar.sources.images import open_image

        assert resolution == "cifar" or self.run.model == "transfer"
        assert self.model_input(open_image(source), resolution).shape[-1] == 3
        probs = self.probabilities(self.run.run_id, resolution)
        return [(CLASS_NAMES[i], float(probs[i])) for i in np.argsort(-probs)[:top_k]]


def top_k_by_hand(run_id: str, k: int, resolution: str = "cifar") -> tuple[list[str], list[float]]:
    probs = FakePredictor.probabilities(run_id, resolution)
    order = np.argsort(-probs)[:k]
    return [CLASS_NAMES[i] for i in order], probs[order].tolist()


@pytest.fixture
def fake_predictor(monkeypatch):
    import cifar.inference.predict

    FakePredictor.loaded = []
    monkeypatch.setattr(cifar.inference.predict, "Predictor", FakePredictor)
    return FakePredictor


def test_classify_shows_each_model_s_top_k(runs, fake_predictor, open_page):
    app = open_page("classify")
    app.file_uploader(key="classify-upload").set_value(("red.png", png(), "image/png")).run()
    no_exception(app)
    assert not app.error
    assert len(app.image) == 2  # the upload and what the model sees
    # Each model's most accurate run; the transfer model needs the weights.
    assert fake_predictor.loaded == ["baseline-best"]
    assert "backbone weights are not cached" in texts(app.warning)
    classes, probabilities = top_k_by_hand("baseline-best", 5)
    table = app.dataframe[0].value
    assert list(table["baseline-best class"]) == classes
    assert list(table["baseline-best probability"]) == pytest.approx(probabilities)
    bars = figure(app)["data"]
    assert [(bar["name"], sorted(bar["x"], reverse=True)) for bar in bars] == [
        ("baseline-best", pytest.approx(probabilities))
    ]
    app.slider(key="classify-top-k").set_value(2).run()
    assert list(app.dataframe[0].value["baseline-best class"]) == classes[:2]
    assert fake_predictor.loaded == ["baseline-best"], "the model loads once per process"


def test_classify_uses_transfer_when_the_weights_are_cached(runs, fake_predictor, monkeypatch, open_page):
    """Full resolution first for a transfer run (its 32 px answer in a caption); the baseline at 32 px."""
    import cifar.sources.assets

    monkeypatch.setattr(cifar.sources.assets, "weights_available", lambda preference="auto": True)
    app = open_page("classify")
    app.file_uploader(key="classify-upload").set_value(("red.png", png(), "image/png")).run()
    no_exception(app)
    assert sorted(fake_predictor.loaded) == ["baseline-best", "transfer-reference"]
    assert "backbone weights" not in texts(app.warning)
    table = app.dataframe[0].value
    for run_id, resolution in (("baseline-best", "cifar"), ("transfer-reference", "full")):
        classes, probabilities = top_k_by_hand(run_id, 5, resolution)
        assert list(table[f"{run_id} class"]) == classes
        assert list(table[f"{run_id} probability"]) == pytest.approx(probabilities)
    thumbnail = top_k_by_hand("transfer-reference", 1, "cifar")[0][0]
    assert f"on the 32 × 32 thumbnail instead: {thumbnail}" in texts(app.caption)
    assert len(app.image) == 3  # the upload, what the transfer model sees, what the CNN sees

    app.radio(key="classify-resolution").set_value("cifar").run()
    classes, _ = top_k_by_hand("transfer-reference", 5, "cifar")
    assert list(app.dataframe[0].value["transfer-reference class"]) == classes
    assert len(app.image) == 2 and "thumbnail instead" not in texts(app.caption)


def test_the_dashboard_starts_loading_classify_s_models(runs, monkeypatch, open_page):
    from dashboard import cache

    asked = []
    monkeypatch.setattr(cache, "preload", lambda chosen: asked.append([run.run_id for run in chosen]))
    monkeypatch.setenv("CIFAR_PRELOAD", "1")  # the tests' sandbox turns it off
    (runs_root() / "baseline-best" / "model.weights.h5").write_bytes(b"")  # (only its presence counts)
    open_page("overview")
    assert asked and all(ids == ["baseline-best"] for ids in asked), "each family's best run with weights"
    monkeypatch.setenv("CIFAR_PRELOAD", "0")
    asked.clear()
    open_page("overview")
    assert asked == []


def test_preloading_skips_a_model_whose_backbone_is_not_cached(runs, fake_predictor):
    """Loading it would download the InceptionV3 weights, behind the user's back."""
    from dashboard import cache

    chosen = [run for run in cache.runs() if run.run_id in ("baseline-best", "transfer-reference")]
    cache.preload(chosen).join(30)
    assert fake_predictor.loaded == ["baseline-best"]


def test_preloaded_models_load_once_per_process(runs, fake_predictor, monkeypatch, open_page):
    import cifar.sources.assets
    from dashboard import cache

    monkeypatch.setattr(cifar.sources.assets, "weights_available", lambda preference="auto": True)

    chosen = [run for run in cache.runs() if run.run_id in ("baseline-best", "transfer-reference")]
    thread = cache.preload(chosen)
    assert thread.name == "preload-models" and cache.preload(chosen) is thread
    thread.join(30)
    assert sorted(fake_predictor.loaded) == ["baseline-best", "transfer-reference"]
    open_page("classify").file_uploader(key="classify-upload").set_value(
        ("red.png", png(), "image/png")
    ).run()
    assert len(fake_predictor.loaded) == 2, "the upload found the model loaded"


def test_classify_says_when_not_to_believe_it(runs, fake_predictor, monkeypatch, open_page):
    """Dirichlet(1) answers are unsure (top probability well under one half) and disagree."""
    import cifar.sources.assets

    monkeypatch.setattr(cifar.sources.assets, "weights_available", lambda preference="auto": True)
    app = open_page("classify")
    app.file_uploader(key="classify-upload").set_value(("red.png", png(), "image/png")).run()
    warnings = texts(app.warning)
    assert "Unsure" in warnings and "may show none of the ten classes" in warnings
    tops = {top_k_by_hand("baseline-best", 1)[0][0], top_k_by_hand("transfer-reference", 1, "full")[0][0]}
    assert ("The models disagree" in warnings) == (len(tops) > 1)


@pytest.mark.slow  # over 2 s: the quick loop leaves it to CI
@pytest.mark.parametrize(
    "name, content",
    [("broken.png", b"\x89PNG\r\n\x1a\nnot really"), ("empty.jpg", b""), ("notes.gif", b"hello")],
    ids=plain_id,
)
def test_classify_bad_images_are_an_error_message(name, content, runs, fake_predictor, open_page):
    app = open_page("classify")
    app.file_uploader(key="classify-upload").set_value((name, content, "image/png")).run()
    no_exception(app)
    assert f"Cannot read {plain(name)}" in texts(app.error)
    assert not fake_predictor.loaded


def test_classify_model_failure_is_a_warning(runs, monkeypatch, open_page):
    import cifar.inference.predict
    import cifar.store.runs

    def broken(run):
        raise cifar.store.runs.RunError(f"{run.run_id} has no model.weights.h5")

    monkeypatch.setattr(cifar.inference.predict, "Predictor", broken)
    app = open_page("classify")
    app.file_uploader(key="classify-upload").set_value(("red.png", png(), "image/png")).run()
    no_exception(app)
    assert plain("has no model.weights.h5") in texts(app.warning)


def test_upscale_is_nearest_neighbour():
    image = np.arange(32 * 32 * 3, dtype=np.uint8).reshape(32, 32, 3)
    big = upscale(image, 96)
    assert big.shape == (96, 96, 3)
    assert (big[::3, ::3] == image).all() and (big[2::3, 2::3] == image).all()


def test_classify_camera_toggle(runs, open_page):
    app = open_page("classify")
    app.toggle(key="classify-camera").set_value(True).run()
    no_exception(app)
    assert app.camera_input(key="classify-camera-input") is not None


# ----------------------------------------------------------------------------- text from files

TRACKER = "![t](http://127.0.0.1:9/track.png)"


def rendered_markdown(app) -> list[str]:
    """Every Markdown string the page shows (markdown, captions, alerts), as HTML (CommonMark)."""
    from markdown_it import MarkdownIt

    elements = [*app.markdown, *app.caption, *app.info, *app.warning, *app.error, *app.success]
    return [MarkdownIt().render(str(element.value)) for element in elements]


@pytest.mark.slow  # over 2 s: the quick loop leaves it to CI
def test_markdown_in_class_names_is_shown_as_text(artifacts, cifar_npz, open_page):
    """Defect 11: a class name from config.json must not become an image the browser fetches."""
    names = [TRACKER, "**bold**", ":red[red]", *CLASS_NAMES[3:]]
    write_run(artifacts, "marked", "baseline", labels_of(cifar_npz), 0.1, seed=4)
    config = read_json("marked", "config.json")
    (runs_root() / "marked" / "config.json").write_text(json.dumps({**config, "class_names": names}))
    for page in ("misclassified", "per_class", "comparison", "overview"):
        app = open_page(page)
        no_exception(app)
        html = rendered_markdown(app)
        assert not any("<img" in fragment or "<strong>bold" in fragment for fragment in html), page
    gallery = open_page("misclassified")
    assert any(TRACKER in fragment for fragment in rendered_markdown(gallery)), "shown as its text"


def test_markdown_in_an_upload_s_name_is_shown_as_text(runs, fake_predictor, open_page):
    """Defect 11: an upload's file name in the error message is text, not Markdown."""
    app = open_page("classify")
    name = f"{TRACKER}.png"
    app.file_uploader(key="classify-upload").set_value((name, b"not an image", "image/png")).run()
    no_exception(app)
    html = rendered_markdown(app)
    assert any(f"Cannot read {TRACKER}" in fragment for fragment in html)
    assert not any("<img" in fragment for fragment in html)


# ----------------------------------------------------------------------------- train


def test_form_fields_and_the_command_line():
    fields = {row["name"]: row for row in train_sections.form_fields("transfer")}
    assert fields["resize"]["choices"] and fields["learning_rate"]["step"] == pytest.approx(1e-3)
    assert fields["dropout"]["step"] == pytest.approx(0.1)
    kinds = [row["type"] for row in train_sections.form_fields("baseline")]
    assert "bool" in kinds and kinds.index("bool") == len(kinds) - kinds.count("bool"), "switches last"
    config = parse_config("baseline", {"epochs": 10, "learning_rate": 0.01, "augment": True})
    assert train_sections.command_line(config, "") == (
        "python -m cifar train baseline --learning_rate 0.01 --augment True"
    )
    assert (
        train_sections.command_line(parse_config("transfer"), "x")
        == "python -m cifar train transfer --run-id x"
    )


@pytest.mark.slow  # over 2 s: the quick loop leaves it to CI
def test_train_form_hands_the_validated_config_to_start_job(started, open_page):
    app = open_page("train")
    assert app.number_input(key="train-baseline-epochs").value == 10  # the config's default
    app.number_input(key="train-baseline-epochs").set_value(2).run()
    app.number_input(key="train-baseline-learning_rate").set_value(0.01).run()
    app.text_input(key="train-baseline-run-id").set_value("my-run").run()
    assert "python -m cifar train baseline --epochs 2 --learning_rate 0.01 --run-id my-run" in texts(app.code)
    app.button(key="train-baseline-start").click().run()
    no_exception(app)
    assert started == [(parse_config("baseline", {"epochs": 2, "learning_rate": 0.01}), "my-run")]
    assert app.session_state["train-last-job"] == "my-run"


@pytest.mark.slow  # over 2 s: the quick loop leaves it to CI
def test_train_form_starts_a_seed_group_and_names_a_taken_seed_run(started, open_page, artifacts):
    """Seeds 3 from seed 5: runs my-run, my-run-seed6, my-run-seed7; one of them taken is named."""
    app = open_page("train")
    app.number_input(key="train-baseline-seed").set_value(5).run()
    app.number_input(key="train-baseline-seeds").set_value(3).run()
    app.text_input(key="train-baseline-run-id").set_value("my-run").run()
    assert "--seed 5 --run-id my-run --seeds 3" in texts(app.code)
    write_run(artifacts, "my-run-seed7", "baseline", np.arange(20) % 10, 0.5)
    app.text_input(key="train-baseline-run-id").set_value("my-run ").run()  # a rerun sees the new run
    assert "run id: a run 'my-run-seed7' exists already; choose another" in texts(app.error)
    assert app.button(key="train-baseline-start").disabled
    shutil.rmtree(artifacts / "runs" / "my-run-seed7")
    app.text_input(key="train-baseline-run-id").set_value("my-run").run()
    app.button(key="train-baseline-start").click().run()
    no_exception(app)
    assert started == [(parse_config("baseline", {"seed": 5}), "my-run", 3)]


@pytest.mark.slow  # over 2 s: the quick loop leaves it to CI
def test_train_form_starts_from_a_run_s_settings_and_back_from_the_defaults(runs, started, open_page):
    """'Start from' a run fills every field with its config; Start trains exactly that config."""
    from cifar.config import load_config

    app = open_page("train")
    app.selectbox(key="train-baseline-preset").set_value("baseline-best").run()
    no_exception(app)
    expected = load_config(read_json("baseline-best", "config.json")["config"])
    assert expected != parse_config("baseline", {})  # the fixture's best run is not the defaults
    assert app.number_input(key="train-baseline-learning_rate").value == expected.learning_rate
    assert app.toggle(key="train-baseline-augment").value is expected.augment
    app.button(key="train-baseline-start").click().run()
    assert started == [(expected, None)]
    app.selectbox(key="train-baseline-preset").set_value(train_sections.DEFAULTS).run()
    default = parse_config("baseline", {}).learning_rate
    assert app.number_input(key="train-baseline-learning_rate").value == default
    assert "Session State API" not in texts(app.warning)  # Streamlit's warning for a widget set twice


@pytest.mark.slow  # over 2 s: the quick loop leaves it to CI
def test_train_transfer_form_starts_a_transfer_config(started, open_page):
    app = open_page("train")
    app.toggle(key="train-transfer-flip_features").set_value(True).run()
    app.button(key="train-transfer-start").click().run()
    ((config, run_id),) = started
    assert config == parse_config("transfer", {"flip_features": True}) and run_id is None


def test_train_form_shows_the_config_error_naming_the_field(started, open_page):
    app = open_page("train")
    app.number_input(key="train-baseline-learning_rate").set_value(0.0).run()
    assert "learning_rate" in texts(app.error)
    assert app.button(key="train-baseline-start").disabled
    app.text_input(key="train-baseline-run-id").set_value("../escape").run()
    assert "invalid run id" in texts(app.error)
    assert not started


def test_train_busy_is_a_clear_message(monkeypatch, open_page):
    def busy(config, run_id=None, seeds=1):
        raise jobs.JobBusy("job other is running (40%); wait for it or cancel it first")

    monkeypatch.setattr(jobs, "start_job", busy)
    app = open_page("train")
    app.button(key="train-baseline-start").click().run()
    no_exception(app)
    assert "Only one training job runs at a time: job other is running (40%)" in texts(app.warning)


@pytest.mark.slow  # over 2 s: the quick loop leaves it to CI
@pytest.mark.usefixtures("cifar_npz")
def test_train_transfer_reports_the_feature_cache(monkeypatch, open_page):
    import cifar.sources.assets
    from dashboard import cache

    plans = {"plan": ([("train", False, 50000), ("test", False, 10000)], 2020.0)}
    monkeypatch.setattr(cifar.sources.assets, "weights_available", lambda preference="auto": True)
    monkeypatch.setattr(cache, "feature_plan", lambda config: plans["plan"])
    app = open_page("train")
    assert "50,000 train, 10,000 test images, about 34 min" in texts(app.info)
    plans["plan"] = ([], 0.0)
    app.number_input(key="train-transfer-epochs").set_value(3).run()
    assert "Features are cached" in texts(app.success)
    app.selectbox(key="train-transfer-resize").set_value("upsample7").run()
    app.number_input(key="train-transfer-input_size").set_value(299).run()
    assert "input_size=224" in texts(app.error)


@pytest.fixture
def running_job():
    """A job `live-job` holding the job slot (this process holds it), halfway through."""
    fd = take_slot("live-job")
    partial_run(
        "live-job", state="running", progress=0.5, phase="training", message="epoch 1/2", started=time.time()
    )
    yield "live-job"
    os.close(fd)


def test_train_monitor_shows_the_running_job(running_job, monkeypatch, open_page):
    (partial_path(running_job) / "history.csv").write_text(
        "epoch,loss,accuracy,val_loss,val_accuracy\n0,2.0,0.3,2.1,0.25\n1,1.8,0.4,1.9,0.35\n"
    )
    cancelled = []
    monkeypatch.setattr(jobs, "cancel_job", lambda run_id: cancelled.append(run_id))
    app = open_page("train")
    no_exception(app)
    assert "Running: `live-job`" in texts(app.markdown)
    progress = app.get("progress")[0]
    # status.json's text is shown as plain text: Markdown-escaped, as `plain` escapes it
    assert (
        progress.value == 50
        and progress.proto.text == plain("training: epoch 1/2") == r"training\: epoch 1\/2"
    )
    curves = accuracy_curves(figure(app))
    assert curves["live-job train"] == [0.3, 0.4] and curves["live-job validation"] == [0.25, 0.35]
    app.button(key="train-cancel").click().run()
    assert cancelled == ["live-job"]


def test_train_overview_notes_the_running_job(running_job, open_page):
    app = open_page("overview")
    assert "Training job `live-job` is running (50%)" in texts(app.info)


def test_train_lists_failed_jobs_and_discards_them(open_page):
    partial_run("broken-job", state="failed", message="ValueError: boom", started=time.time())
    partial_run("stopped-job", state="cancelled", message="cancelled by the user", started=time.time())
    app = open_page("train")
    shown = texts(app.markdown)
    assert "broken-job" in shown and plain("ValueError: boom") in shown and "stopped-job" in shown
    app.button(key="train-discard-broken-job").click().run()
    no_exception(app)
    assert not partial_path("broken-job").exists()
    assert partial_path("stopped-job").exists()
    assert "broken-job" not in texts(app.markdown)


def test_train_finished_job_says_what_it_made_and_links_to_it(runs, open_page):
    app = open_page("train")
    app.session_state["train-last-job"] = "baseline-best"  # a run that exists: the job finished
    app.run()
    low, high = wilson_of("baseline-best")
    assert (
        f"Run `baseline-best` finished: test accuracy {accuracy('baseline-best'):.2%} "
        f"(95 % interval {low:.2%}-{high:.2%})" in texts(app.success)
    )
    links = {(element.proto.label, element.proto.page) for element in app.get("page_link")}
    assert links == {("Open Comparison", "comparison"), ("Try it on Classify", "classify")}


@pytest.mark.slow  # over 2 s: the quick loop leaves it to CI
def test_train_page_keeps_a_standby_job_process_ready_unless_a_job_runs(monkeypatch, open_page, request):
    warmed = []
    monkeypatch.setattr(standby, "warm_up", lambda: warmed.append(True) or True)
    open_page("train")
    assert warmed, "the Train page starts (or keeps) a standby process for the next Start"
    warmed.clear()
    request.getfixturevalue("running_job")
    open_page("train")
    assert not warmed  # its imports would slow the running job down


def _colours_by_run(app, suffix: str = "") -> dict[str, str]:
    """run id -> colour in every chart of the page that names runs (curves: 'RUN train')."""
    found: dict[str, set] = {}
    for index in range(len(app.get("plotly_chart"))):
        for trace in figure(app, index)["data"]:
            name = str(trace.get("name", "")).removesuffix(suffix)
            colour = (trace.get("line") or {}).get("color") or (trace.get("marker") or {}).get("color")
            if isinstance(colour, str) and name:
                found.setdefault(name, set()).add(colour)
    return {name: colours.pop() for name, colours in found.items() if len(colours) == 1}


def test_each_run_keeps_its_colour_on_every_chart_and_page(runs, open_page):
    """One colour per run across the dashboard, whichever runs are chosen and in whatever order."""
    app = open_page("comparison")
    every = _colours_by_run(app, " train")
    assert set(runs) <= set(every) and len({every[run_id] for run_id in runs}) == len(runs)
    app.multiselect(key="comparison-runs").set_value(list(reversed(runs))[:2]).run()
    chosen = {name: colour for name, colour in _colours_by_run(app, " train").items() if name in runs}
    assert len(chosen) == 2 and all(every[name] == colour for name, colour in chosen.items())
    per_class = open_page("per_class")
    per_class.multiselect(key="per-class-runs").set_value([runs[-1], runs[0]]).run()
    assert _colours_by_run(per_class)[runs[-1]] == every[runs[-1]]
    only = _colours_by_run(per_class, " right")  # the disagreement bars: "only RUN right"
    assert only[f"only {runs[-1]}"] == every[runs[-1]] and only[f"only {runs[0]}"] == every[runs[0]]
