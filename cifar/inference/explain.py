"""Where a model looks: Grad-CAM (Selvaraju et al. 2017) for every run, as plain arrays.

The keras-io recipe on `tf.GradientTape` ("Grad-CAM class activation visualization"), not
`tf-keras-vis`: that package is written for tf.keras 2 models, our models are Keras 3, and the
recipe is twenty lines we can test. A run's model is rebuilt so that one forward pass returns both
the feature maps of its explained layer and its class scores before the softmax:

- a baseline: its last convolution (4 x 4 maps for a 32 x 32 image, both architectures);
- a transfer run: InceptionV3's last block, `mixed10` (8 x 8 at 299 px, 5 x 5 at 224 px), as
  Selvaraju et al. advise. Compared on test images (`docs/screenshots/cam-transfer-blocks.png`,
  rows mixed7 to mixed10): `mixed7`'s finer 17 x 17 maps are speckled with a grid of isolated
  hot cells, `mixed8` and `mixed9` are coherent, `mixed10` the most on the object (a cat's
  face, an aeroplane's body, a dog's head). For `mixed7-10` runs the gradient reaches `mixed10`
  through its own pooled tap only; the earlier taps' share of the decision is not in its map.

The map is ReLU(sum_k alpha_k A_k) with alpha_k the spatial mean of d(score)/dA_k, scaled to
[0, 1]; `Explanation.overlay` lays it over the image as a person sees it. The class explained is
the run's own answer unless another is asked for: the Predictor's, calibrated and averaged over
the run's test-time views, with its probability, so a map never sits under another class than the
answer it explains. The map itself is of one view (no test-time flip), the 32 px path or a
transfer run's full-resolution path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from cifar.sources.images import MODEL_SIDE, as_model_input, open_image
from cifar.store.runs import Run, RunError

TRANSFER_LAYER = "mixed10"
OVERLAY_SIDE = 256  # a 32 px image is shown at 8x, every pixel a block
OVERLAY_ALPHA = 0.45


@dataclass(frozen=True)
class Explanation:
    """One image's Grad-CAM for one class of one run."""

    run_id: str
    class_index: int
    class_name: str
    probabilities: np.ndarray  # (10,) the run's answer, as its Predictor gives it (calibrated)
    heatmap: np.ndarray  # (h, w) float32 in [0, 1], the explained layer's grid
    image: np.ndarray  # uint8 (S, S, 3): what the model was given
    layer: str
    features: np.ndarray  # (d,) the image in the space of `cifar.analysis.feature_space`

    @property
    def overlay(self) -> np.ndarray:
        return overlay(self.image, self.heatmap)


def check_class(name: str | None, class_names: list[str]) -> int | None:
    """The index of a class name (None: the run's answer); ValueError naming the ten."""
    if name is None:
        return None
    if name not in class_names:
        raise ValueError(f"unknown class {name!r}; the classes are: {', '.join(class_names)}")
    return class_names.index(name)


class Explainer:
    """A run's model rebuilt for Grad-CAM, loaded once; `explain` takes any image. `predictor`:
    the run's loaded Predictor, whose answer is explained (default: loaded here)."""

    def __init__(self, run: Run, predictor=None):
        import tensorflow as tf

        from cifar.inference.predict import Predictor, run_resolutions

        if run.model == "ensemble":
            raise RunError(f"{run.run_id} is an ensemble: explain its members one by one")
        self.run = run
        self.predictor = predictor or Predictor(run)
        self.resolutions = run_resolutions(run)
        self.model, self.layer, self.prepare, self.full_side = _gradcam_model(run)
        dense = self.model.dense  # the class scores' layer: its output before the softmax

        @tf.function(reduce_retracing=True)
        def maps_and_scores(images, class_index):
            with tf.GradientTape() as tape:
                maps, penultimate, features = self.model(images, training=False)
                scores = tf.matmul(penultimate, dense.kernel) + (dense.bias if dense.use_bias else 0.0)
                chosen = tf.gather(scores, class_index, axis=1)
            gradients = tape.gradient(chosen, maps)
            weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
            cam = tf.nn.relu(tf.reduce_sum(weights * maps, axis=-1))
            return cam, features

        self._maps_and_scores = maps_and_scores

    def explain(self, source, resolution: str | None = None, class_index: int | None = None) -> Explanation:
        """Grad-CAM of any image (bytes, path, PIL image, array) for `class_index` (default: the
        run's answer, as its Predictor gives it) at `resolution` ("full" or "cifar"; default: the
        run's first)."""
        import tensorflow as tf

        resolution = resolution or self.resolutions[0]
        if resolution not in self.resolutions:
            raise ValueError(
                f"{self.run.run_id} takes {' and '.join(self.resolutions)} images, not {resolution!r}"
            )
        image = open_image(source)
        answer = self.predictor.distribution(image, resolution)
        class_index = int(np.argmax(answer)) if class_index is None else class_index
        side = self.full_side if resolution == "full" else MODEL_SIDE
        pixels = as_model_input(image, side)
        images = self.prepare(pixels[None], resolution)
        cam, features = self._maps_and_scores(images, tf.constant(class_index, tf.int32))
        cam = np.asarray(cam[0], np.float32)
        heatmap = cam / cam.max() if cam.max() > 0 else cam
        return Explanation(
            self.run.run_id, class_index, self.run.class_names[class_index],
            answer, heatmap, pixels, self.layer, np.asarray(features[0]),
        )  # fmt: skip


