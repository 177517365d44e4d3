"""Classify an image: upload a photo (or take one) and see what each model thinks it is."""

import streamlit as st

from cifar import plots, views
from dashboard import cache, widgets

st.title("Classify an image")
runs = cache.runs()
widgets.require_runs(runs)
default = [run.run_id for run in views.best_runs(runs).values() if run is not None]
chosen = widgets.run_picker(runs, key="classify-runs", label="Models", default=default)
top_k = st.slider("Top k classes", 1, 10, 5, key="classify-top-k")
image = widgets.image_input(key="classify")
if image is None or not chosen:
    st.info("Upload an image (or turn on the camera) and choose at least one model.")
    st.stop()

left, right = st.columns([1, 2])
with left:
    st.image(image, caption=f"Your image ({image.width} × {image.height})", width=224)
    st.image(widgets.model_view(image), caption="What the model sees: 32 × 32, upscaled", width=224)
with right:
    predictions = widgets.predict_all(chosen, image, top_k)
    if predictions:
        widgets.chart(plots.top_k_bars(views.top_k_frame(predictions)), key="classify-chart")
if predictions:  # full width: two models' class and probability columns fit without scrolling
    widgets.top_k_table(predictions)
