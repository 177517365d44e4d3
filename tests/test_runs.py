"""Run folders: atomic publishing, safe run ids, tolerant listing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cifar.store import run_folder, runs, tables
from cifar.store.runs import RunError, RunWriter, check_run_id, list_runs, load_run, run_path
from cifar.store.tables import runs_table
from tests.factory import npz_cifar, plain_id, write_run


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


def test_publish_renames_the_partial_folder_in_one_step(monkeypatch):
    """The finished folder is the partial folder itself (same inodes), moved by one rename: a copy
    followed by a delete would let a reader see a half-copied run."""
    writer = RunWriter("moved").open()
    write_complete(writer)
    inodes = {p.name: p.stat().st_ino for p in [writer.path, *writer.path.iterdir()]}
    assert len(inodes) > 1
    renames = []
    real_replace = runs.os.replace
    monkeypatch.setattr(runs.os, "replace", lambda a, b: renames.append((a, b)) or real_replace(a, b))
    final = writer.publish()
    assert [(a, b) for a, b in renames if b == final] == [(writer.path, final)]
    assert final.stat().st_ino == inodes.pop(writer.path.name)
    inodes.pop("status.json")  # rewritten by publish ("finished")
    assert {name: (final / name).stat().st_ino for name in inodes} == inodes


def test_an_overwrite_that_cannot_publish_keeps_the_old_run(monkeypatch):
    old = RunWriter("kept").open()
    write_complete(old, accuracy=0.5)
    old.publish()
    new = RunWriter("kept", overwrite=True).open()
    write_complete(new, accuracy=0.9)
    real_replace = runs.os.replace

    def refuse_the_new_one(source, target):
        if Path(source) == new.path:
            raise OSError(5, "input/output error")
        return real_replace(source, target)

    monkeypatch.setattr(runs.os, "replace", refuse_the_new_one)
    with pytest.raises(OSError):
        new.publish()
    assert load_run("kept").metrics["test_accuracy"] == 0.5, "the old run is still there, whole"
    assert sorted(p.name for p in runs.runs_root().iterdir()) == [".kept.partial", "kept"]
    monkeypatch.setattr(runs.os, "replace", real_replace)
    assert new.publish() == run_path("kept") and load_run("kept").metrics["test_accuracy"] == 0.9
    assert sorted(p.name for p in runs.runs_root().iterdir()) == ["kept"]


def test_a_killed_writer_leaves_only_the_partial_folder():
    writer = RunWriter("killed").open()
    write_complete(writer)
    del writer  # the process dies here: publish() never runs
    assert [p.name for p in runs.runs_root().iterdir()] == [".killed.partial"]
    assert list_runs() == []
    with pytest.raises(RunError, match="no run"):
        load_run("killed")


def test_discard_drops_the_partial_folder_and_nothing_else():
    """A non-chief worker's copy of a distributed run; discarding it twice is not an error."""
    write_complete(RunWriter("kept").open())
    writer = RunWriter("worker").open()
    write_complete(writer)
    assert writer.discard() == writer.path and writer.discard() == writer.path
    assert [p.name for p in runs.runs_root().iterdir()] == [".kept.partial"]


@pytest.mark.parametrize("missing", run_folder.REQUIRED)
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
    ids=plain_id,
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


# ----------------------------------------------------------------------------- choosing runs

LABELS = npz_cifar().y_test  # the labels of the `runs` fixture's runs


def _fixture_run(run_id, model, accuracy, seed, **overrides):
    return write_run(runs.artifacts_dir(), run_id, model, LABELS, accuracy, seed=seed, **overrides)


def test_test_accuracy_reads_metrics_and_sorts_missing_last():
    def run(metrics):
        return runs.Run("r", runs.runs_root() / "r", {}, metrics)

    assert runs.test_accuracy(run({"test_accuracy": 0.25})) == 0.25
    for bad in ({}, {"test_accuracy": None}, {"test_accuracy": float("nan")}, {"test_accuracy": "0.9"}):
        assert runs.test_accuracy(run(bad)) == -1.0
    assert runs.describe_run(run({"model": "baseline", "test_accuracy": 0.25})) == "r (baseline, 25.0% test)"
    assert runs.describe_run(run({"model": "baseline"})) == "r (baseline, no test accuracy)"
    assert runs.describe_run(run({"model": "baseline", "test_accuracy": 0.0})) == "r (baseline, 0.0% test)"


