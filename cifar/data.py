"""Dataset plumbing: the validation split and the augmented training stream."""

from __future__ import annotations

import numpy as np

TRANSLATE_PX = 2  # random translation of the training images, in pixels


def split_train_validation(n: int, validation_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted indices of the fitting and validation parts of `n` training images (seeded).

    Small data (tests, `--limit`) keeps at most a fifth of the images for validation.
    """
    order = np.random.default_rng(seed).permutation(n)
    validation_size = min(validation_size, n // 5)
    return np.sort(order[validation_size:]), np.sort(order[:validation_size])


def augmented_dataset(images: np.ndarray, labels: np.ndarray, batch_size: int, seed: int):
    """Shuffled batches with random horizontal flips and translations (reflect padding)."""
    import keras
    import tensorflow as tf

    flip = keras.layers.RandomFlip("horizontal", seed=seed)
    shift = TRANSLATE_PX / images.shape[1]
    translate = keras.layers.RandomTranslation(shift, shift, fill_mode="reflect", seed=seed)

    def augment(batch, batch_labels):
        batch = tf.cast(batch, tf.float32)
        batch = translate(flip(batch, training=True), training=True)
        return tf.cast(tf.round(batch), tf.uint8), batch_labels

    return (
        tf.data.Dataset.from_tensor_slices((images, labels))
        .shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
        .batch(batch_size)
        .map(augment, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )
