"""airbench94's recipe pieces in Keras (Keller Jordan, `KellerJordan/cifar10-airbench`,
`legacy/airbench94.py`), each switched on by an option of `BaselineConfig`:

- `PatchWhitening` (`stem="whiten"`): the first layer is a 2x2 convolution whose 24 filters are
  the whitening transform of the training images' 2x2 patches (`init_whitening_conv`: each
  eigenvector of the patch covariance over sqrt(eigenvalue + 5e-4), and its negative), frozen;
  its bias trains. airbench also freezes the bias after 3 epochs, a speed trick its ablations
  (`cifar10-zoo/airbench_ablations`, main4_freeze) found to change no accuracy: not done here.
- `ScaledBias` (`bias_lr_scale`): BatchNorm's shift as `scale * b`; under SGD that multiplies
  the shift's learning rate by scale^2 (airbench: `bias_scaler` 64 = 8^2) with one optimizer.
- `PartialDirac` (`dirac_init`): a convolution's first `in` filters start as the identity
  (airbench's `Conv.reset_parameters`).
- `Lookahead` (`lookahead`): every 5 steps the weights (BatchNorm statistics included) move to
  an exponential average whose decay grows as 0.95^5 * (step / total)^3; at the end the weights
  are the average (airbench's `LookaheadState` and `alpha_schedule`).
- `Triangle` (`lr_schedule="triangle"`): 0.2 -> 1 -> 0.07 times the peak, the peak at 23 % of
  the steps (airbench's `get_lr`).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

WHITEN_SIZE = 2  # patch side
WHITEN_EPS = 5e-4
WHITEN_IMAGES = 5000  # training images whose patches give the covariance (airbench: the first 5,000)
LOOKAHEAD_EVERY = 5  # steps


def patches(images: np.ndarray, size: int = WHITEN_SIZE) -> np.ndarray:
    """Every `size` x `size` patch of float images (N, H, W, C), flattened as a Keras kernel is
    laid out (row, column, channel): (N * (H - size + 1) * (W - size + 1), size * size * C)."""
    windows = np.lib.stride_tricks.sliding_window_view(images, (size, size), axis=(1, 2))
    # (N, H', W', C, size, size) -> (N, H', W', size, size, C)
    return windows.transpose(0, 1, 2, 4, 5, 3).reshape(-1, size * size * images.shape[-1])


def whitening_kernel(images: np.ndarray, eps: float = WHITEN_EPS) -> np.ndarray:
    """(size, size, C, 2 * size * size * C) filters that whiten the patches of `images`
    (normalized floats): eigenvectors of their covariance scaled by 1/sqrt(eigenvalue + eps),
    largest first, then the same negated (so a following GELU keeps both signs)."""
    flat = patches(np.asarray(images, np.float64))
    covariance = flat.T @ flat / len(flat)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    order = np.argsort(eigenvalues)[::-1]
    filters = eigenvectors[:, order] / np.sqrt(eigenvalues[order] + eps)
    channels = images.shape[-1]
    both = np.concatenate([filters, -filters], axis=1)
    return both.reshape(WHITEN_SIZE, WHITEN_SIZE, channels, -1).astype(np.float32)


@keras.saving.register_keras_serializable(package="cifar")
def gelu(x):
    """Exact GELU, x * Phi(x), written with erf as airbench's `nn.GELU()` computes it. Keras'
    "gelu" is TensorFlow's erfc form, an op ONNX lacks: its ONNX export would not load."""
    return 0.5 * x * (1.0 + ops.erf(x * 0.7071067811865476))


@keras.saving.register_keras_serializable(package="cifar")
class PatchWhitening(layers.Layer):
    """A 2x2 valid convolution with a frozen kernel (`set_kernel_from`) and a trained bias."""

    def build(self, input_shape):
        channels = input_shape[-1]
        filters = 2 * WHITEN_SIZE * WHITEN_SIZE * channels
        shape = (WHITEN_SIZE, WHITEN_SIZE, channels, filters)
        self.kernel = self.add_weight(
            shape=shape, initializer="glorot_uniform", trainable=False, name="kernel"
        )
        self.bias = self.add_weight(shape=(filters,), initializer="zeros", name="bias")

    def call(self, images):
        return ops.conv(images, self.kernel, padding="valid") + self.bias

    def set_kernel_from(self, images: np.ndarray) -> None:
        """Whiten the patches of `images` (as this layer receives them: normalized floats)."""
        self.kernel.assign(whitening_kernel(images))


