"""bench/results.py: the committed bench/RESULTS.md (and so the blocks of README.md and docs/) against the
committed run folders: every accuracy and ECE with the interval `cifar.stats` gives for the files'
counts, the robustness figures of their 1,000 images, seed groups and paired comparisons."""

from __future__ import annotations

import numpy as np
import pytest

from bench import blocks, results
from cifar import stats
from cifar.analysis.robustness import read_robustness
from cifar.calibration import ece_estimate, expected_calibration_error, temperature_scaled
from cifar.config import REFERENCE_FIGURES
from cifar.sources.corruptions import CORRUPTIONS, FAMILIES
from cifar.store import run_folder
from cifar.store.groups import compare
from cifar.store.runs import load_run
from tests.factory import REPO, write_run


def table_rows(text: str, header: str = "|") -> list[dict[str, str]]:
    """The rows of the first markdown table in `text` whose header line starts with `header`,
    each as {column: cell}."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith(header))
    cells = [[cell.strip() for cell in line.strip()[1:-1].split("|")] for line in lines[start:]]
    body = cells[2 : next((i for i, line in enumerate(lines[start:]) if not line.strip()), len(cells))]
    return [dict(zip(cells[0], row, strict=True)) for row in body]


def wilson(run) -> str:
    right = run.test_predictions.argmax(axis=1) == run.test_labels
    return stats.proportion(int(right.sum()), right.size).percent()


@pytest.fixture
def committed(monkeypatch) -> str:
    """The checkout's runs (read only); bench/RESULTS.md's text."""
    monkeypatch.setenv("CIFAR_ARTIFACTS", str(REPO / "artifacts"))
    return (REPO / "bench" / "RESULTS.md").read_text()


def test_table_rows_reads_a_generated_table():
    text = "intro\n\n| a | b |\n|---|---|\n| 1 | x y |\n|  | 2 |\n\nafter\n| a | c |"
    assert table_rows(text) == [{"a": "1", "b": "x y"}, {"a": "", "b": "2"}]
    assert table_rows(text, "| a | c") == []


def test_every_test_accuracy_is_the_files_count_with_its_interval(committed):
    rows = table_rows(committed, "| run | model")
    assert [row["run"] for row in rows[2:]] == [f"`{run_id}`" for run_id in results.RUNS]
    for row, name in zip(rows[:2], ("baseline", "transfer"), strict=True):  # the write-up's figures
        count = stats.proportion(round(REFERENCE_FIGURES[name]["test_accuracy"] * 10_000), 10_000)
        assert row["test acc. (recomputed, 95 %)"] == count.percent()
    for row in rows[2:]:
        assert row["test acc. (recomputed, 95 %)"] == f"**{wilson(load_run(row['run'].strip('`')))}**"
    for row in table_rows(committed, "| run | test acc."):  # the cost table
        assert row["test acc. (95 %)"] == wilson(load_run(row["run"].strip("`")))


@pytest.mark.slow  # 20 bootstraps of ECE over 5,000-10,000 images (BCa): half a minute on 2 cores
def test_every_ece_is_the_files_with_its_bootstrap_interval(committed):
    results_rows = {row["run"]: row for row in table_rows(committed, "| run | model")}
    for row in table_rows(committed, "| run | temperature T"):
        run = load_run(row["run"].strip("`"))
        (val, val_labels), stored = run.validation, run.calibration
        figures = [
            ece_estimate(p, labels)
            for p, labels in [
                (val, val_labels),
                (temperature_scaled(val, run.temperature), val_labels),
                (run.test_predictions, run.test_labels),
                (run.calibrated_test_predictions, run.test_labels),
            ]
        ]
        val_column, test_column = (f"{name} ECE before → after (95 %)" for name in ("validation", "test"))
        assert row[val_column] == f"{figures[0].percent()} → {figures[1].percent()}"
        assert row[test_column] == f"{figures[2].percent()} → **{figures[3].percent()}**"
        test_ece = results_rows[row["run"]]["test ECE raw → calibrated (95 %)"]
        assert test_ece == f"{figures[2].percent()} → {figures[3].percent()}"
        saved = [
            stored[split][f"ece_{when}"] for split in ("validation", "test") for when in ("before", "after")
        ]
        assert [f.value for f in figures] == pytest.approx(saved, abs=1e-6)  # what calibration.json says
        assert figures[2].value == pytest.approx(
            expected_calibration_error(run.test_predictions, run.test_labels), abs=1e-6
        )
        for when, figure in (("before", figures[2]), ("after", figures[3])):  # where calibrate kept them
            if stored["test"].get(f"ece_{when}_interval"):
                assert stored["test"][f"ece_{when}_interval"] == pytest.approx([figure.low, figure.high])


def robustness_rights(run_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """(clean right, corrupted right per set, the sets' corruptions, robustness.json) from the files."""
    run = load_run(run_id)
    record, predictions = read_robustness(run)
    labels = run.test_labels[record["test_indices"]]
    clean = np.load(run.path / run_folder.ROBUSTNESS_CLEAN).argmax(axis=1) == labels
    names = np.array([entry["corruption"] for entry in record["sets"]])
    return clean, predictions.argmax(axis=-1) == labels, names, record


def test_robustness_figures_are_of_the_1000_images_with_their_intervals(committed):
    rows = table_rows(committed, "| run | images")
    assert "interval is wide" in results.ROBUSTNESS_NOTE and len(rows) == len(results.RUNS)
    for row in rows:
        clean, corrupted, names, record = robustness_rights(row["run"].strip("`"))
        assert row["images"] == "1,000" == f"{clean.size:,}"
        count = stats.proportion(int(clean.sum()), clean.size)
        assert count.value == record["clean_accuracy"] and row["clean (95 %)"] == count.percent(1)
        mean = stats.bootstrap(np.mean, corrupted.mean(axis=0), vectorized=True)
        assert mean.value == pytest.approx(record["mean_corruption_accuracy"])
        assert row["mean corrupted (95 %)"] == f"**{mean.percent(1)}**"
        for family, members in FAMILIES.items():
            share = corrupted[np.isin(names, members)].mean(axis=0)
            assert row[family] == stats.bootstrap(np.mean, share, vectorized=True).percent(1)
        assert mean.high - mean.low > 0.02  # 1,000 images: a few points wide


def test_robustness_per_corruption_and_the_paired_gap(committed):
    rows = table_rows(committed, "| corruption |")
    rights = {run_id: robustness_rights(run_id) for run_id in results.RUNS}
    assert [row["corruption"] for row in rows] == [name.replace("_", " ") for name in CORRUPTIONS]
    for row, name in zip(rows, CORRUPTIONS, strict=True):
        shares = {run_id: r[1][r[2] == name].mean(axis=0) for run_id, r in rights.items()}
        for run_id, share in shares.items():
            assert row[f"`{run_id}`"] == stats.bootstrap(np.mean, share, vectorized=True).percent(1)
        gap = stats.paired_difference(shares["transfer-best"], shares["baseline-best"])
        assert row["transfer-best − baseline-best (paired, 95 %)"] == gap.points(1)


def test_seeds_and_comparisons_are_the_committed_runs(committed):
    seeds = results.headline_seeds()
    rows = table_rows(committed, "| configuration |")
    assert [row["configuration"] for row in rows] == ["`baseline-best`", "`transfer-best`"]
    for row, seeded in zip(rows, seeds, strict=True):
        if seeded.group is None:
            assert row["seeds: test accuracy"].endswith("other seeds not trained yet")
        else:
            assert row["mean, 95 % t interval"] == seeded.group.accuracy.percent()
    groups = {row.base.run_id: row.group for row in seeds if row.group}
    pairs = table_rows(committed, "| A | B |")
    assert len(pairs) == len(results.PAIRS)
    for row, names in zip(pairs, results.PAIRS, strict=True):
        c = compare(*(groups.get(name) or load_run(name) for name in names))
        assert (row["A"], row["B"]) == (f"`{c.a}`", f"`{c.b}`")
        assert row["A (95 %)"] == c.accuracy_a.percent() and row["B (95 %)"] == c.accuracy_b.percent()
        assert row["A minus B (paired bootstrap, 95 %)"] == c.difference.points()
        assert row["verdict"] == c.verdict


def test_headline_seeds_find_the_seed_runs_and_compare_groups(artifacts):
    labels = np.arange(1000) % 10
    for run_id, model, accuracy, seed in [
        ("baseline-best", "baseline", 0.93, 0),
        ("baseline-best-seed1", "baseline", 0.935, 1),
        ("transfer-best", "transfer", 0.90, 0),
    ]:
        write_run(artifacts, run_id, model, labels, accuracy, seed=seed + 5, training_seed=seed)
    baseline, transfer = results.headline_seeds()
    assert [run.run_id for run in baseline.group.runs] == ["baseline-best", "baseline-best-seed1"]
    assert transfer.group is None and baseline.target == 0.9401 and transfer.target is None
    [row] = table_rows(results.comparisons_table([baseline, transfer]))
    assert row["A"] == "`transfer-best`" and row["B"] == "`group:baseline-best (2 seeds)`"
    assert row["test"].startswith("paired permutation test")  # a group scores shares of its seeds
    assert "other seeds not trained yet" in "\n".join(blocks.seeds_table([transfer]))
