"""Training writes a complete, self-consistent run folder, or no published run at all."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from cifar import runs
from cifar.config import CLASS_NAMES, BaselineConfig, TransferConfig
from cifar.runs import load_run, read_status
from cifar.train import train
from tests.backbone import calibrated_inception

pytestmark = pytest.mark.slow


def test_train_baseline_writes_every_required_file(use_trained_baseline):
    run_id, data = use_trained_baseline
    folder = runs.run_path(run_id)
    assert folder.is_dir() and not runs.partial_path(run_id).exists()
    for name in (
        "config.json", "history.csv", "metrics.json", "test_predictions.npy", "test_labels.npy",
        "model.weights.h5", "train.log", "status.json",
    ):  # fmt: skip
        assert (folder / name).is_file(), name
    assert (folder / "tensorboard").is_dir() and any((folder / "tensorboard").rglob("*"))
    assert not [p.name for p in folder.rglob("*.part")]

    config = json.loads((folder / "config.json").read_text())
    assert config["config"] == BaselineConfig(epochs=1, validation_size=20).model_dump()
    assert config["class_names"] == list(CLASS_NAMES)
    assert config["run_id"] == run_id
    for key in ("python", "tensorflow", "keras", "numpy", "device"):
        assert config["environment"][key], key

    history = pd.read_csv(folder / "history.csv")
    assert len(history) == 1
    assert {"epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds"} <= set(history.columns)
    assert history["seconds"].iloc[0] > 0

    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["model"] == "baseline"
    for key in ("train_accuracy", "test_accuracy", "seconds"):
        assert isinstance(metrics[key], float), key
    assert metrics["n_train"] == 100 and metrics["n_validation"] == 20 and metrics["epochs_run"] == 1
    assert metrics["parameters"] == 122_570

    probabilities = np.load(folder / "test_predictions.npy")
    assert probabilities.shape == (40, 10) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    labels = np.load(folder / "test_labels.npy")
    np.testing.assert_array_equal(labels, data.y_test)
    recomputed = sum(int(np.argmax(p) == y) for p, y in zip(probabilities, labels, strict=True)) / 40
    assert metrics["test_accuracy"] == pytest.approx(recomputed, abs=1e-12)

    status = read_status(folder)
    assert status["state"] == "finished"
    assert "metrics:" in (folder / "train.log").read_text()
    assert load_run(run_id).model == "baseline"


def test_saved_weights_reproduce_the_saved_predictions(use_trained_baseline):
    from cifar.models import build_baseline

    run_id, data = use_trained_baseline
    model = build_baseline(BaselineConfig(epochs=1, validation_size=20))
    model.load_weights(str(runs.run_path(run_id) / "model.weights.h5"))
    saved = np.load(runs.run_path(run_id) / "test_predictions.npy")
    np.testing.assert_allclose(model.predict(data.x_test, verbose=0), saved, atol=1e-5)


def test_a_training_that_raises_publishes_nothing(make_cifar):
    progress = []

    def crash(state):
        progress.append(state)
        raise RuntimeError("simulated crash after the first epoch")

    with pytest.raises(RuntimeError, match="simulated crash"):
        train(BaselineConfig(epochs=2, validation_size=20), data=make_cifar(), run_id="crash", progress=crash)
    assert len(progress) == 1 and progress[0]["epoch"] == 1
    assert not runs.run_path("crash").exists()
    status = read_status(runs.partial_path("crash"))
    assert status["state"] == "failed"
    assert "simulated crash" in status["message"]
    assert runs.list_runs() == []


def test_train_refuses_an_existing_run_id(use_trained_baseline, make_cifar):
    with pytest.raises(runs.RunError, match="exists already"):
        train(BaselineConfig(epochs=1), data=make_cifar(), run_id=use_trained_baseline[0])


def test_train_with_tta_flip_and_augment(make_cifar):
    data = make_cifar(60, 20)
    folder = train(
        BaselineConfig(epochs=1, validation_size=0, augment=True, tta_flip=True, batch_size=16),
        data=data,
        run_id="flip",
    )
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["val_accuracy"] is None and metrics["n_validation"] == 0
    probabilities = np.load(folder / "test_predictions.npy")
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert metrics["test_accuracy"] == pytest.approx(np.mean(probabilities.argmax(axis=1) == data.y_test))


HEADS = {  # overrides, parameter count, tolerance of the Predictor's probabilities
    # 96 px = 3 x 32: an odd upscaling factor, where XLA's bilinear resize is wrong, so this also
    # checks that the Predictor (XLA) resizes like the extractor (TensorFlow's own kernel).
    "reference head": ({"input_size": 96}, (2048 * 256 + 256) + (256 * 10 + 10), 1e-5),
    # mixed7..mixed10 pooled (768 + 1280 + 2048 + 2048) and standardized: the Normalization
    # layer's mean, variance and count are saved with the head and restored by the Predictor.
    # Dividing by small feature deviations of this random base magnifies the ~1e-6 XLA-vs-oneDNN
    # round-off of the features, hence the looser tolerance.
    "mixed7-10 standardized": (
        {"pooled_layers": "mixed7-10", "standardize": True},
        (2 * 6144 + 1) + (6144 * 256 + 256) + (256 * 10 + 10),
        2e-4,
    ),
}


@pytest.mark.parametrize("head", HEADS, ids=list(HEADS))
def test_train_transfer_on_cached_features_then_predict(tmp_path, monkeypatch, make_cifar, head):
    """Head-only training end to end; the Predictor (full model on pixels) gives the saved numbers."""

    from cifar import assets, features
    from cifar.predict import Predictor

    base = calibrated_inception(seed=0)  # features that depend on the image
    weights_file = assets.inception_weights_path("google2015")
    weights_file.parent.mkdir(parents=True)
    base.save_weights(str(weights_file))

    monkeypatch.setattr(features, "CHUNK_SIZE", 8)
    monkeypatch.setattr(features, "CPU_BATCH", 8)
    data = make_cifar(16, 8, seed=4)
    config = TransferConfig(
        weights="google2015",
        resize="bilinear",
        epochs=2,
        validation_size=3,
        batch_size=8,
        **{"input_size": 75, **HEADS[head][0]},
    )
    folder = train(config, data=data, run_id="transfer")
    for name in ("head.weights.h5", "config.json", "history.csv", "metrics.json", "test_predictions.npy"):
        assert (folder / name).is_file(), name
    saved_config = json.loads((folder / "config.json").read_text())
    assert saved_config["assets"]["backbone_weights"] == "google2015"
    assert saved_config["assets"]["backbone_sha256"] == assets.sha256_file(weights_file)
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["n_train"] == 13 and metrics["n_validation"] == 3 and metrics["epochs_run"] == 2
    assert metrics["parameters"] == HEADS[head][1]
    saved = np.load(folder / "test_predictions.npy")
    assert metrics["test_accuracy"] == pytest.approx(np.mean(saved.argmax(axis=1) == data.y_test))

    # The features are cached now: a second run extracts nothing.
    monkeypatch.setattr(features, "make_extract_fn", _no_extraction)
    train(config, data=data, run_id="transfer-again", extract_missing=False)

    predictor = Predictor.for_run("transfer")
    np.testing.assert_allclose(predictor.probabilities(data.x_test), saved, atol=HEADS[head][2])

    # Other backbone weights than the run's: refused rather than silently wrong.
    shutil.copy(weights_file, tmp_path / "keep.weights.h5")
    base.layers[1].kernel.assign(base.layers[1].kernel * 2)
    base.save_weights(str(weights_file))
    with pytest.raises(runs.RunError, match="other backbone weights"):
        Predictor.for_run("transfer")


def _no_extraction(*args, **kwargs):
    raise AssertionError("the features are cached")


def test_transfer_without_features_and_no_extraction_fails_clearly(tmp_path, make_cifar):
    from cifar import assets
    from cifar.features import FeaturesMissing

    weights_file = assets.inception_weights_path("google2015")
    weights_file.parent.mkdir(parents=True)
    weights_file.write_bytes(b"placeholder: never loaded")
    config = TransferConfig(weights="google2015", resize="bilinear", input_size=75, epochs=1)
    with pytest.raises(FeaturesMissing, match="python -m cifar extract"):
        train(config, data=make_cifar(10, 5), run_id="nofeatures", extract_missing=False)
    assert not runs.run_path("nofeatures").exists()
    assert read_status(runs.partial_path("nofeatures"))["state"] == "failed"


@pytest.mark.parametrize("flip_features", [False, True], ids=["plain", "flip_features"])
def test_the_head_learns_rows_gathered_with_their_own_labels(monkeypatch, make_cifar, flip_features):
    """Features that encode the label: the head can only fit them if every gathered row comes
    with its own label (the fitting, validation and flipped rows are gathered, not copied)."""
    from types import SimpleNamespace

    from cifar import assets
    from cifar import features as feature_cache

    data = make_cifar(200, 60, seed=3)
    rng = np.random.default_rng(0)

    def label_features(images, config, weights, split, flip):
        labels = data.y_train if split == "train" else data.y_test
        table = feature_cache.aligned_empty((len(images), config.feature_dim))
        table[:] = rng.normal(0, 0.1, table.shape)
        # Flipped images show the label one column over. With flip_features, the test images do
        # too: only a head that learned from the flipped training rows can classify them.
        shifted = flip or (split == "test" and flip_features)
        table[np.arange(len(images)), labels * 11 + shifted] += 3.0
        return table

    monkeypatch.setattr(feature_cache, "load_features", label_features)
    monkeypatch.setattr(
        assets, "load_inception_weights", lambda *a, **k: SimpleNamespace(source="test", sha256="0" * 64)
    )
    config = TransferConfig(
        epochs=15, batch_size=16, validation_size=40, flip_features=flip_features, tta_flip=True
    )
    metrics = json.loads((train(config, data=data, run_id="labels") / "metrics.json").read_text())
    assert metrics["n_train"] == 160 * (2 if flip_features else 1) and metrics["n_validation"] == 40
    assert metrics["train_accuracy"] > 0.95 and metrics["val_accuracy"] > 0.9
    assert metrics["test_accuracy"] > 0.9
