"""Reading any image a person may upload, and predicting with a run's model."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from cifar.config import CLASS_NAMES
from cifar.predict import ImageError, Predictor, as_model_input, open_image


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _png_bytes() -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    return _encode(Image.fromarray(pixels), "PNG")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (np.random.default_rng(1).bytes(2000), "not an image format"),
        (b"hello, this is a text file\n" * 20, "not an image format"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "not an image format"),
        (_png_bytes()[: len(_png_bytes()) // 2], "damaged or truncated"),
        (_png_bytes()[:60], None),
    ],
    ids=["empty", "random", "text", "svg", "truncated-png", "png-header-only"],
)
def test_unreadable_inputs_raise_image_error(data, message):
    with pytest.raises(ImageError, match=message):
        open_image(data)


def test_missing_file_raises_image_error_in_predict_file(tmp_path, use_trained_baseline):
    run_id, _ = use_trained_baseline
    with pytest.raises(ImageError):
        Predictor.for_run(run_id).predict_file(tmp_path / "nope.png")


def test_bad_arrays_raise_image_error():
    with pytest.raises(ImageError):
        open_image(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(ImageError):
        open_image(np.zeros((0, 4, 3), np.uint8))
    with pytest.raises(ImageError):
        open_image(np.zeros((2, 2, 2, 3), np.uint8))


def test_oversized_upload_is_refused_before_decoding(monkeypatch):
    from cifar import predict

    monkeypatch.setattr(predict, "MAX_UPLOAD_BYTES", 100)
    with pytest.raises(ImageError, match="over the upload limit"):
        open_image(_png_bytes())


def test_decompression_bomb_is_refused(monkeypatch):
    from cifar import predict

    monkeypatch.setattr(predict, "MAX_PIXELS", 1000)
    big = _encode(Image.new("L", (200, 200)), "PNG")
    with pytest.raises(ImageError, match="million pixels"):
        open_image(big)
    assert Image.MAX_IMAGE_PIXELS != 1000  # the global limit is restored


def _pixel(image: Image.Image, xy=(0, 0)) -> tuple[int, int, int]:
    return tuple(int(v) for v in image.getpixel(xy))


def test_rgba_is_composited_on_white():
    rgba = Image.new("RGBA", (2, 1))
    rgba.putpixel((0, 0), (255, 0, 0, 0))  # fully transparent
    rgba.putpixel((1, 0), (0, 0, 255, 255))  # opaque blue
    out = open_image(_encode(rgba, "PNG"))
    assert out.mode == "RGB"
    assert _pixel(out, (0, 0)) == (255, 255, 255)
    assert _pixel(out, (1, 0)) == (0, 0, 255)
    half = Image.new("RGBA", (1, 1), (0, 0, 0, 128))
    # 0 * 128/255 + 255 * (1 - 128/255) = 127
    assert all(abs(v - 127) <= 1 for v in _pixel(open_image(half)))


def test_palette_image_to_rgb():
    palette_image = Image.new("P", (2, 1))
    palette_image.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    palette_image.putpixel((0, 0), 0)
    palette_image.putpixel((1, 0), 1)
    out = open_image(_encode(palette_image, "PNG"))
    assert out.mode == "RGB"
    assert _pixel(out, (0, 0)) == (10, 20, 30) and _pixel(out, (1, 0)) == (200, 100, 50)


def test_palette_gif_with_transparency():
    gif = Image.new("P", (2, 1))
    gif.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    gif.putpixel((1, 0), 1)
    out = open_image(_encode(gif, "GIF", transparency=0))
    assert _pixel(out, (0, 0)) == (255, 255, 255) and _pixel(out, (1, 0)) == (200, 100, 50)


def test_grayscale_to_rgb():
    gray = Image.new("L", (1, 1), 77)
    assert _pixel(open_image(_encode(gray, "PNG"))) == (77, 77, 77)


def test_sixteen_bit_grayscale_is_scaled():
    values = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    image = Image.fromarray(values)
    assert image.mode == "I;16"
    expected = [round(int(v) * 255 / 65535) for v in values[0]]
    assert expected == [0, 1, 128, 255]
    for out in (open_image(image), open_image(_encode(image, "PNG"))):
        assert out.mode == "RGB"
        assert [_pixel(out, (x, 0)) for x in range(4)] == [(e, e, e) for e in expected]


def test_cmyk_to_rgb():
    cmyk = Image.new("CMYK", (1, 1), (0, 255, 255, 0))  # no cyan, full magenta and yellow: red
    out = open_image(_encode(cmyk, "JPEG", quality=100))
    r, g, b = _pixel(out)
    assert out.mode == "RGB" and r > 240 and g < 15 and b < 15
    assert _pixel(open_image(cmyk)) == (255, 0, 0)


def test_float_array_in_0_1_is_scaled():
    out = open_image(np.array([[[0.0, 0.5, 1.0]]], dtype=np.float32))
    assert _pixel(out) == (0, 128, 255)


def test_as_model_input_is_32_by_32_uint8_of_the_centre():
    wide = np.zeros((30, 90, 3), np.uint8)
    wide[:, :] = (255, 0, 0)  # red sides
    wide[:, 30:60] = (0, 255, 0)  # green centre square
    pixels = as_model_input(open_image(wide))
    assert pixels.shape == (32, 32, 3) and pixels.dtype == np.uint8
    assert pixels[:, 4:28, 1].min() > 200 and pixels[:, 4:28, 0].max() < 60


def test_as_model_input_of_a_big_jpeg():
    photo = Image.fromarray(np.full((600, 800, 3), (20, 120, 220), np.uint8))
    pixels = as_model_input(open_image(_encode(photo, "JPEG", quality=95)))
    assert pixels.shape == (32, 32, 3) and pixels.dtype == np.uint8
    assert np.abs(pixels.astype(int) - (20, 120, 220)).max() <= 4


def test_exif_rotated_jpeg_is_transposed():
    # Stored 40 wide x 20 high: left half red, right half blue; orientation 6 says
    # "rotate 90 degrees clockwise to display", so the displayed image is 20 x 40, red on top.
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :20] = (255, 0, 0)
    stored[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    data = _encode(Image.fromarray(stored), "JPEG", quality=95, exif=exif.tobytes())
    out = open_image(data)
    assert out.size == (20, 40)  # width, height
    shown = np.asarray(out).astype(int)
    expected = np.rot90(stored, k=-1)  # clockwise
    assert expected.shape == shown.shape
    assert np.abs(shown[2:18, 2:18] - expected[2:18, 2:18]).max() < 40  # red at the top
    assert np.abs(shown[22:38, 2:18] - expected[22:38, 2:18]).max() < 40  # blue at the bottom
    assert shown[5, 10, 0] > 200 and shown[35, 10, 2] > 200


def test_first_frame_of_an_animated_gif():
    frames = [Image.new("RGB", (4, 4), colour) for colour in ((255, 0, 0), (0, 255, 0))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    r, g, b = _pixel(open_image(buffer.getvalue()))
    assert r > 200 and g < 50


@pytest.mark.slow
def test_predictor_top_k_on_a_trained_baseline(use_trained_baseline):
    from cifar.runs import load_run

    run_id, data = use_trained_baseline
    predictor = Predictor.for_run(run_id)
    result = predictor.predict(data.x_test[0], top_k=3)
    assert len(result) == 3
    labels = [label for label, _ in result]
    probabilities = [p for _, p in result]
    assert set(labels) <= set(CLASS_NAMES) and len(set(labels)) == 3
    assert probabilities == sorted(probabilities, reverse=True)
    assert all(0 <= p <= 1 for p in probabilities) and sum(probabilities) <= 1 + 1e-6

    full = predictor.predict(_png_bytes(), top_k=10)
    assert len(full) == 10 and sum(p for _, p in full) == pytest.approx(1, abs=1e-5)
    assert [p for _, p in full] == sorted((p for _, p in full), reverse=True)

    # The top-1 of a 32x32 test image equals the run's saved prediction for it.
    saved = load_run(run_id).test_predictions
    probs = predictor.probabilities(data.x_test[:5])
    np.testing.assert_allclose(probs, saved[:5], atol=1e-5)
    assert result[0][0] == CLASS_NAMES[int(saved[0].argmax())]


@pytest.mark.slow
def test_cli_predict(use_trained_baseline, tmp_path, capsys):
    from cifar import cli

    run_id, _ = use_trained_baseline
    image = tmp_path / "photo.png"
    image.write_bytes(_png_bytes())
    assert cli.main(["predict", run_id, str(image), "--top-k", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].split()[0] in CLASS_NAMES
    (tmp_path / "bad.png").write_bytes(b"not an image")
    assert cli.main(["predict", run_id, str(tmp_path / "bad.png")]) == 2
    assert "cannot read" in capsys.readouterr().err
