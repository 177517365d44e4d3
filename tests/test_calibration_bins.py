"""The ECE's bins, worked by hand on asymmetric data, and every committed run's calibration.json
recomputed from its own prediction files.

The documented rule (`cifar.calibration`): 15 equal-width bins of the top probability, bin i holds
(edges[i], edges[i+1]] with edges = linspace(0, 1, 16); a confidence of exactly 0 joins bin 0, of
exactly 1 the top bin. A bin lost, merged or shifted by one (the top bin's images counted in the one
below it, `side="right"`, 14 bins) moves a confidence to another bin, and on data where neighbouring
bins hold different accuracies it moves the ECE.
"""

import json

import numpy as np
import pytest
from scipy.special import softmax

from cifar.calibration import (
    BINS,
    expected_calibration_error,
    negative_log_likelihood,
    reliability_table,
    temperature_scaled,
)
from tests.factory import REPO

EDGES = np.linspace(0.0, 1.0, BINS + 1)  # the documented edges, float64


def rows(confidence: float, n: int, right: int) -> tuple[list[np.ndarray], list[int]]:
    """`n` probability rows whose top class 0 has `confidence` (the rest shared evenly); the first
    `right` are labelled 0 (right), the others 1 (wrong)."""
    row = np.full(10, (1.0 - confidence) / 9)
    row[0] = confidence
    return [row.copy() for _ in range(n)], [0] * right + [1] * (n - right)


def hand_worked():
    """Four bins far from symmetric, two of them neighbours at the top with different accuracies:
    confidence exactly 1.0 (3 images, 1 right)   -> bin 14, accuracy 1/3, gap 2/3
    confidence exactly edges[14] = 14/15 (2, 2)  -> bin 13 (upper edge is inside), accuracy 1, gap 1/15
    confidence 0.5 (4 images, 1 right)           -> bin 7, accuracy 1/4, gap 1/4
    confidence exactly edges[3] = 0.2 (1, 1)     -> bin 2 (upper edge), accuracy 1, gap 0.8
    ECE = (3 * 2/3 + 2 * 1/15 + 4 * 1/4 + 1 * 0.8) / 10 = (2 + 2/15 + 1 + 0.8) / 10 = 0.39333...
    """
    probabilities, labels = [], []
    for confidence, n, right in ((1.0, 3, 1), (EDGES[14], 2, 2), (0.5, 4, 1), (EDGES[3], 1, 1)):
        more, their_labels = rows(confidence, n, right)
        probabilities += more
        labels += their_labels
    return np.array(probabilities), np.array(labels)


def test_ece_worked_by_hand_with_confidences_on_the_edges_and_at_one():
    probabilities, labels = hand_worked()
    assert expected_calibration_error(probabilities, labels) == pytest.approx((2 + 2 / 15 + 1 + 0.8) / 10)
    # Had the top bin been merged into the one below: bin 13 with 5 images, 3 right, mean 0.9733.
    merged = (5 * abs(3 / 5 - (3 + 2 * 14 / 15) / 5) + 1 + 0.8) / 10
    assert expected_calibration_error(probabilities, labels) != pytest.approx(merged)


def test_reliability_table_puts_each_image_in_its_bin_and_keeps_all_fifteen():
    probabilities, labels = hand_worked()
    table = reliability_table(probabilities, labels)
    assert table["bin"].tolist() == list(range(15))
    np.testing.assert_allclose(table["lower"], EDGES[:-1])
    np.testing.assert_allclose(table["upper"], EDGES[1:])
    assert table.loc[14, "upper"] == 1.0
    used = table[table["count"] > 0]
    assert used["bin"].tolist() == [2, 7, 13, 14]
    assert used["count"].tolist() == [1, 4, 2, 3]
    assert used["accuracy"].tolist() == pytest.approx([1.0, 0.25, 1.0, 1 / 3])
    assert used["confidence"].tolist() == pytest.approx([0.2, 0.5, 14 / 15, 1.0])
    assert table["count"].sum() == len(labels)


