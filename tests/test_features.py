"""The frozen base's feature cache: chunks, resumption, cache names, and exactness.

A seeded random InceptionV3 at 75 px (the smallest it takes, `tests/backbone.py`) stands in for
the ImageNet weights; its BatchNormalization statistics are randomised so that running the base
in training mode would give different numbers (the exactness test would catch it).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest

from cifar.config import TransferConfig, keras_home
from cifar.modeling import features
from cifar.modeling.feature_cache import extraction_seconds, missing_features
from cifar.modeling.features import FeaturesMissing, FeatureSpec, ensure_features, extract_features
from cifar.sources.assets import BackboneWeights, Cifar10, sha256_file
from tests.backbone import calibrated_inception, structured_images

CONFIG = TransferConfig(resize="bilinear", input_size=75)
BATCH = 5  # = the patched CHUNK_SIZE: one compiled shape for every call
N_IMAGES = 12


@pytest.fixture(scope="module")
def backbone(tmp_path_factory) -> BackboneWeights:
    path = tmp_path_factory.mktemp("backbone") / "inception75.weights.h5"
    calibrated_inception(seed=7).save_weights(str(path))
    return BackboneWeights("keras", path, sha256_file(path))


@pytest.fixture(scope="module")
def compiled_extract(backbone):
    """The real compiled extraction function, built once (XLA compiles are slow on 2 cores)."""
    return features.make_extract_fn(CONFIG, backbone.path)


@pytest.fixture
def extract_calls(monkeypatch, compiled_extract, backbone):
    """CHUNK_SIZE 5, and `make_extract_fn` answering with the compiled function, recording batches."""
    calls: list[np.ndarray] = []

    def make_extract_fn(config, weights_path, precision="float32"):
        assert config.feature_spec == CONFIG.feature_spec and Path(weights_path) == backbone.path
        assert precision == "float32"

        def extract(pixels):
            calls.append(np.array(pixels))
            return compiled_extract(pixels)

        return extract

    monkeypatch.setattr(features, "CHUNK_SIZE", 5)
    monkeypatch.setattr(features, "make_extract_fn", make_extract_fn)
    return calls


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return structured_images(N_IMAGES, seed=11)


def _forbid_extraction(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("everything is cached: nothing may be computed")

    monkeypatch.setattr(features, "make_extract_fn", fail)


def _extract(images, backbone, split="test", flip=False, config=CONFIG):
    return extract_features(images, config, backbone, split, flip=flip, batch_size=BATCH)


def _directory(images, backbone, split="test", flip=False, config=CONFIG) -> Path:
    return FeatureSpec.of(config, backbone, split, flip, images).directory()


@pytest.mark.slow
def test_extract_writes_chunks_and_manifest(images, backbone, extract_calls, tmp_path):
    progress = []
    result = extract_features(
        images, CONFIG, backbone, "test", batch_size=BATCH, progress=lambda d, n: progress.append((d, n))
    )
    assert result.shape == (N_IMAGES, 2048) and result.dtype == np.float32
    assert np.all(np.isfinite(result)) and result.std() > 0
    assert len(extract_calls) == 3
    for call, start in zip(extract_calls, (0, 5, 10), strict=True):
        assert call.shape == (5, 32, 32, 3)
        rows = min(5, N_IMAGES - start)
        np.testing.assert_array_equal(call[:rows], images[start : start + rows])
    assert progress == [(0, 12), (5, 12), (10, 12), (12, 12)]

    directory = _directory(images, backbone)
    assert directory.parent == tmp_path / "keras" / "features"
    assert sorted(p.name for p in directory.iterdir()) == [
        "chunk-00000.npy", "chunk-00001.npy", "chunk-00002.npy", "manifest.json",
    ]  # fmt: skip
    assert [np.load(directory / f"chunk-0000{i}.npy").shape for i in range(3)] == [
        (5, 2048), (5, 2048), (2, 2048),
    ]  # fmt: skip
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["n_images"] == 12 and manifest["chunk_size"] == 5
    assert manifest["weights_sha256"] == backbone.sha256 and manifest["split"] == "test"
    assert manifest["resize"] == "bilinear" and manifest["input_size"] == 75
    assert manifest["architecture"] == "keras" and manifest["flip"] is False


@pytest.mark.slow
def test_second_call_computes_nothing(images, backbone, extract_calls, monkeypatch):
    first = _extract(images, backbone)
    _forbid_extraction(monkeypatch)
    again = _extract(images, backbone)
    np.testing.assert_array_equal(again, first)
    loaded = features.load_features(images, CONFIG, backbone, "test", False)
    np.testing.assert_array_equal(loaded, first)


def _mtimes(directory: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in directory.glob("chunk-*.npy")}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("index", "damage"),
    [(1, "delete"), (2, "truncate"), (0, "garbage"), (1, "wrong-rows"), (2, "wrong-dtype")],
)
def test_only_a_missing_or_corrupt_chunk_is_recomputed(images, backbone, extract_calls, index, damage):
    first = _extract(images, backbone)
    directory = _directory(images, backbone)
    chunk = directory / f"chunk-{index:05d}.npy"
    if damage == "delete":
        chunk.unlink()
    elif damage == "truncate":
        chunk.write_bytes(chunk.read_bytes()[:200])
    elif damage == "garbage":
        chunk.write_bytes(b"\x93NUMPY garbage")
    elif damage == "wrong-rows":
        np.save(chunk, np.zeros((3, 2048), np.float32))
    else:
        np.save(chunk, np.load(chunk).astype(np.float64))
    before = _mtimes(directory)
    extract_calls.clear()
    again = _extract(images, backbone)
    assert len(extract_calls) == 1
    start = index * 5
    rows = min(5, N_IMAGES - start)
    np.testing.assert_array_equal(extract_calls[0][:rows], images[start : start + rows])
    after = _mtimes(directory)
    for name, mtime in before.items():
        if name != chunk.name:
            assert after[name] == mtime, f"{name} was rewritten"
    np.testing.assert_allclose(again, first, rtol=0, atol=1e-6)


@pytest.mark.slow
def test_stray_part_files_are_ignored(images, backbone, extract_calls):
    first = _extract(images, backbone)
    directory = _directory(images, backbone)
    (directory / ".chunk-00001.npy.0a1b2c3d.999.part").write_bytes(b"torn write of a killed process")
    (directory / ".manifest.json.0a1b2c3d.999.part").write_text("{")
    extract_calls.clear()
    np.testing.assert_array_equal(_extract(images, backbone), first)
    assert extract_calls == []

    # A writer killed before its rename: chunk 1 exists only as a .part file.
    (directory / "chunk-00001.npy").rename(directory / ".chunk-00001.npy.0a1b2c3d.998.part")
    again = _extract(images, backbone)
    assert len(extract_calls) == 1
    np.testing.assert_array_equal(extract_calls[0], images[5:10])
    np.testing.assert_allclose(again, first, rtol=0, atol=1e-6)


@pytest.mark.slow
def test_cache_directory_name_changes_with_everything_that_changes_features(images, backbone):
    base = FeatureSpec.of(CONFIG, backbone, "train", False, images)
    assert FeatureSpec.of(CONFIG, backbone, "train", False, images.copy()).name == base.name
    changed_image = images.copy()
    changed_image[3, 10, 10, 1] ^= 1
    other_weights = dataclasses.replace(backbone, sha256="f" * 64)
    variants = {
        "resize": FeatureSpec.of(
            CONFIG.model_copy(update={"resize": "bicubic"}), backbone, "train", False, images
        ),
        "architecture": FeatureSpec.of(
            CONFIG.model_copy(update={"architecture": "exact2015"}), backbone, "train", False, images
        ),
        "input_size": FeatureSpec.of(
            CONFIG.model_copy(update={"input_size": 99}), backbone, "train", False, images
        ),
        "pooled_layers": FeatureSpec.of(
            CONFIG.model_copy(update={"pooled_layers": "mixed7-10"}), backbone, "train", False, images
        ),
        "flip": FeatureSpec.of(CONFIG, backbone, "train", True, images),
        "split": FeatureSpec.of(CONFIG, backbone, "test", False, images),
        "images": FeatureSpec.of(CONFIG, backbone, "train", False, changed_image),
        "fewer images": FeatureSpec.of(CONFIG, backbone, "train", False, images[:-1]),
        "weights": FeatureSpec.of(CONFIG, other_weights, "train", False, images),
        "source": FeatureSpec.of(
            CONFIG, dataclasses.replace(backbone, source="google2015"), "train", False, images
        ),
    }
    names = {key: spec.directory().name for key, spec in variants.items()}
    assert len(set(names.values()) | {base.directory().name}) == len(variants) + 1, names
    # Head-only settings do not change the features.
    head_only = CONFIG.model_copy(
        update={"head_units": 7, "dropout": 0.1, "epochs": 3, "tta_flip": True, "standardize": True}
    )
    assert FeatureSpec.of(head_only, backbone, "train", False, images).name == base.name
    # Caches made before `pooled_layers` existed keep their names.
    assert "mixed" not in base.name and names["pooled_layers"].endswith("-mixed7-10")


@pytest.mark.slow
def test_mixed7_10_features_end_with_the_reference_features(images, backbone):
    """mixed7..mixed10 pooled and concatenated; the last 2048 columns are the reference's features."""
    import keras

    from cifar.modeling.models import build_feature_extractor

    config = CONFIG.model_copy(update={"pooled_layers": "mixed7-10"})
    assert config.feature_dim == 768 + 1280 + 2048 + 2048
    multi = np.asarray(build_feature_extractor(config, backbone.path)(images, training=False))
    single = np.asarray(build_feature_extractor(CONFIG, backbone.path)(images, training=False))
    assert multi.shape == (N_IMAGES, 6144)
    np.testing.assert_allclose(multi[:, -2048:], single, rtol=0, atol=1e-5)
    # The other columns are the earlier blocks' own averages, not copies of mixed10.
    base = keras.applications.InceptionV3(weights=None, include_top=False, input_shape=(75, 75, 3))
    base.load_weights(str(backbone.path))
    tap = keras.Model(base.input, base.get_layer("mixed7").output)
    resized = keras.ops.image.resize(images.astype(np.float32) / 127.5 - 1.0, (75, 75), "bilinear")
    mixed7 = np.asarray(tap(resized, training=False)).mean(axis=(1, 2))
    np.testing.assert_allclose(multi[:, :768], mixed7, rtol=0, atol=1e-4 * np.abs(mixed7).max())


