"""Dataset plumbing: the validation split, the augmented training stream, aligned feature tables
and batches gathered from them in memory."""

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


def validation_rows(hyperparameters: dict, n_train: int) -> np.ndarray:
    """A config's validation rows of `n_train` training images (seeded, as training draws them)."""
    size, seed = int(hyperparameters["validation_size"]), int(hyperparameters["seed"])
    return split_train_validation(n_train, size, seed)[1]


def augmented_dataset(images: np.ndarray, labels: np.ndarray, batch_size: int, seed: int):
    """Shuffled batches, each image mirrored left to right at random and moved by whole pixels
    within `TRANSLATE_PX` (reflect padding). The random ops are stateless, seeded per batch from
    `Dataset.random`: Keras' random layers draw from one shared state in whatever order the
    parallel map's threads reach it, so the same seed gave other batches from one run to the next."""
    import tensorflow as tf

    def augment(batch, batch_labels, batch_seed):
        flip_seed, shift_seed = tf.unstack(tf.random.experimental.stateless_split(batch_seed, 2))
        flip = tf.random.stateless_uniform([tf.shape(batch)[0]], flip_seed) < 0.5
        return shifted_crops(mirrored_where(batch, flip), TRANSLATE_PX, shift_seed), batch_labels

    batches = (
        tf.data.Dataset.from_tensor_slices((images, labels))
        .shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
        .batch(batch_size)
    )
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    return (
        tf.data.Dataset.zip(batches, seeds)
        .map(lambda batch, batch_seed: augment(*batch, batch_seed), num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )


def alternating_flip_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    seed: int,
    epochs: int,
    translate: int = TRANSLATE_PX,
):
    """airbench94's training stream, all `epochs` in one dataset of `steps_per_epoch(...)` batches
    each: every image is flipped or not at random once, then the other way round on every odd
    epoch (each image is seen both ways in any two epochs); each epoch shuffles anew and moves
    every image by whole pixels within `translate` (reflect padding), as airbench's `batch_crop`.
    Whole batches at a time: per-image work would take a third of a 2-core epoch."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    first_flips = tf.constant(rng.random(len(images)) < 0.5)
    orders = tf.constant(np.stack([rng.permutation(len(images)) for _ in range(epochs)]))
    pixels, targets = tf.constant(images), tf.constant(labels)

    def one_epoch(epoch):
        def augment(rows):
            batch = tf.gather(pixels, rows)
            flip = tf.not_equal(tf.gather(first_flips, rows), tf.equal(epoch % 2, 1))
            batch = mirrored_where(batch, flip)
            if translate:
                batch_seed = tf.stack(
                    [tf.cast(seed, tf.int64) * 1_000_003 + epoch, tf.cast(rows[0], tf.int64)]
                )
                batch = shifted_crops(batch, translate, batch_seed)
            return batch, tf.gather(targets, rows)

        order = tf.data.Dataset.from_tensor_slices(orders[epoch]).batch(batch_size)
        return order.map(augment, num_parallel_calls=tf.data.AUTOTUNE)

    return tf.data.Dataset.range(epochs).flat_map(one_epoch).prefetch(tf.data.AUTOTUNE)


def mirrored_where(batch, flip):
    """The images of `batch` (B, H, W, C) whose `flip` (B,) is true, mirrored left to right."""
    import tensorflow as tf

    return tf.where(flip[:, None, None, None], tf.reverse(batch, [2]), batch)


def shifted_crops(batch, translate: int, seed):
    """Each image of `batch` (B, H, W, C) moved by its own whole-pixel shift in [-translate,
    translate] on both axes, the edges reflected in (a crop of the reflect-padded image)."""
    import tensorflow as tf

    height, width = batch.shape[1], batch.shape[2]
    padded = tf.pad(batch, [[0, 0], [translate, translate], [translate, translate], [0, 0]], "REFLECT")
    starts = tf.random.stateless_uniform([tf.shape(batch)[0], 2], seed, 0, 2 * translate + 1, tf.int32)
    rows = starts[:, :1] + tf.range(height)[None]  # (B, H)
    columns = starts[:, 1:] + tf.range(width)[None]  # (B, W)
    picked_rows = tf.gather(padded, rows, axis=1, batch_dims=1)  # (B, H, W + 2t, C)
    return tf.gather(picked_rows, columns, axis=2, batch_dims=1)


def steps_per_epoch(n: int, batch_size: int) -> int:
    return -(-n // batch_size)


def steps_per_execution(steps: int, wanted: int) -> int:
    """The largest divisor of an epoch's `steps` up to `wanted`. Keras runs whole compiled calls:
    on a stream of all epochs, a call that crossed an epoch's end would take the next epoch's
    batches (and the last epoch would run out)."""
    return max(d for d in range(1, max(1, min(steps, wanted)) + 1) if steps % d == 0)


def aligned_empty(shape: tuple[int, ...], dtype=np.float32, alignment: int = 64) -> np.ndarray:
    """`np.empty` whose data starts on a 64-byte boundary, so TensorFlow can use it without a copy.

    numpy aligns to 16 bytes; TensorFlow's CPU kernels need 64. Training wraps the cached
    features with DLPack (`as_tensor`): on a machine where touching fresh memory runs at
    ~0.4 GB/s, each avoided copy of the 400 MB training features saves about a second.
    """
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = np.empty(nbytes + alignment, np.uint8)
    offset = -raw.ctypes.data % alignment
    return raw[offset : offset + nbytes].view(dtype).reshape(shape)


def as_tensor(array: np.ndarray):
    """A TensorFlow tensor over `array`'s own memory when it can be (C-contiguous, writeable,
    64-byte aligned, as `aligned_empty` makes it); otherwise a copy.

    The tensor keeps the memory alive; writing to `array` afterwards changes the tensor.
    """
    import tensorflow as tf

    flags = array.flags
    if flags.c_contiguous and flags.writeable and array.ctypes.data % 64 == 0 and array.size:
        return tf.experimental.dlpack.from_dlpack(array.__dlpack__())
    return tf.convert_to_tensor(array)


def gathered_batches(table, rows: np.ndarray, batch_size: int, labels=None, seed: int | None = None):
    """Batches of `table[rows]` (and `labels[rows]`), gathered on the fly from tensors in memory.

    With a seed, the rows are reshuffled every epoch, like `fit(shuffle=True)`. Unlike passing
    `table[rows]` to Keras, this copies neither the split nor its tensor conversion.
    """
    import tensorflow as tf

    batches = tf.data.Dataset.from_tensor_slices(np.asarray(rows, np.int64))
    if seed is not None:
        batches = batches.shuffle(len(rows), seed=seed, reshuffle_each_iteration=True)
    batches = batches.batch(batch_size)
    if labels is None:
        batches = batches.map(lambda i: tf.gather(table, i))
    else:
        batches = batches.map(lambda i: (tf.gather(table, i), tf.gather(labels, i)))
    return batches.prefetch(tf.data.AUTOTUNE)
