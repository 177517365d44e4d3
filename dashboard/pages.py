"""The dashboard's pages, listed once: the app's navigation (`streamlit_app.py`), the tests and
the screenshot script (`bench/dashboard.py`) all read this list. No Streamlit import: the list is
data, and the app turns it into `st.Page`s."""

from __future__ import annotations

from dataclasses import dataclass

FOLDER = "app_pages"  # the page scripts, from the repository root


@dataclass(frozen=True)
class Page:
    name: str  # its script's name, and how tests and scripts name it
    title: str  # its link in the sidebar
    icon: str
    url_path: str  # its address, and its screenshot's name
    heading: str  # the page's own st.title

    @property
    def file(self) -> str:
        return f"{FOLDER}/{self.name}.py"


PAGES = (  # in the sidebar's order; the first is the home page
    Page("overview", "Overview", ":material/home:", "overview", "CIFAR-10 classifiers"),
    Page("comparison", "Comparison", ":material/bar_chart:", "comparison", "Compare runs"),
    Page("per_class", "Per-class metrics", ":material/grid_on:", "per-class", "Per-class metrics"),
    Page(
        "misclassified", "Misclassified samples", ":material/image_search:", "misclassified",
        "Misclassified samples",
    ),
    Page("classify", "Classify an image", ":material/photo_camera:", "classify", "Classify an image"),
    Page("feature_map", "Feature map", ":material/scatter_plot:", "feature-map", "Feature map"),
    Page("robustness", "Robustness", ":material/blur_on:", "robustness", "Robustness to corruptions"),
    Page("train", "Train", ":material/model_training:", "train", "Train a model"),
)  # fmt: skip


def page_file(name: str) -> str:
    """The script of the page called `name` (for `st.page_link`)."""
    return next(page.file for page in PAGES if page.name == name)
