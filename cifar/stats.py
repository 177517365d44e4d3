"""How sure a figure is: an interval for every rate, and paired tests between two classifiers on the
same test images. scipy.stats does the statistics; this module picks the method and words the answer.

- one accuracy (or precision, recall, any share of images): Wilson's score interval;
- F1, ECE and other statistics of many images: a percentile bootstrap over the images;
- two runs on the same images: McNemar's exact test on the images only one of them gets right
  (Dietterich 1998) and a paired bootstrap interval of the difference in accuracy;
- a seed group (one config trained with several seeds): mean and spread of the seeds, and Student's t
  interval of their mean; against a run or another group, each image scores the share of the group's
  seeds right, and a paired sign-flip permutation test (McNemar's analogue for shares) gives the p-value.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
RESAMPLES = 2000  # bootstrap and permutation resamples; a figure moves by < 0.05 points between seeds
RANDOM_SEED = 0  # fixed, so a page, the CLI and the README show the same interval for the same files
SIGNIFICANCE = 0.05


@dataclass(frozen=True)
class Estimate:
    """A figure with its 95 % interval (`low`..`high`) and how the interval was made."""

    value: float
    low: float
    high: float
    method: str

    def percent(self, digits: int = 2) -> str:
        """'93.91 % (93.43-94.36)': the figure and its interval, in percent."""
        return f"{self.value * 100:.{digits}f} % ({self.low * 100:.{digits}f}-{self.high * 100:.{digits}f})"

    def points(self, digits: int = 2) -> str:
        """'+0.22 pts (-0.31 to +0.75)': a difference of two rates and its interval, in points."""
        value, low, high = (f"{x * 100:+.{digits}f}" for x in (self.value, self.low, self.high))
        return f"{value} pts ({low} to {high})"

    def as_dict(self) -> dict[str, float | str]:
        return {"value": self.value, "low": self.low, "high": self.high, "method": self.method}


def p_text(p_value: float) -> str:
    """'p = 0.45', 'p = 6.3e-11', or 'p < 1e-300' where the p-value underflows to 0."""
    return "p < 1e-300" if p_value <= 0 else f"p = {p_value:.2g}"


def _two_or_more(sample: np.ndarray) -> None:
    if np.asarray(sample).shape[-1] < 2:
        raise TooFewImages("fewer than two images: no interval to resample")


class TooFewImages(ValueError):
    """A bootstrap or paired test asked of fewer than two images."""


def _rng() -> np.random.Generator:
    return np.random.default_rng(RANDOM_SEED)


def proportion(successes: int, trials: int) -> Estimate:
    """A share of `trials` (an accuracy, a recall) with Wilson's score interval."""
    if trials <= 0:
        raise ValueError("a share of no images has no interval")
    interval = stats.binomtest(int(successes), int(trials)).proportion_ci(CONFIDENCE, method="wilson")
    return Estimate(successes / trials, float(interval.low), float(interval.high), "Wilson")


def accuracy(labels: np.ndarray, predicted: np.ndarray) -> Estimate:
    """Top-1 accuracy of `predicted` classes (or probabilities, one row per image) and its interval."""
    predicted = np.asarray(predicted)
    if predicted.ndim == 2:
        predicted = predicted.argmax(axis=1)
    right = np.asarray(labels) == predicted
    return proportion(int(right.sum()), right.size)