@pytest.mark.slow
def test_cached_base_plus_head_equals_the_full_model(images, backbone, extract_calls):
    """The central claim: head(cached features) == build_transfer_model(...) on raw uint8 pixels."""
    import keras

    from cifar.modeling.models import build_head, build_transfer_model

    cached = _extract(images, backbone)
    flipped = _extract(images, backbone, flip=True)
    keras.utils.set_random_seed(3)
    head = build_head(CONFIG)
    # A head of moderate sensitivity (top probabilities 0.11 to 0.99 here): XLA's and oneDNN's
    # float32 round-off differ by ~1e-4 relative in the features, which a saturated or a very
    # steep head would either hide or blow up.
    dense = head.get_layer("head_dense")
    kernel, bias = dense.get_weights()
    dense.set_weights([kernel * 0.1, bias])
    on_features = head.predict(cached, verbose=0)
    on_flipped = head.predict(flipped, verbose=0)
    full = build_transfer_model(CONFIG, backbone.path, head=head)
    on_pixels = full.predict(images, verbose=0)
    on_flipped_pixels = full.predict(images[:, :, ::-1, :], verbose=0)
    assert on_pixels.shape == (N_IMAGES, 10)
    np.testing.assert_allclose(on_features, on_pixels, atol=1e-5, rtol=0)
    np.testing.assert_allclose(on_flipped, on_flipped_pixels, atol=1e-5, rtol=0)
    # ...and the comparison can fail: the predictions are not all alike, flips change them.
    assert on_pixels.max(axis=1).min() < 0.2 and on_pixels.max(axis=1).max() > 0.9
    assert len(set(on_pixels.argmax(axis=1))) >= 3
    assert np.abs(on_flipped - on_features).max() > 1e-4


