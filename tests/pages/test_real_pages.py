"""Classify on the committed runs (slow): the class a Grad-CAM map explains, and the probability
under it, are the answer and the number the page's table shows for that run."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from tests.pages.test_pages import no_exception, texts

pytestmark = pytest.mark.slow


def photo_bytes(real_home, index: int, side: int = 96) -> bytes:
    """A CIFAR-10 test image, upscaled as a small photo would be, as PNG bytes."""
    from cifar.assets import read_cifar10_cache

    pixels = read_cifar10_cache(real_home / "datasets/cifar10-verified.npz").x_test[index]
    buffer = io.BytesIO()
    Image.fromarray(pixels).resize((side, side), Image.Resampling.BICUBIC).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("run_id", ["baseline-best", "transfer-best"])
def test_classify_explains_the_answer_its_table_shows(run_id, real_home, real_runs, open_page):
    from cifar.predict import Predictor
    from cifar.runs import load_run

    predictor = Predictor(load_run(run_id))
    app = open_page("classify", timeout=300)
    app.multiselect(key="classify-runs").set_value([run_id]).run()
    for index in (3, 12):  # a ship and a dog, seen at each run's default resolution, as the page's
        upload = photo_bytes(real_home, index)
        app.file_uploader(key="classify-upload").set_value((f"{index}.png", upload, "image/png")).run()
        no_exception(app)
        table = app.dataframe[0].value
        label, probability = table[f"{run_id} class"].iloc[0], float(table[f"{run_id} probability"].iloc[0])
        assert f"`{run_id}` looking for **{label}** ({probability:.1%})" in texts(app.caption)
        (expected_label, expected), *_ = predictor.predict(upload, top_k=1)
        assert label == expected_label and probability == pytest.approx(expected, abs=1e-6)
