"""What a run costs (`cifar.analysis.cost`): FLOPs counted from the graph, sizes, latency, total time."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cifar.analysis.cost import count_flops, parameter_counts
from cifar.store.runs import RunError, load_run, run_path
from tests.factory import write_run


def test_flops_of_a_conv_and_a_dense_layer_by_hand():
    import keras

    model = keras.Sequential(
        [keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3), keras.layers.Flatten(), keras.layers.Dense(5)]
    )
    conv = 2 * (6 * 6 * 4) * (3 * 3 * 3) + 6 * 6 * 4  # multiply-adds (2 each) per output, its bias
    dense = 2 * 144 * 5 + 5
    assert count_flops(model, (8, 8, 3)) == conv + dense
    assert parameter_counts(model) == (4 * 27 + 4 + 144 * 5 + 5,) * 2


@pytest.mark.slow
def test_inception_v3_at_299_px_costs_the_published_5_7_g_multiply_adds():
    import keras

    base = keras.applications.InceptionV3(weights=None, include_top=False, input_shape=(299, 299, 3))
    assert count_flops(base, (299, 299, 3)) == pytest.approx(2 * 5.7e9, rel=0.05)


@pytest.mark.slow
def test_training_measures_a_published_run_s_cost(use_trained_baseline):
    """The session's run was trained with the cost step on, as users' runs are."""
    from cifar.modeling.restore import load_model

    run_id, _ = use_trained_baseline
    run = load_run(run_id)
    metrics = run.metrics
    _, model = load_model(run)
    assert (metrics["parameters"], metrics["trainable_parameters"]) == parameter_counts(model)
    assert metrics["flops_per_image"] == count_flops(model, (32, 32, 3))
    assert metrics["views"] == 1 and metrics["model_bytes"] == (run.path / "model.weights.h5").stat().st_size
    assert set(metrics["latency_ms"]) == {"1", "256"} and all(ms > 0 for ms in metrics["latency_ms"].values())
    assert metrics["latency_device"].startswith(("CPU", "GPU"))
    assert metrics["total_seconds"] == metrics["seconds"] and metrics.get("total_seconds_note") is None


def test_an_ensemble_s_cost_needs_its_members_measured(artifacts):
    from cifar.analysis.cost import measure
    from cifar.inference.ensemble import make_ensemble

    labels, val_labels = np.arange(100) % 10, np.arange(60) % 10
    for seed, run_id in enumerate(("a", "b")):
        write_run(artifacts, run_id, "baseline", labels, 0.8, seed=seed, val_labels=val_labels)
    make_ensemble("ab", ["a", "b"])
    with pytest.raises(RunError, match="measure the members first: python -m cifar cost a b"):
        measure("ab")
    assert "flops_per_image" not in json.loads((run_path("ab") / "metrics.json").read_text())


def test_the_pareto_front_keeps_the_runs_no_other_beats_on_both():
    import pandas as pd

    from cifar.analysis.cost import pareto_front

    table = pd.DataFrame(
        {
            "run": ["cheap", "dear-worse", "dear-better", "tie-cost-worse", "unmeasured"],
            "test_accuracy": [0.70, 0.65, 0.90, 0.60, 0.99],
            "flops_per_prediction": [1.0, 5.0, 5.0, 1.0, None],
        }
    )
    assert list(pareto_front(table, "flops_per_prediction")["run"]) == ["cheap", "dear-better"]


def test_an_ensemble_costs_its_members_together(artifacts, monkeypatch):
    """Every member's every view: FLOPs x views summed into one ensemble 'view'."""
    from cifar import atomic
    from cifar.analysis import cost
    from cifar.inference import predict
    from cifar.inference.ensemble import make_ensemble

    labels, val_labels = np.arange(100) % 10, np.arange(60) % 10
    members = {"a": (1_000, 2, 100.0), "b": (50_000, 1, None)}  # flops, views, total seconds
    for seed, (run_id, (flops, views, total)) in enumerate(members.items()):
        folder = write_run(artifacts, run_id, "baseline", labels, 0.8, seed=seed, val_labels=val_labels)
        metrics = json.loads((folder / "metrics.json").read_text())
        metrics.update(
            parameters=10 * (seed + 1), trainable_parameters=5, flops_per_image=flops, views=views,
            model_bytes=1000, latency_ms={"1": 1.0, "256": 9.0}, latency_device="CPU", total_seconds=total,
        )  # fmt: skip
        atomic.write_json(folder / "metrics.json", metrics)
    make_ensemble("ab", ["a", "b"])
    monkeypatch.setattr(predict, "load_predictor", lambda run: "the ensemble's predictor")
    monkeypatch.setattr(cost, "latency_ms", lambda predictor: {"1": 3.0, "256": 30.0})
    measured = cost.measure("ab")
    assert measured["flops_per_image"] == 1_000 * 2 + 50_000 and measured["views"] == 1
    assert (measured["parameters"], measured["model_bytes"]) == (30, 2000)
    assert measured["total_seconds"] is None and "unknown" in measured["total_seconds_note"]
    stored = load_run("ab").metrics
    assert stored["latency_ms"] == {"1": 3.0, "256": 30.0} and stored["test_accuracy"] > 0


def test_an_ensemble_made_again_while_its_cost_is_measured_blames_no_member(artifacts, monkeypatch):
    """#30 defect 9: `cost E` racing `ensemble --run-id E --overwrite` read ensemble.json twice and
    blamed a member nobody retrained ("b was trained again"). One read per run; the cost of the
    ensemble that was measured is not written into the one that replaced it."""
    from cifar import atomic
    from cifar.analysis import cost
    from cifar.inference import predict
    from cifar.inference.ensemble import make_ensemble

    labels, val_labels = np.arange(100) % 10, np.arange(60) % 10
    for seed, run_id in enumerate(("a", "b", "c")):
        folder = write_run(artifacts, run_id, "baseline", labels, 0.8, seed=seed, val_labels=val_labels)
        metrics = json.loads((folder / "metrics.json").read_text())
        metrics.update(flops_per_image=100, views=1, model_bytes=10, latency_ms={"1": 1.0})
        metrics.update(parameters=5, trainable_parameters=5)
        atomic.write_json(folder / "metrics.json", metrics)
    make_ensemble("e", ["a", "b"])

    class Member:  # a member's Predictor without a model; loading the last one, "e" is made again
        def __init__(self, run):
            self.run, self.resolutions = run, ("cifar",)
            if run.run_id == "b":
                make_ensemble("e", ["a", "c"], overwrite=True)

        def probabilities(self, pixels):
            return np.full((len(pixels), 10), 0.1, np.float32)

    monkeypatch.setattr(predict, "Predictor", Member)
    monkeypatch.setattr(
        cost, "latency_ms", lambda predictor: {"1": predictor.probabilities(np.zeros(1))[0, 0]}
    )
    monkeypatch.setattr("cifar.modeling.distribute.describe_device", lambda: "CPU: test")
    with pytest.raises(RunError) as raised:
        cost.measure("e")
    assert "trained again" not in str(raised.value) and "e was made again while its cost was measured" in str(
        raised.value
    )
    assert "flops_per_image" not in load_run("e").metrics  # the new ensemble is not given the old one's cost
