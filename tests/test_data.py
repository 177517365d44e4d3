"""Dataset plumbing: the validation split, zero-copy tensors and batches gathered by row."""

from __future__ import annotations

import numpy as np
import pytest

from cifar.sources.data import (
    aligned_empty,
    as_tensor,
    gathered_batches,
    split_train_validation,
    steps_per_epoch,
    steps_per_execution,
    validation_rows,
)


def test_split_is_seeded_disjoint_and_complete():
    fit, val = split_train_validation(100, 10, seed=3)
    assert len(val) == 10 and len(fit) == 90
    assert sorted([*fit, *val]) == list(range(100))
    again = split_train_validation(100, 10, seed=3)
    assert (again[1] == val).all() and not (split_train_validation(100, 10, seed=4)[1] == val).all()


@pytest.mark.parametrize(("n", "validation_size"), [(100, 20), (100, 5000), (7, 3), (50, 0), (20, 10)])
def test_split_sizes_are_at_most_a_fifth_and_sorted(n, validation_size):
    fit, validation = split_train_validation(n, validation_size, seed=3)
    assert len(validation) == min(validation_size, n // 5)
    assert sorted(np.concatenate([fit, validation]).tolist()) == list(range(n))
    assert list(fit) == sorted(set(fit)) and list(validation) == sorted(set(validation))
    np.testing.assert_array_equal(split_train_validation(n, validation_size, seed=3)[1], validation)


@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (1000, 2048), (3, 5, 7)])
def test_aligned_empty_is_64_byte_aligned_and_writable(shape):
    array = aligned_empty(shape)
    assert array.shape == shape and array.dtype == np.float32
    assert array.ctypes.data % 64 == 0 and array.flags.c_contiguous and array.flags.writeable
    array[...] = 1.5
    assert float(array.sum()) == 1.5 * array.size


def test_as_tensor_shares_aligned_memory_and_copies_the_rest():
    aligned = aligned_empty((50, 8))
    aligned[:] = np.arange(400, dtype=np.float32).reshape(50, 8)
    tensor = as_tensor(aligned)
    aligned[0, 0] = 42.0  # the tensor is a view of the same memory
    assert float(tensor[0, 0]) == 42.0

    strided = np.arange(800, dtype=np.float32).reshape(100, 8)[::2]  # not contiguous
    copied = as_tensor(strided)
    np.testing.assert_array_equal(copied.numpy(), strided)
    strided[0, 0] = -1.0
    assert float(copied[0, 0]) == 0.0


def test_gathered_batches_in_order_without_a_seed():
    table = np.arange(60, dtype=np.float32).reshape(20, 3)
    rows = np.array([5, 1, 17, 3, 9])
    batches = [b.numpy() for b in gathered_batches(as_tensor(table), rows, 2)]
    assert [len(b) for b in batches] == [2, 2, 1]
    np.testing.assert_array_equal(np.concatenate(batches), table[rows])


def test_gathered_batches_reshuffle_every_epoch_and_keep_rows_with_labels():
    table = np.arange(200, dtype=np.float32).reshape(100, 2)
    labels = np.arange(100, dtype=np.float32) * 10
    rows = np.arange(0, 100, 3)
    stream = gathered_batches(as_tensor(table), rows, 8, labels=as_tensor(labels), seed=1)
    epochs = []
    for _ in range(2):
        xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in stream], strict=True)
        x, y = np.concatenate(xs), np.concatenate(ys)
        np.testing.assert_array_equal(y, x[:, 0] / 2 * 10)  # each row with its own label
        assert sorted(x[:, 0] / 2) == list(rows)  # every row once
        epochs.append(x[:, 0])
    assert not (epochs[0] == epochs[1]).all()


def test_validation_rows_are_the_split_training_held_out():
    config = {"validation_size": 30, "seed": 5}
    np.testing.assert_array_equal(validation_rows(config, 200), split_train_validation(200, 30, 5)[1])
    assert len(validation_rows({"validation_size": 0, "seed": 0}, 200)) == 0


def _epochs(dataset, count: int = 2) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each epoch of a batched dataset as (images, labels), batches concatenated."""
    epochs = []
    for _ in range(count):
        batches = [(np.asarray(x), np.asarray(y)) for x, y in dataset]
        epochs.append((np.concatenate([x for x, _ in batches]), np.concatenate([y for _, y in batches])))
    return epochs


def test_augmented_dataset_mirrors_left_to_right_shifts_and_shuffles_every_epoch():
    """Channel 0 rises from left to right, channel 1 from top to bottom: a horizontal mirror
    makes the first fall and never the second; a shift of up to two pixels keeps both slopes'
    signs but moves the pixels; the same seeds give the same batches (training sets Keras' global
    seed first, as here)."""
    import keras

    from cifar.sources.data import augmented_dataset

    n, ramp = 64, np.linspace(0, 240, 32)
    images = np.zeros((n, 32, 32, 3), np.uint8)
    images[..., 0] = ramp[None, None, :].round()
    images[..., 1] = ramp[None, :, None].round()
    keras.utils.set_random_seed(3)
    dataset = augmented_dataset(images, np.arange(n), batch_size=16, seed=3)
    epochs = _epochs(dataset)
    for batch, labels in epochs:
        assert sorted(labels) == list(range(n))
        assert batch.dtype == np.uint8 and batch.shape == images.shape
        across = batch[..., 0].astype(float).mean(axis=1)[:, 8:24]  # (N, columns) away from the edges
        down = batch[..., 1].astype(float).mean(axis=2)[:, 8:24]  # (N, rows)
        assert 10 < (across[:, -1] < across[:, 0]).sum() < n - 10  # about half mirrored
        assert (down[:, -1] > down[:, 0]).all()  # never upside down
        unmoved = [(image == images[0]).all() or (image == images[0][:, ::-1]).all() for image in batch]
        assert sum(unmoved) < n // 2  # most are shifted
    assert not np.array_equal(epochs[0][1], epochs[1][1])  # reshuffled
    keras.utils.set_random_seed(3)
    again = _epochs(augmented_dataset(images, np.arange(n), batch_size=16, seed=3))
    for (batch, labels), (same_batch, same_labels) in zip(epochs, again, strict=True):
        np.testing.assert_array_equal(labels, same_labels)
        np.testing.assert_array_equal(batch, same_batch)
    assert [len(y) for _, y in dataset] == [16] * 4


def test_steps_per_epoch_and_per_execution():
    assert [steps_per_epoch(n, 10) for n in (1, 10, 11, 45000)] == [1, 1, 2, 4500]
    assert steps_per_execution(44, 5) == 4 and steps_per_execution(49, 5) == 1
    assert steps_per_execution(45, 5) == 5 and steps_per_execution(3, 8) == 3
    assert steps_per_execution(1, 1) == 1 and steps_per_execution(12, 1) == 1