@pytest.mark.slow
def test_cached_features_are_the_frozen_base_in_inference_mode(images, backbone, extract_calls):
    """A second, independent route: Keras' own InceptionV3 with the same weights, by hand."""
    import keras

    cached = _extract(images, backbone)
    base = keras.applications.InceptionV3(weights=None, include_top=False, input_shape=(75, 75, 3))
    base.load_weights(str(backbone.path))
    scaled = images.astype(np.float32) / 127.5 - 1.0
    resized = keras.ops.image.resize(scaled, (75, 75), interpolation="bilinear")
    pooled = np.asarray(base(resized, training=False)).mean(axis=(1, 2))
    scale = np.abs(pooled).max()
    assert np.abs(cached - pooled).max() / scale < 2e-5  # float32 round-off (XLA vs oneDNN)
    in_training_mode = np.asarray(base(resized[:4], training=True)).mean(axis=(1, 2))
    assert np.abs(in_training_mode - cached[:4]).max() / scale > 1e-2


@pytest.mark.slow
def test_exact2015_replaces_the_last_average_pool_by_a_max_pool(backbone):
    import keras

    from cifar.modeling.models import build_base

    # 139 px: the last block sees 3 x 3 (at 75 px it is 1 x 1 and both pools are the identity).
    config = CONFIG.model_copy(update={"input_size": 139})
    keras_base = build_base(config, backbone.path)
    exact = build_base(config.model_copy(update={"architecture": "exact2015"}), backbone.path)
    kinds = [type(layer).__name__ for layer in keras_base.layers]
    exact_kinds = [type(layer).__name__ for layer in exact.layers]
    average = [i for i, kind in enumerate(kinds) if kind == "AveragePooling2D"]
    assert len(average) == 9  # one per mixed block but the two reduction blocks
    last = exact.layers[average[-1]]
    assert isinstance(last, keras.layers.MaxPooling2D)
    assert tuple(last.pool_size) == (3, 3) and tuple(last.strides) == (1, 1) and last.padding == "same"
    assert last.name.startswith("average_pooling2d")  # same graph position, same name
    changed = [i for i, (a, b) in enumerate(zip(kinds, exact_kinds, strict=True)) if a != b]
    assert changed == [average[-1]]
    # Same weights, loaded into both; only the pool differs, and it changes the output.
    for a, b in zip(keras_base.weights, exact.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not exact.trainable and not exact.trainable_weights
    x = np.random.default_rng(0).uniform(-1, 1, (2, 139, 139, 3)).astype(np.float32)
    reference = np.asarray(keras_base(x))
    assert reference.shape == (2, 3, 3, 2048)
    assert np.abs(np.asarray(exact(x)) - reference).max() > 1e-3 * np.abs(reference).max()


@pytest.mark.slow
def test_training_the_head_leaves_the_base_unchanged(images, backbone):
    import keras

    from cifar.modeling.models import build_transfer_model

    keras.utils.set_random_seed(0)
    model = build_transfer_model(CONFIG, backbone.path)
    network = model.get_layer("transfer_network")  # behind the resize
    head = network.get_layer("head")
    (base,) = [layer for layer in network.layers if isinstance(layer, keras.Model) and layer is not head]
    base_before = [np.array(w) for w in base.weights]
    head_before = [np.array(w) for w in head.weights]
    assert base_before and all(not w.trainable for w in base.weights)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="categorical_crossentropy")
    labels = np.eye(10, dtype=np.float32)[np.arange(8) % 10]
    model.fit(images[:8], labels, batch_size=4, epochs=1, verbose=0)
    for before, after in zip(base_before, base.weights, strict=True):
        np.testing.assert_array_equal(before, np.asarray(after))  # moving statistics included
    assert any(not np.array_equal(b, np.asarray(a)) for b, a in zip(head_before, head.weights, strict=True))


