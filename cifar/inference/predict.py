"""Classify any image with a run's model (or an ensemble of runs): top-k classes out, calibrated."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from PIL import Image

from cifar import tta
from cifar.calibration import temperature_scaled
from cifar.config import IMAGE_SHAPE
from cifar.modeling.restore import load_model
from cifar.sources.images import MODEL_SIDE, as_model_input, open_image
from cifar.store.runs import Run, load_run

RESOLUTIONS = ("full", "cifar")  # a transfer run's photo path, and the CIFAR-10 32 px path


def check_top_k(top_k, n_classes: int) -> int:
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= n_classes:
        raise ValueError(f"top_k must be a whole number from 1 to {n_classes}, got {top_k!r}")
    return top_k


class Classifier:
    """What a run's model and an ensemble's members have in common: the resolutions they take,
    calibrated answers, top-k classes of any image."""

    def __init__(self, run: Run, resolutions: tuple[str, ...]):
        self.run = run
        self.class_names = run.class_names
        self.temperature = run.temperature
        self.resolutions = resolutions  # what it can be given, its default first

    @classmethod
    def for_run(cls, run_id: str) -> Classifier:
        return load_predictor(load_run(run_id))

    def resolution(self, resolution: str | None) -> str:
        """`resolution` checked against what this run knows (None: the run's default)."""
        if resolution is None:
            return self.resolutions[0]
        if resolution not in self.resolutions:
            known = " and ".join(repr(name) for name in self.resolutions)
            why = ": a baseline CNN only knows 32 x 32 images" if self.run.model == "baseline" else ""
            raise ValueError(
                f"{self.run.run_id} ({self.run.model}) takes {known} images, not {resolution!r}{why}"
            )
        return resolution

    def raw_distribution(self, image: Image.Image, resolution: str) -> np.ndarray:
        """(10,) raw class probabilities of an opened image at a checked resolution."""
        raise NotImplementedError

    def distribution(self, image: Image.Image, resolution: str | None = None, calibrated: bool = True):
        """(10,) class probabilities of an opened image; calibrated by the run's temperature."""
        raw = self.raw_distribution(image, self.resolution(resolution))
        return temperature_scaled(raw, self.temperature) if calibrated else raw

    def predict(
        self, source, top_k: int = 3, resolution: str | None = None, calibrated: bool = True
    ) -> list[tuple[str, float]]:
        """The `top_k` most likely classes of any image, most likely first."""
        return ranked(self, source, top_k, resolution, calibrated)

    def predict_file(self, path: str | Path, top_k: int = 3, **options) -> list[tuple[str, float]]:
        """`predict` on a user's file (`read_upload`: a regular file within the upload limit)."""
        return self.predict(Path(path), top_k, **options)


class Predictor(Classifier):
    """A run's model, loaded once; `predict` takes any image, `probabilities` raw pixels.

    Resolutions: "cifar" squeezes the image to 32 x 32 as the CIFAR-10 images are; "full" (transfer
    runs, their default) gives the frozen base the photo itself, its centre square resized straight
    to the base's input size. Answers are calibrated by the run's temperature unless asked not to.
    """

    def __init__(self, run: Run):
        import tensorflow as tf

        super().__init__(run, run_resolutions(run))
        prepare, network = load_model(run)
        self.tta_flip = bool(run.hyperparameters.get("tta_flip"))
        self.tta_translate = bool(run.hyperparameters.get("tta_translate"))  # baseline runs only
        self.full_side = int(run.hyperparameters["input_size"]) if run.model == "transfer" else None
        # The network is XLA-compiled: besides being faster for one image on a CPU, the compiled
        # program survives `keras.backend.clear_session()`, which Streamlit calls after every
        # script run and which otherwise makes TensorFlow rebuild every kernel of InceptionV3 on
        # the next upload (~1 s). A transfer model's resize stays outside XLA (see `outside_xla`).
        from cifar.modeling.models import inception_scaling

        compiled = tf.function(lambda x: network(x, training=False), reduce_retracing=True, jit_compile=True)
        self.network = network  # the Keras model after the resize (`cifar.analysis.cost` counts it)
        self._network = compiled
        self._scale = inception_scaling()
        self._forward = compiled if prepare is None else (lambda pixels: compiled(prepare(pixels)))
        # The same pixels come back within one upload (an ensemble asks its members what the page
        # has just asked them; both resolutions are shown): the newest few answers are kept.
        self._answers = functools.lru_cache(maxsize=8)(self._answer)
        self.probabilities(np.zeros((1, *IMAGE_SHAPE), np.uint8))  # compile for one image, now
        if self.full_side:  # and for one photo at the base's input size
            self.full_probabilities(np.zeros((1, self.full_side, self.full_side, 3), np.uint8))

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """(N, 32, 32, 3) uint8 -> (N, 10) raw class probabilities, as `test_predictions.npy` holds."""
        return self._test_time_averaged(self._forward, pixels)

    def full_probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) uint8 at the base's input size S -> (N, 10) raw probabilities: the same
        scaling to [-1, 1] as the 32 px path (`models.inception_scaling`), no upscaling."""
        return self._test_time_averaged(lambda x: self._network(self._scale(x)), pixels)

    def _test_time_averaged(self, forward, pixels: np.ndarray) -> np.ndarray:
        return tta.averaged(forward, pixels, self.tta_flip, self.tta_translate)

    def model_input(self, image: Image.Image, resolution: str | None = None) -> np.ndarray:
        """The uint8 pixels the model is given for `image` at `resolution`."""
        resolution = self.resolution(resolution)
        return as_model_input(image, self.full_side if resolution == "full" else MODEL_SIDE)

    def raw_distribution(self, image: Image.Image, resolution: str) -> np.ndarray:
        pixels = self.model_input(image, resolution)
        return self._answers(resolution, pixels.tobytes(), pixels.shape).copy()

    def _answer(self, resolution: str, data: bytes, shape: tuple[int, ...]) -> np.ndarray:
        pixels = np.frombuffer(data, np.uint8).reshape(shape)[None]
        return (self.full_probabilities if resolution == "full" else self.probabilities)(pixels)[0]


class EnsemblePredictor(Classifier):
    """An ensemble run: its members' Predictors (each loaded once), pooled with the run's weights."""

    def __init__(self, run: Run, members: list[Predictor] | None = None):
        from cifar.inference.ensemble import check_unchanged, ensemble_weights, member_runs

        self.weights = ensemble_weights(run)[1]
        self.members = members or [Predictor(member) for member in member_runs(run)]
        check_unchanged(run, [member.run for member in self.members])
        full = any("full" in member.resolutions for member in self.members)
        super().__init__(run, RESOLUTIONS if full else ("cifar",))  # "full": the others see 32 px

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        from cifar.inference.ensemble import pooled

        return pooled([member.probabilities(pixels) for member in self.members], self.weights)

    def model_input(self, image: Image.Image, resolution: str | None = None) -> np.ndarray:
        """The largest of what the members see."""
        resolution = self.resolution(resolution)
        sides = [m.full_side for m in self.members if m.full_side and resolution == "full"]
        return as_model_input(image, max(sides, default=MODEL_SIDE))

    def raw_distribution(self, image: Image.Image, resolution: str) -> np.ndarray:
        from cifar.inference.ensemble import pooled

        answers = [
            member.distribution(image, resolution if resolution in member.resolutions else "cifar", False)
            for member in self.members
        ]
        return pooled([answer[None] for answer in answers], self.weights)[0]


def run_resolutions(run: Run) -> tuple[str, ...]:
    """The resolutions a run's model takes, its default first (no model loaded)."""
    if run.model == "ensemble":
        from cifar.inference.ensemble import member_runs

        members = member_runs(run)
        return RESOLUTIONS if any(member.model == "transfer" for member in members) else ("cifar",)
    return RESOLUTIONS if run.model == "transfer" else ("cifar",)


def missing_backbone(run: Run) -> list[str]:
    """The InceptionV3 weights the run's model (an ensemble: its members') needs and the asset
    cache lacks; loading it without them would download them."""
    from cifar.sources.assets import weights_available

    runs = [run]
    if run.model == "ensemble":
        from cifar.inference.ensemble import member_runs

        runs = member_runs(run)
    needed = {r.backbone_source for r in runs if r.model == "transfer"}
    return sorted(source for source in needed if not weights_available(source))


def load_predictor(run: Run) -> Classifier:
    """The run's Predictor: its own model, or an ensemble's members."""
    return EnsemblePredictor(run) if run.model == "ensemble" else Predictor(run)


def ranked(predictor: Classifier, source, top_k: int, resolution: str | None, calibrated: bool):
    """[(label, probability)] of `source`'s `top_k` most likely classes, most likely first."""
    check_top_k(top_k, len(predictor.class_names))
    resolution = predictor.resolution(resolution)  # before decoding: a wrong mode fails fast
    probs = predictor.distribution(open_image(source), resolution, calibrated)
    order = np.argsort(probs)[::-1][:top_k]
    return [(predictor.class_names[i], float(probs[i])) for i in order]
