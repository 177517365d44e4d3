"""A run's whole model (`cifar.inference.export`): loaded from anywhere, exported, and predicting what the
Predictor predicts, calibration and test-time flip included."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from cifar import cli
from cifar.calibration import temperature_scaled
from cifar.inference.export import check_export, export_run
from cifar.modeling.whole_model import build_run_model
from cifar.store.runs import RunError, load_run
from tests.factory import REPO, write_ensemble
from tests.runtimes import answers


@pytest.fixture
def run_copy(use_trained_baseline, tmp_path, monkeypatch):
    """A copy of the session's trained run in this test's own artifacts folder: (run id, data)."""
    run_id, data = use_trained_baseline
    source = load_run(run_id).path
    monkeypatch.setenv("CIFAR_ARTIFACTS", str(tmp_path / "copy"))
    folder = tmp_path / "copy" / "runs" / run_id
    shutil.copytree(source, folder)
    # A temperature that changes the answers (the tiny run's own fit gives T = 1).
    calibration = json.loads((folder / "calibration.json").read_text())
    (folder / "calibration.json").write_text(json.dumps({**calibration, "temperature": 1.7}))
    return run_id, data


def predictor_answers(run_id: str, pixels: np.ndarray) -> np.ndarray:
    from cifar.inference.predict import Predictor

    predictor = Predictor(load_run(run_id))
    return temperature_scaled(predictor.probabilities(pixels), predictor.temperature)


@pytest.mark.slow  # over 2 s: the quick loop leaves it to CI
def test_the_whole_model_predicts_what_the_predictor_predicts(run_copy):
    run_id, data = run_copy
    run = load_run(run_id)
    assert run.temperature == 1.7
    model = build_run_model(run)
    pixels = data.x_test[:8]
    np.testing.assert_allclose(model.predict(pixels, verbose=0), predictor_answers(run_id, pixels), atol=1e-5)
    raw = build_run_model(run, calibrated=False).predict(pixels, verbose=0)
    from cifar.inference.predict import Predictor

    np.testing.assert_allclose(raw, Predictor(run).probabilities(pixels), atol=1e-5)


@pytest.mark.slow  # over 2 s: the quick loop leaves it to CI
@pytest.mark.parametrize("translate", [False, True], ids=["flip", "flip+translate"])
def test_test_time_augmentation_is_the_weighted_mean_of_the_views(run_copy, translate):
    run_id, data = run_copy
    config_path = load_run(run_id).path / "config.json"
    record = json.loads(config_path.read_text())
    record["config"].update(tta_flip=True, tta_translate=translate)
    config_path.write_text(json.dumps(record))
    run = load_run(run_id)
    pixels = data.x_test[:6]
    plain = build_run_model(run, calibrated=False)
    assert plain.get_layer("test_time_average") is not None
    import keras

    network = next(layer for layer in plain.layers if isinstance(layer, keras.Model))

    def answer(view):
        return network.predict(np.ascontiguousarray(view), verbose=0)

    mirrored = (answer(pixels) + answer(pixels[:, :, ::-1])) / 2
    by_hand = mirrored
    if translate:  # airbench94's views: reflect-padded by one pixel, shifted down-right and up-left
        padded = np.pad(pixels, [(0, 0), (1, 1), (1, 1), (0, 0)], mode="reflect")
        shifts = [padded[:, :32, :32], padded[:, 2:, 2:]]
        translated = [(answer(view) + answer(view[:, :, ::-1])) / 2 for view in shifts]
        by_hand = 0.5 * mirrored + 0.25 * translated[0] + 0.25 * translated[1]
    np.testing.assert_allclose(plain.predict(pixels, verbose=0), by_hand, atol=1e-6)
    np.testing.assert_allclose(
        build_run_model(run).predict(pixels, verbose=0), predictor_answers(run_id, pixels), atol=1e-5
    )
    from cifar.inference.predict import Predictor

    np.testing.assert_allclose(Predictor(run).probabilities(pixels), by_hand, atol=1e-5)


def test_load_run_model_from_another_folder(run_copy, tmp_path, monkeypatch):
    from cifar import load_run_model

    run_id, data = run_copy
    elsewhere = tmp_path / "elsewhere"
    shutil.move(tmp_path / "copy", elsewhere)
    monkeypatch.setenv("CIFAR_ARTIFACTS", str(tmp_path / "nothing-here"))
    with pytest.raises(RunError, match="no run"):
        load_run_model(run_id)
    model = load_run_model(run_id, artifacts=elsewhere)
    assert model.input.dtype == "uint8" and model.output.shape[-1] == 10
    assert str(tmp_path / "nothing-here") in str(__import__("os").environ["CIFAR_ARTIFACTS"])  # restored


def available(*modules: str) -> bool:
    return all(importlib.util.find_spec(module) is not None for module in modules)


@pytest.mark.slow  # over 2 s: the quick loop leaves it to CI
@pytest.mark.parametrize("fmt", ["keras", "saved_model", "onnx", "tflite"])
def test_every_format_predicts_what_the_predictor_predicts(fmt, run_copy, tmp_path):
    if fmt == "onnx" and not available("tf2onnx", "onnxruntime"):
        pytest.skip("ONNX export needs tf2onnx and onnxruntime (`pip install tf2onnx onnxruntime`)")
    run_id, data = run_copy
    out = tmp_path / {"keras": "m.keras", "saved_model": "saved", "onnx": "m.onnx", "tflite": "m.tflite"}[fmt]
    assert export_run(run_id, fmt, out) == out
    assert not [p.name for p in tmp_path.iterdir() if ".part" in p.name], "no temporary file is left"
    pixels = data.x_test[:5]
    np.testing.assert_allclose(answers(fmt, out, pixels), predictor_answers(run_id, pixels), atol=1e-4)


@pytest.mark.parametrize(
    ("fmt", "out", "message"),
    [
        ("keras", "model.h5", "a keras export is a file ending in .keras"),
        ("onnx", "model.keras", "ending in .onnx"),
        ("tflite", "missing-folder/m.tflite", "no folder"),
        ("png", "m.png", "unknown format 'png'"),
    ],
)
def test_bad_exports_are_refused_before_any_model_is_built(fmt, out, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        check_export(fmt, out)


def test_an_existing_file_is_not_replaced_without_overwrite(tmp_path, capsys):
    taken = tmp_path / "m.keras"
    taken.write_bytes(b"mine")
    assert cli.main(["export", "any-run", "--format", "keras", "--out", str(taken)]) == 1
    assert "exists already (--overwrite replaces it)" in capsys.readouterr().err
    assert taken.read_bytes() == b"mine"


def test_an_ensemble_is_exported_member_by_member(artifacts):
    write_ensemble(artifacts, np.arange(100) % 10)
    with pytest.raises(RunError, match="ab is an ensemble: load or export its members"):
        build_run_model(load_run("ab"))


@pytest.mark.slow  # over 2 s: the quick loop leaves it to CI
def test_a_missing_run_is_reported_before_tensorflow_loads(tmp_path):
    code = (
        "import sys\nfrom cifar.cli import main\nrc = main(sys.argv[1:])\n"
        "print('tensorflow imported:', 'tensorflow' in sys.modules)\nsys.exit(rc)"
    )
    argv = ["export", "no-such-run", "--out", str(tmp_path / "m.keras")]
    result = subprocess.run([sys.executable, "-c", code, *argv], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 1 and "no run 'no-such-run'" in result.stderr
    assert "tensorflow imported: False" in result.stdout


@pytest.mark.slow  # over 2 s: the quick loop leaves it to CI
@pytest.mark.parametrize("temperature", [0.0, 5e-324, 1e300])
def test_a_keras_file_with_a_temperature_no_fit_gives_does_not_load(run_copy, tmp_path, temperature):
    import zipfile

    import keras

    run_id, _ = run_copy
    good = export_run(run_id, "keras", tmp_path / "m.keras")
    tampered = tmp_path / "tampered.keras"
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(tampered, "w") as target:
        for item in source.infolist():
            data = source.read(item)
            if item.filename == "config.json":
                data = data.replace(b'"temperature": 1.7', f'"temperature": {temperature!r}'.encode())
                assert data != source.read(item), "the temperature is in the file's config"
            target.writestr(item, data)
    with pytest.raises(Exception, match="a temperature must be from 0.05 to 20.0"):
        keras.models.load_model(tampered)
    assert keras.models.load_model(good) is not None
