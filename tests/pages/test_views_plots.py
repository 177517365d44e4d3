"""`cifar.views` (the pages' plain-data answers) and `cifar.plots` (their figures), without Streamlit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from cifar import plots, views
from cifar.evaluate import disagreement_matrix, evaluate_run
from cifar.runs import list_runs, load_run, partial_path
from tests.pages.factory import labels_of, write_run


def test_headline_runs_prefer_the_reference_by_name(runs):
    chosen = views.headline_runs(list_runs())
    assert chosen["baseline"].run_id == "baseline-reference"  # although baseline-best is better
    assert chosen["transfer"].run_id == "transfer-reference"
    table = views.headline_table(list_runs())
    assert list(table["write_up_test_accuracy"]) == [0.711, 0.8375]


def test_headline_runs_fall_back_to_the_best_test_accuracy(artifacts, npz):
    labels = labels_of(npz)
    write_run(artifacts, "low", "transfer", labels, 0.2, seed=1)
    write_run(artifacts, "high", "transfer", labels, 0.9, seed=2)
    chosen = views.headline_runs(list_runs())
    assert chosen["transfer"].run_id == "high" and chosen["baseline"] is None
    assert views.headline_runs([]) == {"baseline": None, "transfer": None}


def test_best_runs_are_the_most_accurate_per_model(runs, artifacts, npz):
    write_run(artifacts, "worse", "transfer", labels_of(npz), 0.3, seed=5)
    chosen = views.best_runs(list_runs())
    assert chosen["baseline"].run_id == "baseline-best"  # 0.8 beats the reference's 0.7
    assert chosen["transfer"].run_id == "transfer-reference"
    assert views.best_runs([]) == {"baseline": None, "transfer": None}
    # A run with its weights beats a more accurate one without (which could not classify).
    (artifacts / "runs" / "worse" / "head.weights.h5").write_bytes(b"weights")
    chosen = views.best_runs(list_runs())
    assert chosen["transfer"].run_id == "worse" and chosen["baseline"].run_id == "baseline-best"


def test_default_selection_includes_the_newest_run(runs, artifacts, npz):
    write_run(artifacts, "newest", "baseline", labels_of(npz), 0.5, seed=99)
    selection = views.default_selection(list_runs())
    assert selection[:2] == ["baseline-reference", "transfer-reference"] and "newest" in selection


def test_next_steps_follow_what_is_missing(runs):
    commands = [command for _, command in views.next_steps(list_runs(), False, False)]
    assert commands[0] == "python -m cifar fetch"
    commands = [command for _, command in views.next_steps([], True, True)]
    assert "python -m cifar fetch" not in commands
    assert any("train transfer" in command for command in commands)


def test_gallery_filters(runs):
    chosen = [load_run("baseline-reference"), load_run("transfer-reference")]
    table = views.gallery_table(chosen)
    assert len(table) == 100 and {"predicted:baseline-reference", "loss:transfer-reference"} <= set(table)
    ids = [run.run_id for run in chosen]

    anything = views.filter_gallery(table, ids, views.GalleryFilter())
    assert (~anything[["correct:baseline-reference", "correct:transfer-reference"]].all(axis=1)).all()
    losses = anything[["loss:baseline-reference", "loss:transfer-reference"]].max(axis=1).to_numpy()
    assert (np.diff(losses) <= 0).all(), "highest loss first"

    spec = views.GalleryFilter(model="transfer-reference", only_one_wrong=True, sort="index")
    only_transfer = views.filter_gallery(table, ids, spec)
    assert (~only_transfer["correct:transfer-reference"]).all()
    assert only_transfer["correct:baseline-reference"].all()
    assert list(only_transfer["index"]) == sorted(only_transfer["index"])

    spec = views.GalleryFilter(true_classes=("cat",), predicted_classes=("dog",), model="baseline-reference")
    cats = views.filter_gallery(table, ids, spec)
    assert set(cats["true"]) <= {"cat"} and set(cats["predicted:baseline-reference"]) <= {"dog"}


def test_gallery_refuses_runs_tested_on_other_images(runs, artifacts):
    write_run(artifacts, "other", "baseline", np.zeros(100, np.uint8), 0.5)
    with pytest.raises(ValueError, match="different images"):
        views.gallery_table([load_run("baseline-reference"), load_run("other")])


def test_upscale_is_nearest_neighbour():
    image = np.arange(32 * 32 * 3, dtype=np.uint8).reshape(32, 32, 3)
    big = views.upscale(image, 96)
    assert big.shape == (96, 96, 3)
    assert (big[::3, ::3] == image).all() and (big[2::3, 2::3] == image).all()


def test_feature_plan_and_durations():
    assert views.FeaturePlan((), 0).cached
    text = views.FeaturePlan((("train", False, 50000), ("test", True, 10000)), 2020).describe()
    assert "50,000 train" in text and "10,000 test flipped" in text and "34 min" in text
    assert [views.format_duration(s) for s in (5, 600, 7200)] == ["5 s", "10 min", "2.0 h"]


def test_form_fields_and_changed_overrides():
    fields = {row["name"]: row for row in views.form_fields("transfer")}
    assert fields["resize"]["choices"] and fields["learning_rate"]["step"] == pytest.approx(1e-3)
    assert views.changed_overrides("baseline", {"epochs": 10, "learning_rate": 0.01}) == {
        "learning_rate": 0.01
    }


def test_partial_history(sandbox):
    assert views.partial_history("job") is None
    partial_path("job").mkdir(parents=True)
    (partial_path("job") / "history.csv").write_text("epoch,loss,accuracy\n0,2.0,0.3\n")
    assert list(views.partial_history("job")["accuracy"]) == [0.3]


def test_every_figure_builds(runs):
    a, b = load_run("baseline-reference"), load_run("transfer-reference")
    report = evaluate_run(a)
    table = pd.DataFrame(views.accuracy_table([a, b]))
    figures = [
        plots.headline_bars(views.headline_table([a, b])),
        plots.accuracy_bars(table),
        plots.learning_curves({a.run_id: a.history, b.run_id: b.history}),
        plots.hyperparameter_scatter(
            pd.concat([table, pd.DataFrame({"augment": [False, True]})], axis=1), "augment"
        ),
        plots.per_class_bars({a.run_id: report.per_class}, "recall"),
        plots.confusion_heatmap(report.confusion),
        plots.confusion_heatmap(report.confusion_normalized, normalized=True, title="x"),
        plots.disagreement_bars(disagreement_matrix(a, b)),
        plots.top_k_bars(views.top_k_frame({"a": [("cat", 0.7), ("dog", 0.2)], "b": [("dog", 0.9)]})),
    ]
    assert all(isinstance(figure, go.Figure) and figure.data for figure in figures)
    curves = figures[2]
    assert len(curves.data) == 8  # 2 runs x (accuracy, loss) x (train, validation)
    heatmap = figures[5].data[0]
    assert np.asarray(heatmap.z).sum() == 100


def test_pages_and_dashboard_import_no_tensorflow():
    """Pages stay light: TensorFlow loads only when a model is used (Classify, training jobs)."""
    import ast
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    for page in [repo / "streamlit_app.py", *(repo / "pages").glob("*.py")]:
        tree = ast.parse(page.read_text())
        names = [
            alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
        ]
        names += [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
        assert not [n for n in names if n.split(".")[0] in ("tensorflow", "keras")], page
        assert len(page.read_text().splitlines()) < 40, f"{page.name} should stay a short description"
    code = (
        "import sys, dashboard.cache, dashboard.widgets, dashboard.training, cifar.views, cifar.plots\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'TensorFlow was imported'"
    )
    subprocess.run([sys.executable, "-c", code], cwd=repo, check=True, timeout=120)


def test_home_relative_hides_the_home_folder(monkeypatch, tmp_path):
    from pathlib import Path

    monkeypatch.setenv("HOME", str(tmp_path))
    assert views.home_relative(tmp_path / ".keras" / "features") == "~/.keras/features"
    assert views.home_relative(Path("/srv/keras")) == "/srv/keras"
