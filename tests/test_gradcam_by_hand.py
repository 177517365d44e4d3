"""Grad-CAM (`cifar.inference.explain.Explainer`) against Grad-CAM computed by hand on the same model, the
session's trained baseline, to a tight tolerance: for the class asked (every class, not only the
top one), on several images.

By hand (Selvaraju et al. 2017): A_k the last convolution's maps, y_c the class score before the
softmax, alpha_k = the mean over the map's height and width of dy_c/dA_k, map = ReLU(sum_k alpha_k
A_k) / its maximum. Two bugs this pins, which the sanity checks of test_explain.py (slow, and
with thresholds) let through: the map of the top class under another class's name, and the mean
taken over the wrong axes. The fixture is checked to tell those formulas apart first.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from cifar.inference.explain import Explainer
from cifar.modeling.restore import last_dense, load_model
from cifar.store.runs import load_run

IMAGES = (0, 7, 13)  # test images of three classes (the fixture's labels step by 3)


class ByHand:
    """Grad-CAM by hand on `network`: `map(image, class_index, axes)`; `axes`: the axes of dy/dA
    averaged into the weights ((1, 2): height and width, Grad-CAM's; others: wrong formulas)."""

    def __init__(self, network):
        conv = [layer for layer in network.layers if isinstance(layer, keras.layers.Conv2D)][-1]
        self.dense = last_dense(network)
        self.model = keras.Model(network.input, [conv.output, self.dense.input])
        self._gradients = {}

    def gradients(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(maps (1, h, w, k), dy_c/dA for every class c (10, 1, h, w, k)), float64."""
        key = image.tobytes()
        if key not in self._gradients:
            with tf.GradientTape(persistent=True) as tape:
                maps, penultimate = self.model(image[None], training=False)
                scores = tf.matmul(penultimate, self.dense.kernel) + self.dense.bias
                chosen = [scores[:, c] for c in range(10)]
            gradients = np.stack([tape.gradient(score, maps).numpy() for score in chosen])
            self._gradients[key] = maps.numpy().astype(np.float64), gradients.astype(np.float64)
        return self._gradients[key]

    def map(self, image: np.ndarray, class_index: int, axes=(1, 2)) -> np.ndarray:
        maps, gradients = self.gradients(image)
        weights = gradients[class_index].mean(axis=axes, keepdims=True)
        cam = np.maximum((weights * maps).sum(axis=-1), 0)[0]
        return cam / cam.max() if cam.max() > 0 else cam


@pytest.fixture(scope="module")
def explained(trained_baseline):
    """(Explainer, ByHand, test images) of the session's trained run."""
    artifacts, run_id, data = trained_baseline
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CIFAR_ARTIFACTS", str(artifacts))
        run = load_run(run_id)
        network = load_model(run)[1]
        yield Explainer(run), ByHand(network), data.x_test


def test_the_fixture_tells_the_formulas_apart(explained):
    """Every map below is non-trivial, and for every image some class's map is another than the top
    class's, and averaging over other axes gives other maps."""
    explainer, by_hand, images = explained
    for i in IMAGES:
        top = explainer.explain(images[i]).class_index
        maps = [by_hand.map(images[i], k) for k in range(10)]
        assert sum(m.max() == 1.0 for m in maps) >= 5, "most classes have a map"
        assert max(np.abs(m - maps[top]).max() for m in maps) > 0.2, i
        for wrong in ((1, 2, 3), (3,), (2, 3), (1,), (2,)):
            differs = [np.abs(by_hand.map(images[i], k, wrong) - m).max() > 0.05 for k, m in enumerate(maps)]
            assert any(differs), (i, wrong)


@pytest.mark.parametrize("i", IMAGES)
def test_every_class_s_map_is_grad_cam_of_that_class(explained, i):
    explainer, by_hand, images = explained
    top = explainer.explain(images[i])
    np.testing.assert_allclose(top.heatmap, by_hand.map(images[i], top.class_index), atol=1e-4)
    for k in range(10):
        explanation = explainer.explain(images[i], class_index=k)
        assert explanation.class_index == k
        expected = by_hand.map(images[i], k)
        np.testing.assert_allclose(explanation.heatmap, expected, atol=1e-4, err_msg=f"image {i}, class {k}")
        # The answer explained is the run's, whichever class is asked: the map is what changes.
        np.testing.assert_allclose(explanation.probabilities, top.probabilities, atol=1e-6)
        if np.abs(expected - by_hand.map(images[i], top.class_index)).max() > 1e-3:
            assert np.abs(explanation.heatmap - top.heatmap).max() > 1e-3, (i, k)
