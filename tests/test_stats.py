"""`cifar.stats` and `cifar.calibration.ece_estimate` (issue #32) against values worked by hand or
published, never against scipy itself: Wilson's interval (Newcombe 1998), McNemar's exact test,
Student's t interval of a few seeds, an exact sign-flip test, and an ECE in bins of width 1/15."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cifar import stats
from cifar.calibration import _bin_of, _ece_of_bins, ece_estimate, expected_calibration_error
from cifar.stats import Estimate

Z = 1.959963984540054  # the 0.975 quantile of the standard normal
T_975 = {1: 12.706205, 2: 4.302653}  # Student's t, 0.975 quantile, by degrees of freedom (tables)


def wilson(successes: int, trials: int) -> tuple[float, float]:
    """Wilson's score interval, written out (Newcombe 1998, method 3)."""
    p, n = successes / trials, trials
    centre = p + Z**2 / (2 * n)
    half = Z * math.sqrt(p * (1 - p) / n + Z**2 / (4 * n**2))
    return (centre - half) / (1 + Z**2 / n), (centre + half) / (1 + Z**2 / n)


# ----------------------------------------------------------------------------- one share


def test_wilson_interval_is_newcombe_s_published_example():
    """Newcombe (1998), Stat Med 17:857, table I, method 3: 81/263 -> 0.2553 to 0.3662."""
    estimate = stats.proportion(81, 263)
    assert estimate.value == pytest.approx(81 / 263, abs=1e-12)
    assert (round(estimate.low, 4), round(estimate.high, 4)) == (0.2553, 0.3662)
    assert (estimate.low, estimate.high) == pytest.approx(wilson(81, 263), abs=1e-9)
    assert estimate.method == "Wilson"


def test_wilson_interval_at_none_and_all_right():
    """At 0/n the upper end is z^2 / (n + z^2) (0.2775 for n = 10), never a zero-width interval;
    n/n mirrors it."""
    none, every = stats.proportion(0, 10), stats.proportion(10, 10)
    assert none.low == pytest.approx(0, abs=1e-12) and every.high == pytest.approx(1, abs=1e-12)
    assert none.high == pytest.approx(Z**2 / (10 + Z**2), abs=1e-9) == pytest.approx(0.27753, abs=1e-5)
    assert every.low == pytest.approx(1 - none.high, abs=1e-9)


@pytest.mark.parametrize("successes, trials", [(7, 40), (33, 40), (9391, 10000), (1, 3)])
def test_wilson_interval_matches_its_formula_and_holds_the_share(successes, trials):
    estimate = stats.proportion(successes, trials)
    assert (estimate.low, estimate.high) == pytest.approx(wilson(successes, trials), abs=1e-9)
    assert estimate.low < successes / trials < estimate.high


def test_a_share_of_no_images_is_refused():
    with pytest.raises(ValueError, match="no images"):
        stats.proportion(0, 0)


def test_accuracy_counts_the_top_class_of_probabilities_or_the_classes_given():
    labels = np.array([0, 1, 2, 3, 4, 5, 6, 7])
    predicted = np.array([0, 1, 2, 0, 0, 5, 0, 0])  # 4 right of 8
    probabilities = np.full((8, 10), 0.05)
    probabilities[np.arange(8), predicted] = 0.55
    for given in (predicted, probabilities):
        estimate = stats.accuracy(labels, given)
        assert estimate.value == 0.5
        assert (estimate.low, estimate.high) == pytest.approx(wilson(4, 8), abs=1e-9)


def test_estimate_formats_in_percent_and_in_points():
    assert stats.proportion(81, 263).percent() == "30.80 % (25.53-36.62)"
    assert stats.proportion(81, 263).percent(1) == "30.8 % (25.5-36.6)"
    assert Estimate(0.0022, -0.0031, 0.0075, "x").points() == "+0.22 pts (-0.31 to +0.75)"
    assert Estimate(0.0022, -0.0031, 0.0075, "x").as_dict() == {
        "value": 0.0022,
        "low": -0.0031,
        "high": 0.0075,
        "method": "x",
    }


# ----------------------------------------------------------------------------- McNemar


