"""A run's whole model (`cifar.modeling.whole_model`) loaded or exported: uint8 32 x 32 pixels in,
probabilities out.

    from cifar import load_run_model
    model = load_run_model("transfer-best")        # from any working directory
    python -m cifar export RUN --format keras|saved_model|onnx|tflite --out PATH

Saved and exported with Keras 3's own `model.save` and `model.export` (ONNX through tf2onnx, TFLite through
LiteRT's converter), always to a temporary name first, so a failed export leaves nothing behind
(and a killed one's temporary file goes at the next export to the same path). `--overwrite` replaces
only what is recognisably an export of that format (`is_export`), never another file or folder.
A `.keras` file needs `import cifar.modeling.whole_model` before `keras.models.load_model` (the small
layers it registers); the other formats need nothing of this package. Every file is loaded in its
format's own runtime and compared with the model before it replaces anything (`check_answers`).
Nothing here loads TensorFlow before the arguments are checked (`check_export`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from cifar import atomic
from cifar.store.runs import RunError, load_run
from cifar.terminal import tensorflow_quietly

FORMATS = {"keras": ".keras", "saved_model": "", "onnx": ".onnx", "tflite": ".tflite"}
KERAS_FORMAT = {"saved_model": "tf_saved_model", "onnx": "onnx", "tflite": "litert"}
RUNTIMES = {"keras": "Keras", "saved_model": "TensorFlow", "onnx": "onnxruntime", "tflite": "TFLite"}
RUNTIME_PACKAGES = {"onnx": ("tf2onnx", "onnxruntime")}
ANSWER_TOLERANCE = 2e-3  # float32 graphs of one model differ by rounding only; TFLite's kernels round more
# How each file format starts (offset, bytes): a zip; an ONNX ModelProto's first field, ir_version;
# a FlatBuffer's file identifier. What --overwrite may replace must look like one (`is_export`).
SIGNATURES = {"keras": (0, b"PK\x03\x04"), "onnx": (0, b"\x08"), "tflite": (4, b"TFL3")}
# Everything a SavedModel folder of ours holds (its `assets/` stays empty: the model has none).
SAVED_MODEL_ENTRY = re.compile(
    r"saved_model\.pb|fingerprint\.pb|assets|variables(/variables\.(index|data-\d{5}-of-\d{5}))?"
)
SAVED_MODEL_FOLDERS = {"assets", "variables"}


def load_run_model(run_id: str, artifacts: str | Path | None = None, calibrated: bool = True):
    """The run's whole model (`cifar.modeling.whole_model`) as a `keras.Model`; run folders from
    `artifacts`, else `CIFAR_ARTIFACTS`, else the checkout's `artifacts/`."""
    if artifacts is None:
        run = load_run(run_id)
    else:
        before = os.environ.get("CIFAR_ARTIFACTS")
        os.environ["CIFAR_ARTIFACTS"] = str(Path(artifacts).resolve())
        try:
            run = load_run(run_id)  # (the run keeps its folder: nothing later reads the variable)
        finally:
            os.environ.pop("CIFAR_ARTIFACTS") if before is None else os.environ.update(CIFAR_ARTIFACTS=before)
    with tensorflow_quietly():  # a user's script sees no TensorFlow log line (`cifar.terminal`)
        from cifar.modeling.whole_model import build_run_model

        return build_run_model(run, calibrated)


