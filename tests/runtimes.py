"""Each export format's answers in its own runtime, in a fresh process as a user loading the file
would: `python tests/runtimes.py PIXELS.npy FMT:PATH:OUT.npy ...` (`cifar.inference.export.runtime_answers`).
Only a `.keras` file needs this package's layers (`import cifar.modeling.whole_model`)."""

from __future__ import annotations

import sys

import numpy as np

from cifar.inference.export import runtime_answers


def answers(fmt: str, path, pixels: np.ndarray) -> np.ndarray:
    if fmt == "keras":
        import cifar.modeling.whole_model  # noqa: F401
    return runtime_answers(fmt, path, pixels)


if __name__ == "__main__":
    pixels = np.load(sys.argv[1])
    for job in sys.argv[2:]:
        fmt, path, out = job.split(":")
        np.save(out, answers(fmt, path, pixels))