def bootstrap(
    statistic: Callable[..., float],
    *samples: np.ndarray,
    vectorized: bool = False,
    method: str = "percentile",
) -> Estimate:
    """`statistic(*samples)` with a percentile bootstrap interval, the samples resampled together
    (element i of each stays with the others' element i: one image's confidence and correctness).
    A `vectorized` statistic takes `axis` and reduces along it (scipy.stats.bootstrap's convention).
    `method="BCa"` corrects a biased statistic (ECE: resampling adds noise, which raises it)."""
    samples = tuple(np.asarray(sample) for sample in samples)
    _two_or_more(samples[0])
    value = float(statistic(*samples))
    with warnings.catch_warnings():  # BCa on degenerate data (every resample alike) warns, gives NaN
        warnings.simplefilter("ignore", category=RuntimeWarning)
        warnings.simplefilter("ignore", category=stats.DegenerateDataWarning)
        result = stats.bootstrap(
            samples,
            statistic,
            paired=True,
            vectorized=vectorized,
            batch=200 if vectorized else None,
            n_resamples=RESAMPLES,
            confidence_level=CONFIDENCE,
            method=method,
            rng=_rng(),
        )
    low, high = result.confidence_interval
    if not (np.isfinite(low) and np.isfinite(high)):
        if method == "percentile":
            raise ValueError(f"no bootstrap interval for {value}: the resamples gave {low}, {high}")
        return bootstrap(statistic, *samples, vectorized=vectorized)  # the plain percentile one
    named = "bootstrap" if method == "percentile" else f"{method} bootstrap"
    return Estimate(value, float(low), float(high), named)


def bootstrap_each(statistic: Callable[..., np.ndarray], *samples: np.ndarray) -> list[Estimate]:
    """Like `bootstrap`, for a vectorized statistic that returns several figures at once (one per
    class, say): one Estimate each, from the same resamples."""
    samples = tuple(np.asarray(sample) for sample in samples)
    _two_or_more(samples[0])
    values = np.asarray(statistic(*samples, axis=-1), dtype=float)
    result = stats.bootstrap(
        samples,
        statistic,
        paired=True,
        vectorized=True,
        batch=200,
        n_resamples=RESAMPLES,
        confidence_level=CONFIDENCE,
        method="percentile",
        rng=_rng(),
    )
    lows, highs = result.confidence_interval
    return [
        Estimate(float(value), float(low), float(high), "bootstrap")
        for value, low, high in zip(values, np.atleast_1d(lows), np.atleast_1d(highs), strict=True)
    ]


def seed_mean(values: Sequence[float]) -> Estimate | None:
    """Mean of one figure over a group's seeds with Student's t interval; None for fewer than 2 seeds."""
    values = np.asarray(values, dtype=float)
    if values.size < 2:
        return None
    mean, spread = float(values.mean()), float(values.std(ddof=1))
    if spread == 0:
        return Estimate(mean, mean, mean, f"t over {values.size} seeds")
    low, high = stats.t.interval(CONFIDENCE, values.size - 1, loc=mean, scale=spread / math.sqrt(values.size))
    return Estimate(mean, float(low), float(high), f"t over {values.size} seeds")


def mean_test(values: Sequence[float], mean: float) -> float:
    """Two-sided p-value of a one-sample t test of seeds' figures against a published mean
    (airbench94's 94.01 %, say); NaN when the seeds all agree (no spread to test with)."""
    values = np.asarray(values, dtype=float)
    if values.size < 2 or values.std() == 0:  # scipy answers p = 0 (t = infinity) for equal seeds
        return math.nan
    return float(stats.ttest_1samp(values, mean).pvalue)


