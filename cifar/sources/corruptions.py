"""CIFAR-10-C's 15 corruptions at 5 severities, made here on uint8 32 x 32 images.

The constants are CIFAR-10-C's own (Hendrycks and Dietterich, ICLR 2019; `make_cifar_c.py` in
hendrycks/robustness), not ImageNet-C's, which the pip packages `imagecorruptions` / `imagenet_c`
carry and which are far too strong at 32 px. The operations follow that script with scikit-image,
scipy and Pillow in place of OpenCV and ImageMagick:

- `cv2.GaussianBlur` / `cv2.filter2D` (defocus) are `scipy.ndimage` correlations with OpenCV's
  reflect-101 border ("mirror"); `cv2.warpAffine` (elastic) is `skimage.transform.warp`.
- ImageMagick's motion blur (motion blur, snow) is rebuilt as `imagecorruptions` rebuilds it: a
  one-sided Gaussian of 2 * radius + 1 taps along the angle, edges replicated.
- Frost blends crops of the five frost photographs CIFAR-10-C draws from (`frost1..5`), taken
  from the `imagecorruptions` wheel and scaled by 0.2 as the script does (`cifar.sources.assets`).

Every random draw comes from one `numpy.random.Generator` seeded by (seed, corruption, severity),
so a set is the same pixels on every machine and every call: the feature cache recognises it.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence

import numpy as np

CORRUPTIONS = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
)
SEVERITIES = (1, 2, 3, 4, 5)
FAMILIES = {  # Hendrycks and Dietterich's grouping
    "noise": CORRUPTIONS[0:3],
    "blur": CORRUPTIONS[3:7],
    "weather": CORRUPTIONS[7:10],
    "digital": CORRUPTIONS[10:15],
}


def check_corruption(name: str, severity: int) -> None:
    """A ValueError naming the allowed values for an unknown corruption or severity."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; the corruptions are: {', '.join(CORRUPTIONS)}")
    if isinstance(severity, bool) or not isinstance(severity, int) or severity not in SEVERITIES:
        raise ValueError(f"severity must be a whole number from 1 to 5, got {severity!r}")


def corrupt(
    images: np.ndarray, name: str, severity: int, seed: int = 0, textures: Sequence[np.ndarray] | None = None
) -> np.ndarray:
    """`images` (N, 32, 32, 3) uint8 under corruption `name` at `severity`, as uint8.

    `textures`: frost's texture images (default: `cifar.sources.assets.load_frost_textures()`).
    """
    check_corruption(name, severity)
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1:] != (32, 32, 3) or images.dtype != np.uint8:
        raise ValueError(f"expected (N, 32, 32, 3) uint8 images, got {images.shape} {images.dtype}")
    rng = np.random.default_rng([seed, CORRUPTIONS.index(name), severity])
    function = _FUNCTIONS[name]
    constant = _CONSTANTS[name][severity - 1]
    if name == "frost":
        if textures is None:
            from cifar.sources.assets import load_frost_textures

            textures = load_frost_textures()
        function = _frost_with(textures)
    out = np.empty_like(images)
    for i, image in enumerate(images):
        # np.uint8 truncates, as make_cifar_c.py's `np.uint8(corruption(img))` does.
        out[i] = np.uint8(np.clip(function(image, constant, rng), 0, 255))
    return out


# ----------------------------------------------------------------------------- the constants

