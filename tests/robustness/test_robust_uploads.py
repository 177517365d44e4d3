"""Uploads: every odd, damaged or hostile file gives an ImageError or a correct 32x32x3 uint8 image
(the ordinary conversions, one per mode, are in `tests/test_predict.py`).

`open_image(bytes)` + `as_model_input` is what the Classify page and `python -m cifar predict`
run on whatever a user hands them; nothing but `ImageError` (whose message is shown to the user)
may come out of it.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from cifar.sources import images
from cifar.sources.images import MAX_UPLOAD_BYTES, ImageError, as_model_input, open_image
from tests.factory import REPO, encode
from tests.robustness.robust_helpers import subprocess_env

RED, BLUE = (255, 0, 0), (0, 0, 255)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def model_input(source) -> np.ndarray | ImageError:
    """The 32x32x3 uint8 pixels, or the ImageError; any other exception fails the test."""
    try:
        pixels = as_model_input(open_image(source))
    except ImageError as error:
        message = str(error)
        assert message.strip() and "Traceback" not in message, f"unhelpful message {message!r}"
        return error
    assert isinstance(pixels, np.ndarray)
    assert pixels.shape == (32, 32, 3) and pixels.dtype == np.uint8, (pixels.shape, pixels.dtype)
    return pixels


def assert_colour(pixels, colour, tolerance: int = 3) -> None:
    assert isinstance(pixels, np.ndarray), f"expected pixels, got {pixels!r}"
    difference = np.abs(pixels.astype(int) - np.asarray(colour)).max()
    assert difference <= tolerance, f"colour off by {difference}: {pixels[16, 16]} vs {colour}"


# ----------------------------------------------------------------------------- building files


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def raw_png(width: int, height: int, bit_depth: int, colour_type: int, row: bytes, extra=b"") -> bytes:
    """A PNG whose every row is `row`, compressed row by row (a huge image costs little memory)."""
    compressor = zlib.compressobj(9)
    line = b"\x00" + row
    body = b"".join(compressor.compress(line) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (
        PNG_SIGNATURE
        + png_chunk(b"IHDR", header)
        + extra
        + png_chunk(b"IDAT", body)
        + png_chunk(b"IEND", b"")
    )


def solid(colour=RED, size=(40, 30), mode="RGB") -> Image.Image:
    return Image.new(mode, size, colour)


def png_bytes(image=None) -> bytes:
    return encode(image or solid(), "PNG")


def noisy_png() -> bytes:
    """A PNG of random pixels (it hardly compresses: half of it is half of the pixel data)."""
    return encode(
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)), "PNG"
    )


def jpeg_bytes(image=None, **options) -> bytes:
    return encode(image or solid(), "JPEG", quality=95, **options)


def zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("photo.png", png_bytes())
    return buffer.getvalue()


def bomb_declared(width=30000, height=30000) -> bytes:
    """A 100-byte PNG whose header declares 900 million pixels."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
    return PNG_SIGNATURE + png_chunk(b"IHDR", header) + idat + png_chunk(b"IEND", b"")


def bomb_real() -> bytes:
    """A complete 1-bit 20000 x 20000 PNG: about 50 KB on disk, 400 million pixels decoded."""
    return raw_png(20000, 20000, 1, 0, bytes(2500))


def gif_bomb() -> bytes:
    """A GIF whose logical screen and frame declare 65535 x 65535 pixels."""
    data = bytearray(encode(solid(size=(4, 4)).convert("P"), "GIF"))
    data[6:10] = struct.pack("<HH", 65535, 65535)
    frame = data.index(b",")  # image descriptor: x, y, width, height
    data[frame + 5 : frame + 9] = struct.pack("<HH", 65535, 65535)
    return bytes(data)


def ico_around(png: bytes) -> bytes:
    """An ICO file with one entry, `png` (Pillow reads the entry's size from the PNG's header)."""
    entry = struct.pack("<BBBBHHII", 0, 0, 0, 0, 1, 32, len(png), 6 + 16)
    return struct.pack("<HHH", 0, 1, 1) + entry + png


def png_bad_crc(where: bytes) -> bytes:
    data = bytearray(png_bytes())
    start = data.index(where) + 4
    length = struct.unpack(">I", data[start - 8 : start - 4])[0]
    data[start + length] ^= 0xFF  # first byte of the chunk's CRC
    return bytes(data)


