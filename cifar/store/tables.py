"""Runs as tables: one row per run, its results and cost first, then every hyperparameter
(HParams-style); what Comparison and `python -m cifar runs` show."""

from __future__ import annotations

import pandas as pd

from cifar.stats import Estimate
from cifar.store.groups import group_of, seed_groups
from cifar.store.runs import Run, list_runs

# `python -m cifar runs`' default table: what tells runs apart at a glance.
COMPACT_COLUMNS = ("run", "model", "train_accuracy", "test_accuracy", "test_ece", "epochs_run", "seconds")
INTERVAL_FIELDS = ("test_accuracy", "test_ece")  # each with `_low` and `_high` columns: its 95 % interval
# runs_table's columns that are shares of images (accuracies, ECE and their intervals).
SHARE_COLUMNS = (
    "train_accuracy",
    "val_accuracy",
    "test_accuracy",
    "test_accuracy_low",
    "test_accuracy_high",
    "test_ece",
    "test_ece_low",
    "test_ece_high",
    "test_ece_uncalibrated",
)
SUMMARY_FIELDS = ("train_accuracy", "val_accuracy", "test_accuracy", "seconds", "epochs_run")
# What each run costs (`cifar.analysis.cost`), as runs_table's columns; empty until measured.
COST_COLUMNS = (
    "parameters",
    "trainable_parameters",
    "flops_per_image",
    "views",
    "flops_per_prediction",
    "model_bytes",
    "latency_ms_1",
    "latency_ms_256",
    "latency_device",
    "total_seconds",
    "total_seconds_note",
)


def runs_table(runs: list[Run] | None = None) -> pd.DataFrame:
    """One row per run: results first, then every hyperparameter (HParams-style)."""
    runs = list_runs() if runs is None else runs
    groups = seed_groups(runs)
    rows = []
    for run in runs:
        row = {"run": run.run_id, "model": run.model}
        row.update({name: run.metrics.get(name) for name in SUMMARY_FIELDS})
        row.update(_interval("test_accuracy", run.test_accuracy_estimate))
        test = run.calibration.get("test") or {}
        row["test_ece"], row["test_ece_uncalibrated"] = test.get("ece_after"), test.get("ece_before")
        row.update(_interval("test_ece", run.test_ece_estimate))
        group = group_of(run, groups)
        row["group"] = group.name if group else None
        row.update(_cost_columns(run.metrics))
        row["device"] = run.metrics.get("device")
        row.update({k: v for k, v in run.hyperparameters.items() if k != "model"})
        rows.append(row)
    return pd.DataFrame(rows)


def _interval(name: str, estimate: Estimate | None) -> dict[str, float | None]:
    """`name_low`, `name_high`: the 95 % interval of a figure (None when it has none)."""
    return {f"{name}_low": estimate and estimate.low, f"{name}_high": estimate and estimate.high}


def _cost_columns(metrics: dict) -> dict:
    measured = "flops_per_image" in metrics  # (training alone writes `parameters` of what it trained)
    latency = metrics.get("latency_ms") or {}
    names = ("parameters", "trainable_parameters", "flops_per_image", "views")
    row = {name: metrics.get(name) if measured else None for name in names}
    row["flops_per_prediction"] = metrics["flops_per_image"] * metrics["views"] if measured else None
    row["model_bytes"] = metrics.get("model_bytes")
    row["latency_ms_1"], row["latency_ms_256"] = latency.get("1"), latency.get("256")
    row.update(
        {name: metrics.get(name) for name in ("latency_device", "total_seconds", "total_seconds_note")}
    )
    return row


def predictions_table(run: Run) -> pd.DataFrame:
    """One row per test image: its index, true and predicted class, and the calibrated
    probability of each class (what the pages show)."""
    probabilities = run.calibrated_test_predictions
    names = run.class_names
    table = pd.DataFrame(probabilities, columns=[f"p_{name}" for name in names])
    table.insert(0, "predicted", [names[i] for i in probabilities.argmax(axis=1)])
    table.insert(0, "true", [names[i] for i in run.test_labels])
    table.insert(0, "test_index", range(len(table)))
    return table


def predictions_csv(run: Run) -> bytes:
    return predictions_table(run).to_csv(index=False, float_format="%.6f").encode()


def hyperparameter_columns(table: pd.DataFrame) -> list[str]:
    """Columns of `runs_table` that are hyperparameters (not ids or results)."""
    skip = {
        "run",
        "model",
        "device",
        "group",
        "test_ece",
        "test_ece_uncalibrated",
        *SUMMARY_FIELDS,
        *COST_COLUMNS,
    }
    skip |= {f"{name}_{end}" for name in INTERVAL_FIELDS for end in ("low", "high")}
    return [column for column in table.columns if column not in skip]
