"""Per-class metrics: precision / recall / F1, confusion matrices, confused pairs, disagreements."""

import streamlit as st

from dashboard import cache, widgets

st.title("Per-class metrics")
runs = cache.runs()
widgets.require_runs(runs)
chosen = widgets.run_picker(
    runs, key="per-class-runs", label="Runs (the first two: where they disagree)", max_selections=4
)
if not chosen:
    st.info("Choose at least one run above.")
    st.stop()

st.subheader("Precision, recall and F1 per class")
widgets.per_class_section(chosen, key="per-class-metrics")

st.subheader("Confusion matrices")
widgets.confusion_section(chosen, key="per-class-confusion")

st.subheader("Most confused pairs (true → predicted)")
widgets.most_confused_section(chosen)

st.subheader("Where two runs disagree")
if len(chosen) < 2:
    st.info("Choose two runs to see where one is right and the other wrong.")
    st.stop()
widgets.disagreement_section(chosen[0], chosen[1], key="per-class-disagreement")