@keras.saving.register_keras_serializable(package="cifar")
class ScaledBias(layers.Layer):
    """x + scale * b (b per channel, trained): SGD moves it scale^2 times faster than plain b."""

    def __init__(self, scale: float, regularizer=None, **kwargs):
        super().__init__(**kwargs)
        self.scale = float(scale)
        self.regularizer = keras.regularizers.get(regularizer)

    def build(self, input_shape):
        self.bias = self.add_weight(
            shape=(input_shape[-1],), initializer="zeros", regularizer=self.regularizer, name="bias"
        )

    def call(self, x):
        return x + self.scale * self.bias

    def get_config(self):
        return {
            **super().get_config(),
            "scale": self.scale,
            "regularizer": keras.regularizers.serialize(self.regularizer),
        }


@keras.saving.register_keras_serializable(package="cifar")
class PartialDirac(keras.initializers.Initializer):
    """Glorot uniform, except that output filter i < inputs is the identity on input channel i."""

    def __init__(self, seed=None):
        self.seed = seed

    def __call__(self, shape, dtype=None):
        rows, cols, inputs, outputs = shape
        kernel = np.array(keras.initializers.GlorotUniform(self.seed)(shape, "float32"))
        identity = min(inputs, outputs)
        kernel[..., :identity] = 0.0
        kernel[rows // 2, cols // 2, np.arange(identity), np.arange(identity)] = 1.0
        return ops.convert_to_tensor(kernel, dtype=dtype or "float32")

    def get_config(self):
        return {"seed": self.seed}


def lookahead_decay(step: int, total_steps: int) -> float:
    """How much of the average the weights keep at `step` (airbench's `alpha_schedule`)."""
    return 0.95**LOOKAHEAD_EVERY * (min(step, total_steps) / total_steps) ** 3


class Lookahead(keras.callbacks.Callback):
    """Every `LOOKAHEAD_EVERY` steps: average <- decay * average + (1 - decay) * weights, then
    weights <- average; at the end of training, weights <- average."""

    def __init__(self, total_steps: int):
        super().__init__()
        self.total_steps = max(1, total_steps)

    def _variables(self):
        return [v for v in self.model.weights if "float" in str(v.dtype)]

    def on_train_begin(self, logs=None):
        self.average = [np.array(v.numpy(), np.float32) for v in self._variables()]
        self.updated_at = 0

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        if step // LOOKAHEAD_EVERY == self.updated_at // LOOKAHEAD_EVERY:
            return  # train with steps_per_execution 1 to update on exactly every 5th step
        self.updated_at = step
        decay = lookahead_decay(step, self.total_steps)
        for average, variable in zip(self.average, self._variables(), strict=True):
            average += (1.0 - decay) * (variable.numpy() - average)
            variable.assign(average)

    def on_train_end(self, logs=None):
        for average, variable in zip(self.average, self._variables(), strict=True):
            variable.assign(average)


@keras.saving.register_keras_serializable(package="cifar")
class Triangle(keras.optimizers.schedules.LearningRateSchedule):
    """peak * (0.2 -> 1 over the first 23 % of the steps, then -> 0.07 at the last)."""

    START, END, PEAK_AT = 0.2, 0.07, 0.23

    def __init__(self, peak: float, total_steps: int):
        self.peak, self.total_steps = peak, max(1, total_steps)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warmup = max(1, int(self.total_steps * self.PEAK_AT))
        up = self.START + (1.0 - self.START) * step / warmup
        down = 1.0 + (self.END - 1.0) * (step - warmup) / max(1, self.total_steps - warmup)
        return self.peak * ops.where(step < warmup, up, ops.maximum(down, self.END))

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps}
