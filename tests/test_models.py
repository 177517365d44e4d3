"""Model builders: uint8 pixels in, 10 probabilities out; parameter counts; frozen base."""

from __future__ import annotations

import numpy as np
import pytest

from cifar.config import BaselineConfig, TransferConfig
from cifar.modeling.models import OneCycle, build_baseline, build_head, build_transfer_model, make_optimizer


def _check_pixels_to_probabilities(model):
    assert tuple(model.input.shape) == (None, 32, 32, 3)
    assert model.input.dtype == "uint8"
    assert tuple(model.output.shape) == (None, 10)
    pixels = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    probabilities = np.asarray(model(pixels, training=False))
    assert probabilities.shape == (3, 10)
    assert np.all(probabilities >= 0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_tutorial_cnn_shape_and_parameter_count():
    model = build_baseline(BaselineConfig())
    _check_pixels_to_probabilities(model)
    conv1 = 3 * 3 * 3 * 32 + 32  # 32 -> 30 px
    conv2 = 3 * 3 * 32 * 64 + 64  # pool 15, conv 13
    conv3 = 3 * 3 * 64 * 64 + 64  # pool 6, conv 4
    dense = (4 * 4 * 64) * 64 + 64
    predictions = 64 * 10 + 10
    assert conv1 + conv2 + conv3 + dense + predictions == 122_570
    assert model.count_params() == 122_570
    assert model.get_layer("predictions").activation.__name__ == "softmax"


def test_tutorial_cnn_dropout_adds_a_layer_and_no_parameters():
    model = build_baseline(BaselineConfig(dropout=0.3))
    assert model.get_layer("dropout").rate == 0.3
    assert model.count_params() == 122_570


def test_airbench_shape():
    model = build_baseline(BaselineConfig(architecture="airbench", width=8))
    _check_pixels_to_probabilities(model)
    assert model.name == "baseline_airbench"


@pytest.mark.parametrize("architecture", ["tutorial", "airbench"])
def test_mixed_bfloat16_computes_in_bfloat16_with_float32_weights_and_probabilities(architecture):
    import keras

    config = BaselineConfig(architecture=architecture, precision="mixed_bfloat16")
    if architecture == "airbench":
        config = BaselineConfig(architecture="airbench", width=8, stem="whiten", precision="mixed_bfloat16")
    model = build_baseline(config)
    _check_pixels_to_probabilities(model)
    convolutions = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert convolutions and all(layer.compute_dtype == "bfloat16" for layer in convolutions)
    assert {weight.dtype for weight in model.weights} == {"float32"}
    assert model.output.dtype == "float32"
    assert keras.mixed_precision.global_policy().name == "float32"  # restored after the build
    plain = build_baseline(config.model_copy(update={"precision": "float32"}))
    assert all(layer.compute_dtype == "float32" for layer in plain.layers if layer.weights)
    assert plain.count_params() == model.count_params()


def test_head_parameter_count():
    head = build_head(TransferConfig(head_units=256))
    assert head.count_params() == (2048 * 256 + 256) + (256 * 10 + 10)


@pytest.mark.slow
def test_transfer_model_takes_pixels_and_freezes_the_base():
    import keras

    config = TransferConfig(resize="bilinear", input_size=75)
    model = build_transfer_model(config, weights_path=None)
    _check_pixels_to_probabilities(model)
    network = model.get_layer("transfer_network")  # behind the resize
    head = network.get_layer("head")
    (base,) = [layer for layer in network.layers if isinstance(layer, keras.Model) and layer is not head]
    assert not base.trainable
    assert base.layers and all(not layer.trainable for layer in base.layers)
    assert base.weights and all(not weight.trainable for weight in base.weights)
    trainable = {id(w) for w in model.trainable_weights}
    assert trainable == {id(w) for w in head.trainable_weights}
    assert len(model.trainable_weights) == 4  # two Dense kernels and biases


@pytest.mark.slow
def test_upsample7_resizes_to_224_by_nearest_neighbour():
    from cifar.modeling.models import build_resize

    resize = build_resize(TransferConfig())
    pixels = np.random.default_rng(1).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    out = np.asarray(resize(pixels))
    assert out.shape == (1, 224, 224, 3)
    expected = np.repeat(np.repeat(pixels.astype(np.float32) / 127.5 - 1, 7, axis=1), 7, axis=2)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert out.min() >= -1 and out.max() <= 1


def test_one_cycle_schedule_by_hand():
    schedule = OneCycle(peak=2.0, total_steps=10, warmup=2)
    values = [float(schedule(step)) for step in range(12)]
    expected = [0.0, 1.0, 2.0, 1.75, 1.5, 1.25, 1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
    np.testing.assert_allclose(values, expected, atol=1e-6)


def test_make_optimizer_kinds_and_schedule():
    import keras

    adam = make_optimizer(BaselineConfig(learning_rate=0.01))
    assert isinstance(adam, keras.optimizers.Adam)
    assert float(adam.learning_rate) == pytest.approx(0.01)
    sgd = make_optimizer(BaselineConfig(optimizer="sgd"))
    assert isinstance(sgd, keras.optimizers.SGD) and sgd.nesterov and sgd.momentum == 0.9
    cycle = make_optimizer(BaselineConfig(lr_schedule="onecycle", epochs=2), steps_per_epoch=5)
    assert isinstance(cycle._learning_rate, OneCycle)
    assert cycle._learning_rate.total_steps == 10 and cycle._learning_rate.warmup == 2


@pytest.mark.slow  # trains a head for three steps
@pytest.mark.parametrize("schedule", ["constant", "onecycle"])
def test_fused_adam_makes_the_same_updates_as_keras_adam(schedule):
    """The fused kernel is an implementation detail: step for step, the same weights as Keras' Adam."""
    import keras

    from cifar.modeling.models import FusedAdam

    config = TransferConfig(head_units=32, dropout=0.0, lr_schedule=schedule, epochs=1)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 2048)).astype(np.float32)
    y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, 96)]

    def train(optimizer):
        keras.utils.set_random_seed(0)
        head = build_head(config)
        head.compile(optimizer=optimizer, loss="categorical_crossentropy")
        start = head.get_weights()
        for batch in range(3):
            head.train_on_batch(x[batch * 32 : (batch + 1) * 32], y[batch * 32 : (batch + 1) * 32])
        return [after - before for after, before in zip(head.get_weights(), start, strict=True)]

    fused_optimizer = make_optimizer(config, steps_per_epoch=3)
    assert isinstance(fused_optimizer, FusedAdam)
    plain = make_optimizer(config, steps_per_epoch=3)
    plain.__class__ = keras.optimizers.Adam  # the same settings, Keras' own update
    fused, reference = train(fused_optimizer), train(plain)
    assert max(np.abs(step).max() for step in reference) > 1e-4  # the weights did move
    for a, b in zip(fused, reference, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_resize_and_input_size_change_what_the_base_sees():
    from cifar.modeling.models import build_resize

    pixels = np.random.default_rng(3).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)

    def resized(**options):
        return np.asarray(build_resize(TransferConfig(**options))(pixels))

    nearest, bilinear = resized(resize="nearest", input_size=96), resized(resize="bilinear", input_size=96)
    assert nearest.shape == bilinear.shape == (1, 96, 96, 3)
    assert np.abs(nearest - bilinear).max() > 0.01
    assert resized(resize="bilinear", input_size=128).shape == (1, 128, 128, 3)


