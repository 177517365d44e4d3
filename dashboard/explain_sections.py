"""Why a model answered, as Classify and Misclassified show it: where it looks (Grad-CAM) and the
training images it finds most alike."""

from __future__ import annotations

import numpy as np
import streamlit as st

from cifar.analysis.feature_space import nearest, train_features_command
from cifar.store.runs import Run
from dashboard import cache
from dashboard.text import plain
from dashboard.widgets import upscale

NEIGHBOURS = 8


def explanation_row(run: Run, image, resolution: str, class_index: int | None) -> None:
    """One run's Grad-CAM of `image` (a PIL image or uint8 pixels) and its nearest training images."""
    if run.model == "ensemble":
        st.caption(f"`{run.run_id}` is an ensemble: its members explain their own answers.")
        return
    if not run.has_weights:
        st.caption(f"`{run.run_id}`: its folder holds no trained weights to explain with.")
        return
    try:
        with st.spinner(f"Asking `{run.run_id}` where it looks..."):
            explanation = cache.explanation(run, image, resolution, class_index)
    except Exception as error:  # noqa: BLE001 (one model failing must not hide the others)
        st.warning(f"`{run.run_id}` cannot explain this image: {plain(error)}")
        return
    left, right = st.columns([1, 3])
    left.image(explanation.overlay, width=224)
    left.caption(
        f"`{run.run_id}` looking for **{plain(explanation.class_name)}** "
        f"({explanation.probabilities[explanation.class_index]:.1%}), Grad-CAM at `{explanation.layer}`"
    )
    with right:
        if not cache.train_features_ready(run):
            st.caption(
                f"Nearest training images: not computed for `{run.run_id}` yet "
                f"(`{train_features_command(run)}`)."
            )
            return
        data = cache.cifar10()
        found = nearest(cache.train_features(run), explanation.features, NEIGHBOURS)
        st.caption(f"The {NEIGHBOURS} training images `{run.run_id}` finds most alike (cosine similarity)")
        for column, (index, similarity) in zip(st.columns(NEIGHBOURS), found, strict=True):
            label = run.class_names[int(data.y_train[index])]
            column.image(upscale(np.asarray(data.x_train[index]), 64), width=64)
            column.caption(f"{plain(label)} · {similarity:.2f}")
