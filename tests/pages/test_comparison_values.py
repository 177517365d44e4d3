"""Every ECE (and the results beside it) that the runs table, `cifar runs` and the Comparison page
show, compared with the run's own files: calibration.json, and the ECE recomputed by hand from
test_predictions.npy, test_labels.npy and the temperature.

Calibrated and raw ECE are two numbers of one file, side by side: swapping them (or validation and
test) leaves every column present and every type right, so only the values tell. The fixture's
runs have a raw ECE far from the calibrated one, so a swap cannot pass by coincidence.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.special import softmax

from cifar import cli
from cifar.store.runs import runs_root
from cifar.store.tables import SUMMARY_FIELDS, runs_table
from tests.factory import labels_of, write_run
from tests.test_calibration_bins import ece_by_hand

CALIBRATED = ("calibrated-a", "calibrated-b")


@pytest.fixture
def calibrated_runs(runs, artifacts, cifar_npz) -> list[str]:
    """The three standard (uncalibrated) runs and two calibrated ones, of other accuracies."""
    labels = labels_of(cifar_npz)
    val_labels = np.arange(300) * 7 % 10
    write_run(artifacts, CALIBRATED[0], "baseline", labels, 0.55, seed=11, val_labels=val_labels)
    write_run(artifacts, CALIBRATED[1], "transfer", labels, 0.9, seed=12, val_labels=val_labels[:200])
    return [*runs, *CALIBRATED]


def files(run_id: str) -> dict:
    """What a run's files say: metrics.json, calibration.json (or {}), and both test ECEs by hand."""
    folder = runs_root() / run_id
    record = {"metrics": json.loads((folder / "metrics.json").read_text()), "calibration": {}}
    if (folder / "calibration.json").is_file():
        calibration = json.loads((folder / "calibration.json").read_text())
        probabilities = np.load(folder / "test_predictions.npy")
        labels = np.load(folder / "test_labels.npy").astype(np.int64)
        logs = np.log(np.clip(probabilities.astype(np.float64), 1e-12, 1))
        calibrated = softmax(logs / calibration["temperature"], axis=1).astype(np.float32)
        record.update(
            calibration=calibration,
            raw_ece=ece_by_hand(probabilities, labels),
            ece=ece_by_hand(calibrated, labels),
        )
    return record


def check_row(row, run_id: str) -> None:
    """One run's row of a runs table against its files."""
    truth = files(run_id)
    for name in SUMMARY_FIELDS:
        assert row[name] == pytest.approx(truth["metrics"][name]), (run_id, name)
    test = truth["calibration"].get("test")
    if test is None:
        assert pd.isna(row["test_ece"]) and pd.isna(row["test_ece_uncalibrated"]), run_id
        return
    # The fixture tells the two apart: a swap cannot pass.
    assert abs(test["ece_before"] - test["ece_after"]) > 0.02, (run_id, test)
    assert row["test_ece"] == pytest.approx(test["ece_after"], rel=1e-9), run_id
    assert row["test_ece"] == pytest.approx(truth["ece"], abs=1e-6), run_id
    assert row["test_ece_uncalibrated"] == pytest.approx(test["ece_before"], rel=1e-9), run_id
    assert row["test_ece_uncalibrated"] == pytest.approx(truth["raw_ece"], abs=1e-6), run_id


def test_runs_table_shows_each_run_s_own_calibrated_and_raw_ece(calibrated_runs):
    table = runs_table().set_index("run")
    assert sorted(table.index) == sorted(calibrated_runs)
    for run_id in calibrated_runs:
        check_row(table.loc[run_id], run_id)


def test_cifar_runs_prints_each_run_s_own_calibrated_and_raw_ece(calibrated_runs, capsys):
    assert cli.main(["runs", "--format", "json"]) == 0
    records = {record["run"]: record for record in json.loads(capsys.readouterr().out)}
    assert sorted(records) == sorted(calibrated_runs)
    for run_id in calibrated_runs:
        check_row(pd.Series(records[run_id]).replace({None: np.nan}), run_id)


@pytest.mark.slow  # over 2 s: the quick loop leaves it to CI
def test_comparison_shows_each_run_s_own_ece_and_calibration_record(calibrated_runs, open_page):
    app = open_page("comparison")
    app.multiselect(key="comparison-runs").set_value(calibrated_runs).run()
    assert not app.exception
    table = app.dataframe[0].value.set_index("run")
    assert sorted(table.index) == sorted(calibrated_runs)
    for run_id in calibrated_runs:
        check_row(table.loc[run_id], run_id)

    # The calibration table: every number of calibration.json, in the column of its name.
    calibration = app.dataframe[1].value.set_index("run")
    assert sorted(calibration.index) == sorted(CALIBRATED), "only calibrated runs have a row"
    for run_id in CALIBRATED:
        truth = files(run_id)
        record = truth["calibration"]
        row = calibration.loc[run_id]
        assert row["temperature"] == pytest.approx(record["temperature"])
        assert bool(row["converged"]) == record["converged"]
        for split in ("validation", "test"):
            for name in ("ece_before", "ece_after", "nll_before", "nll_after"):
                assert row[f"{split}_{name}"] == pytest.approx(record[split][name], rel=1e-9), (
                    run_id,
                    split,
                    name,
                )
        # Validation and test differ in the file, and before/after: a swap of either shows.
        assert abs(record["validation"]["ece_after"] - record["test"]["ece_after"]) > 1e-4
        assert row["test_ece_after"] == pytest.approx(truth["ece"], abs=1e-6)
        assert row["test_ece_before"] == pytest.approx(truth["raw_ece"], abs=1e-6)
