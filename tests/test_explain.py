"""Grad-CAM (`cifar.inference.explain`) and the feature space (`cifar.analysis.feature_space`),
with the sanity checks of Adebayo et al. 2018: the map follows what the model learned, and changes
with its weights."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from cifar import cli
from cifar.analysis.feature_space import nearest, read_projection
from cifar.config import BaselineConfig, TransferConfig
from cifar.inference.explain import Explainer, check_class, jet, overlay
from cifar.sources.assets import Cifar10
from cifar.store.runs import RunError, load_run
from tests.backbone import calibrated_inception
from tests.factory import write_ensemble, write_npz


def square_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dark noise; label 1 images hold a bright 8 x 8 square somewhere. (images, labels, corners)"""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 60, (n, 32, 32, 3), dtype=np.uint8)
    labels = (np.arange(n) % 2).astype(np.uint8)
    corners = rng.integers(0, 25, (n, 2))
    for image, label, (top, left) in zip(images, labels, corners, strict=True):
        if label:
            image[top : top + 8, left : left + 8] = 250
    return images, labels, corners


@pytest.fixture(scope="module")
def square_run(tmp_path_factory):
    """A tutorial CNN trained to tell images with a bright square from those without."""
    from cifar.training.train import train

    root = tmp_path_factory.mktemp("square")
    x, y, _ = square_images(1200, seed=0)
    data = Cifar10(x[:1000], y[:1000], x[1000:], y[1000:])
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KERAS_HOME", str(root / "keras"))
        patch.setenv("CIFAR_ARTIFACTS", str(root / "artifacts"))
        patch.setenv("CIFAR_MEASURE_COST", "0")
        train(BaselineConfig(epochs=6, validation_size=100, batch_size=50), data=data, run_id="square")
    return root / "artifacts", data


@pytest.mark.slow
def test_the_map_s_peak_falls_on_the_square(square_run, monkeypatch):
    artifacts, data = square_run
    monkeypatch.setenv("CIFAR_ARTIFACTS", str(artifacts))
    run = load_run("square")
    assert run.metrics["test_accuracy"] > 0.95, "the model has learned the square"
    explainer = Explainer(run)
    images, _, corners = square_images(40, seed=5)
    hits = []
    for image, (top, left) in zip(images[1::2], corners[1::2], strict=True):
        explanation = explainer.explain(image, class_index=1)
        assert explanation.heatmap.shape == (4, 4) and explanation.layer == "conv3"
        peak = np.unravel_index(np.argmax(_upsampled(explanation.heatmap)), (32, 32))
        hits.append(top - 4 <= peak[0] < top + 12 and left - 4 <= peak[1] < left + 12)
    assert np.mean(hits) >= 0.8, hits


def _upsampled(heatmap: np.ndarray) -> np.ndarray:
    from skimage.transform import resize

    return resize(heatmap, (32, 32), order=1)


@pytest.mark.slow
def test_the_map_changes_when_the_weights_are_randomised(square_run, monkeypatch):
    artifacts, _ = square_run
    monkeypatch.setenv("CIFAR_ARTIFACTS", str(artifacts))
    explainer = Explainer(load_run("square"))
    image = square_images(2, seed=9)[0][1]
    trained = explainer.explain(image, class_index=1).heatmap
    rng = np.random.default_rng(0)
    for weight in explainer.model.weights:  # the same network, every weight drawn anew
        weight.assign(rng.normal(0, 0.1, weight.shape).astype(np.float32))
    randomised = explainer.explain(image, class_index=1).heatmap
    # A randomly initialised conv net still responds to a bright patch (its peak may stay there),
    # but the trained model's focus is gone: the map spreads over the whole image.
    assert np.abs(trained - randomised).mean() > 0.1
    assert randomised.mean() > trained.mean() + 0.1


def test_any_class_and_the_top_one(use_trained_baseline):
    run_id, data = use_trained_baseline
    explainer = Explainer(load_run(run_id))
    top = explainer.explain(data.x_test[0])
    assert top.class_index == int(np.argmax(top.probabilities))
    other = (top.class_index + 3) % 10
    chosen = explainer.explain(data.x_test[0], class_index=other)
    assert chosen.class_index == other and chosen.class_name == load_run(run_id).class_names[other]
    assert np.allclose(chosen.probabilities, top.probabilities, atol=1e-6)
    assert chosen.overlay.shape == (256, 256, 3) and chosen.overlay.dtype == np.uint8
    with pytest.raises(ValueError, match="takes cifar images, not 'full'"):
        explainer.explain(data.x_test[0], "full")


