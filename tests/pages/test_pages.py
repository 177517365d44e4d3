"""The dashboard through `AppTest`: every page renders (with runs and without), and what it shows.

Expensive calls (a model's Predictor, a training job) are replaced by fakes; everything else is
the real code reading fixture run folders.
"""

from __future__ import annotations

import io
import json
import os
import time

import numpy as np
import pytest
from PIL import Image

from cifar import jobs
from cifar.runs import partial_path, runs_root
from tests.pages.factory import PAGES


def texts(elements) -> str:
    return "\n".join(str(element.value) for element in elements)


def no_exception(app) -> None:
    assert not app.exception, [e.value for e in app.exception]


def png(color=(200, 30, 30), size=(48, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


# ----------------------------------------------------------------------------- smoke


@pytest.mark.parametrize("with_runs", [True, False], ids=["runs", "empty"])
@pytest.mark.parametrize("page", [None, *PAGES])
def test_every_page_renders(page, with_runs, request, open_page):
    if with_runs:
        request.getfixturevalue("runs")
    app = open_page(page)
    no_exception(app)
    assert app.title, "every page has a title"
    if not with_runs and page in ("comparison", "per_class", "misclassified", "classify"):
        assert "No runs yet" in texts(app.info)


# ----------------------------------------------------------------------------- overview


def test_overview_shows_headline_runs_beside_the_write_up(runs, open_page):
    app = open_page("overview")
    labels = [metric.label for metric in app.metric]
    # baseline-reference and transfer-reference by name, and baseline-best beside its reference
    assert labels == ["Test accuracy", "Best run: baseline-best", "Test accuracy"]
    captions = texts(app.caption)
    assert "baseline-reference" in captions and "transfer-reference" in captions
    assert "71.10% test" in captions and "85.51% train / 83.75% test" in captions
    assert "python -m cifar fetch" in texts(app.code)  # weights are not cached in the sandbox
    assert "weights are not cached" in texts(app.warning)


def test_overview_picks_the_best_run_when_no_reference(artifacts, npz, open_page):
    from tests.pages.factory import labels_of, write_run

    labels = labels_of(npz)
    write_run(artifacts, "baseline-a", "baseline", labels, 0.3, seed=1)
    write_run(artifacts, "baseline-b", "baseline", labels, 0.9, seed=2)
    app = open_page("overview")
    assert "baseline-b" in texts(app.caption)
    assert "No transfer run yet" in texts(app.info)
    assert "python -m cifar train transfer" in texts(app.code)


def test_overview_empty_state(open_page):
    app = open_page()
    no_exception(app)
    info = texts(app.info)
    assert "No baseline run yet" in info and "No transfer run yet" in info
    assert "CIFAR-10 is not cached" in texts(app.warning)
    assert "Feature cache: 0 feature set(s), 0.0 GB" in texts(app.caption)


def test_overview_counts_the_feature_cache_and_points_at_prune(tmp_path, open_page):
    from cifar.features import FeatureSpec

    spec = FeatureSpec("keras", "0" * 64, "keras", "bilinear", 224, "train", False, "1" * 64)
    for name in (spec.name, spec.name.replace("-r2", "")):  # today's name, and one from before it
        folder = tmp_path / "keras" / "features" / name
        folder.mkdir(parents=True)
        (folder / "manifest.json").write_text(json.dumps({**spec.__dict__, "n_images": 10}))
    caption = texts(open_page().caption)
    assert "Feature cache: 1 feature set(s)" in caption
    assert "1 obsolete: `python -m cifar features --prune` removes them" in caption


# ----------------------------------------------------------------------------- comparison


def test_comparison_table_follows_the_chosen_runs(runs, open_page):
    app = open_page("comparison")
    table = app.dataframe[0].value
    assert set(table["run"]) == set(runs)
    assert {"learning_rate", "batch_size", "test_accuracy", "train_accuracy"} <= set(table.columns)
    app.multiselect(key="comparison-runs").set_value(["baseline-best"]).run()
    assert list(app.dataframe[0].value["run"]) == ["baseline-best"]
    app.selectbox(key="comparison-hparam-parameter").set_value("batch_size").run()
    no_exception(app)
    app.multiselect(key="comparison-runs").set_value([]).run()
    assert "Choose at least one run" in texts(app.info)


def test_comparison_shows_a_newly_published_run(runs, npz, artifacts, open_page):
    from tests.pages.factory import labels_of, write_run

    app = open_page("comparison")
    write_run(artifacts, "fresh-job", "baseline", labels_of(npz), 0.5, seed=9)
    app.switch_page(PAGES["overview"]).run()  # leave and come back, as a user would
    app.switch_page(PAGES["comparison"]).run()
    assert "fresh-job" in set(app.dataframe[0].value["run"])


# ----------------------------------------------------------------------------- per class


def test_per_class_compares_two_runs(runs, open_page):
    app = open_page("per_class")
    labels = [metric.label for metric in app.metric]
    assert "Same prediction" in labels and "Only baseline-reference right" in labels
    app.toggle(key="per-class-confusion-normalized").set_value(True).run()
    no_exception(app)
    app.multiselect(key="per-class-runs").set_value(["transfer-reference"]).run()
    assert "Choose two runs" in texts(app.info)


# ----------------------------------------------------------------------------- misclassified


def test_misclassified_without_data_says_how_to_fetch(runs, monkeypatch, open_page):
    monkeypatch.delenv("CIFAR10_NPZ")
    app = open_page("misclassified")
    no_exception(app)
    assert "python -m cifar fetch" in texts(app.info)
    assert not app.image


def test_misclassified_gallery_and_filters(runs, open_page):
    app = open_page("misclassified")
    assert app.image, "the gallery shows images"
    assert "images match" in texts(app.caption)
    app.multiselect(key="misclassified-filter-true").set_value(["cat"]).run()
    cards = [c.value for c in app.caption if c.value.startswith("#")]
    assert cards and all("true **cat**" in card for card in cards)
    app.selectbox(key="misclassified-filter-model").set_value("transfer-reference").run()
    cards = [c.value for c in app.caption if c.value.startswith("#")]
    assert all(":red[✗] transfer-reference" in card for card in cards)
    app.toggle(key="misclassified-filter-only-one").set_value(True).run()
    no_exception(app)
    for card in (c.value for c in app.caption if c.value.startswith("#")):
        assert card.count(":red[✗]") == 1


def test_misclassified_leaves_out_runs_tested_on_other_images(runs, artifacts, open_page):
    from tests.pages.factory import write_run

    write_run(artifacts, "other-images", "baseline", np.zeros(100, np.uint8), 0.5, seed=7)
    app = open_page("misclassified")
    app.multiselect(key="misclassified-runs").set_value(["other-images", "baseline-best"]).run()
    assert "other-images" in texts(app.warning)
    assert app.image


# ----------------------------------------------------------------------------- classify


class FakePredictor:
    loaded: list[str] = []

    def __init__(self, run):
        FakePredictor.loaded.append(run.run_id)
        self.run = run

    def predict(self, source, top_k=3):
        from cifar.predict import as_model_input, open_image

        assert as_model_input(open_image(source)).shape == (32, 32, 3)
        return [("cat", 0.6), ("dog", 0.3), ("frog", 0.1)][:top_k]


@pytest.fixture
def fake_predictor(monkeypatch):
    import cifar.predict

    FakePredictor.loaded = []
    monkeypatch.setattr(cifar.predict, "Predictor", FakePredictor)
    return FakePredictor


def test_classify_upload_shows_the_model_view_and_probabilities(runs, fake_predictor, open_page):
    app = open_page("classify")
    app.file_uploader(key="classify-upload").set_value(("red.png", png(), "image/png")).run()
    no_exception(app)
    assert not app.error
    assert len(app.image) == 2  # the upload and what the model sees
    assert app.get("plotly_chart")
    # Each model's most accurate run; the transfer model needs the weights.
    assert fake_predictor.loaded == ["baseline-best"]
    assert "backbone weights are not cached" in texts(app.warning)
    table = app.dataframe[0].value
    assert list(table["baseline-best class"]) == ["cat", "dog", "frog"]
    app.slider(key="classify-top-k").set_value(2).run()
    assert len(app.dataframe[0].value) == 2
    assert fake_predictor.loaded == ["baseline-best"], "the model loads once per process"


def test_classify_uses_transfer_when_the_weights_are_cached(runs, fake_predictor, monkeypatch, open_page):
    import cifar.assets

    monkeypatch.setattr(cifar.assets, "weights_available", lambda preference="auto": True)
    app = open_page("classify")
    app.file_uploader(key="classify-upload").set_value(("red.png", png(), "image/png")).run()
    assert sorted(fake_predictor.loaded) == ["baseline-best", "transfer-reference"]
    assert not app.warning


@pytest.mark.parametrize(
    "name, content",
    [("broken.png", b"\x89PNG\r\n\x1a\nnot really"), ("empty.jpg", b""), ("notes.gif", b"hello")],
)
def test_classify_bad_images_are_an_error_message(name, content, runs, fake_predictor, open_page):
    app = open_page("classify")
    app.file_uploader(key="classify-upload").set_value((name, content, "image/png")).run()
    no_exception(app)
    assert f"Cannot read {name}" in texts(app.error)
    assert not fake_predictor.loaded


def test_classify_model_failure_is_a_warning(runs, monkeypatch, open_page):
    import cifar.predict

    def broken(run):
        raise cifar.predict.RunError(f"{run.run_id} has no model.weights.h5")

    monkeypatch.setattr(cifar.predict, "Predictor", broken)
    app = open_page("classify")
    app.file_uploader(key="classify-upload").set_value(("red.png", png(), "image/png")).run()
    no_exception(app)
    assert "has no model.weights.h5" in texts(app.warning)


def test_classify_camera_toggle(runs, open_page):
    app = open_page("classify")
    app.toggle(key="classify-camera").set_value(True).run()
    no_exception(app)
    assert app.camera_input(key="classify-camera-input") is not None


# ----------------------------------------------------------------------------- train


@pytest.fixture
def started(monkeypatch):
    calls = []

    def fake_start_job(model, overrides, run_id=None):
        from cifar.config import parse_config

        parse_config(model, overrides)
        calls.append((model, dict(overrides), run_id))
        return jobs.Job(run_id or f"{model}-now", "starting", 0.0, "starting")

    monkeypatch.setattr(jobs, "start_job", fake_start_job)
    return calls


def test_train_form_defaults_start_a_job(started, open_page):
    app = open_page("train")
    assert app.number_input(key="train-baseline-epochs").value == 10  # the config's default
    app.number_input(key="train-baseline-epochs").set_value(2).run()
    app.text_input(key="train-baseline-run-id").set_value("my-run").run()
    assert "--epochs 2 --run-id my-run" in texts(app.code)
    app.button(key="train-baseline-start").click().run()
    no_exception(app)
    model, overrides, run_id = started[0]
    assert (model, overrides["epochs"], run_id) == ("baseline", 2, "my-run")
    assert app.session_state["train-last-job"] == "my-run"


def test_train_form_shows_the_config_error_naming_the_field(started, open_page):
    app = open_page("train")
    app.number_input(key="train-baseline-learning_rate").set_value(0.0).run()
    assert "learning_rate" in texts(app.error)
    assert app.button(key="train-baseline-start").disabled
    app.text_input(key="train-baseline-run-id").set_value("../escape").run()
    assert "invalid run id" in texts(app.error)


def test_train_busy_is_a_clear_message(monkeypatch, open_page):
    def busy(model, overrides, run_id=None):
        raise jobs.JobBusy("job other is running (40%); wait for it or cancel it first")

    monkeypatch.setattr(jobs, "start_job", busy)
    app = open_page("train")
    app.button(key="train-baseline-start").click().run()
    no_exception(app)
    assert "Only one training job runs at a time" in texts(app.warning)


def test_train_transfer_reports_the_feature_cache(monkeypatch, npz, open_page):
    import cifar.assets
    from cifar import views
    from dashboard import cache

    plans = {"plan": views.FeaturePlan((("train", False, 50000), ("test", False, 10000)), 2020.0)}
    monkeypatch.setattr(cifar.assets, "weights_available", lambda preference="auto": True)
    monkeypatch.setattr(cache, "feature_plan", lambda config: plans["plan"])
    app = open_page("train")
    assert "about 34 min" in texts(app.info)
    plans["plan"] = views.FeaturePlan((), 0.0)
    app.number_input(key="train-transfer-epochs").set_value(3).run()
    assert "Features are cached" in texts(app.success)
    app.selectbox(key="train-transfer-resize").set_value("upsample7").run()
    app.number_input(key="train-transfer-input_size").set_value(299).run()
    assert "input_size=224" in texts(app.error)


def _partial(run_id: str, **status) -> None:
    folder = partial_path(run_id)
    folder.mkdir(parents=True)
    (folder / "status.json").write_text(json.dumps({"started": time.time(), **status}))


def test_train_monitor_shows_the_running_job(monkeypatch, open_page):
    _partial(
        "live-job", state="running", pid=os.getpid(), progress=0.5, phase="training", message="epoch 1/2"
    )
    (partial_path("live-job") / "history.csv").write_text(
        "epoch,loss,accuracy,val_loss,val_accuracy\n0,2.0,0.3,2.1,0.25\n"
    )
    jobs.lock_path().parent.mkdir(parents=True)
    jobs.lock_path().write_text(json.dumps({"run_id": "live-job", "pid": os.getpid()}))
    cancelled = []
    monkeypatch.setattr(jobs, "cancel_job", lambda run_id: cancelled.append(run_id))
    app = open_page("train")
    no_exception(app)
    assert "Running: `live-job`" in texts(app.markdown)
    assert app.get("progress")[0].value == 50
    assert app.get("plotly_chart"), "live curves from the partial history"
    app.button(key="train-cancel").click().run()
    assert cancelled == ["live-job"]


def test_train_lists_failed_jobs_and_discards_them(open_page):
    _partial("broken-job", state="failed", message="ValueError: boom")
    _partial("stopped-job", state="cancelled", message="cancelled by the user")
    app = open_page("train")
    shown = texts(app.markdown)
    assert "broken-job" in shown and "ValueError: boom" in shown and "stopped-job" in shown
    app.button(key="train-discard-broken-job").click().run()
    no_exception(app)
    assert not partial_path("broken-job").exists()
    assert partial_path("stopped-job").exists()
    assert "broken-job" not in texts(app.markdown)


def test_train_finished_job_links_to_comparison(runs, open_page):
    app = open_page("train")
    app.session_state["train-last-job"] = "baseline-best"  # a run that exists: the job finished
    app.run()
    assert "baseline-best` finished" in texts(app.success)
    assert (runs_root() / "baseline-best").is_dir()


def test_train_page_keeps_a_standby_job_process_ready_unless_a_job_runs(monkeypatch, open_page):
    warmed = []
    monkeypatch.setattr(jobs, "warm_up", lambda: warmed.append(True) or True)
    open_page("train")
    assert warmed, "the Train page starts (or keeps) a standby process for the next Start"
    warmed.clear()
    _partial("live-job", state="running", pid=os.getpid(), progress=0.5, phase="training")
    jobs.lock_path().parent.mkdir(parents=True, exist_ok=True)
    jobs.lock_path().write_text(json.dumps({"run_id": "live-job", "pid": os.getpid()}))
    open_page("train")
    assert not warmed  # its imports would slow the running job down
