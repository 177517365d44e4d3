"""Training writes a complete, self-consistent run folder, or no published run at all."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from cifar.config import CLASS_NAMES, BaselineConfig, TransferConfig
from cifar.sources.data import validation_rows
from cifar.store import runs
from cifar.store.runs import load_run, read_status
from cifar.training.train import train
from tests.backbone import calibrated_inception
from tests.factory import tiny_cifar

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
    from cifar.modeling.models import build_baseline

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


def test_tta_flip_saves_the_mean_over_the_images_and_their_horizontal_flips(make_cifar):
    """Training and the Predictor both average the model over the image and its mirror image."""
    from cifar.inference.predict import Predictor
    from cifar.modeling.models import build_baseline

    data = make_cifar(60, 20)
    config = BaselineConfig(epochs=1, validation_size=0, augment=True, tta_flip=True, batch_size=16)
    folder = train(config, data=data, run_id="flip")
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["val_accuracy"] is None and metrics["n_validation"] == 0
    saved = np.load(folder / "test_predictions.npy")
    assert metrics["test_accuracy"] == pytest.approx(np.mean(saved.argmax(axis=1) == data.y_test))

    model = build_baseline(config)
    model.load_weights(str(folder / "model.weights.h5"))
    plain = model.predict(data.x_test, verbose=0)
    mirrored = model.predict(data.x_test[:, :, ::-1], verbose=0)  # (N, H, W, C): W is axis 2
    upside_down = model.predict(data.x_test[:, ::-1], verbose=0)
    assert np.abs(plain - mirrored).max() > 1e-3  # the two views differ, so the mean is a real check
    np.testing.assert_allclose(saved, (plain + mirrored) / 2, atol=1e-5)
    assert np.abs(saved - (plain + upside_down) / 2).max() > 1e-4
    np.testing.assert_allclose(Predictor.for_run("flip").probabilities(data.x_test), saved, atol=1e-5)


def test_transfer_tta_flip_averages_the_head_over_plain_and_flipped_test_features(fake_backbone):
    from cifar.modeling.models import build_head

    config = TransferConfig(**REFERENCE["transfer"], tta_flip=True)
    folder = train(config, data=fake_backbone, run_id="transfer-flip")
    head = build_head(config)
    head.load_weights(str(folder / "head.weights.h5"))
    load = _label_features(fake_backbone)
    plain, flipped = (
        head.predict(load(fake_backbone.x_test, config, None, "test", flip), verbose=0)
        for flip in (False, True)
    )
    assert np.abs(plain - flipped).max() > 1e-3
    np.testing.assert_allclose(np.load(folder / "test_predictions.npy"), (plain + flipped) / 2, atol=1e-5)
    # The validation predictions (calibration's data) are made the same way, on the validation rows.
    rows = validation_rows(config.model_dump(), len(fake_backbone.y_train))
    # (The fake's features depend on the split, not the image: the plain ones are training rows.)
    val_plain = head.predict(load(fake_backbone.x_train, config, None, "train", False)[rows], verbose=0)
    val_flipped = head.predict(load(fake_backbone.x_train[rows], config, None, "validation", True), verbose=0)
    np.testing.assert_allclose(
        np.load(folder / "val_predictions.npy"), (val_plain + val_flipped) / 2, atol=1e-5
    )
    np.testing.assert_array_equal(np.load(folder / "val_labels.npy"), fake_backbone.y_train[rows])
    assert json.loads((folder / "calibration.json").read_text())["temperature"] > 0


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

    from cifar.inference.predict import Predictor
    from cifar.modeling import features
    from cifar.sources import assets

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

    # At full resolution the base gets the photo scaled by the 32 px path's own preprocessing layer.
    from cifar.modeling.models import build_resize

    photos = np.random.default_rng(5).integers(0, 256, (2, 75, 75, 3), dtype=np.uint8)
    rescale = build_resize(config).get_layer("inception_preprocess")
    assert not predictor.tta_flip and predictor.resolutions == ("full", "cifar")
    by_layer = np.asarray(predictor._network(rescale(photos)))
    np.testing.assert_allclose(predictor.full_probabilities(photos), by_layer, atol=1e-6)
    # A photo the user uploads reaches it at the base's input size, by default.
    from PIL import Image

    photo = Image.fromarray(np.random.default_rng(6).integers(0, 256, (90, 120, 3), dtype=np.uint8))
    pixels = predictor.model_input(photo)
    assert pixels.shape == (config.input_size, config.input_size, 3)
    # Not through the 32 px path's resize (the same here, at a bilinear 96 px; not for upsample7).
    from unittest import mock

    with mock.patch.object(predictor, "probabilities", side_effect=AssertionError("the 32 px path")):
        answer = predictor.distribution(photo, calibrated=False)
    np.testing.assert_allclose(answer, predictor.full_probabilities(pixels[None])[0], atol=1e-6)

    # Its cost: the whole model as it predicts, the frozen base with the head.
    import keras

    from cifar.analysis.cost import count_flops, model_cost

    cost = model_cost(predictor)
    side = config.input_size
    bare = keras.applications.InceptionV3(weights=None, include_top=False, input_shape=(side, side, 3))
    head_parameters = HEADS[head][1]
    assert cost["parameters"] == bare.count_params() + head_parameters
    assert cost["trainable_parameters"] == sum(
        int(np.prod(w.shape)) for w in predictor_head_weights(folder, config)
    )
    base_flops = count_flops(bare, (side, side, 3))
    assert base_flops < cost["flops_per_image"] < base_flops * 1.01 + 2 * head_parameters + 3 * 32 * 32 * 2

    # Other backbone weights than the run's: refused rather than silently wrong.
    shutil.copy(weights_file, tmp_path / "keep.weights.h5")
    base.layers[1].kernel.assign(base.layers[1].kernel * 2)
    base.save_weights(str(weights_file))
    with pytest.raises(runs.RunError, match="other backbone weights"):
        Predictor.for_run("transfer")


def predictor_head_weights(folder, config):
    """The trainable weights of a transfer run's head (what training fitted)."""
    from cifar.modeling.models import build_head

    head = build_head(config)
    head.load_weights(str(folder / "head.weights.h5"))
    return head.trainable_weights