@dataclass(frozen=True)
class Comparison:
    """Two classifiers (runs or seed groups) on the same test images."""

    a: str
    b: str
    accuracy_a: Estimate
    accuracy_b: Estimate
    a_only: float  # images A gets right and B wrong (for a group: summed shares of its seeds)
    b_only: float
    p_value: float
    test: str
    difference: Estimate  # accuracy A minus accuracy B, paired bootstrap over the images

    @property
    def significant(self) -> bool:
        return self.p_value < SIGNIFICANCE

    @property
    def verdict(self) -> str:
        """One plain sentence: which is better and by how much, or that this test set cannot tell."""
        if not self.significant:
            return (
                f"No difference this test set can see: {self.test} {p_text(self.p_value)}; the gain of "
                f"{self.a} over {self.b} lies between {self.difference.low * 100:+.2f} and "
                f"{self.difference.high * 100:+.2f} points (95 %)."
            )
        better, worse, low, high = self.a, self.b, self.difference.low, self.difference.high
        if self.difference.value < 0:
            better, worse, low, high = self.b, self.a, -self.difference.high, -self.difference.low
        return (
            f"{better} is better than {worse}: 95 % sure the gain is between {low * 100:.2f} and "
            f"{high * 100:.2f} points ({self.test} {p_text(self.p_value)})."
        )

    def as_dict(self) -> dict:
        return {
            "a": self.a,
            "b": self.b,
            "accuracy_a": self.accuracy_a.as_dict(),
            "accuracy_b": self.accuracy_b.as_dict(),
            "a_right_b_wrong": self.a_only,
            "b_right_a_wrong": self.b_only,
            "test": self.test,
            "p_value": self.p_value,
            "difference": self.difference.as_dict(),
            "verdict": self.verdict,
        }


def mcnemar_p(a_only: int, b_only: int) -> float:
    """McNemar's exact (binomial) two-sided p-value from the two discordant counts."""
    discordant = int(a_only) + int(b_only)
    return 1.0 if discordant == 0 else float(stats.binomtest(int(a_only), discordant, 0.5).pvalue)


def _mean_difference(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x, axis=axis) - np.mean(y, axis=axis)


def paired_difference(score_a: np.ndarray, score_b: np.ndarray) -> Estimate:
    """Mean of `score_a - score_b` over the images with a paired percentile bootstrap interval."""
    _two_or_more(score_a)
    result = stats.bootstrap(
        (score_a, score_b),
        _mean_difference,
        paired=True,
        vectorized=True,
        n_resamples=RESAMPLES,
        batch=200,
        confidence_level=CONFIDENCE,
        method="percentile",
        rng=_rng(),
    )
    low, high = result.confidence_interval
    return Estimate(float(_mean_difference(score_a, score_b)), float(low), float(high), "paired bootstrap")


def _sign_flip_p(score_a: np.ndarray, score_b: np.ndarray) -> float:
    result = stats.permutation_test(
        (score_a, score_b),
        _mean_difference,
        permutation_type="samples",
        vectorized=True,
        n_resamples=RESAMPLES,
        batch=200,
        rng=_rng(),
    )
    return float(result.pvalue)


def compare_scores(a: str, score_a: np.ndarray, b: str, score_b: np.ndarray) -> Comparison:
    """Compare two classifiers from each test image's score: 1/0 (right or wrong) for a run, the
    share of seeds right for a group. Binary scores get McNemar's exact test."""
    score_a, score_b = np.asarray(score_a, dtype=float), np.asarray(score_b, dtype=float)
    if score_a.shape != score_b.shape or score_a.ndim != 1 or score_a.size == 0:
        raise ValueError(f"scores of different images: {score_a.shape} and {score_b.shape}")
    a_only = float(np.clip(score_a - score_b, 0, None).sum())
    b_only = float(np.clip(score_b - score_a, 0, None).sum())
    binary = np.isin(score_a, (0.0, 1.0)).all() and np.isin(score_b, (0.0, 1.0)).all()
    if binary:
        p_value, test = mcnemar_p(int(a_only), int(b_only)), "McNemar's exact test"
    else:
        p_value, test = _sign_flip_p(score_a, score_b), "paired permutation test"
    return Comparison(
        a=a,
        b=b,
        accuracy_a=_score_accuracy(score_a),
        accuracy_b=_score_accuracy(score_b),
        a_only=a_only,
        b_only=b_only,
        p_value=p_value,
        test=test,
        difference=paired_difference(score_a, score_b),
    )


def _score_accuracy(score: np.ndarray) -> Estimate:
    if np.isin(score, (0.0, 1.0)).all():
        return proportion(int(score.sum()), score.size)
    return bootstrap(np.mean, score, vectorized=True)