def png_text_bomb() -> bytes:
    """A PNG with a zTXt chunk that inflates to 64 MB."""
    text = b"Comment\x00\x00" + zlib.compress(b"A" * (64 * 2**20), 9)
    data = png_bytes()
    return data[:33] + png_chunk(b"zTXt", text) + data[33:]


def jpeg_with_broken_exif() -> bytes:
    data = jpeg_bytes()
    app1 = b"Exif\x00\x00" + b"MM\x00*\x00\x00\x00\x08" + b"\xff" * 40
    return data[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + data[2:]


def animated(fmt: str, **options) -> bytes:
    frames = [solid(RED, (32, 32)), solid(BLUE, (32, 32))]
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, **options)


def multipage_tiff() -> bytes:
    return encode(solid(RED), "TIFF", save_all=True, append_images=[solid(BLUE)])


def int_tiff(dtype, value) -> bytes:
    return encode(Image.fromarray(np.full((20, 20), value, dtype)), "TIFF")


def dds_unknown_pixel_format() -> bytes:
    data = bytearray(encode(solid(size=(16, 16)).convert("RGBA"), "DDS"))
    data[80:84] = b"\x00\x00\x00\x00"  # DDS_PIXELFORMAT.dwFlags
    return bytes(data)


def blp_unknown_compression() -> bytes:
    data = bytearray(encode(solid(size=(16, 16)).convert("P"), "BLP"))
    data[4] = 7  # compression byte of a BLP2 header
    return bytes(data)


EPS = (
    b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n%%EndComments\n"
    b"newpath 0 0 moveto 10 10 lineto stroke\nshowpage\n%%EOF\n"
)

# ----------------------------------------------------------------------------- refused files