def test_mcnemar_exact_p_worked_by_hand():
    """Discordant counts 10 and 2: P(X <= 2), X ~ Bin(12, 1/2), doubled: 2 (1 + 12 + 66) / 4096."""
    assert stats.mcnemar_p(10, 2) == pytest.approx(2 * (1 + 12 + 66) / 4096, rel=1e-12)
    assert stats.mcnemar_p(10, 2) == pytest.approx(0.03857, abs=1e-5)
    assert stats.mcnemar_p(2, 10) == stats.mcnemar_p(10, 2)
    assert stats.mcnemar_p(3, 1) == pytest.approx(2 * (1 + 4) / 16)  # 0.625
    assert stats.mcnemar_p(0, 0) == 1.0 and stats.mcnemar_p(5, 5) == 1.0


def test_p_values_in_words():
    assert stats.p_text(0.625) == "p = 0.62"
    assert stats.p_text(2 * (1 + 12 + 66) / 4096) == "p = 0.039"
    assert stats.p_text(6.3e-11) == "p = 6.3e-11"
    assert stats.p_text(0.0) == "p < 1e-300"  # an exact p-value of a huge difference underflows


# ----------------------------------------------------------------------------- seeds


def test_seed_mean_is_student_t_interval_worked_by_hand():
    """0.70, 0.72, 0.77: mean 0.73, s^2 = (0.03^2 + 0.01^2 + 0.04^2) / 2 = 0.0013,
    half-width t(0.975, 2) s / sqrt(3)."""
    half = T_975[2] * math.sqrt(0.0013) / math.sqrt(3)  # 0.0895669
    for values in ([0.70, 0.72, 0.77], [0.77, 0.70, 0.72]):
        estimate = stats.seed_mean(values)
        assert estimate.value == pytest.approx(0.73, abs=1e-12)
        assert (estimate.low, estimate.high) == pytest.approx((0.73 - half, 0.73 + half), abs=1e-6)
        assert estimate.method == "t over 3 seeds"


def test_seed_mean_of_two_seeds_uses_one_degree_of_freedom():
    """0.70, 0.74: mean 0.72, s = 0.02 sqrt(2), s / sqrt(2) = 0.02; t(0.975, 1) = 12.706205."""
    estimate = stats.seed_mean([0.70, 0.74])
    assert (estimate.low, estimate.high) == pytest.approx((0.72 - 0.02 * T_975[1], 0.72 + 0.02 * T_975[1]))


def test_seed_mean_needs_two_seeds_and_tolerates_equal_ones():
    assert stats.seed_mean([]) is None and stats.seed_mean([0.8]) is None
    assert stats.seed_mean([0.8, 0.8]) == Estimate(0.8, 0.8, 0.8, "t over 2 seeds")


# ----------------------------------------------------------------------------- comparing


