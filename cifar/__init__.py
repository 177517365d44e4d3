"""CIFAR-10 classifiers: a baseline CNN and an InceptionV3 transfer model (see the README)."""

import os

__version__ = "0.1.0"

# The models, the feature extractor and the Predictor are TensorFlow code (tf.function, XLA,
# tf.data): Keras must run on its TensorFlow backend whatever a user's ~/.keras/keras.json says.
os.environ["KERAS_BACKEND"] = "tensorflow"


# The public API: where a user's own code starts (each module loads when its name is first used,
# so `import cifar` stays light and TensorFlow loads only with what needs it).
_API = {
    "parse_config": "cifar.config",  # a typed, checked config from {"field": value}
    "list_runs": "cifar.store.runs",  # every finished run (Run objects), newest first
    "load_run": "cifar.store.runs",  # one run by id: config, metrics, predictions, calibration
    "runs_table": "cifar.store.tables",  # a pandas DataFrame: a row per run, results and hyperparameters
    "compare": "cifar.store.groups",  # two runs or seed groups on the same test images
    "seed_groups": "cifar.store.groups",  # runs that differ only in their seed
    "load_run_model": "cifar.inference.export",  # a run's whole Keras model: pixels in, probabilities out
    "train": "cifar.training.train",  # train(config) -> a published run folder
}
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    """`from cifar import load_run_model` and the rest of `__all__`, loaded on first use."""
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'cifar' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
