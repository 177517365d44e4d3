"""Train: start a background training job from a form and watch it; one job at a time."""

import streamlit as st

from cifar import views
from dashboard import training

st.title("Train a model")
st.caption(
    "Each job is `python -m cifar train ...` in the background; it keeps running if you leave this "
    "page. A finished run appears in Comparison."
)
training.job_monitor()

for tab, model in zip(st.tabs([views.MODEL_TITLES[m] for m in views.MODELS]), views.MODELS, strict=True):
    with tab:
        training.train_form(model)
