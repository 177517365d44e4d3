"""Probabilities that mean what they say: temperature scaling and its measures.

Temperature scaling (Guo et al. 2017, "On Calibration of Modern Neural Networks") divides a
model's log-probabilities by one scalar T, fitted on the validation split by minimising the
negative log-likelihood; the order of the classes, and so the accuracy, does not change. A run's
calibrated probabilities are defined as `softmax(log(p) / T)` with `p` its saved (raw)
probabilities, so anyone can recompute them from `test_predictions.npy` and `calibration.json`:

    {"temperature": T, "converged": true, "message": null, "bins": 15, "n_validation": 5000,
     "validation": {"ece_before": .., "ece_after": .., "nll_before": .., "nll_after": ..},
     "test": {...same..., "ece_before_interval": [low, high], "ece_after_interval": [low, high]}}

(the test split's ECE with its 95 % BCa bootstrap interval over the test images, `ece_estimate`).

Expected calibration error (ECE): 15 equal-width bins of the top probability; the mean over
images of |accuracy - confidence| per bin, weighted by the bin's share of the images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

from cifar.config import TEMPERATURE_RANGE  # a fit that ends at either end has not found a minimum
from cifar.stats import Estimate, bootstrap

BINS = 15
SMALLEST_PROBABILITY = 1e-12  # float32 softmax can round a probability to 0: log(0) is -inf


@dataclass(frozen=True)
class TemperatureFit:
    temperature: float
    converged: bool
    message: str | None = None


def log_probabilities(probabilities: np.ndarray) -> np.ndarray:
    return np.log(np.clip(np.asarray(probabilities, np.float64), SMALLEST_PROBABILITY, 1.0))


def temperature_scaled(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log(p) / T), row by row, as float32."""
    return np.exp(log_softmax(log_probabilities(probabilities) / temperature, axis=-1)).astype(np.float32)


def negative_log_likelihood(probabilities: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean -log p(true class) after scaling by `temperature`."""
    scaled = log_softmax(log_probabilities(probabilities) / temperature, axis=-1)
    return float(-scaled[np.arange(len(labels)), labels].mean())


def fit_temperature(probabilities: np.ndarray, labels: np.ndarray) -> TemperatureFit:
    """The T minimising the NLL of `labels`; T = 1 (and a message saying why) when no minimum
    is found inside `TEMPERATURE_RANGE`."""
    labels = np.asarray(labels)
    if len(labels) == 0:
        return TemperatureFit(1.0, False, "no validation images: kept T = 1")
    low, high = np.log(TEMPERATURE_RANGE)
    nll = lambda log_t: negative_log_likelihood(probabilities, labels, float(np.exp(log_t)))  # noqa: E731
    result = minimize_scalar(nll, bounds=(low, high), method="bounded", options={"xatol": 1e-5})
    temperature = float(np.exp(result.x))
    # An interior minimum is lower than both ends of the range; a plateau or an edge is not one.
    interior = nll(result.x) < min(nll(low), nll(high)) - 1e-9
    if not result.success or not interior or not np.isfinite(temperature):
        reason = result.message if not result.success else "no minimum inside T = 0.05 .. 20"
        return TemperatureFit(1.0, False, f"the temperature fit did not converge ({reason}): kept T = 1")
    return TemperatureFit(temperature, True)


def reliability_table(probabilities: np.ndarray, labels: np.ndarray, bins: int = BINS) -> pd.DataFrame:
    """Per confidence bin (equal width, top label): images, mean confidence, accuracy."""
    probabilities = np.asarray(probabilities)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == np.asarray(labels)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = _bin_of(confidence, bins)
    frame = pd.DataFrame({"bin": which, "confidence": confidence, "correct": correct.astype(float)})
    table = frame.groupby("bin").agg(
        count=("correct", "size"), confidence=("confidence", "mean"), accuracy=("correct", "mean")
    )
    table = table.reindex(range(bins))
    table["count"] = table["count"].fillna(0).astype(int)
    table.insert(0, "lower", edges[:-1])
    table.insert(1, "upper", edges[1:])
    return table.reset_index()


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = BINS) -> float:
    table = reliability_table(probabilities, labels, bins).dropna()
    gaps = (table["accuracy"] - table["confidence"]).abs()
    return float((gaps * table["count"]).sum() / table["count"].sum())


def _bin_of(confidence: np.ndarray, bins: int = BINS) -> np.ndarray:
    """Bin i holds (edges[i], edges[i+1]]; a confidence of exactly 0 joins the first bin."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    return np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)


def _ece_of_bins(which: np.ndarray, gap: np.ndarray, axis: int = -1) -> np.ndarray:
    """ECE from each image's bin and (right - confidence), reduced along `axis`: per bin, |the sum
    of the gaps| is |accuracy - confidence| times the bin's images. Many bootstrap resamples at once."""
    which, gap = np.moveaxis(which, axis, -1), np.moveaxis(gap, axis, -1)
    rows = which.reshape(-1, which.shape[-1])
    flat = (rows + (np.arange(rows.shape[0]) * BINS)[:, None]).ravel()
    sums = np.bincount(flat, weights=gap.reshape(rows.shape).ravel(), minlength=rows.shape[0] * BINS)
    ece = np.abs(sums.reshape(rows.shape[0], BINS)).sum(axis=1) / rows.shape[1]
    return ece.reshape(which.shape[:-1])


def ece_estimate(probabilities: np.ndarray, labels: np.ndarray) -> Estimate:
    """ECE (`expected_calibration_error`) with a bootstrap interval over the images."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    confidence = probabilities.max(axis=1)
    gap = (probabilities.argmax(axis=1) == np.asarray(labels)) - confidence
    return bootstrap(_ece_of_bins, _bin_of(confidence), gap, vectorized=True, method="BCa")


def _measures(probabilities, labels, temperature: float, intervals: bool = False) -> dict:
    calibrated = temperature_scaled(probabilities, temperature)
    measures = {
        "ece_before": expected_calibration_error(probabilities, labels),
        "ece_after": expected_calibration_error(calibrated, labels),
        "nll_before": negative_log_likelihood(probabilities, labels),
        "nll_after": negative_log_likelihood(probabilities, labels, temperature),
    }
    if intervals and len(labels) >= 2:  # a few seconds each: the test split's, which the tables show
        for name, shown in (("ece_before", probabilities), ("ece_after", calibrated)):
            estimate = ece_estimate(shown, labels)
            measures[f"{name}_interval"] = [estimate.low, estimate.high]
    return measures


def calibration_record(val_probabilities, val_labels, test_probabilities, test_labels) -> dict:
    """calibration.json's content: T fitted on the validation split, measured on both splits."""
    fit = fit_temperature(val_probabilities, val_labels)
    return {
        "method": "temperature scaling (Guo et al. 2017), fitted on the validation split",
        "temperature": fit.temperature,
        "converged": fit.converged,
        "message": fit.message,
        "bins": BINS,
        "n_validation": int(len(val_labels)),
        "validation": _measures(val_probabilities, val_labels, fit.temperature) if len(val_labels) else None,
        "test": _measures(test_probabilities, test_labels, fit.temperature, intervals=True),
    }
