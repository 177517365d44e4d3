"""Progress a person waits for, on the terminal: one tqdm bar per labelled step."""

from __future__ import annotations

from collections.abc import Callable


def terminal_progress(what: str, only_terminal: bool = True) -> Callable[[str, int, int], None]:
    """`progress(label, done, total)` as one tqdm bar per label (on a terminal only, unless
    `only_terminal` is False: job logs have status.json)."""
    from tqdm.auto import tqdm

    bars = {}

    def report(label: str, done: int, total: int) -> None:
        if label not in bars:
            disable = None if only_terminal else False  # None: tqdm's own "is it a terminal?"
            bars[label] = tqdm(
                total=total, desc=f"{what} {label}", unit="img", mininterval=5, disable=disable
            )
        bars[label].update(done - bars[label].n)
        if done == total:
            bars[label].close()

    return report
