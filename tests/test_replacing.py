"""What a command may replace (`cifar.atomic.check_replace`, issues #29 and #30): a run's committed
result only with --overwrite, saying what it holds; an export only over an export of its own
format, never another folder or file; and always before any model or TensorFlow loads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cifar import atomic, cli
from cifar.analysis.robustness import stratified_subset
from cifar.store import run_folder
from cifar.store.runs import load_run, run_path
from tests.factory import digest, write_ensemble, write_robustness, write_run

LABELS = np.arange(100) % 10


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


# ----------------------------------------------------------------------------- a run's results


def _heavy_work(*args, **kwargs):
    raise AssertionError("the command went on to compute a result it was not asked to replace")


def _robustness(artifacts, monkeypatch) -> tuple[str, str]:
    import cifar.analysis.robustness

    write_run(artifacts, "r", "baseline", LABELS, 0.6)
    write_robustness("r", LABELS, stratified_subset(LABELS, 50), 0.5)
    monkeypatch.setattr(cifar.analysis.robustness, "_evaluate_model", _heavy_work)
    return run_folder.ROBUSTNESS, "r's robustness.json (50 test images, seed 0) exists already"


def _calibration(artifacts, monkeypatch) -> tuple[str, str]:
    import cifar.sources.assets

    write_run(artifacts, "r", "baseline", LABELS, 0.6, val_labels=np.arange(40) % 10)
    monkeypatch.setattr(cifar.sources.assets, "load_cifar10", _heavy_work)
    temperature = load_run("r").temperature
    return run_folder.CALIBRATION, f"r's calibration.json (T = {temperature:.3f} from 40 validation images)"


def _cost(artifacts, monkeypatch) -> tuple[str, str]:
    import cifar.analysis.cost

    folder = write_run(artifacts, "r", "baseline", LABELS, 0.6)
    metrics = json.loads((folder / run_folder.METRICS).read_text())
    metrics.update(
        flops_per_image=10, views=1, model_bytes=100, latency_ms={"1": 1.0}, latency_device="CPU: x"
    )
    atomic.write_json(folder / run_folder.METRICS, metrics)
    monkeypatch.setattr(cifar.analysis.cost, "run_cost", _heavy_work)
    return run_folder.METRICS, "r's cost in metrics.json (measured on CPU: x) exists already"


def _projection(artifacts, monkeypatch) -> tuple[str, str]:
    import cifar.analysis.feature_space

    folder = write_run(artifacts, "r", "baseline", LABELS, 0.6)
    atomic.write_npy(folder / run_folder.PROJECTION, np.zeros((len(LABELS), 2), np.float32))
    record = {"method": "umap", "space": "penultimate layer", "dimensions": 8, "images": 100, "seconds": 1.0}
    atomic.write_json(folder / run_folder.PROJECTION_RECORD, record)
    monkeypatch.setattr(cifar.analysis.feature_space, "split_features", _heavy_work)
    return run_folder.PROJECTION_RECORD, "r's projection.json (a map of 100 test images) exists already"


@pytest.mark.parametrize(
    "command, committed",
    [("robustness", _robustness), ("calibrate", _calibration), ("cost", _cost), ("project", _projection)],
)
def test_a_committed_result_is_replaced_only_with_overwrite(
    command, committed, artifacts, monkeypatch, capsys
):
    """#29 item 4: `robustness baseline-reference --images 20` replaced the committed 1000-image
    result silently. Now every result command says what would be replaced, asks for --overwrite,
    and computes nothing."""
    name, says = committed(artifacts, monkeypatch)
    before = digest(run_path("r"))
    assert cli.main([command, "r"]) == 1
    err = one_error_line(capsys)
    assert says in err and err.rstrip().endswith("(--overwrite replaces it)"), err
    assert digest(run_path("r")) == before and (run_path("r") / name).is_file()


def test_overwrite_replaces_a_result(artifacts, capsys):
    write_ensemble(artifacts, LABELS)
    indices = stratified_subset(LABELS, 50)
    write_robustness("a", LABELS, indices, 0.5, 10)
    write_robustness("b", LABELS, indices, 0.7, 200)
    assert cli.main(["robustness", "ab"]) == 0
    before = (run_path("ab") / run_folder.ROBUSTNESS).read_bytes()
    assert cli.main(["robustness", "ab"]) == 1 and "--overwrite replaces it" in capsys.readouterr().err
    assert (run_path("ab") / run_folder.ROBUSTNESS).read_bytes() == before
    assert cli.main(["robustness", "ab", "--overwrite"]) == 0
    assert (
        json.loads((run_path("ab") / run_folder.ROBUSTNESS).read_text())["finished"]
        > json.loads(before)["finished"]
    )


def test_every_run_is_checked_before_any_is_evaluated(artifacts, capsys):
    write_ensemble(artifacts, LABELS)
    indices = stratified_subset(LABELS, 50)
    write_robustness("a", LABELS, indices, 0.5, 10)
    before = digest(run_path("a"))
    assert cli.main(["robustness", "b", "a"]) == 1  # "b" has none, "a" has one: nothing is written
    assert "a's robustness.json" in capsys.readouterr().err
    assert digest(run_path("a")) == before and not (run_path("b") / run_folder.ROBUSTNESS).exists()


# ----------------------------------------------------------------------------- export --overwrite


def _artifacts_folder(tmp_path: Path) -> Path:
    write_run(tmp_path / "my-artifacts", "precious", "baseline", LABELS, 0.6)
    return tmp_path / "my-artifacts"


def _notes(tmp_path: Path) -> Path:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "thesis.txt").write_text("three years of work")
    return tmp_path / "notes"


def _saved_model_with_notes(tmp_path: Path) -> Path:
    folder = tmp_path / "export"
    (folder / "variables").mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(b"\x08\x01")
    (folder / "variables" / "variables.index").write_bytes(b"x")
    (folder / "README.md").write_text("how I deploy this model")
    return folder


def _saved_model_with_a_link(tmp_path: Path) -> Path:
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "saved_model.pb").write_bytes(b"\x08\x01")
    (folder / "assets").symlink_to(_notes(tmp_path))
    return folder


def _an_empty_folder(tmp_path: Path) -> Path:
    (tmp_path / "empty").mkdir()
    return tmp_path / "empty"


@pytest.mark.parametrize(
    "fmt, target",
    [
        ("saved_model", _artifacts_folder),
        ("saved_model", _notes),
        ("saved_model", _saved_model_with_notes),
        ("saved_model", _saved_model_with_a_link),
        ("saved_model", _an_empty_folder),
        ("saved_model", lambda tmp: (tmp / "model.txt", (tmp / "model.txt").write_text("a file"))[0]),
        ("keras", lambda tmp: (tmp / "m.keras", (tmp / "m.keras").write_text("my notes"))[0]),
        ("onnx", lambda tmp: (tmp / "m.onnx", (tmp / "m.onnx").write_bytes(b"PK\x03\x04 a zip"))[0]),
        ("tflite", lambda tmp: (tmp / "m.tflite", (tmp / "m.tflite").mkdir())[0]),
    ],
    ids=[
        "artifacts folder",
        "folder of notes",
        "SavedModel with a notes file",
        "SavedModel with a link",
        "empty folder",
        "a file for a SavedModel",
        "text named .keras",
        "zip named .onnx",
        "folder named .tflite",
    ],
)
def test_export_overwrite_replaces_nothing_it_did_not_write(fmt, target, tmp_path, capsys):
    """#30 defect 1: `export --format saved_model --out DIR --overwrite` deleted whatever DIR was
    (an artifacts folder: every run). Refused before anything loads; what is there is unchanged."""
    out = target(tmp_path)
    before = digest(out) if out.is_dir() else out.read_bytes()
    assert cli.main(["export", "any-run", "--format", fmt, "--out", str(out), "--overwrite"]) == 1
    assert "is not what this program writes: not replaced, even with --overwrite" in one_error_line(capsys)
    assert (digest(out) if out.is_dir() else out.read_bytes()) == before


@pytest.mark.parametrize(
    "fmt, start",
    [
        ("keras", b"PK\x03\x04"),
        ("onnx", b"\x08\x07\x12"),
        ("tflite", b"\x1c\x00\x00\x00TFL3"),
    ],
)
def test_an_export_is_recognised_by_how_its_format_starts(fmt, start, tmp_path):
    from cifar.inference.export import check_export

    out = tmp_path / f"m.{'keras' if fmt == 'keras' else fmt}"
    out.write_bytes(start + b"rest of the model")
    with pytest.raises(FileExistsError, match="exists already"):
        check_export(fmt, out)
    assert check_export(fmt, out, overwrite=True) == out


@pytest.mark.slow
def test_export_replaces_its_own_saved_model_and_removes_what_killed_exports_left(
    use_trained_baseline, tmp_path, capsys
):
    """#30 defects 1 and 7, end to end: a SavedModel this program wrote is replaced; the artifacts
    folder is not; a killed export's hidden temporary file goes at the next export."""
    from cifar.inference.export import export_run

    run_id, _ = use_trained_baseline
    out = tmp_path / "saved"
    killed = tmp_path / ".saved.0a1b2c3d.999999991.part"  # a SavedModel export killed mid-way
    killed.mkdir()
    (killed / "saved_model.pb").write_bytes(b"half")
    older = tmp_path / ".saved.999999992.part"  # the name an older version gave its temporary folder
    older.mkdir()
    export_run(run_id, "saved_model", out)
    assert not killed.exists() and not older.exists()
    first = digest(out)
    assert cli.main(["export", run_id, "--format", "saved_model", "--out", str(out), "--overwrite"]) == 0
    assert set(digest(out)) == set(first) and sorted(p.name for p in tmp_path.iterdir()) == ["saved"]
    artifacts = load_run(run_id).path.parent.parent
    runs_before = digest(artifacts / "runs")
    assert (
        cli.main(["export", run_id, "--format", "saved_model", "--out", str(artifacts), "--overwrite"]) == 1
    )
    assert digest(artifacts / "runs") == runs_before