@pytest.mark.slow
def test_missing_features_lists_what_is_missing(images, backbone, extract_calls):
    data = Cifar10(images[:7], np.arange(7) % 10, images, np.arange(N_IMAGES) % 10)
    # Validation predictions are made as the test's: flipped validation images too, unless the
    # flipped training table (flip_features) already holds them.
    validated = CONFIG.model_copy(update={"tta_flip": True, "validation_size": 3})
    assert missing_features(validated, data, backbone)[-1] == ("validation", True, 1)  # 7 // 5 at most
    validated_from_train = validated.model_copy(update={"flip_features": True})
    assert sorted(split for split, *_ in missing_features(validated_from_train, data, backbone)) == [
        "test",
        "test",
        "train",
        "train",
    ]
    config = CONFIG.model_copy(update={"tta_flip": True, "validation_size": 0})
    assert missing_features(config, data, backbone) == [
        ("train", False, 7),
        ("test", False, 12),
        ("test", True, 12),
    ]
    assert missing_features(CONFIG, data, backbone) == [("train", False, 7), ("test", False, 12)]
    with pytest.raises(FeaturesMissing, match="python -m cifar extract"):
        features.load_features(data.x_test, config, backbone, "test", False)

    extract_features(data.x_test, config, backbone, "test", batch_size=BATCH)
    assert missing_features(config, data, backbone) == [("train", False, 7), ("test", True, 12)]
    extract_features(data.x_train, config, backbone, "train", batch_size=BATCH)
    extract_features(data.x_test, config, backbone, "test", flip=True, batch_size=BATCH)
    assert missing_features(config, data, backbone) == []
    # Each set's manifest keeps how long its extraction took: a transfer run's total cost.
    manifests = [path / "manifest.json" for path in (keras_home() / "features").iterdir()]
    seconds = [json.loads(path.read_text())["seconds"] for path in manifests]
    assert len(seconds) == 3 and all(s > 0 for s in seconds)
    assert extraction_seconds(config, data, backbone) == pytest.approx(sum(seconds))
    record = json.loads(manifests[0].read_text())
    manifests[0].write_text(json.dumps({k: v for k, v in record.items() if k != "seconds"}))
    assert extraction_seconds(config, data, backbone) is None, "a set extracted before times were kept"
    manifests[0].write_text(json.dumps(record))

    os.remove(_directory(data.x_test, backbone, "test", config=config) / "chunk-00001.npy")
    os.remove(_directory(data.x_train, backbone, "train", config=config) / "chunk-00001.npy")
    assert missing_features(config, data, backbone) == [("train", False, 2), ("test", False, 5)]


