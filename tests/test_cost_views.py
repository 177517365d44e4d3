"""The test-time views a run's cost counts are the views its Predictor runs, for every combination
of `tta_flip` and `tta_translate` (flip-only above all: 2, not 1, 3 or 6), and what Comparison
shows per prediction is FLOPs x those views.

The session's trained baseline (no test-time views) is copied into this test's artifacts with its
config switched to each combination: its real weights, a real Predictor, the real `measure`; only
the FLOP count and the latency (tested in test_cost.py) are stubbed to keep it fast.
"""

from __future__ import annotations

import json
import shutil

import pytest

from cifar.analysis import cost
from cifar.inference import predict
from cifar.inference.predict import load_predictor
from cifar.store.runs import load_run, runs_root
from cifar.store.tables import runs_table

# By hand from cifar.tta's docstring: 1 view; the image and its mirror; the image and its two
# one-pixel shifts; those three each with its mirror.
EXPECTED_VIEWS = {(False, False): 1, (True, False): 2, (False, True): 3, (True, True): 6}
FLOPS = 1_000_003  # a stub's count: odd and prime, so FLOPs x views is unambiguous


@pytest.fixture
def run_with_views(trained_baseline, monkeypatch):
    """`make(flip, translate)`: the trained run copied into this test's artifacts as "t" with those
    test-time views in its config.json; returns the run id."""
    source_root, run_id, _ = trained_baseline
    monkeypatch.setattr(cost, "model_cost", lambda predictor: {"parameters": 7, "trainable_parameters": 7,
                                                               "flops_per_image": FLOPS})  # fmt: skip
    monkeypatch.setattr(cost, "latency_ms", lambda predictor: {"1": 1.0, "256": 2.0})

    def make(flip: bool, translate: bool) -> str:
        target = runs_root() / run_id
        shutil.copytree(source_root / "runs" / run_id, target)
        config = json.loads((target / "config.json").read_text())
        config["config"].update(tta_flip=flip, tta_translate=translate)
        (target / "config.json").write_text(json.dumps(config))
        metrics = json.loads((target / "metrics.json").read_text())
        for name in cost.COST_FIELDS:  # as trained: not yet measured
            metrics.pop(name, None)
        (target / "metrics.json").write_text(json.dumps(metrics))
        return run_id

    return make


def forward_calls(predictor, images: int = 3) -> int:
    """How many times a Predictor runs its network for one batch of predictions."""
    import numpy as np

    calls = []
    forward = predictor._forward
    predictor._forward = lambda pixels: calls.append(len(pixels)) or forward(pixels)
    predictor.probabilities(np.zeros((images, 32, 32, 3), np.uint8))
    predictor._forward = forward
    assert set(calls) == {images}
    return len(calls)


@pytest.mark.slow  # over 2 s: the quick loop leaves it to CI
@pytest.mark.parametrize(("flip", "translate"), list(EXPECTED_VIEWS))
def test_measured_views_are_the_views_the_predictor_runs(run_with_views, flip, translate, monkeypatch):
    run_id = run_with_views(flip, translate)
    run = load_run(run_id)
    assert (run.hyperparameters["tta_flip"], run.hyperparameters["tta_translate"]) == (flip, translate)
    predictor = load_predictor(run)
    assert forward_calls(predictor) == EXPECTED_VIEWS[flip, translate]
    # `measure` loads the run's Predictor itself: this one (one XLA compile per test, not two).
    monkeypatch.setattr(predict, "load_predictor", lambda loaded: predictor)
    measured = cost.measure(run_id)
    assert measured["views"] == EXPECTED_VIEWS[flip, translate]
    metrics = json.loads((runs_root() / run_id / "metrics.json").read_text())
    assert metrics["views"] == EXPECTED_VIEWS[flip, translate] and metrics["flops_per_image"] == FLOPS
    # What the runs table and Comparison show per prediction: every view's FLOPs.
    row = runs_table().set_index("run").loc[run_id]
    assert row["views"] == EXPECTED_VIEWS[flip, translate]
    assert row["flops_per_prediction"] == FLOPS * EXPECTED_VIEWS[flip, translate]
