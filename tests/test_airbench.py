"""airbench94's recipe pieces (`cifar.modeling.airbench`, `cifar.tta`, the alternating-flip stream)."""

from __future__ import annotations

import numpy as np
import pytest

from cifar import tta
from cifar.config import BaselineConfig, ConfigError, parse_config
from cifar.modeling import airbench


def correlated_images(n: int = 400, seed: int = 0) -> np.ndarray:
    """Float images whose neighbouring pixels and channels are strongly correlated, as photos are."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(size=(n, 17, 17, 1))
    smooth = (noise[:, :-1, :-1] + noise[:, 1:, :-1] + noise[:, :-1, 1:] + noise[:, 1:, 1:]) / 2
    colour = np.array([1.0, 0.8, 0.6]) * smooth + 0.2 * rng.normal(size=(n, 16, 16, 3))
    return (colour * 3 + 1).astype(np.float32)


def test_whitened_patches_have_identity_covariance():
    images = correlated_images()
    patches = airbench.patches(images)
    assert patches.shape == (400 * 15 * 15, 12)
    assert np.abs(np.corrcoef(patches.T) - np.eye(12)).max() > 0.5  # far from white before
    layer = airbench.PatchWhitening()
    layer.build(images.shape)
    layer.set_kernel_from(images)
    whitened = np.asarray(layer(images))  # the layer itself, bias 0: (N, 15, 15, 24)
    assert whitened.shape == (400, 15, 15, 24)
    first_half = whitened[..., :12].reshape(-1, 12)
    covariance = first_half.T @ first_half / len(first_half)
    np.testing.assert_allclose(covariance, np.eye(12), atol=0.02)
    np.testing.assert_allclose(whitened[..., 12:], -whitened[..., :12], atol=1e-5)  # and the negatives


def test_the_whitening_kernel_is_frozen_and_its_bias_trains():
    layer = airbench.PatchWhitening()
    layer.build((None, 8, 8, 3))
    assert [w.name for w in layer.trainable_weights] == ["bias"]
    assert [w.name for w in layer.non_trainable_weights] == ["kernel"]


def test_patches_are_laid_out_as_a_keras_kernel_reads_them():
    images = np.arange(2 * 3 * 3 * 2, dtype=np.float32).reshape(2, 3, 3, 2)
    first = airbench.patches(images)[0]  # image 0, top-left patch: rows 0-1, columns 0-1, both channels
    np.testing.assert_array_equal(first, images[0, :2, :2, :].reshape(-1))


def test_partial_dirac_starts_the_first_filters_as_the_identity():
    kernel = np.asarray(airbench.PartialDirac(seed=1)((3, 3, 4, 6)))
    for i in range(4):
        expected = np.zeros((3, 3, 4))
        expected[1, 1, i] = 1.0
        np.testing.assert_array_equal(kernel[..., i], expected)
    assert np.abs(kernel[..., 4:]).sum() > 0  # the rest stay random


def test_a_scaled_bias_moves_scale_squared_times_faster_under_sgd():
    import keras

    def one_step(scale: float) -> float:
        inputs = keras.Input((1,))
        outputs = airbench.ScaledBias(scale)(inputs)
        model = keras.Model(inputs, outputs)
        model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
        model.train_on_batch(np.zeros((1, 1)), np.ones((1, 1)))
        return float(model.predict(np.zeros((1, 1)), verbose=0)[0, 0])

    assert one_step(8.0) == pytest.approx(64 * one_step(1.0), rel=1e-5)


def test_the_triangle_schedule_follows_airbench():
    schedule = airbench.Triangle(2.0, 100)
    at = {step: float(schedule(step)) for step in (0, 23, 100)}
    assert at == pytest.approx({0: 0.4, 23: 2.0, 100: 0.14})
    assert float(schedule(11)) == pytest.approx(2.0 * (0.2 + 0.8 * 11 / 23))


def test_lookahead_keeps_the_weights_early_and_ends_on_their_average():
    assert airbench.lookahead_decay(0, 100) == 0.0
    assert airbench.lookahead_decay(100, 100) == pytest.approx(0.95**5)
    assert airbench.lookahead_decay(50, 100) == pytest.approx(0.95**5 / 8)
    import keras

    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    model.compile(
        optimizer=keras.optimizers.SGD(0.1), loss="mse", steps_per_execution=airbench.LOOKAHEAD_EVERY
    )
    start = [w.copy() for w in model.get_weights()]
    x, y = np.ones((40, 2), np.float32), np.full((40, 1), 5.0, np.float32)
    lookahead = airbench.Lookahead(total_steps=10)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[lookahead], shuffle=False)
    for average, weight, first in zip(lookahead.average, model.get_weights(), start, strict=True):
        np.testing.assert_allclose(weight, average)
        assert not np.allclose(weight, first)


def test_test_time_views_are_airbench_multi_crop():
    views = tta.views(flip=True, translate=True)
    assert sum(view.weight for view in views) == pytest.approx(1.0)
    assert sorted((v.weight, v.mirror, v.shift) for v in views) == sorted(
        [(0.25, False, 0), (0.25, True, 0)] + [(0.125, m, s) for m in (False, True) for s in (-1, 1)]
    )
    assert tta.views(flip=True, translate=False) == [tta.View(0.5, False, 0), tta.View(0.5, True, 0)]


def test_averaged_predictions_average_the_right_pixels():
    images = np.arange(2 * 4 * 4 * 1, dtype=np.uint8).reshape(2, 4, 4, 1)
    seen = []

    def predict(pixels):
        seen.append(pixels.copy())
        return pixels.reshape(len(pixels), -1)[:, :10].astype(np.float64)  # the view's first pixels

    answer = tta.averaged(predict, images, flip=True, translate=True)
    padded = np.pad(images, [(0, 0), (1, 1), (1, 1), (0, 0)], mode="reflect")
    down_right, up_left = padded[:, :4, :4], padded[:, 2:, 2:]
    expected_views = [
        images,
        images[:, :, ::-1],
        up_left,
        up_left[:, :, ::-1],
        down_right,
        down_right[:, :, ::-1],
    ]
    for got, want in zip(seen, expected_views, strict=True):
        np.testing.assert_array_equal(got, want)
    weights = [0.25, 0.25, 0.125, 0.125, 0.125, 0.125]
    expected = sum(
        w * v.reshape(2, -1)[:, :10].astype(np.float64) for w, v in zip(weights, expected_views, strict=True)
    )
    np.testing.assert_allclose(answer, expected, rtol=1e-6)
    assert answer.dtype == np.float32


def _flips_by_epoch(epochs: int) -> dict[int, list[bool]]:
    from cifar.sources.data import alternating_flip_dataset

    images = np.zeros((6, 4, 4, 1), np.uint8)
    images[:, :, 0] = 255  # a bright left edge: mirrored, it is on the right
    batches = alternating_flip_dataset(images, np.arange(6), 6, seed=3, epochs=epochs, translate=0)
    flips = {}
    for epoch, (pixels, labels) in enumerate(batches):
        flipped = np.asarray(pixels)[:, 0, -1, 0] == 255
        flips[epoch] = [bool(f) for _, f in sorted(zip(np.asarray(labels), flipped, strict=True))]
    return flips


def test_alternating_flip_mirrors_each_image_every_other_epoch():
    flips = _flips_by_epoch(4)
    assert len(flips) == 4 and 0 < sum(flips[0]) < 6  # a random half, about
    assert flips[1] == [not f for f in flips[0]] and flips[2] == flips[0] and flips[3] == flips[1]


def test_the_alternating_flip_stream_is_the_same_for_the_same_seed():
    from cifar.sources.data import alternating_flip_dataset

    images = np.random.default_rng(0).integers(0, 256, (12, 8, 8, 3), dtype=np.uint8)

    def stream(seed):
        batches = alternating_flip_dataset(images, np.arange(12), 4, seed=seed, epochs=2)
        return [np.asarray(x) for x, _ in batches]

    first, again, other = stream(3), stream(3), stream(4)
    assert len(first) == 6 and all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def test_the_alternating_flip_stream_ends_each_epoch_with_what_is_left_even_one_image():
    from cifar.sources.data import alternating_flip_dataset

    images = np.random.default_rng(1).integers(0, 256, (9, 8, 8, 3), dtype=np.uint8)
    batches = alternating_flip_dataset(images, np.arange(9), 4, seed=0, epochs=2)
    labels = [np.asarray(y) for _, y in batches]
    assert [len(y) for y in labels] == [4, 4, 1, 4, 4, 1]
    assert sorted(np.concatenate(labels[:3])) == sorted(np.concatenate(labels[3:])) == list(range(9))


def test_airbench_options_refuse_the_tutorial_net_and_alternating_flip_needs_augment():
    with pytest.raises(ConfigError, match="stem apply to architecture='airbench' only"):
        parse_config("baseline", {"stem": "whiten"})
    with pytest.raises(ConfigError, match="augment"):
        parse_config("baseline", {"alternating_flip": "true"})
    with pytest.raises(ValueError, match="bias_lr_scale apply to optimizer='sgd' only"):
        BaselineConfig(architecture="airbench", bias_lr_scale=64)
    with pytest.raises(ConfigError, match="momentum apply to optimizer='sgd' only"):
        parse_config("baseline", {"momentum": "0.85"})
    config = BaselineConfig(
        architecture="airbench", stem="whiten", bn_scale=False, bias_lr_scale=64, optimizer="sgd"
    )
    assert config.stem == "whiten"


def test_the_airbench_recipe_builds_the_net_airbench_describes():
    from cifar.modeling.models import build_baseline

    config = BaselineConfig(
        architecture="airbench",
        stem="whiten",
        bn_scale=False,
        bias_lr_scale=64,
        dirac_init=True,
        optimizer="sgd",
    )
    model = build_baseline(config)
    names = [layer.name for layer in model.layers]
    assert "whiten" in names and "stem" not in names and "block1_conv1_shift" in names
    assert model.get_layer("whiten").output.shape[1:] == (31, 31, 24)
    batch_norm = model.get_layer("block1_conv1_bn")
    assert batch_norm.gamma is None and batch_norm.beta is None
    assert model.get_layer("block1_conv1_shift").scale == pytest.approx(8.0)


def test_shifted_crops_move_each_image_by_whole_pixels_within_the_limit():
    from cifar.sources.data import shifted_crops

    images = np.arange(400 * 6 * 6, dtype=np.int32).reshape(400, 6, 6, 1)
    crops = np.asarray(shifted_crops(images, 2, np.array([1, 2])))
    padded = np.pad(images, [(0, 0), (2, 2), (2, 2), (0, 0)], mode="reflect")
    shifts = set()
    for image, crop in zip(padded, crops, strict=True):
        matches = [
            (r, c) for r in range(5) for c in range(5) if np.array_equal(image[r : r + 6, c : c + 6], crop)
        ]
        assert len(matches) == 1
        shifts.add(matches[0])
    assert shifts == {(r, c) for r in range(5) for c in range(5)}  # every shift from -2 to 2 turns up


def test_a_stream_of_epochs_runs_whole_epochs_per_compiled_call():
    """Keras runs whole compiled calls: 5 steps per call on a 44-step epoch would take 45 batches."""
    from cifar.sources.data import steps_per_execution

    assert steps_per_execution(44, 32) == 22 and steps_per_execution(44, 5) == 4
    assert (
        steps_per_execution(7, 32) == 7 and steps_per_execution(13, 5) == 1 and steps_per_execution(1, 1) == 1
    )
    for steps in range(1, 60):
        assert steps % steps_per_execution(steps, 32) == 0


def test_training_on_the_alternating_flip_stream_uses_every_batch_once(tmp_path):
    import warnings

    import keras

    from cifar.sources.data import alternating_flip_dataset, steps_per_epoch, steps_per_execution

    images = np.random.default_rng(0).integers(0, 256, (50, 8, 8, 3), dtype=np.uint8)
    targets = keras.utils.to_categorical(np.arange(50) % 10, 10)
    inputs = keras.Input((8, 8, 3), dtype="uint8")
    outputs = keras.layers.Dense(10)(keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs)))
    model = keras.Model(inputs, outputs)
    steps = steps_per_epoch(50, 8)  # 7
    model.compile("sgd", "mse", steps_per_execution=steps_per_execution(steps, 5))
    stream = alternating_flip_dataset(images, targets, 8, seed=0, epochs=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # Keras warns when the input runs out
        warnings.filterwarnings("ignore", message=".*shuffle.*")
        model.fit(stream, epochs=3, steps_per_epoch=steps, verbose=0)
    assert int(model.optimizer.iterations.numpy()) == 3 * steps


@pytest.mark.slow  # over 2 s: the quick loop leaves it to CI
def test_a_saved_airbench_recipe_model_loads_in_a_fresh_process(tmp_path):
    """`import cifar.modeling.whole_model` registers every layer an exported model may hold."""
    import subprocess
    import sys

    from cifar.modeling.models import build_baseline

    config = BaselineConfig(
        architecture="airbench",
        width=8,
        stem="whiten",
        bn_scale=False,
        bias_lr_scale=64,
        dirac_init=True,
        optimizer="sgd",
    )
    build_baseline(config).save(tmp_path / "recipe.keras")
    code = (
        "import sys, keras, cifar.modeling.whole_model; "
        "m = keras.models.load_model(sys.argv[1]); print(m.get_layer('whiten').__class__.__name__)"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "recipe.keras")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert loaded.returncode == 0 and loaded.stdout.strip() == "PatchWhitening", loaded.stderr[-2000:]


def test_lookahead_moves_the_weights_on_every_fifth_step_by_its_decay():
    import keras

    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse", steps_per_execution=1)
    start = [w.copy() for w in model.get_weights()]
    before, after = [], []

    class Record(keras.callbacks.Callback):
        def __init__(self, into):
            super().__init__()
            self.into = into

        def on_train_batch_end(self, batch, logs=None):
            self.into.append([w.copy() for w in self.model.get_weights()])

    x, y = np.ones((40, 2), np.float32), np.full((40, 1), 5.0, np.float32)
    callbacks = [Record(before), airbench.Lookahead(total_steps=10), Record(after)]
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=callbacks, shuffle=False)
    for step in range(4):  # steps 1-4: untouched
        for b, a in zip(before[step], after[step], strict=True):
            np.testing.assert_array_equal(b, a)
    decay = airbench.lookahead_decay(5, 10)
    assert 0 < decay < 1
    for first, b, a in zip(start, before[4], after[4], strict=True):  # step 5: pulled to the average
        np.testing.assert_allclose(a, first + (1 - decay) * (b - first), rtol=1e-6)
        assert not np.allclose(a, b)