def _gradcam_model(run: Run):
    """(model: images -> [maps, penultimate, features], layer name,
    prepare(pixels, resolution), full side); features: the space `cifar.analysis.feature_space` searches
    (a baseline's penultimate layer, a transfer run's pooled base features);
    `model.dense` is the layer that makes the class scores of the penultimate features (its
    softmax left out: airbench's 1/9 logit scale after it changes no normalised map)."""
    import keras

    from cifar.config import load_config
    from cifar.modeling.restore import backbone_weights, last_dense, load_head, load_model

    config = load_config(run.hyperparameters)
    if run.model == "baseline":
        network = load_model(run)[1]
        layer = [lay for lay in network.layers if isinstance(lay, keras.layers.Conv2D)][-1]
        dense = last_dense(network)
        model = keras.Model(network.input, [layer.output, dense.input, dense.input])
        model.dense = dense
        return model, layer.name, lambda pixels, _resolution: pixels, None
    from cifar.config import POOLED_LAYERS
    from cifar.modeling.models import build_base, build_resize, inception_scaling

    head = load_head(run)  # before the backbone: a bad weights file fails fast
    # The pooled taps as `models.build_pooled_base` makes them, but on the base's own graph, so
    # that one pass returns the explained block's maps and the answer that depends on them.
    base = build_base(config, backbone_weights(run).path)
    pooled = [
        keras.layers.GlobalAveragePooling2D()(base.get_layer(n).output)
        for n in POOLED_LAYERS[config.pooled_layers]
    ]
    features = pooled[0] if len(pooled) == 1 else keras.layers.Concatenate()(pooled)
    dense = last_dense(head)
    penultimate = keras.Model(head.input, dense.input)(features)
    outputs = [base.get_layer(TRANSFER_LAYER).output, penultimate, features]
    model = keras.Model(base.input, outputs)
    model.dense = dense
    resize, scale = build_resize(config), inception_scaling()

    def prepare(pixels: np.ndarray, resolution: str):
        return scale(pixels) if resolution == "full" else resize(pixels, training=False)

    return model, TRANSFER_LAYER, prepare, config.input_size


def overlay(image: np.ndarray, heatmap: np.ndarray, side: int = OVERLAY_SIDE) -> np.ndarray:
    """The heatmap (bilinear, jet colours) over the image (nearest: pixels stay blocks), uint8."""
    shown = np.asarray(Image.fromarray(image).resize((side, side), Image.Resampling.NEAREST), np.float32)
    smooth = (
        np.asarray(
            Image.fromarray(np.uint8(np.clip(heatmap, 0, 1) * 255)).resize(
                (side, side), Image.Resampling.BILINEAR
            ),
            np.float32,
        )
        / 255
    )
    return np.uint8(np.clip((1 - OVERLAY_ALPHA) * shown + OVERLAY_ALPHA * 255 * jet(smooth), 0, 255))


def jet(values: np.ndarray) -> np.ndarray:
    """Matplotlib's "jet" colours of values in [0, 1], as (..., 3) floats (blue low, red high)."""
    return np.clip(1.5 - np.abs(4 * values[..., None] - np.array([3.0, 2.0, 1.0])), 0, 1)
