"""A stand-in for the ImageNet InceptionV3 whose features depend on the image, and photo-like images.

A randomly initialised InceptionV3 with its default BatchNormalization statistics squashes every
image to nearly the same features, so a test comparing two ways of computing them would pass
even if one looked at the wrong pixels. Calibrating the statistics on a batch fixes that.
"""

from __future__ import annotations

import numpy as np


def structured_images(n: int, seed: int) -> np.ndarray:
    """Images that differ as photos do: own colour, own gradient direction, some noise."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(-1, 1, 32)
    yy, xx = np.meshgrid(ramp, ramp, indexing="ij")
    colour = rng.uniform(40, 215, (n, 1, 1, 3))
    angle = rng.uniform(0, 2 * np.pi, (n, 1, 1, 1))
    gradient = (np.cos(angle) * xx[None, :, :, None] + np.sin(angle) * yy[None, :, :, None]) * 40
    noise = rng.normal(0, 20, (n, 32, 32, 3))
    return np.clip(np.round(colour + gradient + noise), 0, 255).astype(np.uint8)


def calibrated_inception(seed: int, size: int = 75):
    """A seeded InceptionV3 (no top) whose moving statistics are calibrated, then perturbed."""
    import keras

    keras.utils.set_random_seed(seed)
    base = keras.applications.InceptionV3(weights=None, include_top=False, input_shape=(size, size, 3))
    # Momentum 0: moving = batch statistics, so activations neither vanish nor explode and the
    # features depend on the image; then perturb them, so training mode would differ.
    norms = [layer for layer in base.layers if isinstance(layer, keras.layers.BatchNormalization)]
    calibration = keras.ops.image.resize(
        structured_images(16, seed=99).astype(np.float32) / 127.5 - 1, (size, size), interpolation="bilinear"
    )
    for layer in norms:
        layer.momentum = 0.0
    base(calibration, training=True)
    rng = np.random.default_rng(seed)
    for layer in norms:
        layer.momentum = 0.99
        beta, mean, var = layer.get_weights()  # InceptionV3 uses scale=False
        layer.set_weights(
            [
                rng.normal(0, 0.1, beta.shape).astype(np.float32),
                (mean + rng.normal(0, 0.1, mean.shape) * np.sqrt(var)).astype(np.float32),
                (var * rng.uniform(0.8, 1.25, var.shape)).astype(np.float32),
            ]
        )
    return base