@pytest.mark.usefixtures("runs")
def test_headline_runs_prefer_the_reference_by_name():
    chosen = runs.headline_runs(list_runs())
    assert chosen["baseline"].run_id == "baseline-reference"  # although baseline-best is better
    assert chosen["transfer"].run_id == "transfer-reference"


@pytest.mark.usefixtures("runs")
def test_headline_table_leads_with_the_best_run_beside_the_write_up_s_recipe_rerun():
    table = runs.headline_table(list_runs()).set_index("model")
    assert list(table.index) == ["baseline", "transfer"]  # no ensemble run: no ensemble row
    assert list(table["write_up_test_accuracy"]) == [0.711, 0.8375]
    for model, best, reference in (
        ("baseline", "baseline-best", "baseline-reference"),  # baseline-best (0.8) beats the reference (0.7)
        ("transfer", "transfer-reference", "transfer-reference"),
    ):
        row = table.loc[model]
        metrics = json.loads((runs.run_path(best) / "metrics.json").read_text())
        shown = (row["run"], row["test_accuracy"], row["train_accuracy"], row["reference_run"])
        assert shown == (best, metrics["test_accuracy"], metrics["train_accuracy"], reference)
        reference_metrics = json.loads((runs.run_path(reference) / "metrics.json").read_text())
        assert row["reference_test_accuracy"] == reference_metrics["test_accuracy"]


def test_headline_runs_fall_back_to_the_best_test_accuracy():
    _fixture_run("low", "transfer", 0.2, seed=1)
    _fixture_run("high", "transfer", 0.9, seed=2)
    chosen = runs.headline_runs(list_runs())
    assert chosen["transfer"].run_id == "high" and chosen["baseline"] is None
    assert runs.best_run(list_runs(), "transfer").run_id == "high"
    assert runs.best_run(list_runs(), "baseline") is None
    assert runs.headline_runs([]) == {"baseline": None, "transfer": None}
    empty = runs.headline_table([])
    assert len(empty) == 2 and empty["run"].isna().all()


@pytest.mark.usefixtures("runs")
def test_best_runs_are_the_most_accurate_per_model():
    worse = _fixture_run("worse", "transfer", 0.3, seed=5)
    chosen = runs.best_runs(list_runs())
    assert chosen["baseline"].run_id == "baseline-best"  # 0.8 beats the reference's 0.7
    assert chosen["transfer"].run_id == "transfer-reference"
    assert runs.best_runs([]) == {"baseline": None, "transfer": None, "ensemble": None}
    # A run with its weights beats a more accurate one without (which could not classify).
    (worse / "head.weights.h5").write_bytes(b"weights")
    chosen = runs.best_runs(list_runs())
    assert chosen["transfer"].run_id == "worse" and chosen["baseline"].run_id == "baseline-best"


@pytest.mark.usefixtures("runs")
def test_default_selection_includes_the_newest_run():
    _fixture_run("newest", "baseline", 0.5, seed=99)
    selection = runs.default_selection(list_runs())
    assert selection == ["baseline-reference", "transfer-reference", "baseline-best", "newest"]
    assert runs.default_selection(list_runs(), limit=2) == ["baseline-reference", "transfer-reference"]


def test_default_selection_of_one_model_shows_the_newest_few():
    for seed, (run_id, accuracy) in enumerate([("a", 0.2), ("b", 0.5), ("c", 0.9)]):
        _fixture_run(run_id, "baseline", accuracy, seed=seed)
    assert runs.default_selection(list_runs()) == ["c", "b", "a"]  # best first, then newest first
    assert runs.default_selection([]) == []


def test_default_selection_adds_the_rest_only_to_a_single_run_and_stops_at_six():
    # the best (oldest) and the newest are two: enough, the middle one stays out
    for seed, (run_id, accuracy) in enumerate([("best", 0.9), ("middle", 0.2), ("newest", 0.5)]):
        _fixture_run(run_id, "baseline", accuracy, seed=seed)
    assert runs.default_selection(list_runs()) == ["best", "newest"]
    for seed in range(3, 9):  # nine runs; the best is also the newest: the newest others join, six in all
        _fixture_run(f"run{seed}", "baseline", 0.1, seed=seed)
    _fixture_run("top", "baseline", 0.95, seed=20)
    assert runs.default_selection(list_runs()) == ["top", "run8", "run7", "run6", "run5", "run4"]


