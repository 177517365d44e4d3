"""Evaluation against numbers worked out by hand on a tiny example."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from cifar.analysis.evaluate import (
    MistakeFilter,
    agreement,
    disagreement_matrix,
    evaluate_predictions,
    evaluate_run,
    misclassified,
    most_confused,
    per_image,
    per_image_table,
    top_losses,
)
from cifar.store.runs import RunWriter, load_run

NAMES = ["cat", "dog", "fox"]

# 8 images, 3 classes. True labels and the argmax of each row:
#   true:      cat cat cat dog dog dog fox fox
#   predicted: cat cat dog dog dog cat fox dog
LABELS = np.array([0, 0, 0, 1, 1, 1, 2, 2])
PROBS = np.array(
    [
        [0.7, 0.2, 0.1],
        [0.5, 0.3, 0.2],
        [0.3, 0.6, 0.1],
        [0.1, 0.8, 0.1],
        [0.2, 0.7, 0.1],
        [0.9, 0.05, 0.05],
        [0.1, 0.1, 0.8],
        [0.2, 0.5, 0.3],
    ],
    dtype=np.float32,
)


def test_accuracy_and_per_class_metrics_by_hand():
    report = evaluate_predictions(PROBS, LABELS, NAMES)
    assert report.accuracy == pytest.approx(5 / 8)
    # cat: predicted cat for images 0, 1, 5 -> TP 2 (0, 1), FP 1 (5); true cats 3 -> FN 1 (2)
    # dog: predicted dog for 2, 3, 4, 7 -> TP 2, FP 2; true dogs 3 -> FN 1 (5)
    # fox: predicted fox for 6 -> TP 1, FP 0; true foxes 2 -> FN 1 (7)
    precision = {"cat": 2 / 3, "dog": 2 / 4, "fox": 1 / 1}
    recall = {"cat": 2 / 3, "dog": 2 / 3, "fox": 1 / 2}
    for name in NAMES:
        p, r = precision[name], recall[name]
        row = report.per_class.loc[name]
        assert row["precision"] == pytest.approx(p)
        assert row["recall"] == pytest.approx(r)
        assert row["f1"] == pytest.approx(2 * p * r / (p + r))
    assert report.per_class["support"].tolist() == [3, 3, 2]
    assert report.per_class.index.tolist() == NAMES
    assert report.per_class.index.name == "class"  # the Per-class page's first column header


def test_confusion_matrix_by_hand():
    report = evaluate_predictions(PROBS, LABELS, NAMES)
    expected = [
        [2, 1, 0],  # cats: 2 right, 1 called dog
        [1, 2, 0],  # dogs: 1 called cat, 2 right
        [0, 1, 1],  # foxes: 1 called dog, 1 right
    ]
    assert report.confusion.values.tolist() == expected
    assert report.confusion.index.name == "true" and report.confusion.columns.name == "predicted"
    assert report.confusion.index.tolist() == NAMES == report.confusion.columns.tolist()
    normalized = report.confusion_normalized
    np.testing.assert_allclose(normalized.values, np.array(expected) / np.array([[3], [3], [2]]))


def test_most_confused_by_hand():
    confusion = pd.DataFrame(
        [[5, 3, 0], [1, 4, 7], [2, 0, 6]],
        index=pd.Index(NAMES, name="true"),
        columns=pd.Index(NAMES, name="predicted"),
    )
    table = most_confused(confusion)
    assert list(zip(table["true"], table["predicted"], table["count"], strict=True)) == [
        ("dog", "fox", 7),
        ("cat", "dog", 3),
        ("fox", "cat", 2),
        ("dog", "cat", 1),
    ]
    assert len(most_confused(confusion, min_count=3)) == 2


def test_most_confused_keeps_ties_in_class_order_on_a_full_matrix():
    """Ten classes (90 pairs: past the size where numpy's default sort happens to be stable)."""
    names = [f"class{i}" for i in range(10)]
    counts = np.ones((10, 10), int)
    counts[3, 4] = counts[7, 1] = 5
    confusion = pd.DataFrame(
        counts, index=pd.Index(names, name="true"), columns=pd.Index(names, name="predicted")
    )
    table = most_confused(confusion)
    assert list(zip(table["true"], table["predicted"], strict=True))[:4] == [
        ("class3", "class4"),
        ("class7", "class1"),
        ("class0", "class1"),
        ("class0", "class2"),
    ]


def test_class_that_is_never_predicted_has_zero_precision():
    labels = np.array([0, 1, 2])
    probs = np.eye(3, dtype=np.float32)[[0, 1, 1]]
    report = evaluate_predictions(probs, labels, NAMES)
    assert report.per_class.loc["fox", "precision"] == 0
    assert report.per_class.loc["fox", "recall"] == 0
    assert report.per_class.loc["fox", "f1"] == 0


def test_per_image_loss_by_hand():
    table = per_image(PROBS, LABELS, NAMES)
    assert table["index"].tolist() == list(range(8))
    assert table["true"].tolist() == ["cat", "cat", "cat", "dog", "dog", "dog", "fox", "fox"]
    assert table["predicted"].tolist() == ["cat", "cat", "dog", "dog", "dog", "cat", "fox", "dog"]
    expected_loss = [-math.log(p) for p in (0.7, 0.5, 0.3, 0.8, 0.7, 0.05, 0.8, 0.3)]
    np.testing.assert_allclose(table["loss"], expected_loss, rtol=1e-6)
    np.testing.assert_allclose(table["confidence"], [0.7, 0.5, 0.6, 0.8, 0.7, 0.9, 0.8, 0.5], rtol=1e-6)
    assert table["correct"].tolist() == [True, True, False, True, True, False, True, False]


def test_zero_probability_gives_a_finite_loss():
    probs = np.array([[1.0, 0.0, 0.0]], np.float32)
    loss = per_image(probs, np.array([2]), NAMES)["loss"].iloc[0]
    assert math.isfinite(loss) and loss == pytest.approx(-math.log(1e-7), rel=1e-6)


# A run folder holds all ten classes: the three above, then seven that no image has or gets.
RUN_NAMES = [*NAMES, *(f"unused{i}" for i in range(7))]


def _fake_run(run_id, probs, labels):
    writer = RunWriter(run_id).open()
    writer.write_json("config.json", {"config": {"model": "baseline"}, "class_names": RUN_NAMES})
    writer.write_history(pd.DataFrame({"loss": [1.0]}))
    writer.write_json("metrics.json", {"model": "baseline"})
    padded = np.hstack([probs, np.zeros((len(probs), len(RUN_NAMES) - len(NAMES)))])
    writer.write_npy("test_predictions.npy", padded.astype(np.float32))
    writer.write_npy("test_labels.npy", labels.astype(np.uint8))
    writer.publish()
    return load_run(run_id)


def test_agreement_of_two_runs_by_hand():
    a = _fake_run("a", PROBS, LABELS)
    # b predicts: cat dog fox dog fox dog fox fox
    b_pred = np.array([0, 1, 2, 1, 2, 1, 2, 2])
    b = _fake_run("b", np.eye(3)[b_pred] * 0.9 + 0.1 / 3, LABELS)
    #   a:  cat cat dog dog dog cat fox dog   (right: 0 1 3 4 6)
    #   b:  cat dog fox dog fox dog fox fox   (right: 0 3 5 6 7)
    # agree on 0, 3, 6; both right 0 3 6; only a: 1 4; only b: 5 7; both wrong: 2
    result = agreement(a, b)
    assert result == {
        "agree": 3 / 8,
        "both_right": 3 / 8,
        "only_a_right": 2 / 8,
        "only_b_right": 2 / 8,
        "both_wrong": 1 / 8,
        "n": 8,
    }
    matrix = disagreement_matrix(a, b)
    assert matrix.index.tolist() == RUN_NAMES
    assert matrix.loc[NAMES, "only a right"].tolist() == [1, 1, 0]
    assert matrix.loc[NAMES, "only b right"].tolist() == [0, 1, 1]
    report = evaluate_run(a)
    assert report.accuracy == pytest.approx(5 / 8)


# b predicts: cat dog fox dog fox dog fox fox (with 0.9 + 0.1/3 on its choice)
B_PRED = np.array([0, 1, 2, 1, 2, 1, 2, 2])
B_PROBS = np.eye(3)[B_PRED] * 0.9 + 0.1 / 3


def test_per_image_table_puts_runs_side_by_side():
    a, b = _fake_run("a", PROBS, LABELS), _fake_run("b", B_PROBS, LABELS)
    table = per_image_table([a, b])
    assert table["index"].tolist() == list(range(8))
    assert table["true"].tolist() == ["cat", "cat", "cat", "dog", "dog", "dog", "fox", "fox"]
    assert table["predicted:a"].tolist() == ["cat", "cat", "dog", "dog", "dog", "cat", "fox", "dog"]
    assert table["predicted:b"].tolist() == ["cat", "dog", "fox", "dog", "fox", "dog", "fox", "fox"]
    assert table["correct:b"].tolist() == [True, False, False, True, False, True, True, True]
    np.testing.assert_allclose(
        table["loss:a"], [-math.log(p) for p in (0.7, 0.5, 0.3, 0.8, 0.7, 0.05, 0.8, 0.3)], rtol=1e-6
    )
    np.testing.assert_allclose(table["confidence:b"], np.full(8, 0.9 + 0.1 / 3), rtol=1e-6)
    assert len(per_image_table([a, b], n_images=3)) == 3
    assert per_image_table([]).empty and list(per_image_table([]).columns) == ["index", "true"]


def test_per_image_table_refuses_different_test_sets():
    a = _fake_run("a", PROBS, LABELS)
    b = _fake_run("b", PROBS, LABELS[::-1].copy())
    with pytest.raises(ValueError, match="^b and a were tested on different images$"):
        per_image_table([a, b])


def test_top_losses_by_hand():
    a = _fake_run("a", PROBS, LABELS)
    table = per_image_table([a])
    # losses -log p(true): 0.7 0.5 0.3 0.8 0.7 0.05 0.8 0.3 -> image 5, then 2 before 7 (a tie: stable)
    assert top_losses(table, ["a"], k=3)["index"].tolist() == [5, 2, 7]
    assert top_losses(table, ["a"])["index"].tolist() == [5, 2, 7, 1, 0, 4, 3, 6]
    b = _fake_run("b", B_PROBS, LABELS)
    both = per_image_table([a, b])
    # b's loss is -log(0.1/3) = 3.40 on its mistakes 1, 2, 4; then a's worst, image 5 (-log 0.05 = 3.00)
    assert top_losses(both, ["a", "b"], k=4)["index"].tolist() == [1, 2, 4, 5]


def test_misclassified_by_hand():
    a, b = _fake_run("a", PROBS, LABELS), _fake_run("b", B_PROBS, LABELS)
    table = per_image_table([a, b])
    #   a wrong: 2 5 7;  b wrong: 1 2 4
    assert misclassified(per_image_table([a]), ["a"])["index"].tolist() == [5, 2, 7]  # highest loss first
    assert misclassified(table, ["a", "b"], MistakeFilter(sort="index"))["index"].tolist() == [1, 2, 4, 5, 7]
    assert misclassified(table, ["a", "b"])["index"].tolist() == [1, 2, 4, 5, 7]  # b's losses tie, then 5, 7
    only_b = MistakeFilter(run="b", only_one_wrong=True, sort="index")
    assert misclassified(table, ["a", "b"], only_b)["index"].tolist() == [1, 4]
    one_wrong = MistakeFilter(only_one_wrong=True, sort="index")
    assert misclassified(table, ["a", "b"], one_wrong)["index"].tolist() == [1, 4, 5, 7]
    cats = MistakeFilter(true_classes=("cat",), sort="index")
    assert misclassified(table, ["a", "b"], cats)["index"].tolist() == [1, 2]
    # predicted as dog by the run whose mistakes are shown (a: 2 and 7), or by any run on an image
    # some run gets wrong (b on 1 and, rightly, 5; a, rightly, on 4 where b is wrong)
    assert misclassified(table, ["a", "b"], MistakeFilter(predicted_classes=("dog",), run="a", sort="index"))[
        "index"
    ].tolist() == [2, 7]
    assert misclassified(table, ["a", "b"], MistakeFilter(predicted_classes=("dog",), sort="index"))[
        "index"
    ].tolist() == [1, 2, 4, 5, 7]
    assert misclassified(table, []).empty and misclassified(table.iloc[0:0], ["a"]).empty


@pytest.mark.parametrize(
    "probabilities, labels, message",
    [
        (np.zeros((0, 3), np.float32), np.zeros(0, np.int64), "N >= 1"),  # empty predictions
        (
            PROBS,
            np.array([0, 0, 0, 1, 1, 1, 2, 3]),
            r"labels must lie in 0\.\.2",
        ),  # a label past the last class
        (PROBS, LABELS - 1, r"labels must lie in 0\.\.2"),
        (PROBS, LABELS[:5], "labels must be 8 integers"),
        (PROBS, LABELS.astype(np.float32), "labels must be 8 integers"),
        (PROBS[:, :2], LABELS, "probabilities must be"),
        (np.where(PROBS > 0.6, np.nan, PROBS), LABELS, "finite"),
    ],
    ids=["empty", "label 3 of 3 classes", "label -1", "fewer labels", "float labels", "2 columns", "NaN"],
)
def test_odd_arrays_are_refused_with_a_clear_value_error(probabilities, labels, message):
    """Issue #13, defect 2: empty predictions and labels outside the classes crashed evaluation."""
    for call in (evaluate_predictions, per_image):
        with pytest.raises(ValueError, match=message):
            call(probabilities, labels, NAMES)


def test_calibration_table_and_reliability_read_each_run_s_calibration_json(artifacts):
    """The Comparison page's calibration table: every figure of calibration.json under its name;
    the reliability tables are of the calibrated probabilities unless asked otherwise."""
    from cifar.analysis.evaluate import calibration_table, reliability
    from cifar.calibration import reliability_table
    from tests.factory import write_run

    labels = np.arange(400) % 10
    write_run(artifacts, "calibrated", "baseline", labels, 0.8, val_labels=np.arange(300) % 10)
    write_run(artifacts, "raw", "baseline", labels, 0.7, seed=1)
    runs = [load_run("calibrated"), load_run("raw")]
    record = runs[0].calibration
    table = calibration_table(runs)
    expected = {"run": "calibrated", "temperature": record["temperature"], "converged": record["converged"]}
    for split in ("validation", "test"):
        expected.update({f"{split}_{name}": value for name, value in record[split].items()})
    assert table.to_dict("records") == [expected]
    assert {"validation_ece_before", "test_ece_after"} <= set(table.columns)
    assert record["temperature"] != pytest.approx(1.0)
    default, raw = reliability(runs), reliability(runs, calibrated=False)
    assert list(default) == ["calibrated"] and list(raw) == ["calibrated", "raw"]
    expected_table = reliability_table(runs[0].calibrated_test_predictions, labels)
    pd.testing.assert_frame_equal(default["calibrated"], expected_table)
    assert not default["calibrated"].equals(raw["calibrated"])
