"""A run under the corruptions (`cifar.analysis.robustness`): the subset, the files, pooling, mCE."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from cifar import atomic
from cifar.analysis.robustness import (
    check_images,
    corruption_errors,
    corruption_sets,
    evaluate_robustness,
    read_robustness,
    robustness_table,
    stratified_subset,
)
from cifar.sources.corruptions import corrupt
from cifar.store import run_folder
from cifar.store.runs import RunError, load_run
from tests.factory import write_ensemble, write_npz, write_robustness, write_run


def test_75_sets_corruption_by_corruption():
    sets = corruption_sets()
    assert len(sets) == 75 and sets[:6] == [
        ("gaussian_noise", 1), ("gaussian_noise", 2), ("gaussian_noise", 3),
        ("gaussian_noise", 4), ("gaussian_noise", 5), ("shot_noise", 1),
    ]  # fmt: skip
    assert sets[-1] == ("jpeg_compression", 5)


def test_the_subset_is_class_stratified_sorted_and_fixed():
    labels = np.repeat(np.arange(10), 100)[np.random.default_rng(0).permutation(1000)]
    chosen = stratified_subset(labels, 200)
    assert len(chosen) == 200 and np.all(np.diff(chosen) > 0)
    assert np.array_equal(np.bincount(labels[chosen], minlength=10), np.full(10, 20))
    assert np.array_equal(chosen, stratified_subset(labels, 200))
    assert not np.array_equal(chosen, stratified_subset(labels, 200, seed=1))
    assert np.array_equal(stratified_subset(labels, 5000), np.arange(1000))


@pytest.mark.parametrize("bad", [0, 9, 10001, True, 5.0])
def test_images_are_checked(bad):
    with pytest.raises(ValueError, match="from 10 to 10000"):
        check_images(bad)


@pytest.mark.slow  # over 2 s: the quick loop leaves it to CI
def test_a_baseline_run_s_results_are_its_model_on_the_corrupted_subset(
    use_trained_baseline, frost_textures, monkeypatch, tmp_path
):
    """On a copy of the session's trained run: every set is the model's single-view prediction of
    exactly those corrupted images, the accuracies in the json are those predictions' accuracies."""
    from cifar.modeling.restore import load_model

    run_id, data = use_trained_baseline
    source = load_run(run_id).path
    monkeypatch.setenv("CIFAR_ARTIFACTS", str(tmp_path / "copy"))
    shutil.copytree(source, tmp_path / "copy" / "runs" / run_id)
    monkeypatch.setenv("CIFAR10_NPZ", str(write_npz(tmp_path / "data.npz", data)))
    record = evaluate_robustness(run_id, images=20, seed=4, log=lambda _: None)

    run = load_run(run_id)
    stored, probabilities = read_robustness(run)
    assert stored == json.loads((run.path / run_folder.ROBUSTNESS).read_text()) == record
    indices = np.asarray(record["test_indices"])
    labels = data.y_test[indices]
    assert len(indices) == 20 and np.array_equal(indices, stratified_subset(data.y_test, 20, seed=4))
    assert probabilities.shape == (75, 20, 10) and probabilities.dtype == np.float32
    network = load_model(run)[1]
    for k in (0, 33, 74):  # first, a middle one (frost, from the textures), last
        name, severity = corruption_sets()[k]
        expected = network.predict(
            corrupt(data.x_test[indices], name, severity, seed=4, textures=frost_textures)
        )
        np.testing.assert_allclose(probabilities[k], expected, atol=1e-5)
        assert record["sets"][k] == {
            "corruption": name,
            "severity": severity,
            "accuracy": float(np.mean(probabilities[k].argmax(1) == labels)),
        }
    clean = network.predict(data.x_test[indices]).argmax(1) == labels
    assert record["clean_accuracy"] == pytest.approx(clean.mean())
    assert record["mean_corruption_accuracy"] == pytest.approx(
        np.mean([s["accuracy"] for s in record["sets"]])
    )
    assert record["test_time_flip"] is False and record["images"] == 20 and record["seed"] == 4


def test_an_ensemble_pools_its_members_stored_predictions(artifacts):
    from cifar.inference.ensemble import pooled

    labels = np.arange(200) % 10
    write_ensemble(artifacts, labels, second="transfer")
    with pytest.raises(RunError, match=r"members \['a', 'b'\] have no robustness results"):
        evaluate_robustness("ab")
    indices = stratified_subset(labels, 50)
    a, b = write_robustness("a", labels, indices, 0.5, 10), write_robustness("b", labels, indices, 0.7, 200)
    record = evaluate_robustness("ab")
    weights = json.loads((artifacts / "runs" / "ab" / "ensemble.json").read_text())["weights"]
    stored = read_robustness(load_run("ab"))[1]
    np.testing.assert_allclose(stored, pooled([a, b], weights), rtol=1e-6)
    assert record["sets"][9]["accuracy"] == float(np.mean(stored[9].argmax(1) == labels[indices]))

    write_robustness("b", labels, stratified_subset(labels, 60), 0.7, 200)
    with pytest.raises(RunError, match="different test images"):
        evaluate_robustness("ab", overwrite=True)


def test_a_half_written_result_is_no_result(artifacts):
    labels = np.arange(100) % 10
    write_run(artifacts, "r", "baseline", labels, 0.6)
    run = load_run("r")
    write_robustness("r", labels, stratified_subset(labels, 30), 0.5, 0)
    assert read_robustness(run) is not None
    other = write_robustness("r", labels, stratified_subset(labels, 30), 0.5, 7)  # same shape
    write_robustness("r", labels, stratified_subset(labels, 30), 0.5, 0)
    atomic.write_npy(run.path / run_folder.ROBUSTNESS_PREDICTIONS, other)  # (a kill between two writes)
    assert read_robustness(run) is None  # another evaluation's predictions beside this json
    atomic.write_npy(run.path / run_folder.ROBUSTNESS_PREDICTIONS, np.zeros((75, 29, 10), np.float32))
    assert read_robustness(run) is None  # predictions of another subset
    (run.path / run_folder.ROBUSTNESS_PREDICTIONS).unlink()
    assert read_robustness(run) is None  # json without its predictions
    (run.path / run_folder.ROBUSTNESS).write_text('{"images": 3')
    assert read_robustness(run) is None
    assert robustness_table([run]).empty


def test_mce_divides_by_the_reference_s_errors():
    """Hendrycks' CE on a literal table: the reference scores 100; half its errors score 50;
    relative mCE subtracts each model's clean error first."""
    rows = []
    for run, error in (("baseline-reference", 0.4), ("half", 0.2)):
        for name, severity in corruption_sets():
            rows.append({"run": run, "corruption": name, "severity": severity, "accuracy": 1 - error})
    table = pd.DataFrame(rows)
    errors = corruption_errors(table, {"baseline-reference": 0.8, "half": 0.9}).set_index("run")
    assert errors.loc["baseline-reference", "mCE"] == pytest.approx(100)
    assert errors.loc["half", "mCE"] == pytest.approx(50)
    # (0.2 - 0.1) / (0.4 - 0.2) per set
    assert errors.loc["half", "relative mCE"] == pytest.approx(50)
    assert errors.loc["half", "clean accuracy"] == pytest.approx(90)
    assert errors.loc["half", "mean corruption accuracy"] == pytest.approx(80)
    without_reference = corruption_errors(table[table["run"] == "half"], {"half": 0.9})
    assert without_reference["mCE"].isna().all()
