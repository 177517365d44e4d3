"""Overview: each model's headline accuracy beside the write-up's, the assets, what to do next."""

import streamlit as st

from dashboard import cache, widgets

st.title("CIFAR-10 classifiers")
st.caption(
    "A from-scratch baseline CNN and an InceptionV3 transfer model, trained on CIFAR-10 "
    "(50,000 training / 10,000 test images, 10 classes)."
)
runs = cache.runs()
widgets.run_problems()
widgets.active_job_note()

st.subheader("Headline accuracy")
widgets.headline(runs)

st.subheader("Data and weights")
status = widgets.assets_status()

st.subheader("What to do next")
widgets.next_steps(runs, status)
