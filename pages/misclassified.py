"""Misclassified samples: test images a model gets wrong, with every chosen run's prediction."""

import streamlit as st

from cifar import views
from dashboard import cache, widgets

st.title("Misclassified samples")
runs = cache.runs()
widgets.require_runs(runs)
data = widgets.require_test_set()
chosen = widgets.tested_on(
    widgets.run_picker(runs, key="misclassified-runs", label="Runs", max_selections=4), data.y_test
)
if not chosen:
    st.info("Choose at least one run tested on the cached test set.")
    st.stop()

spec = widgets.gallery_filters(chosen, chosen[0].class_names, key="misclassified-filter")
table = views.filter_gallery(cache.gallery(chosen, len(data.x_test)), [run.run_id for run in chosen], spec)
widgets.gallery(table, data.x_test, chosen, key="misclassified-gallery")