def _no_extraction(*args, **kwargs):
    raise AssertionError("the features are cached")


def test_transfer_without_features_and_no_extraction_fails_clearly(tmp_path, make_cifar):
    from cifar.modeling.features import FeaturesMissing
    from cifar.sources import assets

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

    from cifar.modeling import features as feature_cache
    from cifar.sources import assets
    from cifar.sources.data import aligned_empty

    data = make_cifar(200, 60, seed=3)
    rng = np.random.default_rng(0)

    def label_features(images, config, weights, split, flip):
        labels = _split_labels(data, config, split)
        table = aligned_empty((len(images), config.feature_dim))
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


# ----------------------------------------------------------------------------- every option takes effect
# Training is repeatable (no augmentation: same config, same data, same numbers; checked below),
# so a run that differs from its family's reference run differs because of the one changed option.


def _split_labels(data, config, split: str) -> np.ndarray:
    """The labels of a feature split's images ("validation": the config's rows of train)."""
    from cifar.sources.data import validation_rows

    if split == "validation":
        return data.y_train[validation_rows(config.model_dump(), len(data.y_train))]
    return data.y_train if split == "train" else data.y_test


def _label_features(data):
    """Fake `load_features`: random features with the label shown in one column (flipped images
    one column over), the same for the same (split, flip) in every run."""
    from cifar.sources.data import aligned_empty

    def load(images, config, weights, split, flip):
        labels = _split_labels(data, config, split)
        rng = np.random.default_rng(2 * (split == "train") + flip)
        table = aligned_empty((len(images), config.feature_dim))
        table[:] = rng.normal(0, 1.0, table.shape)
        table[np.arange(len(images)), labels * 11 + flip] += 1.5
        return table

    return load


@pytest.fixture
def fake_backbone(monkeypatch):
    """Transfer runs without InceptionV3: label-revealing features; weights named by the source asked."""
    from types import SimpleNamespace

    from cifar.modeling import features
    from cifar.sources import assets

    data = _option_data()
    monkeypatch.setattr(features, "load_features", _label_features(data))
    monkeypatch.setattr(
        assets, "load_inception_weights", lambda which, **_: SimpleNamespace(source=which, sha256="0" * 64)
    )
    return data


def _option_data():
    return tiny_cifar(80, 30, seed=5)


REFERENCE = {  # each family's reference run: small, quick, no augmentation
    "baseline": {"epochs": 1, "batch_size": 16, "validation_size": 10},
    "transfer": {"epochs": 2, "batch_size": 16, "validation_size": 10, "weights": "keras"},
}


def _shared_effects(epochs: int, optimizer: str, stopping_lr: float) -> dict:
    """The fields both families share (`_Config`), and how each shows."""
    return {
        "epochs": (
            {"epochs": epochs},
            lambda run, ref: run["metrics"]["epochs_run"] == len(run["history"]) == epochs,
        ),
        "batch_size": ({"batch_size": 7}, "differs"),
        "optimizer": ({"optimizer": optimizer}, "differs"),
        "learning_rate": ({"learning_rate": 0.01}, "differs"),
        "lr_schedule": ({"lr_schedule": "onecycle"}, "differs"),
        "label_smoothing": ({"label_smoothing": 0.3}, "differs"),
        "weight_decay": ({"weight_decay": 0.05}, "differs"),
        "validation_size": ({"validation_size": 4}, lambda run, ref: run["metrics"]["n_validation"] == 4),
        "early_stopping_patience": (
            {"epochs": 6, "early_stopping_patience": 1, "learning_rate": stopping_lr},
            lambda run, ref: run["metrics"]["epochs_run"] < 6,
        ),
        "seed": ({"seed": 1}, "differs"),
    }