def test_explain_replaces_no_picture_without_overwrite(tmp_path, capsys):
    mine = tmp_path / "holiday.png"
    mine.write_bytes(b"\x89PNG the user's own picture")
    assert cli.main(["explain", "any-run", str(mine), "--out", str(mine)]) == 1
    assert "exists already (--overwrite replaces it)" in capsys.readouterr().err
    assert mine.read_bytes() == b"\x89PNG the user's own picture"


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]], ids=["plain", "overwrite"])
def test_calibrate_says_why_an_ensemble_cannot_be_calibrated_before_asking_for_overwrite(
    artifacts, overwrite, capsys
):
    write_ensemble(artifacts, LABELS)
    (artifacts / "runs" / "ab" / "val_predictions.npy").unlink()
    assert cli.main(["calibrate", "ab", *overwrite]) == 1
    assert "ab is an ensemble without validation predictions: make it again" in capsys.readouterr().err


def test_calibrate_again_from_the_saved_validation_predictions_keeps_the_temperature(artifacts, capsys):
    """An ensemble (no model to predict with) is calibrated again from what it saved; only with
    --overwrite, and to the same T, now with the test ECE's interval."""
    write_ensemble(artifacts, LABELS)
    calibration = artifacts / "runs" / "ab" / run_folder.CALIBRATION
    before = json.loads(calibration.read_text())
    assert cli.main(["calibrate", "ab"]) == 1
    assert "exists already" in capsys.readouterr().err
    assert cli.main(["calibrate", "ab", "--overwrite"]) == 0
    after = json.loads(calibration.read_text())
    assert after["temperature"] == pytest.approx(before["temperature"], rel=1e-9)
    low, high = after["test"]["ece_after_interval"]
    assert low <= after["test"]["ece_after"] <= high


def test_a_result_another_command_wrote_meanwhile_is_not_replaced(artifacts, capsys):
    """Two `robustness` commands on one run: the one that finishes second does not silently
    replace the first one's result (it checks again right before writing)."""
    from cifar.analysis import robustness

    write_ensemble(artifacts, LABELS)
    indices = stratified_subset(LABELS, 50)
    write_robustness("a", LABELS, indices, 0.5, 10)
    write_robustness("b", LABELS, indices, 0.7, 200)
    pooled = robustness._pooled_members

    def meanwhile(run):
        result = pooled(run)
        robustness.write_results(run.path, *result)  # the other command finishes first
        return result

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(robustness, "_pooled_members", meanwhile)
        assert cli.main(["robustness", "ab"]) == 1
    first = (run_path("ab") / run_folder.ROBUSTNESS).read_bytes()
    assert "ab's robustness.json" in one_error_line(capsys)
    assert (run_path("ab") / run_folder.ROBUSTNESS).read_bytes() == first
