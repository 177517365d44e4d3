"""The committed runs as users meet them (slow): `load_run_model` called the ways Keras models are
called, every export format in its own runtime in a fresh process, and Grad-CAM, each against the
Predictor on the first test images. The stand-in runs of the other tests lack what these have:
GELU, dropout, resizing layers, test-time views, a calibration temperature."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pytest

from cifar.inference.export import FORMATS, load_run_model
from tests.conftest import committed_runs
from tests.factory import REPO

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]  # a transfer run exports for minutes

MODEL_RUNS = ["baseline-reference", "baseline-best", "transfer-reference", "transfer-best"]
FIRST = 200  # test images every format is checked on
CALLED = 16  # images for the ways of calling the Keras model
# Float32 graphs of one model differ by rounding only; TFLite's kernels round more.
TOLERANCE = 2e-3
CAPTURED = {"capture_output": True, "text": True, "timeout": 1200}


@dataclass
class RealRun:
    run_id: str
    predictor: object
    pixels: np.ndarray  # the first FIRST test images
    answers: np.ndarray  # the Predictor's calibrated answers to them


@pytest.fixture(scope="session")
def test_images(real_home) -> np.ndarray:
    from cifar.sources.assets import read_cifar10_cache

    return read_cifar10_cache(real_home / "datasets/cifar10-verified.npz").x_test[:FIRST]


@pytest.fixture(scope="session", params=MODEL_RUNS)
def real_run(request, real_home, test_images) -> RealRun:
    from cifar.calibration import temperature_scaled
    from cifar.inference.predict import Predictor
    from cifar.store.runs import load_run

    with committed_runs(real_home):
        predictor = Predictor(load_run(request.param))
        raw = predictor.probabilities(test_images)
    saved = np.load(REPO / "artifacts/runs" / request.param / "test_predictions.npy")[:FIRST]
    assert (saved.argmax(1) == raw.argmax(1)).all(), "the Predictor answers as the run's own files"
    answers = temperature_scaled(raw, predictor.temperature)
    return RealRun(request.param, predictor, test_images, answers)


def test_load_run_model_answers_the_same_however_it_is_called(real_run, real_runs):
    model = load_run_model(real_run.run_id)
    pixels, expected = real_run.pixels[:CALLED], real_run.answers[:CALLED]
    called = np.asarray(model(pixels))
    np.testing.assert_array_equal(np.asarray(model(pixels)), called)  # no dropout left on
    np.testing.assert_allclose(model.predict(pixels, verbose=0), called, atol=1e-5)
    np.testing.assert_allclose(called, expected, atol=1e-4)


@pytest.fixture(scope="session")
def exported(real_run, real_home, tmp_path_factory) -> dict[str, np.ndarray]:
    """Every format of the run exported by the command users type (two at a time: much of an
    export is one busy thread), then answering the first test images in one fresh process."""
    folder = tmp_path_factory.mktemp(f"exports-{real_run.run_id}")
    np.save(folder / "pixels.npy", real_run.pixels)
    paths = {fmt: folder / f"model{suffix or '-saved'}" for fmt, suffix in FORMATS.items()}
    env = {
        **os.environ,
        "KERAS_HOME": str(real_home),
        "CIFAR_ARTIFACTS": str(REPO / "artifacts"),
        "PYTHONPATH": str(REPO),
    }

    def export(fmt: str) -> subprocess.CompletedProcess:
        command = ["export", real_run.run_id, "--format", fmt, "--out", str(paths[fmt])]
        return subprocess.run([sys.executable, "-m", "cifar", *command], cwd=REPO, env=env, **CAPTURED)

    with ThreadPoolExecutor(max_workers=2) as pool:
        for result in pool.map(export, FORMATS):
            assert result.returncode == 0 and "written" in result.stdout, result.stderr[-3000:]
    jobs = [f"{fmt}:{path}:{folder / fmt}.npy" for fmt, path in paths.items()]
    result = subprocess.run([sys.executable, "tests/runtimes.py", str(folder / "pixels.npy"), *jobs],
                            cwd=REPO, env=env, **CAPTURED)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return {fmt: np.load(folder / f"{fmt}.npy") for fmt in FORMATS}


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_every_export_loads_in_its_runtime_and_answers_as_the_predictor(real_run, exported, fmt):
    answers = exported[fmt]
    assert answers.shape == real_run.answers.shape
    top, expected_top = answers.argmax(1), real_run.answers.argmax(1)
    assert (top == expected_top).all(), f"{fmt}: other top-1 on images {np.flatnonzero(top != expected_top)}"
    np.testing.assert_allclose(answers, real_run.answers, atol=TOLERANCE)


def test_grad_cam_explains_the_answer_shown_with_its_probability(real_run, real_runs):
    from PIL import Image

    from cifar.inference.explain import Explainer

    explainer = Explainer(real_run.predictor.run, real_run.predictor)
    photo = Image.fromarray(real_run.pixels[3]).resize((160, 160), Image.Resampling.BICUBIC)
    for resolution in explainer.resolutions:
        for image in [*real_run.pixels[:4], photo]:
            shown = real_run.predictor.distribution(Image.fromarray(np.asarray(image)), resolution)
            explanation = explainer.explain(np.asarray(image), resolution)
            assert explanation.class_index == int(shown.argmax())
            np.testing.assert_allclose(explanation.probabilities, shown, atol=1e-6)
        asked = explainer.explain(real_run.pixels[0], resolution, class_index=9)
        assert asked.class_index == 9 and asked.class_name == "truck"