_CONSTANTS: dict[str, list] = {
    "gaussian_noise": [0.04, 0.06, 0.08, 0.09, 0.10],
    "shot_noise": [500, 250, 100, 75, 50],
    "impulse_noise": [0.01, 0.02, 0.03, 0.05, 0.07],
    "defocus_blur": [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)],
    "glass_blur": [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)],
    "motion_blur": [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)],
    "zoom_blur": [np.arange(1, top, 0.01) for top in (1.06, 1.11, 1.16, 1.21, 1.26)],
    "snow": [
        (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
        (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
        (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
        (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
        (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
    ],
    "frost": [(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)],
    "fog": [(0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)],
    "brightness": [0.05, 0.1, 0.15, 0.2, 0.3],
    "contrast": [0.75, 0.5, 0.4, 0.3, 0.15],
    "elastic_transform": [
        (32 * 0, 32 * 0, 32 * 0.08),
        (32 * 0.05, 32 * 0.2, 32 * 0.07),
        (32 * 0.08, 32 * 0.06, 32 * 0.06),
        (32 * 0.1, 32 * 0.04, 32 * 0.05),
        (32 * 0.1, 32 * 0.03, 32 * 0.03),
    ],
    "pixelate": [0.95, 0.9, 0.85, 0.75, 0.65],
    "jpeg_compression": [80, 65, 58, 50, 40],
}

# ----------------------------------------------------------------------------- helpers


def _gaussian(x: np.ndarray, sigma: float) -> np.ndarray:
    from skimage.filters import gaussian

    return gaussian(x, sigma=sigma, channel_axis=-1 if x.ndim == 3 else None)


def _disk(radius: float, alias_blur: float) -> np.ndarray:
    """make_cifar_c's anti-aliased disk kernel (OpenCV's 3 x 3 Gaussian, reflect-101 border)."""
    from scipy.ndimage import correlate1d

    span = np.arange(-8, 9)
    xx, yy = np.meshgrid(span, span)
    disk = ((xx**2 + yy**2) <= radius**2).astype(np.float32)
    disk /= disk.sum()
    taps = np.exp(-(np.arange(-1, 2) ** 2) / (2 * alias_blur**2))
    taps /= taps.sum()
    return correlate1d(correlate1d(disk, taps, axis=0, mode="mirror"), taps, axis=1, mode="mirror")


def _clipped_zoom(image: np.ndarray, factor: float) -> np.ndarray:
    from scipy.ndimage import zoom

    side = image.shape[0]
    crop = int(np.ceil(side / factor))
    top = (side - crop) // 2
    zoomed = zoom(image[top : top + crop, top : top + crop], (factor, factor, 1), order=1)
    trim = (zoomed.shape[0] - side) // 2
    return zoomed[trim : trim + side, trim : trim + side]


def _motion_blur(x: np.ndarray, radius: int, sigma: float, angle: float) -> np.ndarray:
    """ImageMagick's MotionBlurImage: a one-sided Gaussian along `angle` (degrees), edges replicated."""
    width = 2 * radius + 1
    kernel = np.exp(-(np.arange(width) ** 2) / (2 * sigma**2))
    kernel /= kernel.sum()
    along_y, along_x = width * math.sin(math.radians(angle)), width * math.cos(math.radians(angle))
    hypot = math.hypot(along_y, along_x)
    padded = np.pad(x, ((width, width), (width, width), (0, 0)), mode="edge")
    side_y, side_x = x.shape[:2]
    out = np.zeros(x.shape, np.float64)
    for i, weight in enumerate(kernel):
        dy, dx = math.ceil(i * along_y / hypot - 0.5), math.ceil(i * along_x / hypot - 0.5)
        if abs(dy) >= side_y or abs(dx) >= side_x:
            break  # the motion left the image
        out += weight * padded[width + dy : width + dy + side_y, width + dx : width + dx + side_x]
    return out


def _plasma_fractal(rng: np.random.Generator, mapsize: int = 32, wibbledecay: float = 3) -> np.ndarray:
    """A diamond-square height map in [0, 1] (make_cifar_c's, after FLHerne/mapgen)."""
    maparray = np.empty((mapsize, mapsize), dtype=np.float64)
    maparray[0, 0] = 0
    stepsize, wibble = mapsize, 100.0

    def wibbledmean(array):
        return array / 4 + wibble * rng.uniform(-wibble, wibble, array.shape)

    while stepsize >= 2:
        half = stepsize // 2
        corners = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        squares = corners + np.roll(corners, shift=-1, axis=0)
        squares += np.roll(squares, shift=-1, axis=1)
        maparray[half:mapsize:stepsize, half:mapsize:stepsize] = wibbledmean(squares)
        centres = maparray[half:mapsize:stepsize, half:mapsize:stepsize]
        corners = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        across = centres + np.roll(centres, 1, axis=0) + corners + np.roll(corners, -1, axis=1)
        maparray[0:mapsize:stepsize, half:mapsize:stepsize] = wibbledmean(across)
        down = centres + np.roll(centres, 1, axis=1) + corners + np.roll(corners, -1, axis=0)
        maparray[half:mapsize:stepsize, 0:mapsize:stepsize] = wibbledmean(down)
        stepsize //= 2
        wibble /= wibbledecay
    maparray -= maparray.min()
    return maparray / maparray.max()


def _pil(x: np.ndarray):
    from PIL import Image

    return Image.fromarray(np.asarray(x, np.uint8))


# ----------------------------------------------------------------------------- the corruptions
# Each takes a uint8 (32, 32, 3) image, its severity's constant and the set's generator, and
# returns values in [0, 255], as make_cifar_c.py's functions do.


def _gaussian_noise(x, c, rng):
    return (np.clip(x / 255.0 + rng.normal(size=x.shape, scale=c), 0, 1)) * 255


def _shot_noise(x, c, rng):
    return np.clip(rng.poisson(x / 255.0 * c) / c, 0, 1) * 255


def _impulse_noise(x, c, rng):
    from skimage.util import random_noise

    return np.clip(random_noise(x / 255.0, mode="s&p", amount=c, rng=rng), 0, 1) * 255


def _defocus_blur(x, c, rng):
    from scipy.ndimage import correlate

    kernel = _disk(*c)
    channels = [correlate(x[:, :, d] / 255.0, kernel, mode="mirror") for d in range(3)]
    return np.clip(np.stack(channels, axis=-1), 0, 1) * 255


def _glass_blur(x, c, rng):
    sigma, delta, iterations = c
    x = np.uint8(_gaussian(x / 255.0, sigma) * 255)
    for _ in range(iterations):  # locally shuffle pixels, one after the other
        for h in range(32 - delta, delta, -1):
            for w in range(32 - delta, delta, -1):
                dx, dy = rng.integers(-delta, delta, size=2)
                # make_cifar_c's `x[h, w], x[h', w'] = x[h', w'], x[h, w]` on numpy views: the
                # second assignment writes the new x[h, w] back, so it copies, it does not swap.
                x[h, w] = x[h + dy, w + dx]
    return np.clip(_gaussian(x / 255.0, sigma), 0, 1) * 255


def _motion_blur_image(x, c, rng):
    # ImageMagick writes its result as 8-bit PNG: rounded, not truncated.
    return np.floor(_motion_blur(x.astype(np.float64), c[0], c[1], rng.uniform(-45, 45)) + 0.5)


def _zoom_blur(x, c, rng):
    x = (x / 255.0).astype(np.float32)
    out = np.zeros_like(x)
    for factor in c:
        out += _clipped_zoom(x, factor)
    return np.clip((x + out) / (len(c) + 1), 0, 1) * 255


def _snow(x, c, rng):
    x = np.asarray(x, np.float32) / 255.0
    layer = rng.normal(size=x.shape[:2], loc=c[0], scale=c[1])
    layer = _clipped_zoom(layer[..., None], c[2])
    layer[layer < c[3]] = 0
    layer = np.uint8(np.clip(layer, 0, 1) * 255).astype(np.float64)  # the PNG round trip
    layer = np.floor(_motion_blur(layer, c[4], c[5], rng.uniform(-135, -45)) + 0.5) / 255.0
    grey = (x @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
    x = c[6] * x + (1 - c[6]) * np.maximum(x, grey * 1.5 + 0.5)
    return np.clip(x + layer + np.rot90(layer, k=2), 0, 1) * 255


def _frost_with(textures: Sequence[np.ndarray]) -> Callable:
    def frost(x, c, rng):
        texture = textures[rng.integers(len(textures))]
        top, left = rng.integers(0, texture.shape[0] - 32), rng.integers(0, texture.shape[1] - 32)
        return c[0] * x.astype(np.float64) + c[1] * texture[top : top + 32, left : left + 32]

    return frost


def _fog(x, c, rng):
    x = x / 255.0
    peak = x.max()
    x = x + c[0] * _plasma_fractal(rng, wibbledecay=c[1])[:32, :32][..., None]
    return np.clip(x * peak / (peak + c[0]), 0, 1) * 255


def _brightness(x, c, rng):
    from skimage.color import hsv2rgb, rgb2hsv

    hsv = rgb2hsv(x / 255.0)
    hsv[:, :, 2] = np.clip(hsv[:, :, 2] + c, 0, 1)
    return np.clip(hsv2rgb(hsv), 0, 1) * 255


def _contrast(x, c, rng):
    x = x / 255.0
    means = x.mean(axis=(0, 1), keepdims=True)
    return np.clip((x - means) * c + means, 0, 1) * 255


def _elastic_transform(x, c, rng):
    from scipy.ndimage import map_coordinates
    from skimage.transform import AffineTransform, warp

    image = np.asarray(x, np.float32) / 255.0
    centre, half = np.float32(16), 32 // 3
    source = np.float32([[centre + half] * 2, [centre + half, centre - half], [centre - half] * 2])
    target = source + rng.uniform(-c[2], c[2], size=source.shape).astype(np.float32)
    # cv2.getAffineTransform: the affine map taking the three source points to the targets.
    matrix = np.linalg.solve(np.c_[source, np.ones(3)], target).T
    affine = AffineTransform(matrix=np.vstack([matrix, [0, 0, 1]]))
    image = warp(image, affine.inverse, order=1, mode="reflect", preserve_range=True).astype(np.float32)
    dx = (_gaussian_field(rng, c[1]) * c[0]).astype(np.float32)[..., None]
    dy = (_gaussian_field(rng, c[1]) * c[0]).astype(np.float32)[..., None]
    xx, yy, zz = np.meshgrid(np.arange(32), np.arange(32), np.arange(3))
    indices = np.reshape(yy + dy, (-1, 1)), np.reshape(xx + dx, (-1, 1)), np.reshape(zz, (-1, 1))
    return np.clip(map_coordinates(image, indices, order=1, mode="reflect").reshape(image.shape), 0, 1) * 255


def _gaussian_field(rng, sigma):
    from skimage.filters import gaussian

    return gaussian(rng.uniform(-1, 1, size=(32, 32)), sigma, mode="reflect", truncate=3)


def _pixelate(x, c, rng):
    from PIL import Image

    small = _pil(x).resize((int(32 * c), int(32 * c)), Image.BOX)
    return np.asarray(small.resize((32, 32), Image.BOX), np.float64)


def _jpeg_compression(x, c, rng):
    from PIL import Image

    buffer = io.BytesIO()
    _pil(x).save(buffer, "JPEG", quality=c)
    return np.asarray(Image.open(buffer), np.float64)


_FUNCTIONS: dict[str, Callable] = {
    "gaussian_noise": _gaussian_noise,
    "shot_noise": _shot_noise,
    "impulse_noise": _impulse_noise,
    "defocus_blur": _defocus_blur,
    "glass_blur": _glass_blur,
    "motion_blur": _motion_blur_image,
    "zoom_blur": _zoom_blur,
    "snow": _snow,
    "frost": None,  # needs its textures: `_frost_with`
    "fog": _fog,
    "brightness": _brightness,
    "contrast": _contrast,
    "elastic_transform": _elastic_transform,
    "pixelate": _pixelate,
    "jpeg_compression": _jpeg_compression,
}
