"""Classify an image: upload a photo (or take one) and see what each model thinks it is."""

import numpy as np
import pandas as pd
import streamlit as st

from cifar.analysis import plots
from cifar.analysis.trust import doubts
from cifar.inference.predict import RESOLUTIONS, missing_backbone
from cifar.sources.images import ImageError, open_image
from cifar.store.runs import best_runs
from dashboard import cache
from dashboard.explain_sections import explanation_row
from dashboard.text import FETCH, image_caption, plain
from dashboard.widgets import chart, require_runs, run_picker, upscale

IMAGE_TYPES = ["png", "jpg", "jpeg", "webp", "bmp", "gif", "tif", "tiff"]

st.title("Classify an image")
runs = cache.runs()
require_runs(runs)
default = [run.run_id for run in best_runs(runs).values() if run is not None]
# Not carried from the other pages: each model chosen here is loaded (seconds and memory each).
chosen = run_picker(runs, key="classify-runs", label="Models", default=default, carry=False)
top_k = st.slider("Top k classes", 1, 10, 5, key="classify-top-k")
mode = st.radio(
    "Transfer models see",
    RESOLUTIONS,
    format_func={"full": "the photo at full resolution", "cifar": "a 32 × 32 thumbnail, as in CIFAR-10"}.get,
    horizontal=True,
    key="classify-resolution",
    help="The InceptionV3 base was made for photos: at full resolution it sees the centre square "
    "resized straight to its input size. Baseline CNNs only know 32 × 32 images: they always see "
    "the thumbnail.",
)

# ----------------------------------------------------------------------------- the image
if st.toggle("Use the camera", key="classify-camera"):
    source = st.camera_input("Take a photo", key="classify-camera-input")
else:
    source = st.file_uploader(
        "Upload an image (PNG, JPEG, WebP, BMP, GIF, TIFF)", type=IMAGE_TYPES, key="classify-upload"
    )
if source is None or not chosen:
    st.info("Upload an image (or turn on the camera) and choose at least one model.")
    st.stop()
try:
    image = open_image(source.getvalue())
except ImageError as error:
    st.error(f"Cannot read {plain(source.name)}: {plain(error)}")
    st.stop()

# ----------------------------------------------------------------------------- each model's answer
left, right = st.columns([1, 2])
answers: dict[str, list[tuple[str, float]]] = {}
seen: dict[tuple[int, int], tuple[np.ndarray, list[str]]] = {}  # by size: the pixels, and which models
with right:
    for run in chosen:
        try:
            if missing_backbone(run):
                st.warning(
                    f"`{run.run_id}`: the InceptionV3 backbone weights are not cached, so this model "
                    f"cannot classify. Run `{FETCH}` to download them."
                )
                continue
            with st.spinner(f"Asking `{run.run_id}`..."):
                predictor = cache.predictor(run)
                resolution = mode if mode in predictor.resolutions else "cifar"
                answers[run.run_id] = predictor.predict(image, top_k=top_k, resolution=resolution)
                pixels = predictor.model_input(image, resolution)
            seen.setdefault(pixels.shape[:2], (pixels, []))[1].append(run.run_id)
            if resolution != "cifar":
                label, probability = predictor.predict(image, top_k=1, resolution="cifar")[0]
                st.caption(f"`{run.run_id}` on the 32 × 32 thumbnail instead: {label}, {probability:.1%}.")
        except ImageError as error:
            st.error(f"Cannot classify this image: {plain(error)}")
        except Exception as error:  # noqa: BLE001 (one model failing must not hide the others)
            st.warning(f"`{run.run_id}` cannot classify: {plain(error)}")
    if not answers:
        st.stop()
    notes = doubts(answers)
    if notes:
        st.warning(plain(" ".join(notes)), icon=":material/help:")
    # Long table: one row per (model, rank).
    ranked = pd.DataFrame(
        [
            {"model": name, "class": label, "probability": float(probability), "rank": rank + 1}
            for name, pairs in answers.items()
            for rank, (label, probability) in enumerate(pairs)
        ]
    )
    chart(plots.top_k_bars(ranked, plots.run_colours(run.run_id for run in runs)), key="classify-chart")
    st.caption(
        "Calibrated probabilities: each run's temperature, fitted on its validation split, makes "
        '"80 %" right about 80 % of the time on CIFAR-10\'s test images.'
    )

with left:
    st.image(image, caption=image_caption(image), width=224)
    for (height, width), (pixels, names) in sorted(seen.items(), reverse=True):
        small = height < 224
        shown = upscale(pixels, 224) if small else pixels
        caption = f"What {', '.join(names)} {'sees' if len(names) == 1 else 'see'}: {height} × {width}"
        st.image(shown, caption=caption + (", upscaled" if small else ""), width=224)

# Full width: two models' class and probability columns fit without scrolling.
wide = ranked.pivot(index="rank", columns="model", values=["class", "probability"])
wide.columns = [f"{model} {field}" for field, model in wide.columns]
wide = wide[[f"{model} {field}" for model in answers for field in ("class", "probability")]]  # as the chart
st.dataframe(
    wide,
    column_config={
        column: st.column_config.NumberColumn(format="percent")
        for column in wide.columns
        if column.endswith("probability")
    },
)

st.subheader("Why: where each model looks, and what it finds alike")
names = chosen[0].class_names
explain = st.selectbox(
    "Explain", [None, *names], format_func=lambda c: "each model's top answer" if c is None else c,
    key="classify-explain-class",
)  # fmt: skip
for run in chosen:
    if run.run_id in answers:
        resolution = mode if run.model == "transfer" else "cifar"
        explanation_row(run, image, resolution, None if explain is None else names.index(explain))
