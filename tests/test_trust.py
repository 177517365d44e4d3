"""When not to believe an answer (`cifar.analysis.trust`)."""

from cifar.analysis.trust import doubts


def test_sure_models_that_agree_raise_no_doubt():
    assert doubts({"a": [("cat", 0.9), ("dog", 0.05)], "b": [("cat", 0.5)]}) == []


def test_an_unsure_model_is_named_with_its_guess():
    notes = doubts({"a": [("cat", 0.9)], "b": [("cat", 0.42), ("dog", 0.4)]})
    assert notes[0] == "Unsure: b (cat, 42%) gives its best guess less than 50%."
    assert "may show none of the ten classes" in notes[-1] and len(notes) == 2


def test_models_that_disagree_are_named_with_their_answers():
    notes = doubts({"a": [("cat", 0.9)], "b": [("dog", 0.8)], "c": [("frog", 0.3)]})
    assert notes[0] == "Unsure: c (frog, 30%) gives its best guess less than 50%."
    assert notes[1] == "The models disagree: a says cat, b says dog and c says frog."


def test_the_threshold_can_be_chosen_and_empty_answers_are_ignored():
    assert doubts({"a": [("cat", 0.7)], "b": []}, threshold=0.8)[0].startswith("Unsure: a (cat, 70%)")
    assert doubts({}) == []


def test_two_unsure_models_and_the_closing_sentence_read_as_written():
    notes = doubts({"a": [("cat", 0.3)], "b": [("cat", 0.4)]})
    assert notes == [
        "Unsure: a (cat, 30%) and b (cat, 40%) each give their best guess less than 50%.",
        "The photo may show none of the ten classes they know (airplane, automobile, bird, cat, deer, "
        "dog, frog, horse, ship, truck), or show one in a way CIFAR-10's photos never do.",
    ]
