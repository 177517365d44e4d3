"""The dashboard's entry point: `streamlit run streamlit_app.py`.

A router only: each page is a short file under `pages/`; the work lives in `cifar/` and `dashboard/`.
"""

import streamlit as st

st.set_page_config(page_title="CIFAR-10 classifiers", page_icon="🖼️", layout="wide")

PAGES = [
    st.Page("pages/overview.py", title="Overview", icon="🏠", url_path="overview", default=True),
    st.Page("pages/comparison.py", title="Comparison", icon="📊", url_path="comparison"),
    st.Page("pages/per_class.py", title="Per-class metrics", icon="🧮", url_path="per-class"),
    st.Page("pages/misclassified.py", title="Misclassified samples", icon="🔍", url_path="misclassified"),
    st.Page("pages/classify.py", title="Classify an image", icon="📷", url_path="classify"),
    st.Page("pages/train.py", title="Train", icon="🏋️", url_path="train"),
]

st.navigation(PAGES).run()