@pytest.mark.usefixtures("runs")
def test_hyperparameter_columns_are_the_configs_fields():
    from cifar.config import field_table

    table = runs_table(list_runs())
    fields = {row["name"] for model in ("baseline", "transfer") for row in field_table(model)}
    assert set(tables.hyperparameter_columns(table)) == fields


def test_a_run_with_a_retired_hyperparameter_value_still_shows_but_cannot_classify(artifacts):
    """An older version's run (a choice since removed) keeps its results on every page; only its
    model cannot be rebuilt, which `config_problem` says and the Predictor refuses."""
    folder = write_run(artifacts, "old-run", "baseline", npz_cifar().y_test, 0.5)
    (folder / "model.weights.h5").write_bytes(b"weights of an old architecture")
    config = json.loads((folder / "config.json").read_text())
    config["config"]["architecture"] = "resnet"
    (folder / "config.json").write_text(json.dumps(config))
    run = load_run("old-run")
    assert run.hyperparameters["architecture"] == "resnet" and run.hyperparameters["epochs"] == 3
    assert "architecture" in run.config_problem and not run.has_weights
    assert [r.run_id for r in list_runs()] == ["old-run"]
    assert runs_table([run]).loc[0, "architecture"] == "resnet"
    from cifar.modeling.restore import load_model

    with pytest.raises(RunError, match="cannot be rebuilt by this version"):
        load_model(run)


def test_new_run_ids_are_valid_and_name_the_model_and_time():
    import re
    import time

    before = time.strftime("%Y%m%d-%H%M%S")
    run_id = check_run_id(runs.new_run_id("transfer"))
    assert re.fullmatch(r"transfer-\d{8}-\d{6}", run_id) and run_id[len("transfer-") :] >= before


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["/home/me/cifar/cifar/__main__.py", "train", "baseline"], "python -m cifar train baseline"),
        (["/venv/bin/cifar", "runs"], "python -m cifar runs"),
        (["/home/me/bench/tool.py", "--quick"], "tool.py --quick"),
        ([], ""),
    ],
)
def test_command_line_is_recorded_without_machine_paths(argv, expected, monkeypatch):
    monkeypatch.setattr(runs.sys, "argv", argv)
    assert runs.command_line() == expected


def test_the_committed_runs_are_found_in_the_artifacts_folder_s_runs(monkeypatch):
    """The layout docs/run-folders.md documents and the repository commits: artifacts/runs/<run id>/."""
    from tests.factory import REPO

    monkeypatch.setenv("CIFAR_ARTIFACTS", str(REPO / "artifacts"))
    runs_folder = REPO / "artifacts" / "runs"
    folders = sorted(p.name for p in runs_folder.iterdir() if p.is_dir() and p.name[0] != ".")
    assert "baseline-reference" in folders
    assert sorted(run.run_id for run in list_runs()) == folders


def test_status_json_says_what_the_writer_is_doing_and_since_when(artifacts):
    """The Train page's job list reads these (a status older than the job's slot is a leftover)."""
    import time

    from cifar.store.runs import read_status

    before = time.time()
    writer = RunWriter("timed").open(pid=4321)
    opened = read_status(writer.path)
    assert opened["state"] == "running" and opened["pid"] == 4321
    assert before <= opened["started"] <= opened["updated"] <= time.time()
    writer.status("running", progress=0.5)
    assert read_status(writer.path)["updated"] >= opened["updated"]
    write_complete(writer)
    final = writer.publish()
    published = read_status(final)
    assert published["state"] == "finished" and opened["started"] <= published["finished"] <= time.time()
    assert published["started"] == opened["started"]


def test_publishing_replaces_a_run_only_when_asked_to(artifacts):
    import os

    # Asked to overwrite a run that does not exist (yet): published as any other.
    writer = RunWriter("fresh-id", overwrite=True).open()
    write_complete(writer)
    assert writer.publish() == runs.run_path("fresh-id") and load_run("fresh-id")
    # Not asked, and a run of that id was published in the meantime: that run stays as it was.
    late = RunWriter("late").open()
    write_complete(late, accuracy=0.25)
    donor = RunWriter("donor").open()
    write_complete(donor, accuracy=0.75)
    os.rename(donor.publish(), runs.run_path("late"))
    with pytest.raises(OSError):
        late.publish()
    assert load_run("late").metrics["test_accuracy"] == 0.75
