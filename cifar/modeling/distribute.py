"""Where training runs: the device, and scale-out with `tf.distribute` configured the standard
way (no home-made scheduler).

- Several GPUs in one machine: `MirroredStrategy`, picked automatically.
- Several machines: set `TF_CONFIG` on each (see docs/scaling.md); training uses
  `MultiWorkerMirroredStrategy`, and feature extraction splits the chunks of the shared cache by
  index (`chunk % workers == worker index`), so every worker fills its own part of one cache.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import platform
import sys
from dataclasses import dataclass

import numpy as np


def describe_device() -> str:
    """The accelerator (or CPU) training runs on, as one line for metrics.json."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return f"GPU: {details.get('device_name', gpus[0].name)} x{len(gpus)}"
    return f"CPU: {platform.processor() or platform.machine()}, {_cpu_count()} cores"


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


@functools.cache  # the Train form asks on every rerun; the hardware does not change
def bfloat16_unit(cpuinfo: str = "/proc/cpuinfo", nvidia: str = "/proc/driver/nvidia/gpus") -> str | None:
    """What would compute `precision="mixed_bfloat16"` here: "gpu" (an NVIDIA GPU is installed), "cpu"
    (the CPU has bfloat16 instructions: AVX512_BF16 or AMX), "emulated" (it has none), or None where
    /proc cannot tell. Read from /proc, not TensorFlow, so the Train form can ask at no cost."""
    try:
        if os.path.isdir(nvidia) and os.listdir(nvidia):
            return "gpu"
        with open(cpuinfo) as file:
            flags = next((line.split(":", 1)[1].split() for line in file if line.startswith("flags")), None)
    except OSError:
        return None
    if flags is None:
        return None
    return "cpu" if {"avx512_bf16", "amx_bf16"} & set(flags) else "emulated"


def environment() -> dict:
    """Versions and device, saved in config.json so a run can be reproduced."""
    from importlib.metadata import version

    import keras
    import tensorflow as tf

    return {
        "python": sys.version.split()[0],
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "scikit-learn": version("scikit-learn"),  # importing sklearn to ask would cost ~1 s per job
        "platform": platform.platform(),
        "device": describe_device(),
    }


@dataclass(frozen=True)
class Worker:
    index: int
    count: int

    @property
    def is_chief(self) -> bool:
        return self.index == 0


def cluster_spec() -> dict:
    try:
        return json.loads(os.environ.get("TF_CONFIG", "") or "{}")
    except ValueError as error:
        raise ValueError(f"TF_CONFIG is not valid JSON: {error}") from None


def this_worker() -> Worker:
    """This process's place in the cluster described by TF_CONFIG (0 of 1 without one)."""
    spec = cluster_spec()
    workers = spec.get("cluster", {}).get("worker", [])
    task = spec.get("task", {})
    if len(workers) <= 1:
        return Worker(0, 1)
    index = int(task.get("index", 0))
    if task.get("type", "worker") != "worker" or not 0 <= index < len(workers):
        raise ValueError(f"TF_CONFIG task {task} is not one of the {len(workers)} workers")
    return Worker(index, len(workers))


def make_strategy():
    """MultiWorkerMirrored with a TF_CONFIG cluster, Mirrored with several GPUs, else default."""
    import tensorflow as tf

    if this_worker().count > 1:
        return tf.distribute.MultiWorkerMirroredStrategy()
    if len(tf.config.list_physical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def scope(strategy):
    """`strategy.scope()`, or nothing without a strategy."""
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


def is_multi_worker(strategy) -> bool:
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


class _History:
    def __init__(self):
        self.history: dict[str, list[float]] = {}


def _train_step(model, strategy, batch_size: int, label_smoothing: float):
    """One all-reduced gradient step on a global batch: (summed loss, number of hits)."""
    import keras
    import tensorflow as tf

    def replica_step(images, labels):
        with tf.GradientTape() as tape:
            predictions = model(images, training=True)
            per_example = keras.losses.categorical_crossentropy(
                labels, predictions, label_smoothing=label_smoothing
            )
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=batch_size)
            if model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
        gradients = tape.gradient(loss, model.trainable_variables)
        model.optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))
        hits = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(predictions, 1), tf.argmax(labels, 1)), tf.float32))
        return loss, hits

    @tf.function
    def train_step(batch):
        loss, hits = strategy.run(replica_step, args=batch)
        return strategy.reduce("SUM", loss, axis=None), strategy.reduce("SUM", hits, axis=None)

    return train_step


def fit_multi_worker(model, x, y, config, strategy, validation=None, callbacks=()):
    """`model.fit` for MultiWorkerMirroredStrategy, whose Keras 3 `fit` is broken
    (keras-team/keras#20585): a plain `strategy.run` loop over globally batched data, with the
    batch size, epochs, seed and label smoothing of `config`.

    `model` must be built and compiled in `strategy.scope()`; gradients are all-reduced by the
    optimizer. Callbacks get the usual epoch hooks and logs.
    """
    import keras
    import tensorflow as tf

    batch_size, epochs = config.batch_size, config.epochs
    dataset = (
        tf.data.Dataset.from_tensor_slices((x, y))
        .shuffle(len(x), seed=config.seed, reshuffle_each_iteration=True)
        .batch(batch_size, drop_remainder=True)
    )
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    distributed = strategy.experimental_distribute_dataset(dataset.with_options(options))
    train_step = _train_step(model, strategy, batch_size, config.label_smoothing)

    steps = len(x) // batch_size
    history = _History()
    for callback in callbacks:
        callback.set_model(model)
        callback.set_params({"epochs": epochs, "steps": steps, "verbose": 0})
        callback.on_train_begin()
    for epoch in range(epochs):
        for callback in callbacks:
            callback.on_epoch_begin(epoch)
        total_loss = total_hits = 0.0
        for step, batch in enumerate(distributed):
            loss, hits = train_step(batch)
            total_loss += float(loss)
            total_hits += float(hits)
            for callback in callbacks:
                callback.on_train_batch_end(step)
        logs = {"loss": total_loss / max(1, steps), "accuracy": total_hits / max(1, steps * batch_size)}
        if validation is not None:
            val_x, val_y = validation
            probabilities = model.predict(val_x, batch_size=1000, verbose=0)
            logs["val_loss"] = float(np.mean(keras.losses.categorical_crossentropy(val_y, probabilities)))
            logs["val_accuracy"] = float(np.mean(probabilities.argmax(1) == val_y.argmax(1)))
        for key, value in logs.items():
            history.history.setdefault(key, []).append(value)
        for callback in callbacks:
            callback.on_epoch_end(epoch, logs)
    for callback in callbacks:
        callback.on_train_end()
    return history