AIRBENCH8 = {"architecture": "airbench", "width": 8}
# family -> field -> (changed overrides, what must be seen); "differs": other test predictions than
# the family's reference run; ("differs from", overrides): than the run with those overrides.
OPTION_EFFECTS = {
    "baseline": {
        **_shared_effects(epochs=2, optimizer="sgd", stopping_lr=0.05),
        "architecture": (
            {"architecture": "airbench", "width": 8},
            lambda run, ref: _parameters(run) != _parameters(ref),
        ),
        "width": (
            {"architecture": "airbench", "width": 16},
            lambda run, ref: _parameters(run) > _airbench_parameters(8),
        ),
        "augment": ({"augment": True}, "differs"),
        "tta_flip": ({"tta_flip": True}, "differs"),
        "dropout": ({"dropout": 0.5}, "differs"),
        # airbench94's recipe, each against the run without it.
        "momentum": ({"optimizer": "sgd", "momentum": 0.5}, ("differs from", {"optimizer": "sgd"})),
        "stem": (
            {**AIRBENCH8, "stem": "whiten"},
            lambda run, ref: _parameters(run) != _airbench_parameters(8),
        ),
        "bn_scale": (
            {**AIRBENCH8, "bn_scale": False},
            lambda run, ref: _parameters(run) < _airbench_parameters(8),
        ),
        "bias_lr_scale": (
            {**AIRBENCH8, "optimizer": "sgd", "bias_lr_scale": 64},
            ("differs from", {**AIRBENCH8, "optimizer": "sgd"}),
        ),
        "dirac_init": ({**AIRBENCH8, "dirac_init": True}, ("differs from", AIRBENCH8)),
        "lookahead": ({"lookahead": True}, "differs"),
        "alternating_flip": (
            {"augment": True, "alternating_flip": True},
            ("differs from", {"augment": True}),
        ),
        "tta_translate": ({"tta_translate": True}, "differs"),
        "precision": ({"precision": "mixed_bfloat16"}, "differs"),
    },
    "transfer": {
        **_shared_effects(epochs=3, optimizer="rmsprop", stopping_lr=10.0),
        "weights": (
            {"weights": "google2015"},
            lambda run, ref: run["config"]["assets"]["backbone_weights"] == "google2015",
        ),
        # The frozen base's options name the features it reads (cache and model: test_features, test_models).
        "architecture": (
            {"architecture": "exact2015"},
            lambda run, ref: run["spec"]["architecture"] == "exact2015",
        ),
        "resize": (
            {"resize": "nearest", "input_size": 96},
            lambda run, ref: run["spec"]["resize"] == "nearest",
        ),
        "input_size": (
            {"resize": "bilinear", "input_size": 96},
            lambda run, ref: run["spec"]["input_size"] == 96,
        ),
        "pooled_layers": (
            {"pooled_layers": "mixed7-10"},
            lambda run, ref: _parameters(run) == _parameters(ref) + (6144 - 2048) * 256,
        ),
        "flip_features": ({"flip_features": True}, lambda run, ref: run["metrics"]["n_train"] == 2 * 70),
        "tta_flip": ({"tta_flip": True}, "differs"),
        "standardize": (
            {"standardize": True},
            lambda run, ref: _parameters(run) == _parameters(ref) + 2 * 2048 + 1,
        ),
        "head_units": ({"head_units": 8}, lambda run, ref: _parameters(run) == 2048 * 8 + 8 + 8 * 10 + 10),
        "dropout": ({"dropout": 0.0}, "differs"),
    },
}


def _parameters(run) -> int:
    return run["metrics"]["parameters"]


def _airbench_parameters(width: int) -> int:
    from cifar.modeling.models import build_baseline

    return build_baseline(BaselineConfig(architecture="airbench", width=width)).count_params()