def check_export(fmt: str, out: str | Path, overwrite: bool = False) -> Path:
    """The output path, checked before any model is built."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; the formats are: {', '.join(FORMATS)}")
    out = Path(out)
    if FORMATS[fmt] and out.suffix != FORMATS[fmt]:
        raise ValueError(f"a {fmt} export is a file ending in {FORMATS[fmt]}, not {out.name!r}")
    atomic.check_replace(out, overwrite, ours=lambda path: is_export(path, fmt))
    if not out.parent.is_dir():
        raise FileNotFoundError(f"no folder {out.parent} to export into")
    return out


def is_export(path: Path, fmt: str) -> bool:
    """Is `path` recognisably a `fmt` export (what `--overwrite` may replace): a file that starts
    as the format does, or a folder holding a SavedModel and nothing else?"""
    if fmt == "saved_model":
        return _is_saved_model(path)
    offset, signature = SIGNATURES[fmt]
    if not atomic.is_regular_file(path):
        return False
    with open(path, "rb") as handle:
        return handle.read(offset + len(signature))[offset:] == signature


def _is_saved_model(path: Path) -> bool:
    if path.is_symlink() or not (path / "saved_model.pb").is_file():
        return False
    for top, folders, files in os.walk(path):
        for name in folders + files:
            entry = Path(top) / name
            relative = entry.relative_to(path).as_posix()
            is_folder = entry.is_dir() and not entry.is_symlink()
            if not (atomic.is_regular_file(entry) or is_folder) or not SAVED_MODEL_ENTRY.fullmatch(relative):
                return False
            if is_folder != (relative in SAVED_MODEL_FOLDERS):
                return False
    return True


def export_run(run_id: str, fmt: str, out: str | Path, overwrite: bool = False) -> Path:
    """Save or export a run's model as `fmt` at `out`; returns `out`."""
    import numpy as np

    from cifar.modeling.whole_model import build_run_model
    from cifar.store.processes import pid_alive

    out = check_export(fmt, out, overwrite)
    check_runtime_installed(fmt)
    atomic.remove_stale_parts(out, pid_alive)  # what killed exports to `out` left
    model = build_run_model(load_run(run_id))
    model.predict(np.zeros((1, 32, 32, 3), np.uint8), verbose=0)  # (the ONNX exporter wants a called model)
    with atomic.atomic_write(out, suffix=FORMATS[fmt]) as tmp:
        if fmt == "keras":
            model.save(tmp)
        else:
            model.export(str(tmp), format=KERAS_FORMAT[fmt], verbose=False)
        check_answers(fmt, Path(tmp), model)
        check_export(fmt, out, overwrite)  # again: `out` may have changed while the model was exported
    return out


def check_runtime_installed(fmt: str) -> None:
    """ONNX export needs tf2onnx to write the file and onnxruntime to check it (`check_answers`)."""
    import importlib.util

    missing = [name for name in RUNTIME_PACKAGES.get(fmt, ()) if importlib.util.find_spec(name) is None]
    if missing:
        needed = " and ".join(missing)
        raise RunError(f"a {fmt} export needs {needed}: pip install {' '.join(missing)} (the [onnx] extra)")


def check_answers(fmt: str, path: Path, model) -> None:
    """The file at `path` loads in its format's own runtime and answers as `model` does on a few
    images; else a RunError, and the file is not kept (an exporter may write ops a runtime lacks)."""
    import numpy as np

    probe = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    try:
        answers = runtime_answers(fmt, path, probe)
    except Exception as error:  # noqa: BLE001 (each runtime raises its own types)
        reason = " ".join(str(error).split())[:300] or type(error).__name__
        raise RunError(
            f"the {fmt} file does not load in {RUNTIMES[fmt]} ({reason}); nothing written"
        ) from None
    difference = float(np.max(np.abs(answers - model.predict(probe, verbose=0))))
    if not difference <= ANSWER_TOLERANCE:
        raise RunError(
            f"the {fmt} file answers otherwise in {RUNTIMES[fmt]} (by up to {difference:.3g}): not written"
        )


def runtime_answers(fmt: str, path: Path, pixels):
    """(N, 10) probabilities of uint8 `pixels` from the `fmt` export at `path`, in its runtime."""
    if fmt == "keras":
        import keras

        return keras.models.load_model(path).predict(pixels, verbose=0)
    if fmt == "saved_model":
        import tensorflow as tf

        loaded = tf.saved_model.load(str(path))  # (kept: its functions need the object alive)
        return loaded.serve(tf.constant(pixels)).numpy()
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path))
        return session.run(None, {session.get_inputs()[0].name: pixels})[0]
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_path=str(path))
    (given,), (wanted,) = interpreter.get_input_details(), interpreter.get_output_details()
    interpreter.resize_tensor_input(given["index"], pixels.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(given["index"], pixels)
    interpreter.invoke()
    return interpreter.get_tensor(wanted["index"])


def export_blocker(run) -> str:
    """Why `run`'s model cannot be exported here ("" if it can), without loading anything."""
    from cifar.inference.predict import missing_backbone

    if run.model == "ensemble":
        return "an ensemble: download its members' models"
    if run.config_problem:
        return f"this version cannot rebuild its model ({run.config_problem})"
    if not run.has_weights:
        return "its folder holds no trained weights"
    if missing := missing_backbone(run):
        return f"the InceptionV3 weights ({', '.join(missing)}) are not cached: python -m cifar fetch"
    return ""


def model_bytes(run_id: str) -> bytes:
    """The run's model as the bytes of a `.keras` file (the dashboard's download)."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        return export_run(run_id, "keras", Path(folder) / f"{run_id}.keras").read_bytes()
