"""A run's whole model as one `keras.Model`: uint8 32 x 32 pixels in, probabilities out.

The Predictor's 32 px path in one graph: a transfer run's resize, frozen InceptionV3 and head,
or a baseline's network; the mean over the image and its mirror image where the run uses
test-time flip; the run's temperature (softmax(log p / T)) where it is calibrated. Its two small
layers are registered with Keras, so a saved `.keras` file loads after `import cifar.whole_model`.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from cifar.calibration import SMALLEST_PROBABILITY
from cifar.config import IMAGE_SHAPE
from cifar.runs import Run, RunError


@keras.saving.register_keras_serializable(package="cifar")
class HorizontalFlip(layers.Layer):
    """Images mirrored left to right (test-time flip's second view)."""

    def call(self, images):
        return ops.flip(images, axis=2)


@keras.saving.register_keras_serializable(package="cifar")
class TemperatureScaling(layers.Layer):
    """softmax(log(p) / T): `cifar.calibration.temperature_scaled` as a layer."""

    def __init__(self, temperature: float, **kwargs):
        super().__init__(**kwargs)
        self.temperature = float(temperature)

    def call(self, probabilities):
        logs = ops.log(ops.clip(probabilities, SMALLEST_PROBABILITY, 1.0))
        return ops.softmax(logs / self.temperature, axis=-1)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}


def build_run_model(run: Run, calibrated: bool = True) -> keras.Model:
    from cifar.config import load_config

    if run.model == "ensemble":
        raise RunError(f"{run.run_id} is an ensemble: load or export its members one by one")
    config = load_config(run.hyperparameters)
    network = _network(run)
    pixels = keras.Input(IMAGE_SHAPE, dtype="uint8", name="pixels")
    probabilities = network(pixels)
    if config.tta_flip:
        mirrored = network(HorizontalFlip(name="mirror")(pixels))
        probabilities = layers.Average(name="test_time_flip")([probabilities, mirrored])
    if calibrated and run.temperature != 1.0:
        probabilities = TemperatureScaling(run.temperature, name="temperature")(probabilities)
    model = keras.Model(pixels, probabilities, name=run.run_id.replace("-", "_"))
    # Keras would XLA-compile `predict` on a GPU; XLA resizes wrongly (`features.outside_xla`).
    model.jit_compile = False
    return model


def _network(run: Run) -> keras.Model:
    """uint8 pixels -> raw probabilities (one view)."""
    from cifar.config import load_config
    from cifar.models import after_resize
    from cifar.restore import load_model

    _, network = load_model(run)
    if run.model == "baseline":
        return network
    return after_resize(load_config(run.hyperparameters), network, "network")
