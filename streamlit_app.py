"""The dashboard's entry point: `streamlit run streamlit_app.py`.

A router only: each page is a file under `app_pages/` that owns its layout, listed once in
`dashboard/pages.py`; the work lives in `cifar/`.
"""

import os

import streamlit as st

from cifar.store.runs import best_runs
from dashboard import cache, pages

st.set_page_config(page_title="CIFAR-10 classifiers", page_icon=":material/image:", layout="wide")


PAGES = [
    st.Page(page.file, title=page.title, icon=page.icon, url_path=page.url_path, default=i == 0)
    for i, page in enumerate(pages.PAGES)
]

try:
    st.navigation(PAGES).run()
finally:  # after the page (which may end in st.stop()): loading TensorFlow must not delay the first page
    if os.environ.get("CIFAR_PRELOAD", "1") != "0":  # Classify's default models, in the background
        defaults = [run for run in best_runs(cache.runs()).values() if run is not None]
        cache.preload([run for run in defaults if run.has_weights])
