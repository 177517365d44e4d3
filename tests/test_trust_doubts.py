"""When the models disagree (`cifar.analysis.trust.doubts`), for every number of models and every way of
disagreeing: two models, two ways among three or four, three ways; and when they agree.

test_trust.py's disagreement is three models three ways, which cannot tell "more than one answer"
from "more than two answers" (or "more than two models").
"""

from __future__ import annotations

import itertools

import pytest

from cifar.analysis.trust import doubts

CLOSING = "may show none of the ten classes"


def sure(label: str, probability: float = 0.9) -> list[tuple[str, float]]:
    return [(label, probability), ("ship", 1 - probability)]


def test_two_sure_models_that_disagree_are_named():
    notes = doubts({"baseline-best": sure("truck"), "transfer-best": sure("automobile", 0.8)})
    assert notes[0] == "The models disagree: baseline-best says truck and transfer-best says automobile."
    assert CLOSING in notes[1] and len(notes) == 2
    assert not any(note.startswith("Unsure") for note in notes)


def test_two_models_disagree_on_the_top_class_even_with_the_same_classes_ranked():
    notes = doubts({"a": [("cat", 0.6), ("dog", 0.4)], "b": [("dog", 0.6), ("cat", 0.4)]})
    assert notes[0] == "The models disagree: a says cat and b says dog."


@pytest.mark.parametrize(
    "tops",
    [("cat", "cat", "dog"), ("cat", "dog", "cat"), ("dog", "cat", "cat"), ("cat", "cat", "dog", "dog"),
     ("cat", "cat", "cat", "frog")],
    ids="-".join,
)  # fmt: skip
def test_two_ways_among_more_models_is_a_disagreement(tops):
    answers = {f"m{i}": sure(label) for i, label in enumerate(tops)}
    notes = doubts(answers)
    says = [f"m{i} says {label}" for i, label in enumerate(tops)]
    listed = f"{', '.join(says[:-1])} and {says[-1]}"
    assert notes[0] == f"The models disagree: {listed}."
    assert len(notes) == 2


@pytest.mark.parametrize("models", [1, 2, 3, 4])
def test_sure_models_that_agree_raise_no_doubt(models):
    assert doubts({f"m{i}": sure("horse", 0.5 + 0.1 * i) for i in range(models)}) == []


def test_a_model_without_an_answer_is_neither_agreement_nor_disagreement():
    assert doubts({"a": sure("cat"), "b": []}) == []
    assert (
        doubts({"a": sure("cat"), "b": [], "c": sure("dog")})[0]
        == "The models disagree: a says cat and c says dog."
    )


@pytest.mark.parametrize("models", [1, 2, 3, 4])
def test_disagreement_is_said_exactly_when_the_top_classes_differ(models):
    """Every assignment of three classes to 1-4 sure models: the note is there iff more than one."""
    for tops in itertools.product(("cat", "dog", "frog"), repeat=models):
        notes = doubts({f"m{i}": sure(label) for i, label in enumerate(tops)})
        disagree = any(note.startswith("The models disagree") for note in notes)
        assert disagree == (len(set(tops)) > 1), tops
        assert (notes == []) == (len(set(tops)) == 1), tops


def test_unsure_and_disagreeing_both_said_for_two_models():
    notes = doubts({"a": sure("cat", 0.45), "b": sure("dog", 0.9)})
    assert notes[0] == "Unsure: a (cat, 45%) gives its best guess less than 50%."
    assert notes[1] == "The models disagree: a says cat and b says dog."
    assert CLOSING in notes[2] and len(notes) == 3
