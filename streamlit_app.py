"""The dashboard's entry point: `streamlit run streamlit_app.py`.

A router only: each page is a file under `app_pages/` that owns its layout; the work lives in `cifar/`.
"""

import os

import streamlit as st

from cifar.runs import best_runs
from dashboard import cache

st.set_page_config(page_title="CIFAR-10 classifiers", page_icon=":material/image:", layout="wide")


PAGES = [
    st.Page(
        "app_pages/overview.py", title="Overview", icon=":material/home:", url_path="overview", default=True
    ),
    st.Page(
        "app_pages/comparison.py", title="Comparison", icon=":material/bar_chart:", url_path="comparison"
    ),
    st.Page(
        "app_pages/per_class.py", title="Per-class metrics", icon=":material/grid_on:", url_path="per-class"
    ),
    st.Page(
        "app_pages/misclassified.py",
        title="Misclassified samples",
        icon=":material/image_search:",
        url_path="misclassified",
    ),
    st.Page(
        "app_pages/classify.py",
        title="Classify an image",
        icon=":material/photo_camera:",
        url_path="classify",
    ),
    st.Page(
        "app_pages/feature_map.py",
        title="Feature map",
        icon=":material/scatter_plot:",
        url_path="feature-map",
    ),
    st.Page(
        "app_pages/robustness.py",
        title="Robustness",
        icon=":material/blur_on:",
        url_path="robustness",
    ),
    st.Page("app_pages/train.py", title="Train", icon=":material/model_training:", url_path="train"),
]

try:
    st.navigation(PAGES).run()
finally:  # after the page (which may end in st.stop()): loading TensorFlow must not delay the first page
    if os.environ.get("CIFAR_PRELOAD", "1") != "0":  # Classify's default models, in the background
        defaults = [run for run in best_runs(cache.runs()).values() if run is not None]
        cache.preload([run for run in defaults if run.has_weights])
