"""The GPU branch, run on the CPU (`CIFAR_FORCE_GPU_PATH=1`, read by `features.gpu_available`).

Where a GPU is found, the feature extractor computes in mixed_float16 under XLA, in batches of
`GPU_BATCH`, and caches its features under a name of their own (`-mixed_float16`). That is all
the device changes in training: the head, its batch size and a baseline's precision come from
the config, and several GPUs' MirroredStrategy (`distribute.make_strategy`) needs several devices.
TensorFlow runs float16 and XLA on a CPU too, slowly, so the branch is checked here against the
float32 CPU path, on the 75 px stand-in base (`tests/backbone.py`) and the fixtures' tiny dataset.

Tolerance of the features: float16 keeps 11 significant bits (round-off 2**-11 = 4.9e-4 per
operation); over the base's ~95 layers they add up to 2.8e-3 to 3.6e-3 of each image's feature
vector here (the CPU's float32 paths agree to ~1e-6). FEATURES_RTOL = 1e-2 allows about 3 times
that, and is 20 times smaller than what tells two of these images apart (20 % to 30 %); a
missing rescale (NaN in float16) or scaled pixels cast to integers (98 %) is far outside. (On the
photo-like `structured_images` this random stand-in is ill-conditioned: float32 itself moves
their features by up to 3 % when only its input is rounded to float16, so they are not used.)
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from cifar.config import TransferConfig
from cifar.modeling import features
from cifar.modeling.features import FeaturesMissing, FeatureSpec
from cifar.sources import assets
from cifar.sources.assets import BackboneWeights, Cifar10, sha256_file
from tests.backbone import calibrated_inception
from tests.factory import tiny_cifar

# The 2015 graph's pool, as transfer-best's (its mixed7-10 features would saturate a head here).
CONFIG = TransferConfig(architecture="exact2015", resize="bilinear", input_size=75, weights="google2015")
BATCH = 8  # the patched GPU_BATCH: the one shape the GPU branch's XLA program is compiled for
FEATURES_RTOL = 1e-2  # of each image's feature vector (see above)
# The saved predictions come from the GPU branch's features, the Predictor's from float32 ones:
# the feature error reaches the probabilities through the head (1.7e-3 measured here; the
# answers of two different images differ by more than 5 times this tolerance, asserted below).
PROBABILITY_ATOL = 1e-2


def test_the_switch_takes_the_gpu_branch(monkeypatch):
    monkeypatch.setenv(features.FORCE_GPU_PATH, "1")
    assert features.gpu_available() and features.default_precision() == "mixed_float16"
    monkeypatch.setenv("CIFAR_MIXED_PRECISION", "0")  # a user's opt-out of mixed precision
    assert features.gpu_available() and features.default_precision() == "float32"


@pytest.fixture(scope="module")
def backbone(tmp_path_factory) -> BackboneWeights:
    path = tmp_path_factory.mktemp("backbone") / "inception75.weights.h5"
    at_imagenet_scale(calibrated_inception(seed=0)).save_weights(str(path))
    return BackboneWeights("google2015", path, sha256_file(path))


def at_imagenet_scale(base, factor: float = 100.0):
    """`base` with its pooled features divided by `factor`: the stand-in's are ~100 times the
    ImageNet base's (mean 65 against ~0.5), and would saturate a fresh head, whose answers (all
    0 or 1) then hide any feature error. The BatchNormalizations whose ReLUs make the last block
    (mixed10) give `1 / factor` of their output; the rest of the network is unchanged."""
    made_by = {id(layer.output): layer for layer in base.layers}
    for norm in _norms_making(base.get_layer("mixed10"), made_by):
        beta, mean, variance = norm.get_weights()  # InceptionV3's have no scale
        norm.set_weights([beta / factor, mean, factor**2 * (variance + norm.epsilon) - norm.epsilon])
    return base


def _norms_making(layer, made_by: dict) -> list:
    """The BatchNormalization layers behind `layer` through ReLUs and concatenations."""
    import keras

    found = []
    for tensor in layer.input if isinstance(layer.input, list) else [layer.input]:
        source = made_by[id(tensor)]
        is_norm = isinstance(source, keras.layers.BatchNormalization)
        found += [source] if is_norm else _norms_making(source, made_by)
    return found


@pytest.fixture(scope="module")
def data() -> Cifar10:
    """The fixtures' tiny dataset: 16 training and 8 test images."""
    return tiny_cifar(2 * BATCH, BATCH, seed=4)


@pytest.fixture(scope="module")
def cpu_features(data, backbone) -> np.ndarray:
    """The float32 CPU path's features of the test images (TensorFlow's graph, no XLA)."""
    return np.asarray(features.make_extract_fn(CONFIG, backbone.path)(data.x_test))


