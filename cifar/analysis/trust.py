"""When not to believe an answer: plain words for an unsure model or models that disagree.

The probabilities are calibrated (`cifar.calibration`), so a top probability under one half means
that, on images like CIFAR-10's, such an answer is wrong more often than right.
"""

from __future__ import annotations

from cifar.config import CLASS_NAMES

LOW_CONFIDENCE = 0.5

Answers = dict[str, list[tuple[str, float]]]  # model name -> [(label, probability)], most likely first


def doubts(answers: Answers, threshold: float = LOW_CONFIDENCE) -> list[str]:
    """Sentences saying why the answers may be wrong; [] when every model is sure and they agree."""
    tops = {name: ranked[0] for name, ranked in answers.items() if ranked}
    notes = []
    unsure = [
        f"{name} ({label}, {probability:.0%})"
        for name, (label, probability) in tops.items()
        if probability < threshold
    ]
    if unsure:
        verb = "gives its" if len(unsure) == 1 else "each give their"
        notes.append(f"Unsure: {_listed(unsure)} {verb} best guess less than {threshold:.0%}.")
    labels = {label for label, _ in tops.values()}
    if len(labels) > 1:
        says = [f"{name} says {label}" for name, (label, _) in tops.items()]
        notes.append(f"The models disagree: {_listed(says)}.")
    if notes:
        notes.append(
            "The photo may show none of the ten classes they know "
            f"({', '.join(CLASS_NAMES)}), or show one in a way CIFAR-10's photos never do."
        )
    return notes


def _listed(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} and {parts[-1]}"
