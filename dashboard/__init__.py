"""Streamlit helpers of the dashboard: cached loaders (`cache`, the one caching module), the few
widgets several pages share (`widgets`), the pages' wording (`text`), and the Train page's
sections (`train_sections`). Each page under `app_pages/` owns its layout; the work lives in `cifar/`.
"""
