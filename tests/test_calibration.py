"""Temperature scaling and the expected calibration error, on cases with known answers."""

import numpy as np
import pytest
from scipy.special import softmax

from cifar.calibration import (
    calibration_record,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    reliability_table,
    temperature_scaled,
)


def sampled(n: int, temperature: float, seed: int = 0):
    """Labels drawn from softmax(z), and the probabilities softmax(z * temperature) a model with
    that much overconfidence (temperature > 1) would give: the fit must find `temperature`."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2.0, (n, 10))
    truth = softmax(logits, axis=1)
    labels = np.array([rng.choice(10, p=row) for row in truth])
    return softmax(logits * temperature, axis=1).astype(np.float32), labels


@pytest.mark.parametrize("true_temperature", [0.5, 1.0, 2.5])
def test_fit_recovers_the_temperature_the_probabilities_were_made_with(true_temperature):
    probabilities, labels = sampled(20_000, true_temperature)
    fit = fit_temperature(probabilities, labels)
    assert fit.converged and fit.message is None
    assert fit.temperature == pytest.approx(true_temperature, rel=0.05)


def test_scaling_is_softmax_of_log_p_over_t_and_keeps_every_argmax():
    probabilities, _ = sampled(500, 2.0)
    scaled = temperature_scaled(probabilities, 2.0)
    expected = softmax(np.log(probabilities.astype(np.float64)) / 2.0, axis=1)
    np.testing.assert_allclose(scaled, expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(scaled.argmax(axis=1), probabilities.argmax(axis=1))
    np.testing.assert_allclose(temperature_scaled(probabilities, 1.0), probabilities, rtol=1e-5, atol=1e-7)
    assert scaled.dtype == np.float32 and np.allclose(scaled.sum(axis=1), 1, atol=1e-5)


def test_zero_probabilities_do_not_make_infinities():
    probabilities = np.eye(10, dtype=np.float32)[[0, 1, 2]]  # one-hot: log(0) elsewhere
    scaled = temperature_scaled(probabilities, 3.0)
    assert np.isfinite(scaled).all() and (scaled.argmax(axis=1) == [0, 1, 2]).all()
    assert np.isfinite(negative_log_likelihood(probabilities, np.array([0, 1, 3])))


def test_a_fit_without_a_minimum_keeps_t_1_and_says_so():
    # Every answer right and sure: the likelihood only grows as T shrinks, to the range's end.
    probabilities = np.full((200, 10), 0.01, np.float32)
    probabilities[:, 0] = 0.91
    fit = fit_temperature(probabilities, np.zeros(200, int))
    assert (fit.temperature, fit.converged) == (1.0, False)
    assert "did not converge" in fit.message and "T = 1" in fit.message
    assert fit_temperature(probabilities[:0], np.zeros(0, int)).converged is False


def test_ece_by_hand():
    # Two bins used: 0.95 confident (4 images, 3 right) and 0.55 (2 images, 2 right).
    high, low = np.full(10, 0.05 / 9), np.full(10, 0.45 / 9)
    high[0], low[0] = 0.95, 0.55
    probabilities = np.array([high] * 4 + [low] * 2)
    labels = np.array([0, 0, 0, 1, 0, 0])
    gap = 4 / 6 * abs(0.75 - 0.95) + 2 / 6 * abs(1.0 - 0.55)
    assert expected_calibration_error(probabilities, labels) == pytest.approx(gap)
    table = reliability_table(probabilities, labels)
    assert len(table) == 15 and table["count"].sum() == 6
    used = table[table["count"] > 0]
    assert used["count"].tolist() == [2, 4]
    assert used["accuracy"].tolist() == [1.0, 0.75]


def test_calibrated_model_has_small_ece_and_overconfident_one_large():
    calibrated, labels = sampled(20_000, 1.0, seed=1)
    overconfident, _ = sampled(20_000, 3.0, seed=1)
    assert expected_calibration_error(calibrated, labels) < 0.015
    assert expected_calibration_error(overconfident, labels) > 0.10


@pytest.mark.slow  # over 2 s: the quick loop leaves it to CI
def test_record_fits_on_validation_and_measures_both_splits():
    val, val_labels = sampled(10_000, 2.0, seed=2)
    test, test_labels = sampled(10_000, 2.0, seed=3)
    record = calibration_record(val, val_labels, test, test_labels)
    assert record["temperature"] == pytest.approx(2.0, rel=0.08)
    assert record["n_validation"] == 10_000 and record["bins"] == 15
    for split in ("validation", "test"):
        measures = record[split]
        assert measures["ece_after"] < 0.02 < measures["ece_before"]
        assert measures["nll_after"] < measures["nll_before"]
    # Fitted on validation only: the test set's labels do not move T.
    shuffled = calibration_record(val, val_labels, test, np.roll(test_labels, 1))
    assert shuffled["temperature"] == record["temperature"]
