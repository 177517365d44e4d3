"""Streamlit-only helpers of the dashboard: cached loaders (`cache`), shared widgets and page
sections (`widgets`), and the training form and job monitor (`training`).

Everything that does not need Streamlit lives in `cifar/` (`cifar.views`, `cifar.plots`).
"""