def scores(both: int, a_only: int, b_only: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    """Right (1) / wrong (0) per image of A and B, the four kinds of image interleaved."""
    kinds = [(1, 1)] * both + [(1, 0)] * a_only + [(0, 1)] * b_only + [(0, 0)] * neither
    order = np.random.default_rng(7).permutation(len(kinds))
    pairs = np.array(kinds, dtype=float)[order]
    return pairs[:, 0], pairs[:, 1]


def test_compare_right_wrong_scores_is_mcnemar_and_names_the_better():
    """100 images: 50 both right, 10 only A, 2 only B: A 60 %, B 52 %, difference 8 points."""
    a, b = scores(50, 10, 2, 38)
    result = stats.compare_scores("A-run", a, "B-run", b)
    assert (result.a_only, result.b_only) == (10, 2)
    assert result.test == "McNemar's exact test"
    assert result.p_value == pytest.approx(2 * (1 + 12 + 66) / 4096) and result.significant
    assert result.accuracy_a.value == 0.6 and result.accuracy_b.value == 0.52
    assert (result.accuracy_a.low, result.accuracy_a.high) == pytest.approx(wilson(60, 100), abs=1e-9)
    assert result.difference.value == pytest.approx(0.08)
    assert result.difference.low < 0.08 < result.difference.high
    assert result.verdict.startswith("A-run is better than B-run: 95 % sure the gain is between ")
    assert "p = 0.039" in result.verdict

    swapped = stats.compare_scores("B-run", b, "A-run", a)
    assert (swapped.a_only, swapped.b_only) == (2, 10) and swapped.p_value == result.p_value
    assert swapped.difference.value == pytest.approx(-0.08)
    assert (swapped.difference.low, swapped.difference.high) == pytest.approx(
        (-result.difference.high, -result.difference.low)
    )
    assert swapped.verdict.startswith("A-run is better than B-run: 95 % sure the gain is between ")
    # The gain is stated as positive points in both orders.
    assert swapped.verdict.split("between ")[1] == result.verdict.split("between ")[1]


def test_close_classifiers_get_no_verdict():
    """3 images only A gets right, 1 only B: McNemar p = 2 (1 + 4) / 16 = 0.625."""
    a, b = scores(60, 3, 1, 36)
    result = stats.compare_scores("A-run", a, "B-run", b)
    assert result.p_value == pytest.approx(0.625) and not result.significant
    assert result.verdict.startswith("No difference this test set can see: McNemar's exact test p = 0.62")
    assert "A-run over B-run" in result.verdict
    assert result.difference.low < 0 < result.difference.high
    assert result.as_dict()["verdict"] == result.verdict


def test_identical_classifiers():
    a, _ = scores(30, 5, 5, 10)
    result = stats.compare_scores("A-run", a, "B-run", a)
    assert (result.a_only, result.b_only, result.p_value) == (0, 0, 1.0)
    assert result.difference == Estimate(0.0, 0.0, 0.0, "paired bootstrap")
    assert result.verdict.startswith("No difference this test set can see")


def test_shares_of_seeds_get_the_exact_sign_flip_test_worked_by_hand():
    """Per-image differences 1, 2/3, -1/3, 0 (mean 1/3): of the 16 sign flips, those of the first
    three give sums 2, 4/3, 2/3, 0, 0, -2/3, -4/3, -2; |sum| >= 4/3 for 4 of 8 (the 0 doubles
    both counts): p = 0.5. 16 flips < 2,000 resamples, so the test enumerates them all."""
    a = np.array([1.0, 1.0, 1 / 3, 2 / 3])
    b = np.array([0.0, 1 / 3, 2 / 3, 2 / 3])
    result = stats.compare_scores("group:g (3 seeds)", a, "r", b)
    assert result.test == "paired permutation test"
    assert result.a_only == pytest.approx(5 / 3) and result.b_only == pytest.approx(1 / 3)
    assert result.p_value == pytest.approx(0.5)
    assert result.difference.value == pytest.approx(1 / 3)
    assert result.accuracy_a.value == pytest.approx(0.75) and result.accuracy_a.method == "bootstrap"
    assert result.accuracy_b.value == pytest.approx(5 / 12)
    swapped = stats.compare_scores("r", b, "group:g (3 seeds)", a)
    assert swapped.p_value == pytest.approx(0.5) and swapped.difference.value == pytest.approx(-1 / 3)


def test_sign_flip_test_sees_a_clear_difference():
    """20 images where A's share is always higher: only 2 of 2^20 flips reach |mean| of the
    observed one, p = 2 / 2^20 (estimated from 2,000 resamples: at most a few in a thousand)."""
    a = np.full(20, 2 / 3)
    b = np.full(20, 1 / 3)
    result = stats.compare_scores("a", a, "b", b)
    assert result.p_value < 0.01 and result.significant
    assert result.verdict.startswith("a is better than b")
    again = stats.compare_scores("a", a, "b", b)
    assert again == result  # a fixed seed: the same figures on every call


@pytest.mark.parametrize(
    "a, b", [([1, 0], [1, 0, 1]), ([], []), ([[1, 0]], [[1, 0]])], ids=["lengths", "empty", "2d"]
)
def test_scores_of_different_images_are_refused(a, b):
    with pytest.raises(ValueError, match="different images"):
        stats.compare_scores("a", np.array(a), "b", np.array(b))


# ----------------------------------------------------------------------------- bootstrap


def test_bootstrap_of_a_mean_holds_it_and_stays_in_the_data():
    values = np.array([0.1, 0.4, 0.4, 0.5, 0.9, 0.2, 0.3, 0.8])
    estimate = stats.bootstrap(np.mean, values, vectorized=True)
    assert estimate.value == pytest.approx(0.45) and estimate.method == "bootstrap"
    assert 0.1 <= estimate.low < 0.45 < estimate.high <= 0.9
    assert stats.bootstrap(np.mean, values, vectorized=True) == estimate  # fixed seed
    corrected = stats.bootstrap(np.mean, values, vectorized=True, method="BCa")
    assert corrected.value == pytest.approx(0.45) and corrected.method == "BCa bootstrap"
    assert 0.1 <= corrected.low < 0.45 < corrected.high <= 0.9


# ----------------------------------------------------------------------------- ECE

# Six images, two classes; bins of width 1/15, bin i holds (i/15, (i+1)/15]:
#   0.95 right, 0.94 wrong -> bin 14 (0.9333..1]: accuracy 1/2, confidence 0.945, 2 images
#   0.92 wrong             -> bin 13 (0.8667..0.9333]
#   0.75 wrong             -> bin 11 (0.7333..0.8]
#   0.70 right             -> bin 10 (0.6667..0.7333]
#   0.62 wrong             -> bin 9 (0.6..0.6667]
# ECE = (2 |0.5 - 0.945| + |0 - 0.92| + |0 - 0.75| + |1 - 0.70| + |0 - 0.62|) / 6 = 3.48 / 6 = 0.58
# (not the unbinned mean |right - confidence| 3.58 / 6, nor one bin's |2/6 - 4.88/6| = 0.48).
TINY_PROBABILITIES = np.array(
    [[0.95, 0.05], [0.94, 0.06], [0.08, 0.92], [0.25, 0.75], [0.30, 0.70], [0.62, 0.38]]
)
TINY_LABELS = np.array([0, 1, 0, 0, 1, 1])  # the top class is 0, 0, 1, 1, 1, 0
TINY_ECE = 0.58


def test_ece_worked_by_hand():
    assert list(_bin_of(TINY_PROBABILITIES.max(axis=1))) == [14, 14, 13, 11, 10, 9]
    assert expected_calibration_error(TINY_PROBABILITIES, TINY_LABELS) == pytest.approx(TINY_ECE, abs=1e-12)
    estimate = ece_estimate(TINY_PROBABILITIES, TINY_LABELS)
    assert estimate.value == pytest.approx(TINY_ECE, abs=1e-12)
    assert estimate.method == "BCa bootstrap" and 0 <= estimate.low <= estimate.high <= 1


def test_ece_estimate_equals_expected_calibration_error_on_float32_probabilities():
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 2, (3000, 10))
    probabilities = (np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)).astype(np.float32)
    labels = np.where(rng.random(3000) < 0.6, probabilities.argmax(axis=1), rng.integers(0, 10, 3000))
    estimate = ece_estimate(probabilities, labels)
    # expected_calibration_error averages float32 confidences in float32: equal to float32's precision
    assert estimate.value == pytest.approx(expected_calibration_error(probabilities, labels), abs=1e-7)
    # Resampling adds noise, which raises an ECE; BCa corrects that bias: the interval holds the figure.
    assert 0 < estimate.low < estimate.value < estimate.high < 1
    assert estimate.high - estimate.low < 0.05  # 3,000 images: an interval of a few points


