"""bench/photos.py: the committed bench/PHOTOS.md against the committed per-photo answers
(bench/photos-predictions.csv): each accuracy with Wilson's interval for its 51 photos."""

from __future__ import annotations

import pandas as pd
import pytest

from bench import photos
from cifar import stats
from cifar.store.runs import load_run
from tests.factory import REPO
from tests.test_bench_results import table_rows


@pytest.fixture
def answers(monkeypatch) -> pd.DataFrame:
    monkeypatch.setenv("CIFAR_ARTIFACTS", str(REPO / "artifacts"))
    return pd.read_csv(REPO / "bench" / "photos-predictions.csv")


def test_photo_accuracies_are_the_answers_counts_with_their_intervals(answers):
    text = (REPO / "bench" / "PHOTOS.md").read_text()
    rows = table_rows(text, "| run | photos seen at")
    groups = list(answers.groupby(["run", "resolution"], sort=False))
    assert len(rows) == len(groups)
    for row, ((run_id, resolution), group) in zip(rows, groups, strict=True):
        assert (row["run"], row["photos seen at"]) == (f"`{run_id}`", photos.MODE_NAMES[resolution])
        right = int(group["right"].sum())
        assert row["right (of 51)"] == str(right) and len(group) == 51
        assert row["accuracy (95 %)"] == f"**{stats.proportion(right, 51).percent(1)}**"
        test = load_run(run_id)
        assert row["CIFAR-10 test accuracy (95 %)"] == stats.accuracy(
            test.test_labels, test.test_predictions
        ).percent(1)
    assert photos.interval_line(answers) in text


def test_the_interval_line_says_how_wide_the_intervals_are(answers):
    widths = [100 * (e.high - e.low) for e in photos.accuracies(answers).values()]
    line = photos.interval_line(answers)
    assert f"spans {min(widths):.0f} to {max(widths):.0f} points" in line and max(widths) > 20
