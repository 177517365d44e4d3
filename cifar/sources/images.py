"""A user's image, read safely: bytes, a path, a PIL image or an array in; upright RGB out.

Every upload is held to a size and a decoding budget (`DECODE_BUDGET`), so that no file, however
crafted, takes the server's memory or hangs it; `as_model_input` then cuts what a model sees.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import threading
import warnings
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

MAX_UPLOAD_BYTES = 25 * 1024 * 1024  # larger uploads are refused before decoding
MAX_PIXELS = 120_000_000  # declared size cap (a 10000 x 10000 JPEG passes: it decodes at 1/8 scale)
DECODE_BUDGET = 256 * 2**20  # bytes one upload may take while it is decoded and shrunk
MODEL_SIDE = 32
DECODE_SIDE = 512  # JPEGs decode at >= this size (1/2 .. 1/8 scale): the largest input_size of a transfer run
WORKING_SIDE = 1024  # larger images are shrunk before colour conversion
# Memory a decoder holds per pixel besides Pillow's image: libwebp's frame and its copy as bytes,
# OpenJPEG's 32-bit planes.
DECODER_BYTES_PER_PIXEL = {"WEBP": 12, "JPEG2000": 16}
ICO_SIGNATURE = b"\x00\x00\x01\x00"
READABLE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF", "ICO", "JPEG2000")

# One decode at a time in a process: concurrent uploads (Streamlit sessions are threads) queue
# instead of stacking their memory, and Pillow's global pixel limit is set and restored by one.
_DECODING = threading.Lock()


class ImageError(ValueError):
    """The input is not an image we can read; the message is meant for the user."""


def open_image(source: bytes | str | Path | Image.Image | np.ndarray) -> Image.Image:
    """A decoded RGB image as a person sees it (EXIF rotation applied, first frame, no alpha).
    Its `info` says what became of the file: `original_size` (width, height, upright, before it was
    shrunk to at most DECODE_SIDE) and `frames` (an animated image's count; the first is used)."""
    with _DECODING:
        if isinstance(source, Image.Image):
            image = source
        elif isinstance(source, np.ndarray):
            image = _from_array(source)
        else:
            image = _decode(read_upload(source) if isinstance(source, str | Path) else source)
        width, height = image.info.get("original_size", image.size)
        frames = int(getattr(image, "n_frames", 1) or 1)
        turned = _orientation(image) in (5, 6, 7, 8)  # EXIF rotations by 90 degrees swap the sides
        rgb = _to_rgb(image)
        rgb.info.update(original_size=(height, width) if turned else (width, height), frames=frames)
        return rgb


def read_upload(path: str | Path) -> bytes:
    """A user's file: a regular file of at most MAX_UPLOAD_BYTES, else an ImageError (never a hang)."""
    try:
        with open(path, "rb", opener=_open_nonblocking) as file:
            info = os.fstat(file.fileno())  # what was opened, not what the name pointed to before
            if not stat.S_ISREG(info.st_mode):
                raise ImageError(f"{path} is not a regular file")
            _check_upload_size(info.st_size)
            data = file.read(MAX_UPLOAD_BYTES + 1)  # the file may have grown since
    except OSError as error:
        raise ImageError(str(error)) from None
    _check_upload_size(len(data))
    return data


def _open_nonblocking(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NONBLOCK)  # a FIFO opens at once instead of waiting for a writer


def _check_upload_size(size: int) -> None:
    if size > MAX_UPLOAD_BYTES:
        raise ImageError(
            f"the file is {size / 2**20:.1f} MB, over the upload limit of {MAX_UPLOAD_BYTES / 2**20:g} MB"
        )


def _decode(data: bytes) -> Image.Image:
    if not data:
        raise ImageError("the file is empty")
    _check_upload_size(len(data))
    previous = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            Image.MAX_IMAGE_PIXELS = _declared_pixels_cap(data)
            image = Image.open(io.BytesIO(data), formats=READABLE_FORMATS)
            image.seek(0)  # animated GIF / WebP / APNG: the first frame
            image.info["original_size"] = image.size  # before the reduced-size decode below
            image.draft("RGB", (DECODE_SIDE, DECODE_SIDE))  # JPEG: decode at reduced size
            _check_decode_cost(image)
            # A decoder that meets a larger size while it loads is held to this image's budget.
            Image.MAX_IMAGE_PIXELS = min(
                MAX_PIXELS, DECODE_BUDGET // _bytes_per_pixel(image.mode, image.format)
            )
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        limit = Image.MAX_IMAGE_PIXELS / 1e6  # still the limit that refused it
        raise ImageError(
            f"the image declares more than {limit:.0f} million pixels; refusing to decode it"
        ) from None
    except UnidentifiedImageError:
        raise ImageError(
            "this is not an image format we can read (PNG, JPEG, WebP, BMP, GIF, TIFF)"
        ) from None
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise ImageError(f"the image is damaged or truncated ({error})") from None
    except Exception as error:  # noqa: BLE001 (a decoder's own bug must reach the user as a message)
        raise ImageError(f"the image could not be decoded ({type(error).__name__})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = previous
    return image


def _declared_pixels_cap(data: bytes) -> int:
    # An ICO decodes its entry while it opens, before its cost can be checked; a real icon is at
    # most 256 x 256, so hold any ICO to what the costliest mode may take.
    if data.startswith(ICO_SIGNATURE):
        return DECODE_BUDGET // _bytes_per_pixel("RGBA", "ICO")
    return MAX_PIXELS


def _bytes_per_pixel(mode: str, image_format: str | None) -> int:
    """Memory per pixel while an image of this mode and format is decoded and shrunk (measured by
    `tests/robustness/test_robust_uploads.py`)."""
    size = 1 if mode in ("1", "L", "P") else 4  # Pillow keeps the other modes at 4 bytes
    if mode in ("LA", "RGBA"):
        size *= 2  # `reduce` shrinks a premultiplied copy
    return size + DECODER_BYTES_PER_PIXEL.get(image_format or "", 0)


def _check_decode_cost(image: Image.Image) -> None:
    cost = image.width * image.height * _bytes_per_pixel(image.mode, image.format)
    if cost > DECODE_BUDGET:
        raise ImageError(
            f"the image is {image.width} x {image.height} pixels; decoding it would take about "
            f"{cost / 2**20:.0f} MB, over the limit of {DECODE_BUDGET / 2**20:.0f} MB for one image. "
            "Save it as a JPEG (any size works: JPEGs decode at reduced size) or scale it down"
        )


def _from_array(array: np.ndarray) -> Image.Image:
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ImageError(f"an image array must be HxW, HxWx3 or HxWx4, got shape {array.shape}")
    if array.size == 0:
        raise ImageError("the image has no pixels")
    if array.dtype.kind not in "biuf":
        raise ImageError(f"image arrays must hold numbers, got {array.dtype}")
    if array.dtype != np.uint8:
        array = _scale_to_uint8(array.astype(np.float64))
    return Image.fromarray(array)


def _scale_to_uint8(values: np.ndarray) -> np.ndarray:
    values = np.nan_to_num(values)
    top = values.max() if values.size else 1
    scale = 255.0 if top <= 1.0 else (255.0 / 65535.0 if top > 255 else 1.0)
    return np.clip(np.round(values * scale), 0, 255).astype(np.uint8)


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.width < 1 or image.height < 1:
        raise ImageError("the image has no pixels")
    orientation = _orientation(image)  # read first: a shrunk copy loses a TIFF's tags
    try:
        # Shrink, then turn: every conversion below works on at most 1024 x 1024 pixels.
        image = _upright(_shrink(image), orientation)
        if image.mode.startswith("I;16"):
            image = Image.fromarray((np.asarray(image, dtype=np.float64) / 257).round().astype(np.uint8))
        elif image.mode in ("I", "F"):
            image = Image.fromarray(_scale_to_uint8(np.asarray(image, dtype=np.float64)))
        if image.mode == "P":
            image = image.convert("RGBA")
        if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
            background = Image.new("RGBA", image.size, (255, 255, 255, 255))
            image = Image.alpha_composite(background, image.convert("RGBA"))
        return image.convert("RGB")
    except ValueError as error:
        raise ImageError(f"unsupported colour mode {image.mode} ({error})") from None


def _orientation(image: Image.Image) -> int:
    # A broken EXIF block should not lose the picture: keep it unrotated.
    with contextlib.suppress(Exception):
        return int(image.getexif().get(ExifTags.Base.Orientation, 1))
    return 1


def _upright(image: Image.Image, orientation: int) -> Image.Image:
    """`image` turned as `orientation` (EXIF, read before shrinking) says."""
    if orientation == 1:
        return image
    with contextlib.suppress(Exception):
        image.getexif()[ExifTags.Base.Orientation] = orientation
        return ImageOps.exif_transpose(image)
    return image


def _shrink(image: Image.Image) -> Image.Image:
    """`image` if its longer side is at most WORKING_SIDE, else a new, smaller image."""
    if max(image.size) <= WORKING_SIDE:
        return image
    factor = max(image.size) // WORKING_SIDE
    if factor > 1 and image.mode in ("L", "LA", "RGB", "RGBA", "I", "F"):
        image = image.reduce(factor)  # integer box shrink: cheap, little extra memory
    return ImageOps.contain(image, (WORKING_SIDE, WORKING_SIDE), Image.Resampling.BOX)


def as_model_input(image: Image.Image, side: int = MODEL_SIDE) -> np.ndarray:
    """What the model sees: the centre square, resized to side x side (antialiased), uint8 RGB."""
    small = ImageOps.fit(image, (side, side), Image.Resampling.LANCZOS)
    return np.asarray(small.convert("RGB"), dtype=np.uint8)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def image_paths(paths: list[str]) -> tuple[list[str], list[str]]:
    """(images, problems) of the paths a user named: a file as given (whatever its name), a
    folder's image files (by suffix, sorted by name, not its subfolders); a missing path, a
    device, FIFO or socket, a file over the upload limit or a folder without images is a problem
    naming it (found before any model loads)."""
    images, problems = [], []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            try:
                found = sorted(
                    str(path / entry.name)
                    for entry in os.scandir(path)
                    if entry.is_file() and Path(entry.name).suffix.lower() in IMAGE_SUFFIXES
                )
            except OSError as error:
                problems.append(f"{given}: cannot list this folder ({error.strerror or error})")
                continue
            images += found
            if not found:
                problems.append(f"{given}: no images in this folder ({', '.join(IMAGE_SUFFIXES)})")
        elif not path.exists():
            problems.append(f"{given}: no such file or folder")
        elif problem := _file_problem(path):
            problems.append(f"{given}: {problem}")
        else:
            images.append(given)
    return images, problems


def _file_problem(path: Path) -> str:
    """Why `path` cannot be an image file ("" if it may be one), from its metadata alone."""
    try:
        info = path.stat()
    except OSError as error:
        return error.strerror or str(error)
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file (a device, FIFO or socket)"
    if info.st_size > MAX_UPLOAD_BYTES:
        return f"{info.st_size / 2**20:.1f} MB, over the limit of {MAX_UPLOAD_BYTES / 2**20:g} MB"
    return ""
