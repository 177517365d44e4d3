"""Pure model builders: a typed config in, a Keras model out. Preprocessing lives inside.

Every model takes raw uint8 pixels of shape (32, 32, 3), so a saved model needs nothing else.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

import keras
import numpy as np
from keras import layers, ops

from cifar.config import IMAGE_SHAPE, NUM_CLASSES, POOLED_LAYERS, BaselineConfig, TransferConfig

CIFAR_MEAN = (125.31, 122.95, 113.87)  # training-set pixel mean per channel (0..255)
CIFAR_STD = (62.99, 62.09, 66.70)
WARMUP_FRACTION = 0.2  # share of the steps spent warming up in the one-cycle schedule


def normalized(pixels: np.ndarray) -> np.ndarray:
    """uint8 pixels as the airbench net's `normalize` layer gives them on: float32 (x - mean) / std."""
    return ((pixels.astype(np.float32) - np.float32(CIFAR_MEAN)) / np.float32(CIFAR_STD)).astype(np.float32)


def _regularizer(weight_decay: float):
    return keras.regularizers.L2(weight_decay) if weight_decay else None


# ----------------------------------------------------------------------------- baseline CNN


# Keras' dtype policy is process-wide: builds in other threads (the dashboard's sessions) wait.
_POLICY_LOCK = threading.RLock()


@contextlib.contextmanager
def computing_in(precision: str):
    """Layers built inside compute in `precision` (a Keras dtype policy such as "mixed_bfloat16";
    their weights stay float32); the global policy is restored on the way out."""
    with _POLICY_LOCK:
        previous = keras.mixed_precision.global_policy()
        keras.mixed_precision.set_global_policy(precision)
        try:
            yield
        finally:
            keras.mixed_precision.set_global_policy(previous)


def build_baseline(config: BaselineConfig) -> keras.Model:
    """The from-scratch CNN named by `config.architecture`, computing in `config.precision`
    (its probabilities are float32 either way)."""
    with computing_in(config.precision):
        if config.architecture == "airbench":
            return build_airbench(config)
        return build_tutorial_cnn(config)


def build_tutorial_cnn(config: BaselineConfig) -> keras.Model:
    """The TensorFlow "Convolutional Neural Network" tutorial's CNN (about 70 % test).

    The write-up does not give its "common CNN" layers; this classic 3-conv net is the one most
    CIFAR-10 write-ups copy, and it lands near the reported 71.1 %.
    """
    reg = _regularizer(config.weight_decay)
    inputs = keras.Input(IMAGE_SHAPE, dtype="uint8", name="pixels")
    x = layers.Rescaling(1 / 255, name="rescale")(inputs)
    x = layers.Conv2D(32, 3, activation="relu", kernel_regularizer=reg, name="conv1")(x)
    x = layers.MaxPooling2D(name="pool1")(x)
    x = layers.Conv2D(64, 3, activation="relu", kernel_regularizer=reg, name="conv2")(x)
    x = layers.MaxPooling2D(name="pool2")(x)
    x = layers.Conv2D(64, 3, activation="relu", kernel_regularizer=reg, name="conv3")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(64, activation="relu", kernel_regularizer=reg, name="dense")(x)
    if config.dropout:
        x = layers.Dropout(config.dropout, name="dropout")(x)
    outputs = layers.Dense(NUM_CLASSES, activation="softmax", dtype="float32", name="predictions")(x)
    return keras.Model(inputs, outputs, name="baseline_cnn")


