"""Classify any image with a run's model (or an ensemble of runs): top-k classes out, calibrated."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from PIL import Image

from cifar.calibration import temperature_scaled
from cifar.config import IMAGE_SHAPE
from cifar.images import MODEL_SIDE, as_model_input, open_image
from cifar.runs import WEIGHTS_FILES, Run, RunError, load_run

RESOLUTIONS = ("full", "cifar")  # a transfer run's photo path, and the CIFAR-10 32 px path


def check_top_k(top_k, n_classes: int) -> int:
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= n_classes:
        raise ValueError(f"top_k must be a whole number from 1 to {n_classes}, got {top_k!r}")
    return top_k


class Predictor:
    """A run's model, loaded once; `predict` takes any image, `probabilities` raw pixels.

    Resolutions: "cifar" squeezes the image to 32 x 32 as the CIFAR-10 images are; "full" (transfer
    runs, their default) gives the frozen base the photo itself, its centre square resized straight
    to the base's input size. Answers are calibrated by the run's temperature unless asked not to.
    """

    def __init__(self, run: Run):
        import tensorflow as tf

        self.run = run
        self.class_names = run.class_names
        self.temperature = run.temperature
        prepare, network = load_model(run)
        self.tta_flip = bool(run.hyperparameters.get("tta_flip"))
        self.full_side = int(run.hyperparameters["input_size"]) if run.model == "transfer" else None
        self.resolutions = run_resolutions(run)  # what it can be given, its default first
        # The network is XLA-compiled: besides being faster for one image on a CPU, the compiled
        # program survives `keras.backend.clear_session()`, which Streamlit calls after every
        # script run and which otherwise makes TensorFlow rebuild every kernel of InceptionV3 on
        # the next upload (~1 s). A transfer model's resize stays outside XLA (see `outside_xla`).
        compiled = tf.function(lambda x: network(x, training=False), reduce_retracing=True, jit_compile=True)
        self._network = compiled
        self._forward = compiled if prepare is None else (lambda pixels: compiled(prepare(pixels)))
        self.probabilities(np.zeros((1, *IMAGE_SHAPE), np.uint8))  # compile for one image, now
        if self.full_side:  # and for one photo at the base's input size
            self.full_probabilities(np.zeros((1, self.full_side, self.full_side, 3), np.uint8))

    @classmethod
    def for_run(cls, run_id: str) -> Predictor | EnsemblePredictor:
        return load_predictor(load_run(run_id))

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """(N, 32, 32, 3) uint8 -> (N, 10) raw class probabilities, as `test_predictions.npy` holds."""
        return self._flip_averaged(self._forward, pixels)

    def full_probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) uint8 at the base's input size S -> (N, 10) raw probabilities: the same
        scaling to [-1, 1] as the 32 px path, no upscaling."""
        scaled = lambda x: self._network(x.astype(np.float32) / 127.5 - 1.0)  # noqa: E731
        return self._flip_averaged(scaled, pixels)

    def _flip_averaged(self, forward, pixels: np.ndarray) -> np.ndarray:
        probs = np.asarray(forward(pixels))
        if self.tta_flip:
            probs = (probs + np.asarray(forward(np.ascontiguousarray(pixels[:, :, ::-1])))) / 2
        return probs

    def model_input(self, image: Image.Image, resolution: str | None = None) -> np.ndarray:
        """The uint8 pixels the model is given for `image` at `resolution`."""
        resolution = self.resolution(resolution)
        return as_model_input(image, self.full_side if resolution == "full" else MODEL_SIDE)

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

    def distribution(self, image: Image.Image, resolution: str | None = None, calibrated: bool = True):
        """(10,) class probabilities of an opened image; calibrated by the run's temperature."""
        resolution = self.resolution(resolution)
        pixels = self.model_input(image, resolution)
        raw = self._raw(resolution, pixels.tobytes(), pixels.shape).copy()
        return temperature_scaled(raw, self.temperature) if calibrated else raw

    # The same pixels come back within one upload (an ensemble asks its members what the page has
    # just asked them; both resolutions are shown): their answers are kept, the newest few. A
    # Predictor lives as long as the process, so the cache holding `self` keeps nothing alive.
    @functools.lru_cache(maxsize=8)  # noqa: B019
    def _raw(self, resolution: str, data: bytes, shape: tuple[int, ...]) -> np.ndarray:
        pixels = np.frombuffer(data, np.uint8).reshape(shape)[None]
        return (self.full_probabilities if resolution == "full" else self.probabilities)(pixels)[0]

    def predict(
        self, source, top_k: int = 3, resolution: str | None = None, calibrated: bool = True
    ) -> list[tuple[str, float]]:
        """The `top_k` most likely classes of any image, most likely first."""
        return ranked(self, source, top_k, resolution, calibrated)

    def predict_file(self, path: str | Path, top_k: int = 3, **options) -> list[tuple[str, float]]:
        """`predict` on a user's file (`read_upload`: a regular file within the upload limit)."""
        return self.predict(Path(path), top_k, **options)


