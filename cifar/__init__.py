"""CIFAR-10 classifiers: a baseline CNN and an InceptionV3 transfer model (see the README)."""

import os

__version__ = "0.1.0"

# The models, the feature extractor and the Predictor are TensorFlow code (tf.function, XLA,
# tf.data): Keras must run on its TensorFlow backend whatever a user's ~/.keras/keras.json says.
os.environ["KERAS_BACKEND"] = "tensorflow"


def __getattr__(name: str):
    """`from cifar import load_run_model` (TensorFlow loads only when it is asked for)."""
    if name == "load_run_model":
        from cifar.export import load_run_model

        return load_run_model
    raise AttributeError(f"module 'cifar' has no attribute {name!r}")