@pytest.fixture(scope="module")
def gpu_branch_extract(backbone):
    """The extraction function the GPU branch builds, compiled once (~15 s for XLA on 2 cores)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(features.FORCE_GPU_PATH, "1")
        return features.make_extract_fn(CONFIG, backbone.path, "mixed_float16")


@pytest.fixture
def gpu_path(monkeypatch, gpu_branch_extract, backbone) -> list[tuple[str, tuple]]:
    """The GPU branch forced on; `make_extract_fn` answers with the compiled GPU function and
    records (precision, batch shape) of every call; the two batch sizes are small and differ.
    Afterwards, Keras' global dtype policy must be float32 again (no leak into other tests)."""
    import keras

    calls: list[tuple[str, tuple]] = []

    def make_extract_fn(config, weights_path, precision="float32"):
        assert config.feature_spec == CONFIG.feature_spec and sha256_file(weights_path) == backbone.sha256
        if precision != "mixed_float16":
            raise AssertionError(f"the GPU branch extracts in mixed_float16, not {precision}")

        def extract(pixels):
            calls.append((precision, pixels.shape))
            return gpu_branch_extract(pixels)

        return extract

    monkeypatch.setenv(features.FORCE_GPU_PATH, "1")
    monkeypatch.setattr(features, "GPU_BATCH", BATCH)
    monkeypatch.setattr(features, "CPU_BATCH", BATCH // 2)
    monkeypatch.setattr(features, "CHUNK_SIZE", BATCH)
    monkeypatch.setattr(features, "make_extract_fn", make_extract_fn)
    yield calls
    assert keras.mixed_precision.global_policy().name == "float32"


def relative_errors(approximate: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """Each row's error, relative to the row's size."""
    return np.linalg.norm(approximate - exact, axis=1) / np.linalg.norm(exact, axis=1)


@pytest.mark.slow
def test_gpu_branch_features_equal_the_float32_cpu_path_within_float16_round_off(
    data, backbone, cpu_features, gpu_path
):
    images = data.x_test
    gpu = features.extract_features(images, CONFIG, backbone, "test")
    assert gpu_path == [("mixed_float16", (features.GPU_BATCH, 32, 32, 3))]
    spec = FeatureSpec.of(CONFIG, backbone, "test", False, images)
    assert spec.precision == "mixed_float16" and spec.directory().name.endswith("-mixed_float16")
    assert gpu.dtype == np.float32 and gpu.shape == cpu_features.shape == (len(images), 2048)
    errors = relative_errors(gpu, cpu_features)
    assert errors.max() < FEATURES_RTOL, errors
    assert errors.min() > 1e-4, "computed in float16 indeed (float32 paths differ by ~1e-6)"


@pytest.mark.slow
def test_training_on_the_gpu_branch_gives_finite_answers_the_predictor_repeats(
    data, backbone, gpu_path, monkeypatch
):
    import keras

    from cifar.inference.predict import Predictor
    from cifar.training.train import train

    weights_file = assets.inception_weights_path("google2015")
    weights_file.parent.mkdir(parents=True)
    weights_file.write_bytes(backbone.path.read_bytes())
    options = {"epochs": 2, "validation_size": 3, "batch_size": 4}
    folder = train(CONFIG.model_copy(update=options), data=data, run_id="gpu")

    assert {precision for precision, _ in gpu_path} == {"mixed_float16"}
    assert {shape[0] for _, shape in gpu_path} == {features.GPU_BATCH} and len(gpu_path) == 3
    assert keras.mixed_precision.global_policy().name == "float32"  # the head was built in float32
    metrics = json.loads((folder / "metrics.json").read_text())
    assert all(np.isfinite(metrics[key]) for key in ("train_accuracy", "val_accuracy", "test_accuracy"))
    saved = np.load(folder / "test_predictions.npy")
    assert saved.dtype == np.float32 and np.isfinite(saved).all()
    np.testing.assert_allclose(saved.sum(axis=1), 1.0, atol=1e-5)
    assert metrics["test_accuracy"] == pytest.approx(np.mean(saved.argmax(axis=1) == data.y_test))
    # The comparison with the Predictor can fail: no answer is saturated, and the answers differ
    # between images far more than the tolerance (a wrong image's features would show).
    assert saved.max() < 0.99 and np.abs(saved - np.roll(saved, 1, axis=0)).max() > 5 * PROBABILITY_ATOL

    # The GPU branch's features are cached under their own name: the CPU path never reads them.
    monkeypatch.delenv(features.FORCE_GPU_PATH)
    with pytest.raises(FeaturesMissing):
        features.load_features(data.x_test, CONFIG, backbone, "test", False)

    predictor = Predictor.for_run("gpu")
    # One image at a time reuses the program XLA compiled for one image (a batch compiles again).
    answers = np.concatenate([predictor.probabilities(image[None]) for image in data.x_test])
    np.testing.assert_allclose(answers, saved, atol=PROBABILITY_ATOL)