def build_airbench(config: BaselineConfig) -> keras.Model:
    """A fast from-scratch net shaped like airbench94 (Keller Jordan, 2024), in plain Keras.

    Stem, then three blocks of conv -> max pool -> BN -> GELU -> conv -> BN -> GELU with widths
    (w, 4w, 4w); `width=64` is airbench94's shape (2.0 M parameters), 32 is half. The stem is a
    3x3 conv with BatchNorm, or airbench's frozen 2x2 patch whitening (`stem="whiten"`, set from
    the training images by `PatchWhitening.set_kernel_from`); `bn_scale`, `bias_lr_scale` and
    `dirac_init` are airbench's BatchNorm and initialisation (cifar/modeling/airbench.py).
    """
    from cifar.modeling.airbench import PartialDirac, PatchWhitening, gelu

    reg = _regularizer(config.weight_decay)
    widths = (config.width, 4 * config.width, 4 * config.width)

    def conv(x, filters, name):
        init = PartialDirac() if config.dirac_init else "glorot_uniform"
        return layers.Conv2D(
            filters,
            3,
            padding="same",
            use_bias=False,
            kernel_initializer=init,
            kernel_regularizer=reg,
            name=name,
        )(x)

    inputs = keras.Input(IMAGE_SHAPE, dtype="uint8", name="pixels")
    x = layers.Rescaling(1.0, name="to_float")(inputs)
    # (x - mean) / std as a Rescaling: its constants live in the graph, where `Normalization`'s
    # tensors made at build time would become extra inputs of an ONNX export.
    scale = [1 / s for s in CIFAR_STD]
    x = layers.Rescaling(scale, [-m * k for m, k in zip(CIFAR_MEAN, scale, strict=True)], name="normalize")(x)
    if config.stem == "whiten":
        x = layers.Activation(gelu, name="whiten_gelu")(PatchWhitening(name="whiten")(x))
    else:
        x = _bn_gelu(conv(x, widths[0] // 2, "stem"), "stem", config, reg)
    for i, width in enumerate(widths, start=1):
        x = conv(x, width, f"block{i}_conv1")
        x = layers.MaxPooling2D(name=f"block{i}_pool")(x)
        x = _bn_gelu(x, f"block{i}_conv1", config, reg)
        x = _bn_gelu(conv(x, width, f"block{i}_conv2"), f"block{i}_conv2", config, reg)
    x = layers.GlobalMaxPooling2D(name="pool")(x)
    if config.dropout:
        x = layers.Dropout(config.dropout, name="dropout")(x)
    logits = layers.Dense(NUM_CLASSES, use_bias=False, name="logits")(x)
    logits = layers.Rescaling(1 / 9, name="logit_scale")(logits)  # as airbench: tames early steps
    outputs = layers.Activation("softmax", dtype="float32", name="predictions")(logits)
    return keras.Model(inputs, outputs, name="baseline_airbench")


def _bn_gelu(x, name: str, config: BaselineConfig, reg):
    """BatchNorm (airbench's momentum 0.6 and epsilon), its shift scaled with `bias_lr_scale`, GELU."""
    from cifar.modeling.airbench import ScaledBias, gelu

    scaled = config.bias_lr_scale != 1.0
    x = layers.BatchNormalization(
        momentum=0.6, epsilon=1e-12, scale=config.bn_scale, center=not scaled, name=f"{name}_bn"
    )(x)
    if scaled:
        x = ScaledBias(config.bias_lr_scale**0.5, reg, name=f"{name}_shift")(x)
    return layers.Activation(gelu, name=f"{name}_gelu")(x)


# ----------------------------------------------------------------------------- transfer model


def inception_scaling() -> layers.Rescaling:
    """uint8 pixels -> [-1, 1], Inception's input range (before or after the resize: it is linear)."""
    return layers.Rescaling(1 / 127.5, offset=-1.0, name="inception_preprocess")


def build_resize(config: TransferConfig) -> keras.Model:
    """uint8 32x32 pixels -> the base's input: resized and scaled to [-1, 1] (Inception's range)."""
    inputs = keras.Input(IMAGE_SHAPE, dtype="uint8", name="pixels")
    x = inception_scaling()(inputs)
    if config.resize == "upsample7":
        x = layers.UpSampling2D(7, name="upsample7")(x)  # 32 * 7 = 224 px, nearest neighbour
    else:
        # `training=False` pinned in the graph: Keras' image preprocessing layers declare
        # `call(data, training=True)`, and a layer's default becomes the call's training mode for
        # every layer after it; called as `model(x)`, the head's dropout would be live.
        resize = layers.Resizing(config.input_size, config.input_size, config.resize, name="resize")
        x = resize(x, training=False)
    return keras.Model(inputs, x, name="resize_and_preprocess")


def build_base(config: TransferConfig, weights_path: Path | str | None) -> keras.Model:
    """Frozen InceptionV3 without its classifier; `exact2015` restores the 2015 max pool."""
    size = config.input_size
    base = keras.applications.InceptionV3(weights=None, include_top=False, input_shape=(size, size, 3))
    if config.architecture == "exact2015":
        base = _with_exact_2015_pool(base)
    if weights_path is not None:
        base.load_weights(str(weights_path))
    base.trainable = False
    return base


def _with_exact_2015_pool(base: keras.Model) -> keras.Model:
    """The 2015 graph's last pool branch is a 3x3/1 max pool where Keras has an average pool."""
    pools = [layer for layer in base.layers if isinstance(layer, layers.AveragePooling2D)]
    last = pools[-1].name

    def clone(layer):
        if layer.name == last:
            return layers.MaxPooling2D((3, 3), strides=1, padding="same", name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    return keras.models.clone_model(base, clone_function=clone)


def build_pooled_base(config: TransferConfig, weights_path: Path | str | None) -> keras.Model:
    """Resized, scaled images -> pooled features: the frozen base and its average pools.

    The reference pools the last block (mixed10, 2048-d). `pooled_layers="mixed7-10"` also pools
    mixed7..mixed9 and concatenates them: mid-level features transfer better to upscaled 32 px images.
    """
    base = build_base(config, weights_path)
    images = keras.Input((config.input_size, config.input_size, 3), name="resized")
    names = POOLED_LAYERS[config.pooled_layers]
    if names == ("mixed10",):
        features = layers.GlobalAveragePooling2D(name="avg_pool")(base(images, training=False))
    else:
        taps = keras.Model(base.input, [base.get_layer(n).output for n in names], name="inception_v3_taps")
        blocks = taps(images, training=False)
        pooled = [
            layers.GlobalAveragePooling2D(name=f"{name}_pool")(block)
            for name, block in zip(names, blocks, strict=True)
        ]
        features = layers.Concatenate(name="pooled_features")(pooled)
    return keras.Model(images, features, name="pooled_base")


def build_feature_extractor(config: TransferConfig, weights_path: Path | str | None) -> keras.Model:
    """uint8 pixels -> pooled features: everything of the transfer model before the head."""
    return after_resize(config, build_pooled_base(config, weights_path), "feature_extractor")


def after_resize(config: TransferConfig, model: keras.Model, name: str) -> keras.Model:
    """`model` (which takes resized images) behind `build_resize`: one model on uint8 pixels."""
    resize = build_resize(config)
    return keras.Model(resize.input, model(resize.output), name=name)


@keras.saving.register_keras_serializable(package="cifar", name="Standardization")
class Normalization(layers.Normalization):
    """An adapted `keras.layers.Normalization` that reads its mean and variance from its variables
    at every call. Keras' own keeps them as tensors made when adapted or loaded, which a traced
    export takes for extra inputs (an ONNX file that asks for them beside the pixels). Named as
    Keras' own because weights files find a layer's variables by its class name."""

    def call(self, inputs):
        inputs = ops.convert_to_tensor(inputs, self.compute_dtype)
        mean = ops.cast(ops.reshape(self.adapt_mean, self._broadcast_shape), self.compute_dtype)
        variance = ops.cast(ops.reshape(self.adapt_variance, self._broadcast_shape), self.compute_dtype)
        return (inputs - mean) / ops.maximum(ops.sqrt(variance), keras.backend.epsilon())


def build_head(config: TransferConfig) -> keras.Model:
    """[Normalization] -> Dense(relu) -> Dropout -> Dense(10, softmax) on pooled features.

    With `standardize`, the Normalization layer must be `adapt`ed to the training features
    before training; its mean and variance are saved with the head's weights.
    """
    reg = _regularizer(config.weight_decay)
    inputs = keras.Input((config.feature_dim,), name="features")
    x = Normalization(name="head_standardize")(inputs) if config.standardize else inputs
    x = layers.Dense(config.head_units, activation="relu", kernel_regularizer=reg, name="head_dense")(x)
    x = layers.Dropout(config.dropout, name="head_dropout")(x)
    outputs = layers.Dense(NUM_CLASSES, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="head")


def build_transfer_model(
    config: TransferConfig, weights_path: Path | str | None, head: keras.Model | None = None
) -> keras.Model:
    """The reference's model end to end: resize, frozen InceptionV3, average pool, head."""
    return after_resize(config, build_transfer_network(config, weights_path, head), "inception_transfer")


def build_transfer_network(
    config: TransferConfig, weights_path: Path | str | None, head: keras.Model | None = None
) -> keras.Model:
    """The transfer model after its resize: resized, scaled images -> class probabilities."""
    pooled = build_pooled_base(config, weights_path)
    outputs = (head or build_head(config))(pooled.output)
    return keras.Model(pooled.input, outputs, name="transfer_network")


def make_optimizer(config, steps_per_epoch: int | None = None) -> keras.optimizers.Optimizer:
    """The configured optimizer; `onecycle` and `triangle` schedules count `steps_per_epoch`."""
    from cifar.modeling.airbench import Triangle

    learning_rate = config.learning_rate
    total = config.epochs * (steps_per_epoch or 0)
    if config.lr_schedule == "onecycle" and total:
        learning_rate = OneCycle(config.learning_rate, total, warmup=int(WARMUP_FRACTION * total))
    elif config.lr_schedule == "triangle" and total:
        learning_rate = Triangle(config.learning_rate, total)
    momentum = getattr(config, "momentum", 0.9)  # the transfer head's SGD keeps 0.9
    kinds = {
        "adam": FusedAdam,
        "adamw": keras.optimizers.AdamW,
        "sgd": lambda learning_rate: keras.optimizers.SGD(learning_rate, momentum=momentum, nesterov=True),
        "rmsprop": keras.optimizers.RMSprop,
    }
    return kinds[config.optimizer](learning_rate=learning_rate)


@keras.saving.register_keras_serializable(package="cifar")
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """Triangular learning rate: 0 -> peak over `warmup` steps, then linearly back to 0."""

    def __init__(self, peak: float, total_steps: int, warmup: int):
        self.peak, self.total_steps, self.warmup = peak, total_steps, max(1, warmup)

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        up = step / self.warmup
        down = (self.total_steps - step) / max(1, self.total_steps - self.warmup)
        return self.peak * keras.ops.clip(keras.ops.minimum(up, down), 0.0, 1.0)

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps, "warmup": self.warmup}


@keras.saving.register_keras_serializable(package="cifar")
class FusedAdam(keras.optimizers.Adam):
    """Keras' Adam, applied with TensorFlow's fused `ResourceApplyAdam` kernel where it can be.

    Same update as `keras.optimizers.Adam` (epsilon outside the square root, bias-corrected step
    size), but one pass over each variable instead of about ten element-wise ops; for the small
    head, whose steps are memory-bound, that is a fifth of the training time on a CPU. Falls back
    to Keras' update under a tf.distribute strategy, with AMSGrad and for sparse gradients.
    """

    def update_step(self, gradient, variable, learning_rate):
        import tensorflow as tf

        if (
            keras.backend.backend() != "tensorflow"
            or self.amsgrad
            or tf.distribute.has_strategy()
            or isinstance(gradient, tf.IndexedSlices)
            or not hasattr(variable, "handle")
        ):
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        index = self._get_variable_index(variable)
        m, v = self._momentums[index], self._velocities[index]
        step = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle,
            m=m.value.handle,
            v=v.value.handle,
            beta1_power=tf.pow(beta_1, step),
            beta2_power=tf.pow(beta_2, step),
            lr=tf.cast(learning_rate, dtype),
            beta1=beta_1,
            beta2=beta_2,
            epsilon=tf.cast(self.epsilon, dtype),
            grad=tf.cast(gradient, dtype),
        )