@pytest.mark.slow
def test_ensure_features_loads_or_extracts_every_set_a_config_needs(
    images, backbone, extract_calls, monkeypatch
):
    monkeypatch.setattr(features, "CPU_BATCH", BATCH)  # the compiled function's one shape
    data = Cifar10(images[:7], np.arange(7) % 10, images, np.arange(N_IMAGES) % 10)
    config = CONFIG.model_copy(update={"tta_flip": True, "validation_size": 0})
    with pytest.raises(FeaturesMissing, match=r"takes about \d+ min"):
        ensure_features(config, data, backbone, extract_missing=False)
    assert extract_calls == []

    reports = []
    extracted = ensure_features(config, data, backbone, progress=lambda *report: reports.append(report))
    assert reports == [
        ("train", 0, 7), ("train", 5, 7), ("train", 7, 7),
        ("test", 0, 12), ("test", 5, 12), ("test", 10, 12), ("test", 12, 12),
        ("test flipped", 0, 12), ("test flipped", 5, 12), ("test flipped", 10, 12), ("test flipped", 12, 12),
    ]  # fmt: skip
    assert len(extract_calls) == 2 + 3 + 3
    np.testing.assert_array_equal(extract_calls[0], images[:5])
    np.testing.assert_array_equal(extract_calls[-1][:2], images[10:, :, ::-1, :])
    assert set(extracted) == {("train", False), ("test", False), ("test", True)}
    assert [extracted[key].shape for key in sorted(extracted)] == [(12, 2048), (12, 2048), (7, 2048)]
    assert np.abs(extracted["test", True] - extracted["test", False]).max() > 0

    _forbid_extraction(monkeypatch)
    reports.clear()
    loaded = ensure_features(config, data, backbone, extract_missing=False, progress=reports.append)
    assert reports == [] and set(loaded) == set(extracted)
    for key, table in extracted.items():
        np.testing.assert_array_equal(loaded[key], table)