def test_class_names_are_checked():
    names = ["cat", "dog"]
    assert check_class(None, names) is None and check_class("dog", names) == 1
    with pytest.raises(ValueError, match="unknown class 'llama'; the classes are: cat, dog"):
        check_class("llama", names)


def test_the_overlay_keeps_the_image_where_the_map_is_cold():
    image = np.full((32, 32, 3), 200, np.uint8)
    heatmap = np.zeros((4, 4), np.float32)
    heatmap[0, 0] = 1.0
    shown = overlay(image, heatmap, side=64)
    assert shown.shape == (64, 64, 3)
    assert shown[0, 0, 0] > shown[0, 0, 2] and shown[63, 63, 2] > shown[63, 63, 0]  # red hot, blue cold
    assert jet(np.array([0.0]))[0].tolist() == [0.0, 0.0, 0.5] and jet(np.array([1.0]))[0].tolist() == [
        0.5,
        0,
        0,
    ]


@pytest.mark.slow
def test_a_transfer_run_s_map_at_both_resolutions(tmp_path, monkeypatch, make_cifar):
    from cifar.modeling import features
    from cifar.sources import assets
    from cifar.training.train import train

    base = calibrated_inception(seed=0)
    weights_file = assets.inception_weights_path("google2015")
    weights_file.parent.mkdir(parents=True)
    base.save_weights(str(weights_file))
    monkeypatch.setattr(features, "CHUNK_SIZE", 8)
    data = make_cifar(16, 8, seed=4)
    config = TransferConfig(
        weights="google2015", resize="bilinear", input_size=75, epochs=1, validation_size=3
    )
    train(config, data=data, run_id="t")
    explainer = Explainer(load_run("t"))
    photo = np.random.default_rng(1).integers(0, 256, (120, 90, 3), dtype=np.uint8)
    full, small = explainer.explain(photo, "full"), explainer.explain(photo, "cifar")
    assert full.layer == small.layer == "mixed10"
    assert full.image.shape == (75, 75, 3) and small.image.shape == (32, 32, 3)
    assert full.heatmap.shape == small.heatmap.shape == (1, 1)  # mixed10 at 75 px
    assert full.features.shape == (2048,)


def test_nearest_is_by_cosine_similarity():
    train = np.array([[1.0, 0.0], [0.0, 1.0], [3.0, 0.1], [-1.0, 0.0]], np.float32)
    found = nearest(train, np.array([2.0, 0.0], np.float32), k=2)
    assert [index for index, _ in found] == [0, 2]
    assert found[0][1] == pytest.approx(1.0) and found[1][1] == pytest.approx(3 / np.hypot(3, 0.1))


@pytest.mark.slow  # over 2 s: the quick loop leaves it to CI
def test_the_map_of_a_baseline_run_is_stored_in_its_folder(use_trained_baseline, tmp_path, monkeypatch):
    run_id, data = use_trained_baseline
    source = load_run(run_id).path
    monkeypatch.setenv("CIFAR_ARTIFACTS", str(tmp_path / "copy"))
    shutil.copytree(source, tmp_path / "copy" / "runs" / run_id)
    monkeypatch.setenv("CIFAR10_NPZ", str(write_npz(tmp_path / "data.npz", data)))
    assert cli.main(["project", run_id]) == 0
    record, coordinates = read_projection(load_run(run_id))
    assert coordinates.shape == (len(data.x_test), 2) and coordinates.dtype == np.float32
    assert record["space"] == "penultimate layer" and record["dimensions"] == 64


def test_an_ensemble_has_no_single_map(artifacts, capsys):
    write_ensemble(artifacts, np.arange(40) % 10)
    assert cli.main(["project", "ab"]) == 1
    assert "ab is an ensemble: explain or map its members one by one" in capsys.readouterr().err
    with pytest.raises(RunError, match="ensemble"):
        Explainer(load_run("ab"))
