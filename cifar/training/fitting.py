"""How a run's Keras model is fitted: compiled, fitted with the run's callbacks, saved.

Both families (`cifar.training.train`) and the benchmarks go through these, so what is timed is what trains.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

from cifar.atomic import atomic_write
from cifar.config import BaselineConfig
from cifar.modeling.distribute import fit_multi_worker, is_multi_worker
from cifar.sources.data import steps_per_execution
from cifar.store.runs import RunWriter
from cifar.training.callbacks import run_callbacks

STEPS_PER_EXECUTION = 32
# The head's steps take about a millisecond: run a few hundred per compiled call.
HEAD_STEPS_PER_EXECUTION = 256


def compile_model(model, config, n_train: int, steps_per_execution: int = STEPS_PER_EXECUTION) -> None:
    """Optimizer (with its schedule over the run's steps), label-smoothed cross-entropy, accuracy."""
    import keras

    from cifar.modeling.models import make_optimizer

    model.compile(
        optimizer=make_optimizer(config, steps_per_epoch=-(-n_train // config.batch_size)),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
        metrics=["accuracy"],
        # Several steps per compiled call: small models (the head) are otherwise Python-bound.
        steps_per_execution=steps_per_execution,
    )


class Fitted(NamedTuple):
    history: Any  # keras.callbacks.History, or its multi-worker stand-in
    seconds: float


def fit(
    model, config, training, validation, writer: RunWriter, progress, strategy, steps_per_epoch=None, extra=()
) -> Fitted:
    """Fit on `training`, a dataset that batches and shuffles itself (all epochs in one when
    `steps_per_epoch` is given) or an (x, y) pair of arrays; under a TF_CONFIG cluster, the
    multi-worker loop (arrays only). `extra`: more callbacks, run before the run's own."""
    callbacks = [*extra, *run_callbacks(writer, config, progress)]
    started = time.perf_counter()
    if is_multi_worker(strategy):
        # The epoch recorder only: TensorBoard needs Keras' own loop.
        recorder = callbacks[len(extra) : len(extra) + 1]
        history = fit_multi_worker(model, *training, config, strategy, validation, callbacks=recorder)
    else:
        arrays = isinstance(training, tuple)  # a dataset is batched and shuffled already
        x, y = training if arrays else (training, None)
        history = model.fit(
            x,
            y,
            batch_size=config.batch_size if arrays else None,
            shuffle=arrays,
            epochs=config.epochs,
            steps_per_epoch=steps_per_epoch,
            validation_data=validation,
            callbacks=callbacks,
            verbose=1 if sys.stdout.isatty() else 2,  # steps in a terminal; a line per epoch in logs
        )
    return Fitted(history, time.perf_counter() - started)


def save_weights_only(model, build, path: Path) -> None:
    """The model's weights without its optimizer state (Keras saves both; Adam triples the file),
    written as every file is (`cifar.atomic`: a full disk leaves no half-written file)."""
    fresh = build()
    fresh.set_weights(model.get_weights())
    with atomic_write(path, suffix=".weights.h5") as tmp:
        fresh.save_weights(str(tmp))


def baseline_steps_per_call(config: BaselineConfig, steps: int, stream: bool) -> int:
    """Training steps per compiled call: one with lookahead (it acts between steps, which take
    seconds here); on a stream of all epochs, a divisor of the epoch (`steps_per_execution`)."""
    wanted = 1 if config.lookahead else STEPS_PER_EXECUTION
    return steps_per_execution(steps, wanted) if stream else wanted
