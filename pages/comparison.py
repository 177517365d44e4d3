"""Comparison: any runs side by side: accuracies, learning curves, every hyperparameter."""

import streamlit as st

from cifar import plots, views
from dashboard import cache, widgets

st.title("Compare runs")
runs = cache.runs()
widgets.require_runs(runs)
chosen = widgets.run_picker(runs, key="comparison-runs", label="Runs to compare")
if not chosen:
    st.info("Choose at least one run above.")
    st.stop()

st.subheader("Train and test accuracy")
widgets.chart(plots.accuracy_bars(views.accuracy_table(chosen)), key="comparison-accuracy")

st.subheader("Learning curves")
widgets.chart(
    plots.learning_curves({r.run_id: r.history for r in chosen}, title=None), key="comparison-curves"
)

st.subheader("Every hyperparameter and result")
table = widgets.runs_dataframe(chosen, key="comparison-table")

st.subheader("A hyperparameter against accuracy")
widgets.hyperparameter_chart(table, key="comparison-hparam")
