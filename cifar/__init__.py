"""CIFAR-10 classifiers: a baseline CNN and an InceptionV3 transfer model (see the README)."""

import os

__version__ = "0.1.0"

# The models, the feature extractor and the Predictor are TensorFlow code (tf.function, XLA,
# tf.data): Keras must run on its TensorFlow backend whatever a user's ~/.keras/keras.json says.
os.environ["KERAS_BACKEND"] = "tensorflow"
