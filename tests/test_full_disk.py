"""A full disk (#30 defect 5) during train, calibrate, export and robustness: one line saying so,
exit status 1, no partial file left, the previous results as they were. The disk fills where the
file is written: a write to a temporary name fails as ENOSPC, numpy's short write or TensorFlow's
own error fail (a real tmpfs needs privileges CI may not have)."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from cifar import atomic, cli
from cifar.analysis.robustness import stratified_subset, write_results
from cifar.modeling.validation import write_calibration
from cifar.service import jobs
from cifar.store import run_folder
from cifar.store.runs import load_run, partial_path, run_path
from tests.factory import digest, tiny_cifar, write_ensemble, write_npz, write_robustness, write_run

LABELS = np.arange(100) % 10


def parts(folder: Path) -> list[str]:
    return [path.name for path in folder.rglob("*") if ".part" in path.name]


def says_the_disk_is_full(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    last = err.rstrip("\n").splitlines()[-1]
    assert last.startswith("error: cannot write ") and "no space left on the device" in last, err
    return last


def half_written(path, data: bytes, error: Exception) -> None:
    Path(path).write_bytes(data[: len(data) // 2])
    raise error


ENOSPC = OSError(errno.ENOSPC, "No space left on device")


@pytest.fixture
def trained_copy(use_trained_baseline, tmp_path, monkeypatch):
    """The session's trained run copied into this test's artifacts, with the data it saw."""
    run_id, data = use_trained_baseline
    source = load_run(run_id).path
    monkeypatch.setenv("CIFAR_ARTIFACTS", str(tmp_path / "copy"))
    shutil.copytree(source, tmp_path / "copy" / "runs" / run_id)
    monkeypatch.setenv("CIFAR10_NPZ", str(write_npz(tmp_path / "data.npz", data)))
    return run_id


@pytest.mark.slow
def test_train_on_a_full_disk(artifacts, tmp_path, monkeypatch, capsys):
    """Was: a segmentation fault (exit 139) after an h5py traceback, and `jobs` naming the phase
    before the one that failed."""
    import keras

    write_run(artifacts, "previous", "baseline", LABELS, 0.6)
    before = digest(run_path("previous"))
    monkeypatch.setenv("CIFAR10_NPZ", str(write_npz(tmp_path / "data.npz", tiny_cifar(60, 20))))
    monkeypatch.setattr(
        keras.Model, "save_weights", lambda self, path, **kw: half_written(path, b"h5" * 999, ENOSPC)
    )
    assert (
        cli.main(["train", "baseline", "--run-id", "full", "--epochs", "1", "--validation-size", "10"]) == 1
    )
    says_the_disk_is_full(capsys)
    assert not run_path("full").exists() and digest(run_path("previous")) == before
    folder = partial_path("full")
    assert not (folder / "model.weights.h5").exists() and parts(folder) == []
    job = jobs.job_status("full")
    assert (job.state, job.phase) == ("failed", "saving") and "no space left on the device" in job.message


@pytest.mark.slow
def test_calibrate_on_a_full_disk(trained_copy, monkeypatch, capsys):
    """Was: "error: 50000 requested and 4064 written", the new validation predictions beside the
    old calibration."""
    run_id = trained_copy
    before = digest(run_path(run_id))
    save = np.save

    def short_write(file, array, *args, **kwargs):
        if "val_labels.npy" in Path(getattr(file, "name", str(file))).name:
            file.write(b"\x93NUMPY")
            raise OSError(f"{array.nbytes} requested and 6 written")
        return save(file, array, *args, **kwargs)

    monkeypatch.setattr(np, "save", short_write)
    monkeypatch.setattr(atomic, "_nearly_full", lambda folder: True, raising=False)  # statvfs, of a full disk
    run = load_run(run_id)
    val, val_labels = run.validation
    with pytest.raises(OSError):  # the writer itself: the first file is not replaced alone
        write_calibration(run.path, val[::-1], val_labels, run.test_predictions, run.test_labels)
    assert digest(run_path(run_id)) == before and parts(run_path(run_id)) == []
    assert cli.main(["calibrate", run_id, "--overwrite"]) == 1
    assert "val_labels.npy" in says_the_disk_is_full(capsys)
    assert digest(run_path(run_id)) == before and parts(run_path(run_id)) == []


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["keras", "saved_model", "tflite"])
def test_export_on_a_full_disk(fmt, trained_copy, tmp_path, monkeypatch, capsys):
    import keras

    run_id = trained_copy
    out = tmp_path / "out" / {"keras": "m.keras", "saved_model": "m", "tflite": "m.tflite"}[fmt]
    out.parent.mkdir()
    if fmt == "saved_model":  # an earlier export of ours, which --overwrite may replace
        (out / "variables").mkdir(parents=True)
        (out / "saved_model.pb").write_bytes(b"\x08\x01 earlier")
    else:
        out.write_bytes({"keras": b"PK\x03\x04", "tflite": b"\x1c\x00\x00\x00TFL3"}[fmt] + b" earlier")
    before = digest(out.parent)

    class ResourceExhaustedError(Exception):  # TensorFlow's own, no OSError
        pass

    def export(self, path, *args, **kwargs):
        if fmt == "saved_model":
            Path(path).mkdir()
            half_written(Path(path) / "saved_model.pb", b"pb" * 999, ResourceExhaustedError("No space left"))
        half_written(path, b"tflite" * 999, ENOSPC)

    monkeypatch.setattr(
        keras.Model, "save", lambda self, path, **kw: half_written(path, b"zip" * 999, ENOSPC)
    )
    monkeypatch.setattr(keras.Model, "export", export)
    monkeypatch.setattr(atomic, "_nearly_full", lambda folder: True, raising=False)
    assert cli.main(["export", run_id, "--format", fmt, "--out", str(out), "--overwrite"]) == 1
    assert out.name in says_the_disk_is_full(capsys)
    assert digest(out.parent) == before and parts(out.parent) == []


def test_robustness_on_a_full_disk(artifacts, monkeypatch, capsys):
    """Was: the new clean predictions beside the old results (three files written one by one)."""
    write_ensemble(artifacts, LABELS)
    indices = stratified_subset(LABELS, 50)
    for run_id, seed in (("a", 10), ("b", 200), ("ab", 7)):
        write_robustness(run_id, LABELS, indices, 0.5, seed)
    before = digest(run_path("ab"))
    save = np.save

    def full(file, array, *args, **kwargs):
        if run_folder.ROBUSTNESS_PREDICTIONS in Path(getattr(file, "name", str(file))).name:
            raise OSError(errno.ENOSPC, "No space left on device")
        return save(file, array, *args, **kwargs)

    monkeypatch.setattr(np, "save", full)
    record = json.loads((run_path("ab") / "robustness.json").read_text())
    clean = predictions = np.full((75, 50, 10), 0.1, np.float32)
    with pytest.raises(OSError):  # the writer itself: the first file is not replaced alone
        write_results(run_path("ab"), record, clean[0], predictions)
    assert digest(run_path("ab")) == before and parts(run_path("ab")) == []
    assert cli.main(["robustness", "ab", "--overwrite"]) == 1
    says_the_disk_is_full(capsys)
    assert digest(run_path("ab")) == before and parts(run_path("ab")) == []
