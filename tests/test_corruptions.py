"""CIFAR-10-C's corruptions (`cifar.sources.corruptions`): shape, dtype, determinism, severity order."""

from __future__ import annotations

import numpy as np
import pytest

from cifar.sources.corruptions import CORRUPTIONS, FAMILIES, SEVERITIES, check_corruption, corrupt

# What CIFAR-10-C names (its make_cifar_c.py, in its order): a literal spec, not read from the code.
EXPECTED = [
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
    "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
    "jpeg_compression",
]  # fmt: skip

# Where CIFAR-10-C's own constants do not grow with the severity, the distance from the clean
# image does not either; what they do order is checked instead (pairs: (weaker, stronger)).
PARTIAL_ORDERS = {
    # sigma 0.05, 0.25, 0.4, 0.25, 0.4 with 1, 1, 1, 2, 2 rounds of pixel shuffling: more blur
    # brings shuffled pixels back towards the clean image; two rounds move further than one.
    "glass_blur": [(2, 4), (3, 5)],
    # the affine jitter shrinks from 2.56 to 0.96 px while the elastic field grows (0 -> 3.2 px).
    "elastic_transform": [(5, 1)],
    # severities 3-5 darken the image (x 0.9, 0.85, 0.75) under about the same frost.
    "frost": [(1, 2), (2, 3)],
    # 3 and 4 differ only in the radius (6, 8) of a sigma-2 kernel: taps weighing < 0.2 %.
    "motion_blur": [(1, 2), (2, 3), (4, 5)],
}


def natural_images(n: int = 24, seed: int = 0) -> np.ndarray:
    """Smooth colour fields with a bright square: edges and flat areas, as photos have."""
    from skimage.transform import resize

    rng = np.random.default_rng(seed)
    images = []
    for _ in range(n):
        field = resize(rng.uniform(30, 200, (4, 4, 3)), (32, 32, 3), order=3)
        field += resize(rng.uniform(-40, 40, (16, 16, 3)), (32, 32, 3), order=1)  # texture
        top, left = rng.integers(4, 20, size=2)
        field[top : top + 10, left : left + 10] = rng.uniform(180, 250, 3)
        images.append(np.clip(field, 0, 255).astype(np.uint8))
    return np.stack(images)


@pytest.fixture(scope="module")
def images():
    return natural_images()


@pytest.fixture(scope="module")
def textures():
    """Stand-ins for the frost photographs (the real ones come from PyPI: tests never download)."""
    rng = np.random.default_rng(1)
    return [rng.integers(120, 256, (60, 90, 3), dtype=np.uint8) for _ in range(5)]


def distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b).mean())


def test_the_fifteen_corruptions_of_cifar_10_c():
    assert list(CORRUPTIONS) == EXPECTED
    assert SEVERITIES == (1, 2, 3, 4, 5)
    assert sorted(sum(FAMILIES.values(), ())) == sorted(EXPECTED)


@pytest.mark.slow  # over 2 s: the quick loop leaves it to CI
@pytest.mark.parametrize("name", EXPECTED)
def test_shape_dtype_and_change(name, images, textures):
    for severity in SEVERITIES:
        out = corrupt(images, name, severity, textures=textures)
        assert out.shape == images.shape and out.dtype == np.uint8
        assert distance(out, images) > 0.1, (name, severity)


@pytest.mark.parametrize("name", EXPECTED)
def test_same_seed_same_pixels_other_seed_other_pixels(name, images, textures):
    first = corrupt(images, name, 3, seed=7, textures=textures)
    assert np.array_equal(first, corrupt(images, name, 3, seed=7, textures=textures))
    random = name not in {
        "defocus_blur",
        "zoom_blur",
        "brightness",
        "contrast",
        "pixelate",
        "jpeg_compression",
    }
    assert (not np.array_equal(first, corrupt(images, name, 3, seed=8, textures=textures))) == random


@pytest.mark.slow  # over 2 s: the quick loop leaves it to CI
@pytest.mark.parametrize("name", EXPECTED)
def test_severity_is_monotone_in_the_distance_from_the_clean_image(name, images, textures):
    distances = {s: distance(corrupt(images, name, s, textures=textures), images) for s in SEVERITIES}
    pairs = PARTIAL_ORDERS.get(name, [(s, s + 1) for s in SEVERITIES[:-1]])
    assert pairs
    for weaker, stronger in pairs:
        assert distances[weaker] < distances[stronger], (name, distances)


def test_an_image_is_corrupted_alone_whatever_else_is_in_the_batch(images, textures):
    """Each image draws from the set's generator in turn: the first image's corruption does not
    depend on what follows it (a subset's first image matches the whole set's)."""
    whole = corrupt(images, "gaussian_noise", 2)
    assert np.array_equal(corrupt(images[:1], "gaussian_noise", 2), whole[:1])


@pytest.mark.parametrize(
    ("name", "severity", "message"),
    [
        ("gaussian", 1, "unknown corruption 'gaussian'; the corruptions are: gaussian_noise, shot_noise"),
        ("fog", 0, "severity must be a whole number from 1 to 5, got 0"),
        ("fog", 6, "from 1 to 5, got 6"),
        ("fog", True, "got True"),
        ("fog", 2.0, "got 2.0"),
    ],
)
def test_bad_names_and_severities_name_the_allowed_values(name, severity, message, images):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        check_corruption(name, severity)
    with pytest.raises(ValueError, match="unknown corruption|severity must be"):
        corrupt(images, name, severity)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((2, 32, 32), np.uint8),
        np.zeros((2, 32, 32, 3), np.float32),
        np.zeros((1, 64, 64, 3), np.uint8),
    ],
)
def test_only_cifar_images(bad):
    with pytest.raises(ValueError, match=r"expected \(N, 32, 32, 3\) uint8 images"):
        corrupt(bad, "contrast", 1)


def test_contrast_and_brightness_follow_cifar_10_c_constants(images):
    """Two closed forms: contrast 0.15 (severity 5) keeps 15 % of each pixel's distance from the
    image mean; brightness adds 0.3 to the HSV value (severity 5)."""
    from skimage.color import hsv2rgb, rgb2hsv

    x = images[:4] / 255.0
    means = x.mean(axis=(1, 2), keepdims=True)
    expected = np.uint8(np.clip((x - means) * 0.15 + means, 0, 1) * 255)
    assert np.array_equal(corrupt(images[:4], "contrast", 5), expected)
    hsv = rgb2hsv(x[0])
    hsv[..., 2] = np.clip(hsv[..., 2] + 0.3, 0, 1)
    assert np.array_equal(
        corrupt(images[:1], "brightness", 5)[0], np.uint8(np.clip(hsv2rgb(hsv), 0, 1) * 255)
    )


def test_frost_uses_the_textures_it_is_given(images):
    dark = [np.zeros((60, 90, 3), np.uint8)] * 5
    bright = [np.full((60, 90, 3), 255, np.uint8)] * 5
    # Severity 1: 1.0 x image + 0.2 x texture: a black texture leaves the image as it was.
    assert np.array_equal(corrupt(images, "frost", 1, textures=dark), images)
    assert distance(corrupt(images, "frost", 1, textures=bright), images) > 20
