"""Test-time augmentation: the views a prediction averages, defined once for every path.

Training's test and validation predictions, the Predictor and the exported whole model all ask
`views` which views to take and with what weight:

- `tta_flip`: the image and its mirror image, half each;
- `tta_translate` (baseline runs): airbench94's `tta_level=2` (Keller Jordan, `cifar10-airbench`,
  `infer_mirror_translate`): half the weight on the image itself, a quarter each on the image
  shifted by one pixel up-left and down-right (reflect padding), each view with its mirror
  image where `tta_flip` is on (six views). airbench averages logits; the runs here average
  probabilities, as `tta_flip` always has, so a run's outputs stay probabilities.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

TRANSLATE_PX = 1  # airbench94's test-time shift


class View(NamedTuple):
    weight: float
    mirror: bool
    shift: int  # pixels down-right (+) or up-left (-), both axes


def views(flip: bool, translate: bool) -> list[View]:
    """The views of one prediction and their weights (which sum to 1)."""
    shifts = [(1.0, 0)] if not translate else [(0.5, 0), (0.25, -TRANSLATE_PX), (0.25, TRANSLATE_PX)]
    mirrors = (False, True) if flip else (False,)
    return [View(weight / len(mirrors), mirror, shift) for weight, shift in shifts for mirror in mirrors]


def mirrored(images):
    """Images (N, H, W, C) mirrored left to right; numpy arrays or tensors."""
    from keras import ops

    return ops.flip(images, axis=2)


def shifted(images, shift: int):
    """Images moved `shift` pixels down and right (up and left when negative), the edge reflected
    in: airbench94's crop of the reflect-padded image. numpy arrays or tensors."""
    from keras import ops

    pad = abs(shift)
    padded = ops.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]], mode="reflect")
    height, width = images.shape[1], images.shape[2]
    start = pad - shift
    return padded[:, start : start + height, start : start + width, :]


def view_of(images, view: View):
    """`images` as `view` sees them (shifted first, then mirrored, as airbench does)."""
    images = shifted(images, view.shift) if view.shift else images
    return mirrored(images) if view.mirror else images


def averaged(predict: Callable, images: np.ndarray, flip: bool, translate: bool = False) -> np.ndarray:
    """The weighted mean of `predict` over the views of `images` (uint8 pixels), float32."""
    total = None
    for view in views(flip, translate):
        pixels = images if view == View(1.0, False, 0) else np.ascontiguousarray(view_of(images, view))
        answer = view.weight * np.asarray(predict(pixels), np.float64)
        total = answer if total is None else total + answer
    return np.asarray(total, np.float32)