@pytest.mark.parametrize("i", range(BINS))
def test_every_bin_holds_its_inside_and_its_upper_edge_but_not_its_lower_edge(i):
    # Rows need not sum to 1 for the binning: the top probability alone decides the bin.
    inside, upper = (EDGES[i] + EDGES[i + 1]) / 2, EDGES[i + 1]
    probabilities = np.zeros((3, 10))
    probabilities[:, 0] = [inside, upper, EDGES[i]]
    table = reliability_table(probabilities, np.zeros(3, int))
    counts = table.set_index("bin")["count"]
    expected_lower_bin = max(i - 1, 0)  # 0 itself joins bin 0
    assert counts[i] == 2 + (i == 0)
    assert counts[expected_lower_bin] >= 1
    assert counts.sum() == 3


def ece_by_hand(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The documented ECE written out again, bin by bin, without `cifar.calibration`."""
    confidence = probabilities.max(axis=1).astype(np.float64)
    correct = probabilities.argmax(axis=1) == labels
    total = 0.0
    for i in range(BINS):
        inside = (confidence > EDGES[i]) & (confidence <= EDGES[i + 1])
        if i == 0:
            inside |= confidence <= 0.0
        if inside.any():
            total += inside.sum() * abs(correct[inside].mean() - confidence[inside].mean())
    return total / len(labels)


COMMITTED = sorted(path.parent for path in (REPO / "artifacts" / "runs").glob("*/calibration.json"))


def test_the_checkout_has_calibrated_runs():
    assert len(COMMITTED) >= 4, COMMITTED


@pytest.mark.parametrize("run", COMMITTED, ids=lambda path: path.name)
def test_committed_calibration_json_is_recomputed_from_the_run_s_own_prediction_files(run):
    """calibration.json's ECE (and NLL) before and after, on validation and test, equal what its
    val/test_predictions.npy and labels give: by hand, and through `cifar.calibration` today."""
    record = json.loads((run / "calibration.json").read_text())
    assert record["bins"] == BINS
    temperature = record["temperature"]
    for split, prefix in (("validation", "val"), ("test", "test")):
        probabilities = np.load(run / f"{prefix}_predictions.npy")
        labels = np.load(run / f"{prefix}_labels.npy").astype(np.int64)
        assert probabilities.shape == (len(labels), 10)
        stored = record[split]
        logs = np.log(np.clip(probabilities.astype(np.float64), 1e-12, 1))
        calibrated = softmax(logs / temperature, axis=1)
        # calibration.json was written from float32 calibrated probabilities (`temperature_scaled`).
        calibrated = calibrated.astype(np.float32)
        # The top bin matters on these runs: hundreds of answers (raw or calibrated) are surer than 14/15.
        assert max((p.max(axis=1) > EDGES[14]).sum() for p in (probabilities, calibrated)) > 100
        # By hand in float64; the module averages float32 confidences (a relative difference of 1e-7).
        assert ece_by_hand(probabilities, labels) == pytest.approx(stored["ece_before"], rel=1e-5, abs=1e-6)
        assert ece_by_hand(calibrated, labels) == pytest.approx(stored["ece_after"], rel=1e-5, abs=1e-6)
        # Through the module: bit for bit what training wrote. (On these runs bins 13 and 14 have gaps
        # of one sign, so merging them moves the ECE by only ~1e-8: the hand-worked test above is the
        # one that tells the binnings apart; this one pins the files to today's formula.)
        scaled = temperature_scaled(probabilities, temperature)
        ece_before, ece_after = (expected_calibration_error(p, labels) for p in (probabilities, scaled))
        assert ece_before == pytest.approx(stored["ece_before"], rel=1e-12)
        assert ece_after == pytest.approx(stored["ece_after"], rel=1e-12)
        assert negative_log_likelihood(probabilities, labels) == pytest.approx(stored["nll_before"], rel=1e-9)
        assert negative_log_likelihood(probabilities, labels, temperature) == pytest.approx(
            stored["nll_after"], rel=1e-9
        )
