"""Every caption that names a class names the class of the image it sits under: every card of
the Misclassified gallery (not only the first), the image opened under "Why" (not only the
default first one) and its Grad-CAM; on Classify, the thumbnail's answer and the map's class and
probability, which are the answer shown in the table. And Classify's doubts with exactly two models.

A caption computed from the wrong row (the row's first card, the gallery's first image, the
full-resolution answer under the thumbnail) is right on the first card and the default choice:
these tests look at the others, on fixtures where neighbouring images have other classes.
"""

from __future__ import annotations

import numpy as np
import pytest

from cifar.config import CLASS_NAMES
from cifar.inference.explain import Explainer
from cifar.store.runs import load_run
from dashboard.text import plain
from tests.factory import write_npz
from tests.pages.test_pages import FakePredictor, arrays, cards, mistakes_by_hand, no_exception, png, texts


def card_by_hand(index: int, run_ids: list[str]) -> str:
    """A gallery card's caption, from the runs' files."""
    labels = arrays(run_ids[0])[1]
    lines = [f"#{index} · true **{CLASS_NAMES[labels[index]]}**"]
    for run_id in run_ids:
        probs, _ = arrays(run_id)
        mark = ":green[✓]" if probs[index].argmax() == labels[index] else ":red[✗]"
        lines.append(f"{mark} {run_id}: {CLASS_NAMES[probs[index].argmax()]} {probs[index].max():.0%}")
    return "  \n".join(lines)


def test_every_gallery_card_names_its_own_image_s_classes(runs, open_page):
    app = open_page("misclassified")
    chosen = app.multiselect(key="misclassified-runs").value
    expected = [index for index, _ in mistakes_by_hand(chosen)]
    shown = cards(app)
    assert len(shown) == 24
    # Cards side by side hold other true classes: a caption from the wrong card shows.
    labels = arrays(chosen[0])[1]
    assert len({labels[i] for i in expected[:6]}) > 1
    assert shown == [card_by_hand(index, chosen) for index in expected[:24]]
    app.number_input(key="misclassified-gallery-page").set_value(2).run()
    assert cards(app) == [card_by_hand(index, chosen) for index in expected[24:48]]


def image_captions(app) -> list[tuple[str, str]]:
    """(caption, media url) of every image on the page; the url is a digest of the image's bytes."""
    return [(image.proto.imgs[0].caption, image.proto.imgs[0].url) for image in app.image]


@pytest.mark.slow  # over 2 s: the quick loop leaves it to CI
def test_the_opened_image_is_captioned_with_its_own_number_and_class(runs, open_page, cifar_npz):
    app = open_page("misclassified")
    options = app.selectbox(key="misclassified-open").options
    labels = arrays("baseline-reference")[1]
    first = int(options[0].lstrip("#"))
    others = [int(o.lstrip("#")) for o in options[1:] if labels[int(o.lstrip("#"))] != labels[first]][:3]
    assert len(others) == 3, "the fixture has images of other classes than the first"
    gallery = [url for caption, url in image_captions(app)[:24]]  # the cards' images, in order
    assert len(set(gallery)) == 24
    for index in [first, *others]:
        app.selectbox(key="misclassified-open").set_value(index).run()
        no_exception(app)
        opened = [(caption, url) for caption, url in image_captions(app) if caption.startswith("#")]
        assert [caption for caption, _ in opened] == [f"#{index}: {CLASS_NAMES[labels[index]]}"], index
        # The same pixels as the image's own card (both are the test image upscaled to 96 px).
        assert opened[0][1] == gallery[[int(o.lstrip("#")) for o in options].index(index)], index


@pytest.fixture
def trained(use_trained_baseline, tmp_path, monkeypatch):
    run_id, data = use_trained_baseline
    monkeypatch.setenv("CIFAR10_NPZ", str(write_npz(tmp_path / "data.npz", data)))
    return run_id, data


def looking_for(app, run_id: str) -> list[str]:
    return [c.value for c in app.caption if c.value.startswith(f"`{run_id}` looking for")]