def test_vectorized_ece_equals_expected_calibration_error_on_every_resample():
    """`_ece_of_bins` scores many resamples at once (one per row): each row must be the ECE of the
    images it picked."""
    rng = np.random.default_rng(5)
    picks = rng.integers(0, 6, (40, 6))
    confidence = TINY_PROBABILITIES.max(axis=1)
    gap = (TINY_PROBABILITIES.argmax(axis=1) == TINY_LABELS) - confidence
    rows = _ece_of_bins(_bin_of(confidence)[picks], gap[picks], axis=-1)
    assert rows.shape == (40,)
    for row, pick in zip(rows, picks, strict=True):
        expected = expected_calibration_error(TINY_PROBABILITIES[pick], TINY_LABELS[pick])
        assert row == pytest.approx(expected, abs=1e-12)
    # Along another axis (scipy hands resamples as (batch, images) or moves the axis).
    columns = _ece_of_bins(_bin_of(confidence)[picks].T, gap[picks].T, axis=0)
    assert columns == pytest.approx(rows, abs=1e-12)


def test_one_sample_t_test_of_seeds_against_a_published_mean_worked_by_hand():
    """[1, 2, 3] against 0: t = 2 / (1 / sqrt 3) = 2 sqrt 3 with 2 degrees of freedom, whose CDF is
    1/2 + t / (2 sqrt(2 + t^2)) in closed form: p = 2 (1/2 - 2 sqrt 3 / (2 sqrt 14)) = 0.074180."""
    expected = 2 * (0.5 - 2 * math.sqrt(3) / (2 * math.sqrt(14)))
    assert stats.mean_test([1.0, 2.0, 3.0], 0.0) == pytest.approx(expected, rel=1e-9)
    assert stats.mean_test([1.0, 2.0, 3.0], 2.0) == pytest.approx(1.0)
    assert math.isnan(stats.mean_test([0.5, 0.5, 0.5], 0.94))


