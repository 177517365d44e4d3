"""Why a model answered, on the pages: Classify's and Misclassified's Grad-CAM and nearest training
images (the session's trained run, a real model), and the Feature map page (fixture maps)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cifar import atomic
from cifar.analysis.feature_space import nearest, split_features
from cifar.inference.explain import Explainer
from cifar.store import run_folder
from cifar.store.runs import load_run, runs_root
from tests.factory import write_npz
from tests.pages.test_pages import figure, no_exception, png, texts


@pytest.fixture
def trained(use_trained_baseline, tmp_path, monkeypatch):
    run_id, data = use_trained_baseline
    monkeypatch.setenv("CIFAR10_NPZ", str(write_npz(tmp_path / "data.npz", data)))
    return run_id, data


@pytest.mark.slow  # over 2 s: the quick loop leaves it to CI
def test_classify_shows_where_the_model_looks_and_its_nearest_training_images(trained, open_page):
    from cifar.sources.images import open_image

    run_id, data = trained
    app = open_page("classify")
    app.file_uploader(key="classify-upload").set_value(("red.png", png(), "image/png")).run()
    no_exception(app)
    expected = Explainer(load_run(run_id)).explain(open_image(png()), "cifar")
    assert f"`{run_id}` looking for **{expected.class_name}**" in texts(app.caption)
    assert f"Nearest training images: not computed for `{run_id}` yet" in texts(app.caption)
    images_before = len(app.image)

    train = split_features(load_run(run_id), "train")  # what `python -m cifar project` caches
    app.selectbox(key="classify-explain-class").set_value("frog").run()
    no_exception(app)
    assert f"`{run_id}` looking for **frog**" in texts(app.caption)
    frog = Explainer(load_run(run_id)).explain(open_image(png()), "cifar", class_index=6)
    found = nearest(train, frog.features)
    assert len(app.image) == images_before + 8
    shown = [c for c in texts(app.caption).splitlines() if " · " in c][-8:]
    assert shown == [f"{load_run(run_id).class_names[int(data.y_train[i])]} · {s:.2f}" for i, s in found]


@pytest.mark.slow  # over 2 s: the quick loop leaves it to CI
def test_misclassified_opens_an_image_into_the_same_view(trained, open_page):
    run_id, data = trained
    app = open_page("misclassified")
    no_exception(app)
    index = app.selectbox(key="misclassified-open").value
    expected = Explainer(load_run(run_id)).explain(data.x_test[index], "cifar")
    assert f"`{run_id}` looking for **{expected.class_name}**" in texts(app.caption)


def write_map(run_id: str, seed: int) -> np.ndarray:
    folder = runs_root() / run_id
    n = len(np.load(folder / run_folder.TEST_LABELS))
    coordinates = np.random.default_rng(seed).normal(size=(n, 2)).astype(np.float32)
    atomic.write_npy(folder / run_folder.PROJECTION, coordinates)
    record = {"method": "umap", "space": "penultimate layer", "dimensions": 64, "images": n, "seconds": 1.0}
    atomic.write_json(folder / run_folder.PROJECTION_RECORD, record)
    return coordinates


def test_the_feature_map_without_maps_says_how_to_make_them(runs, open_page):
    app = open_page("feature_map")
    no_exception(app)
    assert "No maps yet" in texts(app.info) and "python -m cifar project RUN" in texts(app.info)


def test_the_feature_map_draws_each_run_s_points_by_class_with_its_mistakes(runs, open_page):
    coordinates = {run_id: write_map(run_id, seed) for seed, run_id in enumerate(runs[:2])}
    app = open_page("feature_map")
    app.multiselect(key="feature-map-runs").set_value(runs[:2]).run()
    no_exception(app)
    for k, run_id in enumerate(runs[:2]):
        traces = figure(app, k)["data"]
        labels = np.load(runs_root() / run_id / run_folder.TEST_LABELS)
        predicted = np.load(runs_root() / run_id / run_folder.TEST_PREDICTIONS).argmax(1)
        crosses = [t for t in traces if t["marker"]["symbol"] == "x"]
        assert sum(len(t["x"]) for t in crosses) == int(np.sum(predicted != labels))
        airplanes = next(t for t in traces if t["name"] == "airplane" and t["marker"]["symbol"] == "circle")
        right = (labels == 0) & (predicted == 0)
        assert airplanes["x"] == pytest.approx(coordinates[run_id][right, 0].tolist())
        assert [p[0] for p in airplanes["customdata"]] == np.nonzero(right)[0].tolist()
    assert json.loads((runs_root() / runs[0] / run_folder.PROJECTION_RECORD).read_text())["space"] in texts(
        app.caption
    )


def test_a_map_is_started_from_the_page_for_a_run_without_one(trained, monkeypatch, open_page):
    import cifar.analysis.feature_space

    run_id, _ = trained
    started = []
    monkeypatch.setattr(
        cifar.analysis.feature_space, "start_projection", lambda run: started.append(run.run_id)
    )
    app = open_page("feature_map")
    no_exception(app)
    assert "No maps yet" in texts(app.info)
    app.button(key=f"feature-map-start-{run_id}").click().run()
    assert started == [run_id]


@pytest.mark.slow  # over 2 s: the quick loop leaves it to CI
def test_a_background_map_reports_progress_and_lands_in_the_run_folder(trained, tmp_path, monkeypatch):
    import shutil
    import time

    from cifar.analysis.feature_space import projection_progress, read_projection, start_projection

    run_id, _ = trained
    source = load_run(run_id).path
    monkeypatch.setenv("CIFAR_ARTIFACTS", str(tmp_path / "copy"))
    shutil.copytree(source, tmp_path / "copy" / "runs" / run_id)
    run = load_run(run_id)
    assert projection_progress(run) is None
    start_projection(run)
    assert projection_progress(run)["running"]
    deadline = time.time() + 180
    while projection_progress(run)["running"] and time.time() < deadline:
        time.sleep(1)
    progress = projection_progress(run)
    assert not progress["running"] and f"{run_id}: map of" in progress["last_line"], progress
    assert read_projection(load_run(run_id))[1].shape == (len(run.test_labels), 2)