@pytest.mark.slow  # over 2 s: the quick loop leaves it to CI
def test_the_opened_image_s_map_is_of_that_image(trained, open_page):
    run_id, data = trained
    explainer = Explainer(load_run(run_id))
    app = open_page("misclassified")
    options = [int(o.lstrip("#")) for o in app.selectbox(key="misclassified-open").options]

    def caption(index: int) -> str:
        explanation = explainer.explain(data.x_test[index], "cifar")
        return (
            f"`{run_id}` looking for **{explanation.class_name}** "
            f"({explanation.probabilities[explanation.class_index]:.1%}), Grad-CAM at `{explanation.layer}`"
        )

    # An image whose caption differs from the first one's, so the first image's map cannot pass.
    other = next(index for index in options[1:] if caption(index) != caption(options[0]))
    app.selectbox(key="misclassified-open").set_value(other).run()
    no_exception(app)
    assert looking_for(app, run_id) == [caption(other)]


# ----------------------------------------------------------------------------- classify


class SurePredictor(FakePredictor):
    """Sure answers set per run and resolution (`ANSWERS`: run id -> {resolution: (class, p)})."""

    ANSWERS: dict = {}

    @staticmethod
    def probabilities(run_id: str, resolution: str = "cifar") -> np.ndarray:
        label, top = SurePredictor.ANSWERS[run_id][resolution]
        probs = np.full(10, (1 - top) / 9)
        probs[CLASS_NAMES.index(label)] = top
        return probs


@pytest.fixture
def two_models(runs, monkeypatch):
    """Classify's default models are baseline-best and transfer-reference (its weights "cached")."""
    import cifar.inference.predict
    import cifar.sources.assets

    FakePredictor.loaded = []
    monkeypatch.setattr(cifar.inference.predict, "Predictor", SurePredictor)
    monkeypatch.setattr(cifar.sources.assets, "weights_available", lambda preference="auto": True)
    return SurePredictor


def classify(open_page):
    app = open_page("classify")
    app.file_uploader(key="classify-upload").set_value(("red.png", png(), "image/png")).run()
    no_exception(app)
    return app


def test_two_sure_models_that_disagree_are_said_to_disagree(two_models, open_page):
    two_models.ANSWERS = {
        "baseline-best": {"cifar": ("truck", 0.9)},
        "transfer-reference": {"full": ("automobile", 0.8), "cifar": ("ship", 0.7)},
    }
    warnings = texts(classify(open_page).warning)
    disagree = "The models disagree: baseline-best says truck and transfer-reference says automobile."
    assert plain(disagree) in warnings
    assert "Unsure" not in warnings


def test_two_sure_models_that_agree_raise_no_doubt(two_models, open_page):
    two_models.ANSWERS = {
        "baseline-best": {"cifar": ("truck", 0.9)},
        "transfer-reference": {"full": ("truck", 0.8), "cifar": ("ship", 0.7)},
    }
    assert "disagree" not in texts(classify(open_page).warning)


def test_the_thumbnail_caption_gives_the_thumbnail_s_answer(two_models, open_page):
    two_models.ANSWERS = {
        "baseline-best": {"cifar": ("truck", 0.9)},
        "transfer-reference": {"full": ("automobile", 0.8), "cifar": ("ship", 0.7)},
    }
    captions = texts(classify(open_page).caption)
    assert "`transfer-reference` on the 32 × 32 thumbnail instead: ship, 70.0%." in captions
    assert "thumbnail instead: automobile" not in captions


@pytest.mark.slow  # over 2 s: the quick loop leaves it to CI
def test_classify_s_map_explains_the_answer_in_the_table_with_its_probability(trained, open_page):
    """One answer, one probability: the map's caption names the run's top class in the table, with
    the table's number; asked for another class, that class with its own probability."""
    run_id, _ = trained
    app = open_page("classify")
    app.slider(key="classify-top-k").set_value(10).run()  # every class's probability in the table
    app.file_uploader(key="classify-upload").set_value(("red.png", png(), "image/png")).run()
    no_exception(app)
    table = app.dataframe[0].value
    shown = dict(zip(table[f"{run_id} class"], table[f"{run_id} probability"], strict=True))
    top_class = table[f"{run_id} class"].iloc[0]
    assert looking_for(app, run_id)[0].startswith(
        f"`{run_id}` looking for **{top_class}** ({shown[top_class]:.1%})"
    )
    # Another class, whose probability reads differently from the top one's.
    asked = next(
        name for name in table[f"{run_id} class"] if f"{shown[name]:.1%}" != f"{shown[top_class]:.1%}"
    )
    app.selectbox(key="classify-explain-class").set_value(asked).run()
    no_exception(app)
    [caption] = looking_for(app, run_id)
    assert caption.startswith(f"`{run_id}` looking for **{asked}** ({shown[asked]:.1%}), Grad-CAM at")
