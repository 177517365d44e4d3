"""Per-class metrics: precision / recall / F1, confusion matrices, confused pairs, disagreements."""

import pandas as pd
import streamlit as st

from cifar.analysis import plots
from cifar.analysis.evaluate import agreement, disagreement_matrix, evaluate_run
from dashboard import cache
from dashboard.widgets import chart, percent, require_runs, run_picker

st.title("Per-class metrics")
runs = cache.runs()
require_runs(runs)
chosen = run_picker(
    runs, key="per-class-runs", label="Runs (the first two: where they disagree)", max_selections=4
)
if not chosen:
    st.info("Choose at least one run above.")
    st.stop()
reports = {run.run_id: cache.of_run(evaluate_run, run) for run in chosen}

st.subheader("Precision, recall and F1 per class")
metric = st.segmented_control(
    "Metric", ["precision", "recall", "f1"], default="f1", key="per-class-metrics-metric", required=True
)
per_class = {run_id: report.per_class for run_id, report in reports.items()}
colours = plots.run_colours(run.run_id for run in runs)  # one colour per run, on every page
chart(plots.per_class_bars(per_class, metric, colours), key="per-class-metrics-bars")
table = pd.concat(per_class, axis=1)
st.dataframe(
    table.style.format("{:.3f}", subset=[c for c in table.columns if c[1] != "support"], na_rep="–"),
    height="content",
)
st.caption(
    "`_low` and `_high`: the 95 % interval. Precision and recall: Wilson's interval from their counts "
    "(over each class's test images); F1: a bootstrap over the test images."
)

st.subheader("Confusion matrices")
normalized = st.toggle("Normalise each row (share of the true class)", key="per-class-confusion-normalized")
for start in range(0, len(chosen), 2):
    for column, run in zip(st.columns(2), chosen[start : start + 2], strict=False):
        report = reports[run.run_id]
        matrix = report.confusion_normalized if normalized else report.confusion
        with column:
            chart(
                plots.confusion_heatmap(matrix, normalized, title=run.run_id),
                key=f"per-class-confusion-{run.run_id}",
            )

st.subheader("Most confused pairs (true → predicted)")
for column, (run_id, report) in zip(st.columns(len(reports)), reports.items(), strict=True):
    with column:
        st.markdown(f"**{run_id}**")
        st.dataframe(report.most_confused.head(10), hide_index=True, height="content")

st.subheader("Where two runs disagree")
if len(chosen) < 2:
    st.info("Choose two runs to see where one is right and the other wrong.")
    st.stop()
a, b = chosen[:2]
if len(a.test_labels) != len(b.test_labels) or (a.test_labels != b.test_labels).any():
    st.info(f"`{a.run_id}` and `{b.run_id}` were tested on different images; nothing to compare.")
    st.stop()
shares = agreement(a, b)
labels = {
    "agree": "Same prediction",
    "both_right": "Both right",
    "only_a_right": f"Only {a.run_id} right",
    "only_b_right": f"Only {b.run_id} right",
    "both_wrong": "Both wrong",
}
for column, (name, label) in zip(st.columns(len(labels)), labels.items(), strict=True):
    column.metric(label, percent(shares[name]))
chart(plots.disagreement_bars(disagreement_matrix(a, b), colours), key="per-class-disagreement-chart")