def test_a_single_image_gets_no_resampled_interval_and_a_calibration_without_one():
    """`train --limit 1` is allowed: its calibration is written without intervals, not refused."""
    from cifar.analysis.evaluate import evaluate_predictions
    from cifar.calibration import calibration_record

    with pytest.raises(stats.TooFewImages):
        stats.bootstrap(np.mean, np.array([1.0]))
    with pytest.raises(stats.TooFewImages):
        stats.paired_difference(np.array([1.0]), np.array([0.0]))
    one = np.full((1, 10), 0.1, np.float32)
    record = calibration_record(np.zeros((0, 10)), np.zeros(0, int), one, np.array([3]))
    assert "ece_after_interval" not in record["test"] and record["test"]["ece_after"] >= 0
    per_class = evaluate_predictions(one, np.array([3]), [str(c) for c in range(10)]).per_class
    assert per_class["f1_low"].isna().all() and per_class.loc["3", "recall_high"] > 0


def test_two_seeds_are_enough_for_the_t_test_against_a_published_mean():
    """t = (mean - mu) / (s / sqrt(n)) = (1.5 - 0) / (0.7071 / 1.4142) = 3, df = 1: p = 1 - 2 atan(3) / pi."""
    assert stats.mean_test([1.0, 2.0], 0.0) == pytest.approx(1 - 2 * math.atan(3) / math.pi, rel=1e-9)
    assert math.isnan(stats.mean_test([1.0], 0.0))


def test_the_bootstrap_is_scipys_paired_percentile_interval_at_95_with_the_fixed_seed():
    """Pinned to its definition on a skewed sample where the percentile and BCa intervals differ."""
    from scipy import stats as scipy_stats

    sample = np.r_[np.zeros(30), np.ones(5), 10.0]

    def reference(method):
        return scipy_stats.bootstrap(
            (sample,), np.mean, paired=True, vectorized=True, n_resamples=stats.RESAMPLES,
            confidence_level=0.95, method=method, rng=np.random.default_rng(stats.RANDOM_SEED),
        ).confidence_interval  # fmt: skip

    got = stats.bootstrap(np.mean, sample, vectorized=True)
    assert (got.low, got.high) == pytest.approx(tuple(reference("percentile")), rel=1e-12)
    assert (got.low, got.high) != pytest.approx(tuple(reference("BCa")), rel=1e-3)
    assert got.method == "bootstrap"


def test_bca_on_degenerate_data_falls_back_to_the_percentile_interval():
    estimate = stats.bootstrap(np.mean, np.full(20, 0.25), vectorized=True, method="BCa")
    assert (estimate.value, estimate.low, estimate.high, estimate.method) == (0.25, 0.25, 0.25, "bootstrap")


def test_a_percentile_interval_that_is_not_finite_is_an_error():
    with pytest.raises(ValueError, match="no bootstrap interval for nan: the resamples gave nan, nan"):
        stats.bootstrap(lambda sample: math.nan, np.arange(5.0))


def test_two_images_are_enough_to_resample_and_one_is_not():
    assert stats.bootstrap(np.mean, np.array([0.0, 1.0]), vectorized=True).value == 0.5
    with pytest.raises(stats.TooFewImages, match="^fewer than two images: no interval to resample$"):
        stats.bootstrap(np.mean, np.array([1.0]), vectorized=True)


def test_the_paired_tests_are_scipys_with_the_seeded_resamples():
    """The difference's interval and a seed group's permutation p, pinned to their definitions
    (2,000 resamples, 95 %, the fixed seed): a user sees the same figures as this computes."""
    from scipy import stats as scipy_stats

    rng = np.random.default_rng(7)
    a, b = rng.random(60), rng.random(60) * 0.8  # shares of seeds right: not 0/1, so permutation

    def mean_difference(x, y, axis=-1):
        return np.mean(x, axis=axis) - np.mean(y, axis=axis)

    interval = scipy_stats.bootstrap(
        (a, b), mean_difference, paired=True, vectorized=True, n_resamples=2000, confidence_level=0.95,
        method="percentile", rng=np.random.default_rng(0),
    ).confidence_interval  # fmt: skip
    p_value = scipy_stats.permutation_test(
        (a, b), mean_difference, permutation_type="samples", vectorized=True, n_resamples=2000,
        rng=np.random.default_rng(0),
    ).pvalue  # fmt: skip
    result = stats.compare_scores("a", a, "b", b)
    assert (result.difference.low, result.difference.high) == pytest.approx(tuple(interval), rel=1e-12)
    assert result.p_value == pytest.approx(p_value, rel=1e-12) and result.test == "paired permutation test"