@pytest.mark.slow
def test_exact2015_max_pools_where_keras_averages():
    import keras

    from cifar.modeling.models import build_base

    def pools(architecture):
        base = build_base(TransferConfig(resize="bilinear", input_size=75, architecture=architecture), None)
        return [
            type(layer)
            for layer in base.layers
            if isinstance(layer, keras.layers.Layer) and "pool" in layer.name
        ]

    keras_pools, exact_pools = pools("keras"), pools("exact2015")
    assert keras_pools and len(keras_pools) == len(exact_pools)
    changed = [(a, b) for a, b in zip(keras_pools, exact_pools, strict=True) if a is not b]
    assert changed == [(keras.layers.AveragePooling2D, keras.layers.MaxPooling2D)]


@pytest.mark.slow  # over 2 s: the quick loop leaves it to CI
def test_keras_runs_on_tensorflow_whatever_the_user_s_keras_json_says(tmp_path):
    """A ~/.keras/keras.json asking for JAX (not even installed here) does not reach our models."""
    import json
    import os
    import subprocess
    import sys

    from tests.factory import REPO

    (tmp_path / "keras.json").write_text(json.dumps({"backend": "jax", "floatx": "float32"}))
    env = {**os.environ, "KERAS_HOME": str(tmp_path), "PYTHONPATH": str(REPO), "KERAS_BACKEND": "jax"}
    code = "import cifar.modeling.models, keras; print(keras.backend.backend())"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "tensorflow", done.stderr[-2000:]


def test_a_build_in_another_thread_waits_for_the_policy_it_would_otherwise_share():
    """Keras' dtype policy is global: two dashboard sessions building at once must not mix them."""
    import threading

    from cifar.modeling.models import computing_in

    seen = []

    def build_elsewhere():
        seen.append(build_baseline(BaselineConfig()).get_layer("conv1"))

    with computing_in("mixed_bfloat16"):
        other = threading.Thread(target=build_elsewhere)
        other.start()
        other.join(timeout=2)
        assert other.is_alive()  # waiting for this build to end
    other.join()
    assert seen[0].compute_dtype == "float32"
