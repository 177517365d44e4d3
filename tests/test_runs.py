"""Run folders: atomic publishing, safe run ids, tolerant listing."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cifar import runs
from cifar.runs import RunError, RunWriter, check_run_id, list_runs, load_run, runs_table


def write_complete(writer: RunWriter, model="baseline", accuracy=0.5, finished=1.0, n=4, **hyper):
    writer.write_json(
        "config.json",
        {"run_id": writer.run_id, "config": {"model": model, **hyper}, "class_names": list("abcdefghij")},
    )
    writer.write_history(pd.DataFrame({"loss": [1.0], "accuracy": [0.3], "seconds": [1.0]}))
    writer.write_json("metrics.json", {"model": model, "test_accuracy": accuracy, "finished": finished})
    writer.write_npy("test_predictions.npy", np.full((n, 10), 0.1, np.float32))
    writer.write_npy("test_labels.npy", np.arange(n, dtype=np.uint8))


def test_publish_is_atomic():
    writer = RunWriter("r1").open()
    assert writer.path.name == ".r1.partial"
    write_complete(writer)
    assert list_runs() == []
    with pytest.raises(RunError):
        load_run("r1")
    final = writer.publish()
    assert final == runs.runs_root() / "r1" and final.is_dir()
    assert not writer.path.exists()
    assert [run.run_id for run in list_runs()] == ["r1"]
    status = json.loads((final / "status.json").read_text())
    assert status["state"] == "finished" and status["pid"] > 0
    assert not [p for p in final.iterdir() if p.name.endswith(".part")]


def test_a_killed_writer_leaves_only_the_partial_folder():
    writer = RunWriter("killed").open()
    write_complete(writer)
    del writer  # the process dies here: publish() never runs
    assert [p.name for p in runs.runs_root().iterdir()] == [".killed.partial"]
    assert list_runs() == []
    with pytest.raises(RunError, match="no run"):
        load_run("killed")


@pytest.mark.parametrize("missing", runs.REQUIRED_FILES)
def test_publish_without_required_files_raises(missing):
    writer = RunWriter("incomplete").open()
    write_complete(writer)
    (writer.path / missing).unlink()
    with pytest.raises(RunError, match=missing):
        writer.publish()
    assert not (runs.runs_root() / "incomplete").exists()


def test_existing_run_is_not_overwritten_unless_asked():
    writer = RunWriter("same").open()
    write_complete(writer, accuracy=0.1)
    writer.publish()
    with pytest.raises(RunError, match="exists already"):
        RunWriter("same")
    again = RunWriter("same", overwrite=True).open()
    write_complete(again, accuracy=0.9)
    again.publish()
    assert load_run("same").metrics["test_accuracy"] == 0.9


def test_reopening_clears_leftovers_of_a_killed_attempt():
    first = RunWriter("retry").open()
    (first.path / "junk.txt").write_text("left over")
    second = RunWriter("retry").open()
    assert not (second.path / "junk.txt").exists()


@pytest.mark.parametrize(
    "run_id",
    [
        "",
        "a/b",
        "../escape",
        "..",
        "a..b",
        "/etc/passwd",
        "/etc/x",
        ".hidden",
        "-flag",
        "a\\b",
        "x" * 101,
        "run\n",
        "run\nother",
        "ünïcode",
        "with space",
        None,
        5,
    ],
)
def test_bad_run_ids_are_refused(run_id):
    with pytest.raises(RunError, match="invalid run id"):
        check_run_id(run_id)
    with pytest.raises(RunError):
        RunWriter(run_id)
    with pytest.raises(RunError):
        load_run(run_id)


@pytest.mark.parametrize("run_id", ["a", "baseline-20240101-120000", "x.y_z-1", "A" * 100])
def test_good_run_ids(run_id):
    assert check_run_id(run_id) == run_id
    assert runs.run_path(run_id).parent == runs.runs_root()


def _publish(run_id, **kwargs):
    writer = RunWriter(run_id).open()
    write_complete(writer, **kwargs)
    return writer.publish()


@pytest.mark.parametrize(
    "damage", ["bad-config-json", "bad-metrics-json", "missing-history", "config-is-a-list", "empty-folder"]
)
def test_list_runs_skips_and_reports_a_corrupt_folder(damage):
    _publish("good", finished=2.0)
    bad = _publish("bad", finished=3.0)
    if damage == "bad-config-json":
        (bad / "config.json").write_text("{not json")
    elif damage == "bad-metrics-json":
        (bad / "metrics.json").write_bytes(b"\xff\xfe")
    elif damage == "missing-history":
        (bad / "history.csv").unlink()
    elif damage == "config-is-a-list":
        (bad / "config.json").write_text("[1, 2]")
    else:
        for path in bad.iterdir():
            path.unlink()
    (runs.runs_root() / "stray-file.txt").write_text("not a run")
    problems: list[str] = []
    listed = list_runs(with_problems=problems)
    assert [run.run_id for run in listed] == ["good"]
    assert len(problems) == 1 and "'bad'" in problems[0]
    assert [run.run_id for run in list_runs()] == ["good"]  # without the list: silent


def test_list_runs_newest_first_and_runs_table():
    _publish("old", finished=1.0, accuracy=0.2, epochs=3)
    _publish("new", finished=5.0, accuracy=0.7, model="transfer", epochs=4, resize="bilinear")
    RunWriter("running").open()  # partial: not listed
    listed = list_runs()
    assert [run.run_id for run in listed] == ["new", "old"]
    table = runs_table()
    assert len(table) == 2
    assert table["run"].tolist() == ["new", "old"]
    assert table["model"].tolist() == ["transfer", "baseline"]
    assert table["test_accuracy"].tolist() == [0.7, 0.2]
    assert table["epochs"].tolist() == [4, 3]
    assert "model" in table.columns and table.columns.tolist().count("model") == 1


def test_runs_table_empty():
    assert runs_table().empty


def test_loaded_run_reads_its_arrays():
    _publish("arrays", n=6)
    run = load_run("arrays")
    assert run.test_predictions.shape == (6, 10) and run.test_predictions.dtype == np.float32
    assert run.test_labels.tolist() == [0, 1, 2, 3, 4, 5]
    assert run.history.columns.tolist() == ["epoch", "loss", "accuracy", "seconds"]
    assert run.class_names == list("abcdefghij")


def test_predictions_with_wrong_shape_are_refused():
    path = _publish("wrong")
    np.save(path / "test_predictions.npy", np.zeros((4, 3), np.float32))
    with pytest.raises(RunError, match="shape"):
        load_run("wrong").test_predictions  # noqa: B018


@pytest.mark.parametrize(
    "model, overrides, finished, flagged",
    [
        ("transfer", {"resize": "bilinear", "input_size": 224}, runs.RESIZE_LEFT_XLA - 1, True),
        ("transfer", {"resize": "bilinear", "input_size": 160}, runs.RESIZE_LEFT_XLA - 1, True),
        ("transfer", {"resize": "bilinear", "input_size": 224}, runs.RESIZE_LEFT_XLA + 1, False),
        ("transfer", {"resize": "bilinear", "input_size": 299}, runs.RESIZE_LEFT_XLA - 1, False),
        ("transfer", {"resize": "bilinear", "input_size": 256}, runs.RESIZE_LEFT_XLA - 1, False),
        ("transfer", {}, runs.RESIZE_LEFT_XLA - 1, False),  # the reference: nearest-neighbour x7
        ("baseline", {}, runs.RESIZE_LEFT_XLA - 1, False),
    ],
)
def test_runs_trained_on_xla_s_faulty_resize_are_flagged(model, overrides, finished, flagged):
    from cifar.config import parse_config

    config = {"config": parse_config(model, overrides).model_dump()}
    run = runs.Run("r", runs.runs_root() / "r", config, {"model": model, "finished": finished})
    assert run.trained_on_faulty_resize == flagged