class EnsemblePredictor(Predictor):
    """An ensemble run: its members' Predictors (each loaded once), pooled with the run's weights."""

    def __init__(self, run: Run, members: list[Predictor] | None = None):
        from cifar.ensemble import ensemble_weights

        self.run = run
        self.class_names = run.class_names
        self.temperature = run.temperature
        member_ids, self.weights = ensemble_weights(run)
        self.members = members or [Predictor(load_run(member)) for member in member_ids]
        self.resolutions = run_resolutions(run)  # "full" when a member takes it (the others: 32 px)

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        from cifar.ensemble import pooled

        return pooled([member.probabilities(pixels) for member in self.members], self.weights)

    def model_input(self, image: Image.Image, resolution: str | None = None) -> np.ndarray:
        resolution = self.resolution(resolution)
        sides = [m.full_side for m in self.members if m.full_side and resolution == "full"]
        return as_model_input(image, max(sides, default=MODEL_SIDE))

    def distribution(self, image: Image.Image, resolution: str | None = None, calibrated: bool = True):
        from cifar.ensemble import pooled

        resolution = self.resolution(resolution)
        answers = [
            member.distribution(image, resolution if resolution in member.resolutions else "cifar", False)[
                None
            ]
            for member in self.members
        ]
        raw = pooled(answers, self.weights)[0]
        return temperature_scaled(raw, self.temperature) if calibrated else raw


def run_resolutions(run: Run) -> tuple[str, ...]:
    """The resolutions a run's model takes, its default first (no model loaded)."""
    if run.model == "ensemble":
        from cifar.ensemble import ensemble_weights

        members = [load_run(member) for member in ensemble_weights(run)[0]]
        return RESOLUTIONS if any(member.model == "transfer" for member in members) else ("cifar",)
    return RESOLUTIONS if run.model == "transfer" else ("cifar",)


def load_predictor(run: Run) -> Predictor:
    """The run's Predictor: its own model, or an ensemble's members."""
    return EnsemblePredictor(run) if run.model == "ensemble" else Predictor(run)


def ranked(predictor: Predictor, source, top_k: int, resolution: str | None, calibrated: bool):
    """[(label, probability)] of `source`'s `top_k` most likely classes, most likely first."""
    check_top_k(top_k, len(predictor.class_names))
    resolution = predictor.resolution(resolution)  # before decoding: a wrong mode fails fast
    probs = predictor.distribution(open_image(source), resolution, calibrated)
    order = np.argsort(probs)[::-1][:top_k]
    return [(predictor.class_names[i], float(probs[i])) for i in order]


def load_model(run: Run):
    """The run's model rebuilt from its config with its weights (no code from the folder), as
    (resize, network): a transfer model's resize (run outside XLA) and the rest; a baseline
    has no resize (None, model)."""
    from cifar.config import load_config
    from cifar.features import outside_xla
    from cifar.models import build_baseline, build_resize, build_transfer_network

    if run.config_problem:
        raise RunError(f"{run.run_id}: its model cannot be rebuilt by this version ({run.config_problem})")
    config = load_config(run.hyperparameters)
    if config.model == "baseline":
        return None, _with_weights(build_baseline(config), run, WEIGHTS_FILES["baseline"])
    from cifar.assets import load_inception_weights

    head = load_head(run)  # before the backbone: a bad weights file fails fast
    backbone = load_inception_weights(run.backbone_source)
    expected = (run.config.get("assets") or {}).get("backbone_sha256")
    if expected and expected != backbone.sha256:
        raise RunError(f"{run.run_id} was trained on other backbone weights ({expected[:12]})")
    return outside_xla(build_resize(config)), build_transfer_network(config, backbone.path, head=head)


def load_head(run: Run):
    """A transfer run's head (features -> probabilities) with its saved weights."""
    from cifar.config import load_config
    from cifar.models import build_head

    return _with_weights(build_head(load_config(run.hyperparameters)), run, WEIGHTS_FILES["transfer"])


def _with_weights(model, run: Run, name: str):
    """`model` with the weights saved as `name` in the run folder, or a RunError naming the file."""
    path = run.path / name
    if not path.is_file():
        raise RunError(f"{run.run_id} has no {name}")
    try:
        model.load_weights(str(path))
    except Exception as error:  # noqa: BLE001 (h5py and Keras raise many types for a bad file)
        reason = " ".join(str(error).split())[:300] or type(error).__name__
        raise RunError(
            f"{run.run_id}: cannot load {name} into the model its config describes ({reason})"
        ) from None
    return model
