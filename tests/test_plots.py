"""`cifar.analysis.plots`: every figure builds from the fixture runs and plots the runs' own numbers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from cifar.analysis import plots
from cifar.analysis.evaluate import disagreement_matrix, evaluate_run
from cifar.store.runs import headline_table, load_run
from cifar.store.tables import runs_table


def test_every_figure_builds(runs):
    a, b = load_run("baseline-reference"), load_run("transfer-reference")
    report = evaluate_run(a)
    table = runs_table([a, b])
    ranked = pd.DataFrame(
        {
            "model": ["a", "a", "b"],
            "class": ["cat", "dog", "dog"],
            "probability": [0.7, 0.2, 0.9],
            "rank": [1, 2, 1],
        }
    )
    figures = [
        plots.headline_bars(headline_table([a, b])),
        plots.accuracy_bars(table),
        plots.learning_curves({a.run_id: a.history, b.run_id: b.history}),
        plots.hyperparameter_scatter(table, "augment"),
        plots.per_class_bars({a.run_id: report.per_class}, "recall"),
        plots.confusion_heatmap(report.confusion),
        plots.confusion_heatmap(report.confusion_normalized, normalized=True, title="x"),
        plots.disagreement_bars(disagreement_matrix(a, b)),
        plots.top_k_bars(ranked),
    ]
    assert figures and all(isinstance(figure, go.Figure) and figure.data for figure in figures)
    accuracy = {bar.name: list(bar.y) for bar in figures[1].data}
    assert accuracy["test"] == [a.metrics["test_accuracy"], b.metrics["test_accuracy"]]
    assert accuracy["train"] == [a.metrics["train_accuracy"], b.metrics["train_accuracy"]]
    curves = figures[2]
    assert len(curves.data) == 8  # 2 runs x (accuracy, loss) x (train, validation)
    heatmap = figures[5].data[0]
    assert np.asarray(heatmap.z).sum() == len(a.test_labels)
    assert np.asarray(heatmap.z).tolist() == report.confusion.to_numpy().tolist()


def test_hyperparameter_scatter_puts_decade_spanning_fields_on_a_log_axis_with_words():
    table = pd.DataFrame(
        {
            "run": ["a", "b", "c", "d"],
            "model": ["baseline", "baseline", "transfer", "transfer"],
            "learning_rate": [0.001, 0.001, 0.01, 1.5],
            "epochs": [10, 12, 20, 10],
            "test_accuracy": [0.6, 0.7, 0.8, 0.9],
        }
    )
    figure = plots.hyperparameter_scatter(table, "learning_rate").to_dict()["layout"]
    assert figure["xaxis"]["type"] == "log" and figure["xaxis"]["title"]["text"] == "learning rate"
    assert figure["yaxis"]["title"]["text"] == "test accuracy"
    linear = plots.hyperparameter_scatter(table, "epochs").to_dict()["layout"]["xaxis"]
    assert linear.get("type") in (None, "linear")  # 10 to 20: no decades


def test_top_predictions_keep_the_models_in_the_order_given_and_stay_compact():
    frame = pd.DataFrame(
        {
            "model": ["zeta"] * 5 + ["alpha"] * 5,
            "class": ["cat", "dog", "ship", "frog", "deer"] * 2,
            "probability": [0.5, 0.2, 0.1, 0.1, 0.05, 0.6, 0.2, 0.1, 0.05, 0.05],
            "rank": [1, 2, 3, 4, 5] * 2,
        }
    )
    figure = plots.top_k_bars(frame)
    assert [trace.name for trace in figure.data] == ["zeta", "alpha"]  # not sorted by name
    assert figure.layout.height <= 560