@pytest.mark.slow
def test_extract_for_config_extracts_the_first_images_with_a_bar_per_set(
    images, backbone, extract_calls, monkeypatch, capsys
):
    from cifar.sources import assets

    monkeypatch.setattr(features, "CPU_BATCH", BATCH)
    data = Cifar10(images, np.arange(N_IMAGES) % 10, images[::-1].copy(), np.arange(N_IMAGES) % 10)
    monkeypatch.setattr(assets, "load_cifar10", lambda log: data)
    monkeypatch.setattr(assets, "load_inception_weights", lambda source, log: backbone)
    config = CONFIG.model_copy(update={"tta_flip": True, "validation_size": 0})
    extracted = features.extract_for_config(config, limit=7, log=lambda _: None)
    assert {key: table.shape for key, table in extracted.items()} == {
        ("train", False): (7, 2048), ("test", False): (7, 2048), ("test", True): (7, 2048),
    }  # fmt: skip
    np.testing.assert_array_equal(extract_calls[0], images[:5])
    np.testing.assert_array_equal(extract_calls[2], images[::-1][:5])
    bars = capsys.readouterr().err
    assert all(f"features {label}: 100%" in bars for label in ("train", "test", "test flipped")), bars
    assert "7/7" in bars


def test_estimate_seconds_grows_with_the_pixel_count():
    small = features.estimate_seconds(TransferConfig(resize="bilinear", input_size=139), 1000)
    reference = features.estimate_seconds(TransferConfig(), 1000)
    odd = features.estimate_seconds(TransferConfig(resize="bilinear", input_size=448), 1000)
    assert small < reference < odd
    assert odd == pytest.approx(4 * reference)


@pytest.mark.parametrize(
    "resize, size, renamed",
    [("bilinear", 96, True), ("bilinear", 224, True), ("bilinear", 288, True), ("bilinear", 128, False)]
    + [("bilinear", 299, False), ("bilinear", 75, False), ("upsample7", 224, False), ("nearest", 224, False)],
)
def test_caches_of_the_resizes_xla_got_wrong_have_new_names(resize, size, renamed):
    spec = FeatureSpec("keras", "0" * 64, "keras", resize, size, "train", False, "1" * 64)
    assert spec.resize_was_wrong_under_xla == renamed
    assert (f"-{resize}{size}-r2-" in spec.name) == renamed


def test_bilinear_resize_runs_outside_xla_and_agrees_with_pillow():
    """XLA's CPU bilinear resize is wrong at odd integer factors (tensorflow/tensorflow#118344)."""
    from PIL import Image

    from cifar.modeling.models import build_resize

    pixels = structured_images(4, seed=5)
    resized = features.outside_xla(build_resize(TransferConfig(resize="bilinear", input_size=96)))(pixels)
    pillow = [np.asarray(Image.fromarray(p).resize((96, 96), Image.Resampling.BILINEAR)) for p in pixels]
    assert np.abs((np.asarray(resized) + 1) * 127.5 - np.stack(pillow)).max() < 1.0  # Pillow rounds


@pytest.mark.slow
@pytest.mark.parametrize("gpu", [False, True], ids=["cpu graph", "xla as on a gpu"])
def test_extraction_at_an_odd_upscaling_factor_equals_keras_eager(images, backbone, monkeypatch, gpu):
    """Whether the base runs in TensorFlow's graph (CPU) or under XLA (GPU), the features are
    those of the Keras model run eagerly: the resize never goes through XLA."""
    from cifar.modeling.models import build_feature_extractor

    if gpu:
        monkeypatch.setenv(features.FORCE_GPU_PATH, "1")
    config = TransferConfig(resize="bilinear", input_size=96)
    extracted = np.asarray(features.make_extract_fn(config, backbone.path)(images[:4]))
    eager = np.asarray(build_feature_extractor(config, backbone.path)(images[:4], training=False))
    assert np.abs(extracted - eager).max() < 1e-4 * np.abs(eager).max()
