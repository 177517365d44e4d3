"""Comparison: any runs side by side: accuracies, learning curves, every hyperparameter."""

import streamlit as st

from cifar import plots
from cifar.runs import hyperparameter_columns, runs_table
from dashboard import cache
from dashboard.widgets import chart, require_runs, run_picker

st.title("Compare runs")
runs = cache.runs()
require_runs(runs)
chosen = run_picker(runs, key="comparison-runs", label="Runs to compare")
if not chosen:
    st.info("Choose at least one run above.")
    st.stop()
table = runs_table(chosen)

st.subheader("Train and test accuracy")
chart(plots.accuracy_bars(table), key="comparison-accuracy")

st.subheader("Learning curves")
chart(plots.learning_curves({r.run_id: r.history for r in chosen}, title=None), key="comparison-curves")

st.subheader("Every hyperparameter and result")
percent_column = st.column_config.NumberColumn(format="percent")
st.dataframe(
    table,
    key="comparison-table",
    hide_index=True,
    column_config={
        "run": st.column_config.TextColumn(pinned=True),
        **{name: percent_column for name in ("train_accuracy", "val_accuracy", "test_accuracy")},
        "seconds": st.column_config.NumberColumn(format="%.0f s"),
    },
)

st.subheader("A hyperparameter against accuracy")
parameters = hyperparameter_columns(table)
if parameters:
    left, right = st.columns(2)
    default = parameters.index("learning_rate") if "learning_rate" in parameters else 0
    parameter = left.selectbox("Hyperparameter", parameters, index=default, key="comparison-hparam-parameter")
    metric = right.selectbox(
        "Result",
        ["test_accuracy", "train_accuracy", "val_accuracy", "seconds"],
        key="comparison-hparam-metric",
    )
    chart(plots.hyperparameter_scatter(table, parameter, metric), key="comparison-hparam-chart")