REFUSED = {
    # name: (bytes factory, words the message must contain)
    "empty file": (lambda: b"", "empty"),
    "truncated PNG": (lambda: png_bytes()[:60], ""),
    "PNG cut in half": (lambda: noisy_png()[: len(noisy_png()) // 2], "damaged or truncated"),
    "PNG signature only": (lambda: PNG_SIGNATURE, ""),
    "truncated JPEG": (lambda: jpeg_bytes()[: len(jpeg_bytes()) // 2], ""),
    "JPEG start marker only": (lambda: b"\xff\xd8\xff", ""),
    "truncated GIF": (lambda: encode(solid().convert("P"), "GIF")[:40], ""),
    "truncated WebP": (lambda: encode(solid(), "WEBP")[:30], ""),
    "truncated TIFF": (lambda: encode(solid(), "TIFF")[:100], ""),
    "random bytes": (lambda: np.random.default_rng(0).bytes(4096), "not an image format"),
    "text file": (lambda: b"just some notes\nabout a cat\n" * 20, "not an image format"),
    "JSON file": (lambda: json.dumps({"image": "cat.png"}).encode(), "not an image"),
    "PDF header": (lambda: b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\ntrailer\n<<>>\n%%EOF\n", ""),
    "SVG": (
        lambda: (
            b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"><rect width="9" height="9"/></svg>'
        ),
        "not an image format",
    ),
    "HTML": (
        lambda: b"<!DOCTYPE html><html><body><img src=x onerror=alert(1)></body></html>",
        "not an image",
    ),
    "zip file": (zip_bytes, "not an image"),
    "decompression bomb: PNG header declares 30000x30000": (bomb_declared, "million pixels"),
    "decompression bomb: real 1-bit 20000x20000 PNG": (bomb_real, "million pixels"),
    "decompression bomb: GIF declares 65535x65535": (gif_bomb, "million pixels"),
    "PNG declaring 8200x8200 RGB (269 MB)": (lambda: bomb_declared(8200, 8200), "over the limit"),
    "ICO of a PNG declaring 8200x8200": (lambda: ico_around(bomb_declared(8200, 8200)), "million pixels"),
    "PNG with a bad IHDR CRC": (lambda: png_bad_crc(b"IHDR"), ""),
    "PNG with zero width": (lambda: raw_png(0, 1, 8, 2, b""), ""),
    "over MAX_UPLOAD_BYTES": (lambda: b"\x89PNG" + bytes(MAX_UPLOAD_BYTES), "limit"),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_bad_file_is_refused_with_a_clear_message(name):
    make, words = REFUSED[name]
    result = model_input(make())
    assert isinstance(result, ImageError), f"{name}: decoded to {type(result)}"
    assert words.lower() in str(result).lower(), str(result)


def test_bad_file_with_an_image_extension_on_disk(tmp_path):
    path = tmp_path / "holiday.png"
    path.write_bytes(np.random.default_rng(1).bytes(2048))
    assert isinstance(model_input(path), ImageError)
    assert isinstance(model_input(str(path)), ImageError)


def test_size_limit_message_names_the_limit():
    message = str(model_input(bytes(MAX_UPLOAD_BYTES + 1)))
    assert f"{MAX_UPLOAD_BYTES // 2**20} MB" in message and "limit" in message


def test_size_limit_message_does_not_contradict_itself():
    message = str(model_input(bytes(MAX_UPLOAD_BYTES + 1)))
    limit = f"{MAX_UPLOAD_BYTES // 2**20} MB"
    assert f"is {limit}" not in message, message


def test_an_image_over_the_upload_limit_is_refused_before_decoding(monkeypatch):
    monkeypatch.setattr(images, "MAX_UPLOAD_BYTES", 100)
    with pytest.raises(ImageError, match="over the upload limit"):
        open_image(noisy_png())


def test_decompression_bomb_is_refused_and_the_global_limit_restored(monkeypatch):
    monkeypatch.setattr(images, "MAX_PIXELS", 1000)
    with pytest.raises(ImageError, match="million pixels"):
        open_image(encode(Image.new("L", (200, 200)), "PNG"))
    assert Image.MAX_IMAGE_PIXELS != 1000


def test_exactly_max_upload_bytes_is_not_refused_for_its_size():
    padded = png_bytes() + bytes(MAX_UPLOAD_BYTES - len(png_bytes()))  # trailing junk after IEND
    result = model_input(padded)
    assert not (isinstance(result, ImageError) and "limit" in str(result))


# ----------------------------------------------------------------------------- odd but valid files

ACCEPTED = {
    # name: (bytes factory, expected colour everywhere, tolerance)
    "1x1 PNG": (lambda: png_bytes(solid(RED, (1, 1))), RED, 0),
    "grayscale JPEG": (lambda: jpeg_bytes(solid(128, mode="L")), (128, 128, 128), 3),
    "LA PNG (opaque)": (lambda: png_bytes(solid((60, 255), mode="LA")), (60, 60, 60), 0),
    "LA PNG (transparent: white)": (lambda: png_bytes(solid((60, 0), mode="LA")), (255, 255, 255), 0),
    "CMYK TIFF": (lambda: encode(solid((0, 255, 255, 0), mode="CMYK"), "TIFF"), RED, 0),
    "32-bit I TIFF": (lambda: int_tiff(np.int32, 65535), (255, 255, 255), 0),
    "32-bit F TIFF (0.5)": (lambda: int_tiff(np.float32, 0.5), (128, 128, 128), 1),
    "32-bit F TIFF (NaN)": (lambda: int_tiff(np.float32, np.nan), (0, 0, 0), 0),
    "1-bit PNG": (lambda: png_bytes(solid(1, mode="1")), (255, 255, 255), 0),
    "1-bit TIFF (group 4)": (lambda: encode(solid(1, mode="1"), "TIFF", compression="group4"), (255,) * 3, 0),
    "animated WebP: frame 0 red": (lambda: animated("WEBP", lossless=True), RED, 0),
    "animated PNG: frame 0 red": (lambda: animated("PNG"), RED, 0),
    "WebP": (lambda: encode(solid(), "WEBP", quality=95), RED, 12),
    "lossless WebP with alpha": (
        lambda: encode(solid((255, 0, 0, 255), mode="RGBA"), "WEBP", lossless=True),
        RED,
        0,
    ),
    "BMP": (lambda: encode(solid(), "BMP"), RED, 0),
    "TIFF": (lambda: encode(solid(), "TIFF"), RED, 0),
    "TIFF, LZW": (lambda: encode(solid(), "TIFF", compression="tiff_lzw"), RED, 0),
    "multi-page TIFF: first page": (multipage_tiff, RED, 0),
    "ICO": (lambda: encode(solid(size=(32, 32)), "ICO"), RED, 0),
    "progressive JPEG": (lambda: jpeg_bytes(progressive=True), RED, 3),
    "JPEG with a broken EXIF block": (jpeg_with_broken_exif, RED, 3),
    "PNG, 1 x 2000 strip": (lambda: png_bytes(solid(RED, (1, 2000))), RED, 0),
    "PNG, 2000 x 1 strip": (lambda: png_bytes(solid(RED, (2000, 1))), RED, 0),
    "16-bit RGBA PNG": (lambda: raw_png(8, 8, 16, 6, b"\xff\xff\x00\x00\x00\x00\xff\xff" * 8), RED, 0),
    "JPEG 2000": (lambda: encode(solid(), "JPEG2000"), RED, 3),
    "image with trailing junk": (lambda: png_bytes() + b"\x00junk" * 100, RED, 0),
}


@pytest.mark.parametrize("name", list(ACCEPTED))
def test_odd_but_valid_file_gives_the_right_pixels(name):
    make, colour, tolerance = ACCEPTED[name]
    assert_colour(model_input(make()), colour, tolerance)


@pytest.mark.parametrize(
    "make",
    [lambda: png_bad_crc(b"IDAT"), png_text_bomb],
    ids=["PNG with a bad IDAT CRC", "PNG with a zTXt text bomb"],
)
def test_damaged_metadata_gives_an_error_or_the_right_pixels(make):
    result = model_input(make())
    if not isinstance(result, ImageError):
        assert_colour(result, RED, 0)


def test_eps_upload_never_runs_ghostscript(monkeypatch):
    from PIL import EpsImagePlugin

    calls = []

    def ghostscript(command, *args, **kwargs):
        calls.append(command)
        raise OSError("ghostscript is not run in tests")

    monkeypatch.setattr(EpsImagePlugin, "gs_binary", "gs")  # as on a machine with Ghostscript
    monkeypatch.setattr(EpsImagePlugin.subprocess, "check_call", ghostscript)
    assert isinstance(model_input(EPS), ImageError)
    assert calls == [], f"Ghostscript was started: {calls[0][:3]}"


@pytest.mark.parametrize(
    "make",
    [dds_unknown_pixel_format, blp_unknown_compression],
    ids=["DDS with unknown pixel format", "BLP with unknown compression"],
)
def test_damaged_rare_format_gives_image_error(make):
    model_input(make())


# ----------------------------------------------------------------------------- paths a user names

PATH_SCRIPT = r"""
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (2**30, 2**30))  # reading a device whole fails fast, not slowly
from cifar.config import CLASS_NAMES
from cifar.sources.images import ImageError
from cifar.inference.predict import Predictor
predictor = Predictor.__new__(Predictor)  # no model: the file is refused before the model is used
predictor.class_names, predictor.resolutions = list(CLASS_NAMES), ("cifar",)
try:
    predictor.predict_file(sys.argv[1])
except ImageError as error:
    print("ImageError:", error)
"""


def hostile_path(kind: str, folder) -> str:
    if kind == "fifo":
        os.mkfifo(folder / "photo.png")  # opening it for reading waits for a writer
    elif kind == "sparse file over the limit":
        with open(folder / "photo.png", "wb") as file:
            file.truncate(2**40)  # a terabyte that costs no disk
    elif kind == "folder":
        (folder / "photo.png").mkdir()
    else:
        return kind
    return str(folder / "photo.png")


@pytest.mark.slow  # over 2 s: the quick loop leaves it to CI
@pytest.mark.parametrize(
    ("kind", "words"),
    [
        ("/dev/zero", "not a regular file"),
        ("/dev/urandom", "not a regular file"),
        ("fifo", "not a regular file"),
        ("folder", "directory"),
        ("sparse file over the limit", "over the upload limit"),
    ],
)
def test_predict_file_refuses_what_is_not_a_small_regular_file(kind, words, tmp_path):
    """`python -m cifar predict run /dev/zero` grew to 3 GB; a FIFO hung it. Now: refused at once."""
    result = subprocess.run(
        [sys.executable, "-c", PATH_SCRIPT, hostile_path(kind, tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=subprocess_env(),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("ImageError:") and words in result.stdout.lower(), result.stdout


def test_open_image_reads_a_path_within_the_limits(tmp_path):
    path = tmp_path / "photo.png"
    path.write_bytes(png_bytes())
    assert_colour(model_input(path), RED, 0)
    assert_colour(model_input(str(path)), RED, 0)


# ----------------------------------------------------------------------------- arrays and PIL images

ARRAYS_ACCEPTED = {
    "uint8 HxWx3": (np.full((8, 8, 3), 7, np.uint8), (7, 7, 7)),
    "float in [0, 255]": (np.full((8, 8, 3), 200.0), (200, 200, 200)),
    "float with NaN": (np.full((8, 8, 3), np.nan), (0, 0, 0)),
    "float with inf": (np.full((8, 8, 3), np.inf), (255, 255, 255)),
    "negative floats": (np.full((8, 8, 3), -3.0), (0, 0, 0)),
    "float16": (np.full((8, 8, 3), 0.5, np.float16), (128, 128, 128)),
    "2-D uint8": (np.full((8, 8), 9, np.uint8), (9, 9, 9)),
    "2-D float": (np.full((8, 8), 1.0), (255, 255, 255)),
    "HxWx1": (np.full((8, 8, 1), 9, np.uint8), (9, 9, 9)),
    "4 channels, opaque": (
        np.dstack([np.full((8, 8, 3), 9, np.uint8), np.full((8, 8), 255, np.uint8)]),
        (9,) * 3,
    ),
    "4 channels, transparent": (np.zeros((8, 8, 4), np.uint8), (255, 255, 255)),
    "uint16": (np.full((8, 8, 3), 65535, np.uint16), (255, 255, 255)),
    "bool": (np.ones((8, 8, 3), bool), (255, 255, 255)),
    "non-contiguous view": (np.full((8, 16, 3), 9, np.uint8)[:, ::2], (9, 9, 9)),
    "1x1": (np.full((1, 1, 3), 9, np.uint8), (9, 9, 9)),
}


@pytest.mark.parametrize("name", list(ARRAYS_ACCEPTED))
def test_array_input_is_converted(name):
    array, colour = ARRAYS_ACCEPTED[name]
    assert_colour(model_input(array), colour, 1)


ARRAYS_REFUSED = {
    "1-D": np.zeros(10, np.uint8),
    "0-D": np.array(5),
    "4-D batch": np.zeros((1, 8, 8, 3), np.uint8),
    "4-D batch of two": np.zeros((2, 2, 2, 3), np.uint8),
    "2 channels": np.zeros((8, 8, 2), np.uint8),
    "5 channels": np.zeros((8, 8, 5), np.uint8),
    "channels first": np.zeros((3, 8, 8), np.uint8),
    "no pixels": np.zeros((0, 8, 3), np.uint8),
    "no pixels, 2-D": np.zeros((8, 0), np.float32),
}


@pytest.mark.parametrize("name", list(ARRAYS_REFUSED))
def test_wrong_shape_array_is_refused(name):
    assert isinstance(model_input(ARRAYS_REFUSED[name]), ImageError)


@pytest.mark.parametrize(
    "array",
    [np.full((8, 8, 3), "a"), np.full((8, 8, 3), None, dtype=object), np.zeros((8, 8, 3), complex)],
    ids=["strings", "objects", "complex"],
)
def test_non_numeric_array_is_refused(array):
    assert isinstance(model_input(array), ImageError)


SAFE_PIL_MODES = [m for m in Image.MODES if m != "La"]


@pytest.mark.parametrize("mode", SAFE_PIL_MODES)
def test_pil_image_of_every_mode(mode):
    model_input(Image.new(mode, (5, 7)))


def test_pil_image_premultiplied_la():
    model_input(Image.new("La", (5, 7)))


# ----------------------------------------------------------------------------- property-based

MAGIC = [
    b"",
    PNG_SIGNATURE,
    b"\xff\xd8\xff\xe0",
    b"GIF89a",
    b"BM",
    b"II*\x00",
    b"MM\x00*",
    b"RIFF\x00\x00\x00\x00WEBPVP8 ",
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prefix=st.sampled_from(MAGIC), body=st.binary(max_size=2048))
def test_random_bytes_give_only_image_error(prefix, body):
    model_input(prefix + body)


@settings(max_examples=150, deadline=None)
@given(data=st.data(), position=st.integers(0, 10**6), value=st.integers(0, 255))
def test_damaged_real_files_give_only_image_error(data, position, value):
    fmt = data.draw(st.sampled_from(["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "ICO"]))
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (12, 10, 3), dtype=np.uint8))
    original = bytearray(encode(image if fmt != "GIF" else image.convert("P"), fmt))
    cut = data.draw(st.booleans())
    if cut:
        original = original[: position % len(original)]
    elif original:
        original[position % len(original)] = value
    model_input(bytes(original))


FILE_MODES = {
    "PNG": ["1", "L", "LA", "P", "RGB", "RGBA", "I;16"],
    "JPEG": ["L", "RGB", "CMYK"],
    "WEBP": ["RGB", "RGBA"],
    "GIF": ["L", "P", "RGB"],
    "BMP": ["1", "L", "P", "RGB"],
    "TIFF": ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F"],
}


@settings(max_examples=120, deadline=None)
@given(
    data=st.data(),
    width=st.integers(1, 70),
    height=st.integers(1, 70),
    seed=st.integers(0, 2**16),
)
def test_random_small_images_always_give_32x32x3_uint8(data, width, height, seed):
    fmt = data.draw(st.sampled_from(sorted(FILE_MODES)))
    mode = data.draw(st.sampled_from(FILE_MODES[fmt]))
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    image = Image.fromarray(pixels).convert(mode)
    result = model_input(encode(image, fmt))
    assert isinstance(result, np.ndarray), f"{fmt} {mode} {width}x{height}: {result}"
    assert isinstance(model_input(image), np.ndarray)  # the PIL image itself


@settings(max_examples=100, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 40), st.integers(1, 40)),
    channels=st.sampled_from([None, 1, 3, 4]),
    dtype=st.sampled_from(["uint8", "uint16", "int32", "float32", "float64", "bool"]),
    scale=st.sampled_from([1.0, 255.0, 65535.0, 1e9, -1.0]),
    seed=st.integers(0, 2**16),
)
def test_random_arrays_always_give_32x32x3_uint8(shape, channels, dtype, scale, seed):
    full = shape if channels is None else (*shape, channels)
    array = (np.random.default_rng(seed).random(full) * scale).astype(dtype)
    assert isinstance(model_input(array), np.ndarray)


# ----------------------------------------------------------------------------- huge images

ONE_UPLOAD = 300 * 2**20  # what one upload may cost a server process, whatever it declares

BIG_IMAGE_SCRIPT = r"""
import io, json, struct, sys, threading, time, zlib
from pathlib import Path
kind, width, height, copies = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def chunk(t, d): return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
def png(bit_depth, colour_type, row, extra=b""):
    c = zlib.compressobj(9)
    body = b"".join(c.compress(b"\0" + row) for _ in range(height)) + c.flush()
    head = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head) + extra + chunk(b"IDAT", body) + chunk(b"IEND", b"")
def encoded(fmt, mode, colour, **options):
    from PIL import Image
    buffer = io.BytesIO()
    Image.new(mode, (width, height), colour).save(buffer, fmt, **options)
    return buffer.getvalue()
if kind == "rgb-png":
    data = png(8, 2, bytes([0, 128, 255]) * width)
elif kind == "la-png":
    data = png(8, 4, bytes([90, 255]) * width)
elif kind == "palette-png":
    palette = chunk(b"PLTE", bytes([0, 128, 255, 9, 9, 9])) + chunk(b"tRNS", b"\xff\x00")
    data = png(8, 3, bytes(width), palette)
elif kind == "jpeg":
    data = encoded("JPEG", "RGB", (0, 128, 255), quality=90)
elif kind == "webp":
    data = encoded("WEBP", "RGB", (0, 128, 255), lossless=True)
from cifar.sources.images import ImageError, as_model_input, open_image
from PIL import Image
warm_up = io.BytesIO()
Image.new("RGB", (64, 64)).save(warm_up, "PNG")
as_model_input(open_image(warm_up.getvalue()))  # Pillow's plugins are imported once per process
def status(key):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) * 1024
results = [None] * copies
start = threading.Barrier(copies)
def decode(i):
    start.wait()
    try:
        pixels = as_model_input(open_image(data))
        results[i] = {"pixel": pixels[16, 16].tolist(), "shape": list(pixels.shape)}
    except ImageError as error:
        results[i] = {"error": str(error)}
threads = [threading.Thread(target=decode, args=(i,)) for i in range(copies)]
Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
before = status("VmRSS:")
started = time.perf_counter()
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(json.dumps({"bytes": len(data), "seconds": time.perf_counter() - started,
                  "peak": status("VmHWM:") - before, "results": results}))
"""


def decode_in_subprocess(
    kind: str, width: int = 10000, height: int | None = None, copies: int = 1, code: Path = REPO
) -> dict:
    """Decode `copies` uploads at once (threads, like Streamlit sessions) in a fresh process that
    imports `cifar` from `code`: its peak RSS growth, each upload's centre pixel or ImageError
    message. `bench/soak.py` measures the concurrent bombs with it, before and after."""
    result = subprocess.run(
        [sys.executable, "-c", BIG_IMAGE_SCRIPT, kind, str(width), str(height or width), str(copies)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=code,  # `python -c` puts the working folder first on the path
        env=subprocess_env(PYTHONPATH=str(code)),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def megabytes(report: dict) -> str:
    return f"{report['bytes'] / 1e3:.0f} KB file -> {report['peak'] / 2**20:.0f} MB peak"


@pytest.mark.slow  # over 2 s: the quick loop leaves it to CI
@pytest.mark.parametrize(
    ("kind", "width", "height"),
    [
        ("jpeg", 10000, 10000),  # JPEG decodes at reduced size: 100 megapixels are fine
        ("jpeg", 4000, 3000),  # a 12-megapixel photo
        ("rgb-png", 4000, 3000),
        ("rgb-png", 8000, 8000),  # the largest RGB PNG within DECODE_BUDGET
        ("palette-png", 10000, 10000),  # 1 byte a pixel: 100 megapixels are within the budget
        ("webp", 4000, 4000),  # the largest RGB WebP within the budget (libwebp's own copies)
    ],
)
def test_large_image_decodes_within_the_memory_of_one_upload(kind, width, height):
    report = decode_in_subprocess(kind, width, height)
    (result,) = report["results"]
    assert "error" not in result, result
    assert result["shape"] == [32, 32, 3]
    assert np.abs(np.array(result["pixel"]) - (0, 128, 255)).max() <= 3
    assert report["seconds"] < 60, report
    assert report["peak"] < ONE_UPLOAD, megabytes(report)


@pytest.mark.slow  # over 2 s: the quick loop leaves it to CI
@pytest.mark.parametrize(
    ("kind", "side"),
    [
        ("rgb-png", 10900),  # the 346 KB PNG: it took 0.9 GB
        ("rgb-png", 10000),
        ("la-png", 10000),  # Pillow keeps LA at 4 bytes a pixel: it took 1.1 GB
    ],
)
def test_small_file_declaring_a_huge_image_is_refused_or_decoded_within_bounds(kind, side):
    report = decode_in_subprocess(kind, side)
    (result,) = report["results"]
    assert report["bytes"] < 400_000
    assert report["peak"] < ONE_UPLOAD, megabytes(report)
    if "error" in result:
        assert f"{side} x {side} pixels" in result["error"] and "MB" in result["error"], result
    else:
        assert result["shape"] == [32, 32, 3]


def test_three_concurrent_bombs_stay_bounded():
    """Three sessions upload the 346 KB PNG declaring 10900 x 10900 at once: 0.9 GB each before."""
    report = decode_in_subprocess("rgb-png", 10900, copies=3)
    assert report["peak"] < 2**30, megabytes(report)
    assert all("error" in result for result in report["results"]), report["results"]


@pytest.mark.slow  # over 2 s: the quick loop leaves it to CI
def test_three_concurrent_large_images_queue_instead_of_stacking():
    """Three of the largest images allowed, at once: each decodes, one at a time (~256 MB each)."""
    report = decode_in_subprocess("rgb-png", 8000, copies=3)
    assert [result.get("shape") for result in report["results"]] == [[32, 32, 3]] * 3, report["results"]
    assert report["peak"] < ONE_UPLOAD + 100 * 2**20, megabytes(report)


def test_decode_cost_estimate():
    """The estimate behind DECODE_BUDGET: an RGBA image costs twice an RGB one, WebP more."""
    cost = images._bytes_per_pixel
    assert cost("L", "PNG") == 1 and cost("RGB", "PNG") == 4 and cost("RGBA", "PNG") == 8
    assert cost("RGB", "WEBP") > cost("RGB", "PNG") and cost("RGB", "JPEG2000") > cost("RGB", "PNG")


def test_upload_limits_are_sane():
    assert 10000 * 10000 <= images.MAX_PIXELS < 20000 * 20000
    assert MAX_UPLOAD_BYTES <= 100 * 2**20
    assert 4000 * 3000 * 8 <= images.DECODE_BUDGET < ONE_UPLOAD  # an RGBA 12 Mpx screenshot fits
