"""A run's whole model as one `keras.Model`: uint8 32 x 32 pixels in, probabilities out.

The Predictor's 32 px path in one graph: a transfer run's resize, frozen InceptionV3 and head,
or a baseline's network; the weighted mean over the test-time views where the run uses them
(`cifar.tta`: mirror image, one-pixel shifts); the run's temperature (softmax(log p / T)) where
it is calibrated. Its small layers are registered with Keras, so a saved `.keras` file loads
after `import cifar.modeling.whole_model`.
"""

from __future__ import annotations

import keras
from keras import layers, ops

import cifar.modeling.airbench  # noqa: F401  (registers the airbench layers a saved model may hold)
import cifar.modeling.models  # noqa: F401  (and the head's Normalization)
from cifar import tta
from cifar.calibration import SMALLEST_PROBABILITY
from cifar.config import IMAGE_SHAPE, TEMPERATURE_RANGE
from cifar.store.runs import Run, RunError


@keras.saving.register_keras_serializable(package="cifar")
class TestTimeView(layers.Layer):
    """One view of test-time augmentation (`cifar.tta`): shifted by `shift` pixels, mirrored."""

    def __init__(self, mirror: bool, shift: int, **kwargs):
        super().__init__(**kwargs)
        self.view = tta.View(1.0, bool(mirror), int(shift))

    def call(self, images):
        return tta.view_of(images, self.view)

    def get_config(self):
        return {**super().get_config(), "mirror": self.view.mirror, "shift": self.view.shift}


@keras.saving.register_keras_serializable(package="cifar")
class WeightedAverage(layers.Layer):
    """sum(weight_i * input_i): the test-time views' answers, weighted as `cifar.tta.views` says."""

    def __init__(self, weights: list[float], **kwargs):
        super().__init__(**kwargs)
        self.view_weights = [float(w) for w in weights]

    def call(self, inputs):
        return sum(w * x for w, x in zip(self.view_weights, inputs, strict=True))

    def get_config(self):
        return {**super().get_config(), "weights": self.view_weights}


@keras.saving.register_keras_serializable(package="cifar")
class TemperatureScaling(layers.Layer):
    """softmax(log(p) / T): `cifar.calibration.temperature_scaled` as a layer."""

    def __init__(self, temperature: float, **kwargs):
        super().__init__(**kwargs)
        low, high = TEMPERATURE_RANGE  # outside it the answers are NaN or uniform (`cifar.config`)
        if not low <= float(temperature) <= high:
            raise ValueError(f"a temperature must be from {low} to {high}, not {temperature!r}")
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
    views = tta.views(config.tta_flip, getattr(config, "tta_translate", False))
    probabilities = network(pixels)
    if len(views) > 1:
        answers = [
            network(TestTimeView(view.mirror, view.shift, name=f"view{i}")(pixels)) if i else probabilities
            for i, view in enumerate(views)
        ]
        weights = [view.weight for view in views]
        probabilities = WeightedAverage(weights, name="test_time_average")(answers)
    if calibrated and run.temperature != 1.0:
        probabilities = TemperatureScaling(run.temperature, name="temperature")(probabilities)
    model = keras.Model(pixels, probabilities, name=run.run_id.replace("-", "_"))
    # Keras would XLA-compile `predict` on a GPU; XLA resizes wrongly (`features.outside_xla`).
    model.jit_compile = False
    return model


def _network(run: Run) -> keras.Model:
    """uint8 pixels -> raw probabilities (one view)."""
    from cifar.config import load_config
    from cifar.modeling.models import after_resize
    from cifar.modeling.restore import load_model

    _, network = load_model(run)
    if run.model == "baseline":
        return network
    return after_resize(load_config(run.hyperparameters), network, "network")
