"""Pages on the committed runs (slow): the class a Grad-CAM map explains on Classify, and the
probability under it, are the answer and the number the page's table shows for that run; Overview's
and Comparison's figures are those of the committed files."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from tests.pages.test_pages import no_exception, texts

pytestmark = pytest.mark.slow


def photo_bytes(real_home, index: int, side: int = 96) -> bytes:
    """A CIFAR-10 test image, upscaled as a small photo would be, as PNG bytes."""
    from cifar.sources.assets import read_cifar10_cache

    pixels = read_cifar10_cache(real_home / "datasets/cifar10-verified.npz").x_test[index]
    buffer = io.BytesIO()
    Image.fromarray(pixels).resize((side, side), Image.Resampling.BICUBIC).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("run_id", ["baseline-best", "transfer-best"])
def test_classify_explains_the_answer_its_table_shows(run_id, real_home, real_runs, open_page):
    from cifar.inference.predict import Predictor
    from cifar.store.runs import load_run

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


def test_overview_leads_with_the_committed_best_runs_and_their_intervals(real_runs, open_page):
    from tests.pages.test_pages import accuracy, wilson_of

    app = open_page("overview", timeout=300)
    no_exception(app)
    best = ("baseline-best", "transfer-best", "ensemble-best")
    assert [(m.label, m.value) for m in app.metric] == [(f"Best: {r}", f"{accuracy(r):.2%}") for r in best]
    captions = texts(app.caption)
    for run_id in (*best, "baseline-reference", "transfer-reference"):
        low, high = wilson_of(run_id)
        assert f"{low:.2%}".removesuffix("%") + f"-{high:.2%}" in captions, run_id
    for reference in ("baseline-reference", "transfer-reference"):
        assert f"The write-up's recipe, rerun: `{reference}` {accuracy(reference):.2%}" in captions


def test_comparison_card_tests_the_committed_best_runs_against_each_other(real_runs, open_page):
    """The card's figures against the files: the discordant counts, McNemar's exact p by the binomial
    sum written out, and the verdict for two runs this test set cannot tell apart."""
    import math

    import numpy as np

    from tests.pages.test_pages import arrays

    app = open_page("comparison", timeout=300)
    app.multiselect(key="comparison-runs").set_value(["baseline-best", "transfer-best"]).run()
    no_exception(app)
    (pa, labels), (pb, _) = arrays("baseline-best"), arrays("transfer-best")
    right_a, right_b = pa.argmax(1) == labels, pb.argmax(1) == labels
    a_only, b_only = int((right_a & ~right_b).sum()), int((right_b & ~right_a).sum())
    n = a_only + b_only
    p_value = min(1.0, 2 * sum(math.comb(n, k) for k in range(min(a_only, b_only) + 1)) / 2**n)
    captions = texts(app.caption)
    assert f"Test images only A gets right: {a_only:,}; only B: {b_only:,}." in captions
    assert f"McNemar's exact test: p = {p_value:.2g}." in captions
    difference = float(np.mean(right_a) - np.mean(right_b))
    shown = next(m for m in app.metric if m.label == "A minus B").value
    assert shown.startswith(f"{difference * 100:+.2f} pts")
    assert "No difference this test set can see" in texts(app.info)
