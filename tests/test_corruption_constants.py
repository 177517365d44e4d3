"""Every corruption's per-severity constants, pinned to CIFAR-10-C's own script, and measured back
from the images where the corruption has a closed form.

A corruption whose constants are ImageNet-C's (2-3x too strong at 32 px) still rises with the
severity, so the order tests in test_corruptions.py pass; only the numbers tell.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from cifar.sources import corruptions
from cifar.sources.corruptions import CORRUPTIONS, SEVERITIES, corrupt

# The constants of CIFAR-10-C, copied by hand from Hendrycks and Dietterich's script:
# github.com/hendrycks/robustness, ImageNet-C/create_c/make_cifar_c.py (commit ca360085d578),
# the `c = [...][severity - 1]` line of each function, severities 1 to 5. Literal on purpose:
# never read from `cifar.sources.corruptions`. (ImageNet-C's make_imagenet_c.py has other, stronger ones,
# e.g. gaussian_noise [.08, .12, 0.18, 0.26, 0.38]: those are the bug this file is for.)
IMSIZE = 32  # make_cifar_c.py's elastic_transform: `IMSIZE = 32`
MAKE_CIFAR_C = {
    "gaussian_noise": [0.04, 0.06, .08, .09, .10],
    "shot_noise": [500, 250, 100, 75, 50],
    "impulse_noise": [.01, .02, .03, .05, .07],
    "defocus_blur": [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)],
    "glass_blur": [(0.05,1,1), (0.25,1,1), (0.4,1,1), (0.25,1,2), (0.4,1,2)],  # sigma, max_delta, iterations
    "motion_blur": [(6,1), (6,1.5), (6,2), (8,2), (9,2.5)],
    "zoom_blur": [np.arange(1, 1.06, 0.01), np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01),
                  np.arange(1, 1.21, 0.01), np.arange(1, 1.26, 0.01)],
    "snow": [(0.1,0.2,1,0.6,8,3,0.95),
             (0.1,0.2,1,0.5,10,4,0.9),
             (0.15,0.3,1.75,0.55,10,4,0.9),
             (0.25,0.3,2.25,0.6,12,6,0.85),
             (0.3,0.3,1.25,0.65,14,12,0.8)],
    "frost": [(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)],
    "fog": [(.2,3), (.5,3), (0.75,2.5), (1,2), (1.5,1.75)],
    "brightness": [.05, .1, .15, .2, .3],
    "contrast": [.75, .5, .4, .3, 0.15],
    "elastic_transform": [(IMSIZE*0, IMSIZE*0, IMSIZE*0.08),
                          (IMSIZE*0.05, IMSIZE*0.2, IMSIZE*0.07),
                          (IMSIZE*0.08, IMSIZE*0.06, IMSIZE*0.06),
                          (IMSIZE*0.1, IMSIZE*0.04, IMSIZE*0.05),
                          (IMSIZE*0.1, IMSIZE*0.03, IMSIZE*0.03)],
    "pixelate": [0.95, 0.9, 0.85, 0.75, 0.65],
    "jpeg_compression": [80, 65, 58, 50, 40],
}  # fmt: skip

GREY = 128  # a flat mid-grey image: noise is neither clipped nor hidden by the picture


def grey(n: int = 40) -> np.ndarray:
    return np.full((n, 32, 32, 3), GREY, np.uint8)


def test_the_table_covers_every_corruption_and_severity():
    assert list(MAKE_CIFAR_C) == list(CORRUPTIONS)
    assert all(len(constants) == len(SEVERITIES) for constants in MAKE_CIFAR_C.values())


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_the_module_s_constants_are_make_cifar_c_s(name):
    ours = corruptions._CONSTANTS[name]
    assert len(ours) == 5, name
    for severity, (mine, theirs) in enumerate(zip(ours, MAKE_CIFAR_C[name], strict=True), start=1):
        np.testing.assert_allclose(
            np.asarray(mine, np.float64),
            np.asarray(theirs, np.float64),
            rtol=1e-12,
            err_msg=f"{name} {severity}",
        )


# ----------------------------------------------------------------------------- measured back
# The constants the images were made with, read off the images, for the corruptions with a
# closed form: this catches a constant used anywhere, not only one kept in the table.


@pytest.mark.parametrize("severity", SEVERITIES)
def test_gaussian_noise_has_the_standard_deviation_of_its_severity(severity):
    scale = MAKE_CIFAR_C["gaussian_noise"][severity - 1]
    out = corrupt(grey(), "gaussian_noise", severity) / 255.0
    # uint8 truncation adds 1/255 of uniform rounding (variance 1/12/255^2) and lowers the mean.
    measured = np.sqrt(out.var() - 1 / 12 / 255**2)
    assert measured == pytest.approx(scale, rel=0.02), (severity, measured)


@pytest.mark.parametrize("severity", SEVERITIES)
def test_shot_noise_has_the_photon_count_of_its_severity(severity):
    # poisson(x c) / c has variance x / c: c = x / variance.
    count = MAKE_CIFAR_C["shot_noise"][severity - 1]
    out = corrupt(grey(), "shot_noise", severity) / 255.0
    measured = (GREY / 255.0) / (out.var() - 1 / 12 / 255**2)
    assert measured == pytest.approx(count, rel=0.05), (severity, measured)


@pytest.mark.parametrize("severity", SEVERITIES)
def test_impulse_noise_replaces_its_severity_s_share_of_values(severity):
    amount = MAKE_CIFAR_C["impulse_noise"][severity - 1]
    out = corrupt(grey(), "impulse_noise", severity)
    replaced = np.isin(out, (0, 255)).mean()  # salt is 255, pepper 0; grey is neither
    assert replaced == pytest.approx(amount, rel=0.1), (severity, replaced)
    assert np.isin(out, (0, GREY, 255)).all()


@pytest.mark.parametrize("severity", SEVERITIES)
def test_brightness_adds_its_severity_to_the_value(severity):
    shift = MAKE_CIFAR_C["brightness"][severity - 1]
    out = corrupt(grey(1), "brightness", severity)
    assert np.all(np.abs(out.astype(int) - int((GREY / 255.0 + shift) * 255)) <= 1), severity


@pytest.mark.parametrize("severity", SEVERITIES)
def test_contrast_keeps_its_severity_s_share_of_the_distance_from_the_mean(severity):
    keep = MAKE_CIFAR_C["contrast"][severity - 1]
    image = np.zeros((1, 32, 32, 3), np.uint8)
    image[:, :, 16:] = 200  # half black, half 200: the mean is 100
    out = corrupt(image, "contrast", severity).astype(int)
    assert np.all(np.abs(out[:, :, 16:] - int((100 + 100 * keep) / 255 * 255)) <= 1), severity
    assert np.all(np.abs(out[:, :, :16] - int((100 - 100 * keep) / 255 * 255)) <= 1), severity


@pytest.mark.parametrize("severity", SEVERITIES)
def test_frost_mixes_image_and_texture_with_its_severity_s_weights(severity):
    image_weight, texture_weight = MAKE_CIFAR_C["frost"][severity - 1]
    textures = [np.full((60, 90, 3), 200, np.uint8)] * 5
    out = corrupt(np.full((2, 32, 32, 3), 100, np.uint8), "frost", severity, textures=textures)
    assert np.all(out == int(np.clip(image_weight * 100 + texture_weight * 200, 0, 255))), severity


@pytest.mark.parametrize("severity", SEVERITIES)
def test_fog_darkens_a_flat_image_by_its_severity_s_strength(severity):
    # x' = (x + c0 plasma) x_max / (x_max + c0): where the plasma is 0, x^2 / (x + c0).
    strength = MAKE_CIFAR_C["fog"][severity - 1][0]
    x = GREY / 255.0
    out = corrupt(grey(2), "fog", severity)
    assert abs(int(out.min()) - int(x * x / (x + strength) * 255)) <= 1, severity


@pytest.mark.parametrize("severity", SEVERITIES)
def test_pixelate_uses_its_severity_s_block_size(severity):
    side = int(32 * MAKE_CIFAR_C["pixelate"][severity - 1])
    images = np.random.default_rng(severity).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    expected = [
        np.asarray(Image.fromarray(x).resize((side, side), Image.BOX).resize((32, 32), Image.BOX))
        for x in images
    ]
    np.testing.assert_array_equal(corrupt(images, "pixelate", severity), np.stack(expected))


@pytest.mark.parametrize("severity", SEVERITIES)
def test_jpeg_compression_uses_its_severity_s_quality(severity):
    quality = MAKE_CIFAR_C["jpeg_compression"][severity - 1]
    images = np.random.default_rng(severity).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    expected = []
    for x in images:
        buffer = io.BytesIO()
        Image.fromarray(x).save(buffer, "JPEG", quality=quality)
        expected.append(np.asarray(Image.open(buffer)))
    np.testing.assert_array_equal(corrupt(images, "jpeg_compression", severity), np.stack(expected))