def _train_option_run(family: str, overrides: dict, run_id: str, monkeypatch=None) -> dict:
    """Train `REFERENCE[family]` with `overrides` on the option data; what the run folder holds."""
    from cifar.config import parse_config
    from cifar.modeling import features

    specs = []
    if family == "transfer":
        loader = features.load_features
        monkeypatch.setattr(
            features,
            "load_features",
            lambda images, config, *a: specs.append(config.feature_spec) or loader(images, config, *a),
        )
    config = parse_config(family, {**REFERENCE[family], **overrides})
    folder = train(config, data=_option_data(), run_id=run_id)
    return {
        "metrics": json.loads((folder / "metrics.json").read_text()),
        "config": json.loads((folder / "config.json").read_text()),
        "history": pd.read_csv(folder / "history.csv"),
        "predictions": np.load(folder / "test_predictions.npy"),
        "spec": specs[0] if specs else None,
    }


_REFERENCE_RUNS: dict[str, dict] = {}


def _reference_run(family: str, monkeypatch) -> dict:
    if family not in _REFERENCE_RUNS:
        _REFERENCE_RUNS[family] = _train_option_run(family, {}, f"{family}-reference", monkeypatch)
    return _REFERENCE_RUNS[family]


@pytest.mark.parametrize("family", sorted(OPTION_EFFECTS))
def test_every_option_has_an_effect_test(family):
    from cifar.config import CONFIG_TYPES

    fields = set(CONFIG_TYPES[family].model_fields) - {"model"}
    assert fields and set(OPTION_EFFECTS[family]) == fields


@pytest.mark.parametrize("family", sorted(OPTION_EFFECTS))
def test_training_is_repeatable(family, fake_backbone, monkeypatch):
    """What makes "differs" below mean something: the unchanged config gives the same numbers."""
    reference = _reference_run(family, monkeypatch)
    again = _train_option_run(family, {}, f"{family}-again", monkeypatch)
    np.testing.assert_array_equal(again["predictions"], reference["predictions"])
    assert again["metrics"]["parameters"] == reference["metrics"]["parameters"]


@pytest.mark.parametrize(
    ("family", "field"),
    [(family, field) for family in sorted(OPTION_EFFECTS) for field in OPTION_EFFECTS[family]],
)
def test_changing_an_option_changes_the_run(family, field, fake_backbone, monkeypatch):
    overrides, expected = OPTION_EFFECTS[family][field]
    reference = _reference_run(family, monkeypatch)
    run = _train_option_run(family, overrides, f"{family}-{field}".replace("_", "-"), monkeypatch)
    assert run["config"]["config"][field] == parse_value(family, {**REFERENCE[family], **overrides}, field)
    if isinstance(expected, tuple):  # ("differs from", the overrides of the run to compare with)
        key = json.dumps(expected[1], sort_keys=True)
        if key not in _REFERENCE_RUNS:
            _REFERENCE_RUNS[key] = _train_option_run(
                family, expected[1], f"{family}-{field}-without", monkeypatch
            )
        reference, expected = _REFERENCE_RUNS[key], "differs"
    if expected == "differs":
        same_shape = run["predictions"].shape == reference["predictions"].shape
        assert not (same_shape and np.allclose(run["predictions"], reference["predictions"], atol=1e-6)), (
            field
        )
    else:
        assert expected(run, reference), (field, run["metrics"])


def parse_value(family: str, overrides: dict, field: str):
    from cifar.config import parse_config

    return parse_config(family, overrides).model_dump()[field]


def test_a_run_whose_predictions_are_not_finite_fails_and_is_not_published(monkeypatch):
    """Diverged training (e.g. sgd at learning rate 10) would publish a run every reader refuses."""
    from cifar.training import train as training

    def diverged(config, data, writer, progress, strategy):
        return training.Trained({}, np.full((len(data.y_test), 10), np.nan, np.float32), np.zeros((0, 10)))

    monkeypatch.setattr(training, "train_baseline", diverged)
    with pytest.raises(training.TrainingDiverged, match="training diverged"):
        train(BaselineConfig(epochs=1), run_id="diverged", data=tiny_cifar(20, 10))
    assert not runs.run_path("diverged").exists()
    status = read_status(runs.partial_path("diverged"))
    assert status["state"] == "failed" and "diverged" in status["message"]


@pytest.mark.parametrize("family", ["baseline", "transfer"])
def test_a_run_without_validation_images_is_published_uncalibrated(family, fake_backbone):
    """validation_size 0: nothing to fit a temperature on; the run shows its raw probabilities."""
    config_type = {"baseline": BaselineConfig, "transfer": TransferConfig}[family]
    config = config_type(**{**REFERENCE[family], "validation_size": 0, "tta_flip": True})
    folder = train(config, data=fake_backbone, run_id=f"{family}-unvalidated")
    assert not (folder / "calibration.json").exists() and not (folder / "val_predictions.npy").exists()
    run = load_run(f"{family}-unvalidated")
    assert run.temperature == 1.0 and run.validation is None
    np.testing.assert_allclose(run.calibrated_test_predictions, run.test_predictions, atol=1e-6)
