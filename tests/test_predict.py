"""Reading an image a person uploads (each ordinary conversion to RGB), and predicting with a
run's model. Damaged and hostile uploads are `tests/robustness/test_robust_uploads.py`'s."""

from __future__ import annotations

import csv
import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from cifar.config import CLASS_NAMES
from cifar.inference.predict import Predictor
from cifar.modeling.restore import load_model
from cifar.sources.images import MAX_UPLOAD_BYTES, ImageError, as_model_input, open_image
from cifar.store.runs import RunError
from tests.factory import encode, recording_predictor, write_run

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def _png_bytes() -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    return encode(Image.fromarray(pixels), "PNG")


def _pixel(image: Image.Image, xy=(0, 0)) -> tuple[int, int, int]:
    return tuple(int(v) for v in image.getpixel(xy))


def test_rgba_is_composited_on_white():
    rgba = Image.new("RGBA", (2, 1))
    rgba.putpixel((0, 0), (255, 0, 0, 0))  # fully transparent
    rgba.putpixel((1, 0), (0, 0, 255, 255))  # opaque blue
    out = open_image(encode(rgba, "PNG"))
    assert out.mode == "RGB"
    assert _pixel(out, (0, 0)) == (255, 255, 255)
    assert _pixel(out, (1, 0)) == (0, 0, 255)
    half = Image.new("RGBA", (1, 1), (0, 0, 0, 128))
    # 0 * 128/255 + 255 * (1 - 128/255) = 127
    assert _pixel(open_image(half)) == pytest.approx((127, 127, 127), abs=1)


def test_palette_image_to_rgb():
    palette_image = Image.new("P", (2, 1))
    palette_image.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    palette_image.putpixel((0, 0), 0)
    palette_image.putpixel((1, 0), 1)
    out = open_image(encode(palette_image, "PNG"))
    assert out.mode == "RGB"
    assert _pixel(out, (0, 0)) == (10, 20, 30) and _pixel(out, (1, 0)) == (200, 100, 50)


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_transparency_is_composited_on_white(fmt):
    image = Image.new("P", (20, 20), 1)  # all green; palette entry 0 is transparent
    image.putpalette([10, 20, 30, *GREEN] + [0] * 762)
    image.paste(0, (0, 0, 20, 2))  # a transparent stripe along the top
    out = open_image(encode(image, fmt, transparency=0))
    assert _pixel(out, (5, 0)) == (255, 255, 255) and _pixel(out, (5, 10)) == GREEN
    pixels = as_model_input(out)
    assert (pixels[0] > 200).all() and (pixels[-8:] == GREEN).all()  # white, not black


def test_grayscale_to_rgb():
    gray = Image.new("L", (1, 1), 77)
    assert _pixel(open_image(encode(gray, "PNG"))) == (77, 77, 77)


def test_sixteen_bit_grayscale_is_scaled():
    values = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    image = Image.fromarray(values)
    assert image.mode == "I;16"
    expected = [round(int(v) * 255 / 65535) for v in values[0]]
    assert expected == [0, 1, 128, 255]
    for out in (open_image(image), open_image(encode(image, "PNG"))):
        assert out.mode == "RGB"
        assert [_pixel(out, (x, 0)) for x in range(4)] == [(e, e, e) for e in expected]


def test_cmyk_to_rgb():
    cmyk = Image.new("CMYK", (1, 1), (0, 255, 255, 0))  # no cyan, full magenta and yellow: red
    out = open_image(encode(cmyk, "JPEG", quality=100))
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
    pixels = as_model_input(open_image(encode(photo, "JPEG", quality=95)))
    assert pixels.shape == (32, 32, 3) and pixels.dtype == np.uint8
    assert np.abs(pixels.astype(int) - (20, 120, 220)).max() <= 4


def _jpeg_with_exif(orientation: int) -> bytes:
    """Stored 64 wide x 32 high, left half red, right half blue, with an EXIF orientation."""
    stored = Image.new("RGB", (64, 32), RED)
    stored.paste(BLUE, (32, 0, 64, 32))
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(stored, "JPEG", quality=95, exif=exif.tobytes())


@pytest.mark.parametrize(
    ("orientation", "size", "top", "bottom", "left", "right"),
    [
        (1, (64, 32), None, None, RED, BLUE),
        (3, (64, 32), None, None, BLUE, RED),  # 180 degrees
        (6, (32, 64), RED, BLUE, None, None),  # a phone held upright: rotate 90 clockwise
        (8, (32, 64), BLUE, RED, None, None),  # rotate 90 counter-clockwise
    ],
)
def test_exif_orientation_is_applied(orientation, size, top, bottom, left, right):
    image = open_image(_jpeg_with_exif(orientation))
    assert image.size == size  # width, height
    pixels = as_model_input(image).astype(int)
    for region, colour in (
        (pixels[:8], top),
        (pixels[-8:], bottom),
        (pixels[:, :8], left),
        (pixels[:, -8:], right),
    ):
        if colour is not None:
            assert np.abs(region - colour).max() <= 40, (orientation, region.mean(axis=(0, 1)), colour)


def test_first_frame_of_an_animated_gif():
    frames = [Image.new("RGB", (4, 4), colour) for colour in ((255, 0, 0), (0, 255, 0))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    r, g, b = _pixel(open_image(buffer.getvalue()))
    assert r > 200 and g < 50


@pytest.mark.slow
def test_predictor_top_k_on_a_trained_baseline(use_trained_baseline):
    from cifar.store.runs import load_run

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
    """Images and folders in, one model load, CSV rows `image,rank,label,probability`; an
    unreadable file is reported on stderr while the others are answered, and the exit status says so."""
    from cifar import cli

    run_id, _ = use_trained_baseline
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("b.png", "a.png"):
        (folder / name).write_bytes(_png_bytes())
    (folder / "notes.txt").write_text("not an image, and not named like one: skipped")
    single = tmp_path / "photo.png"
    single.write_bytes(_png_bytes())
    assert cli.main(["predict", run_id, str(single), str(folder), "--top-k", "2", "--format", "csv"]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0] == ["image", "rank", "label", "probability"]
    assert [row[:2] for row in rows[1:]] == [
        [path, rank] for path in (str(single), str(folder / "a.png"), str(folder / "b.png")) for rank in "12"
    ]
    assert all(row[2] in CLASS_NAMES and 0 <= float(row[3]) <= 1 for row in rows[1:])
    assert float(rows[1][3]) >= float(rows[2][3])

    (folder / "c.png").write_bytes(b"not an image")
    assert cli.main(["predict", run_id, str(folder), "--format", "json", "--top-k", "1"]) == 1
    out, err = capsys.readouterr()
    assert [record["image"] for record in json.loads(out)] == [str(folder / "a.png"), str(folder / "b.png")]
    assert "cannot read" in err and "c.png" in err and "Traceback" not in err

    assert cli.main(["predict", run_id, str(single), "--resolution", "full"]) == 2
    assert "not full" in capsys.readouterr().err


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda root: root / "missing.png", "no such file or folder"),
        (lambda root: root, "no images in this folder"),
        (lambda root: (root / "notes.txt").write_text("text") and root, "no images in this folder"),
    ],
    ids=["missing path", "empty folder", "folder of non-images"],
)
def test_cli_predict_without_images_says_so_before_loading_a_model(tmp_path, capsys, make, message):
    from cifar import cli

    target = make(tmp_path)
    assert cli.main(["predict", "no-such-run", str(target)]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_cli_predict_names_a_missing_run(tmp_path, capsys):
    from cifar import cli

    image = tmp_path / "photo.png"
    image.write_bytes(_png_bytes())
    assert cli.main(["predict", "no-such-run", str(image)]) != 0
    err = capsys.readouterr().err
    assert "no-such-run" in err and "Traceback" not in err


def _fresh_baseline_run(root, run_id: str, **overrides):
    """A fixture run (no training) holding a freshly initialised CNN's weights; the CNN too."""
    import keras

    from cifar.config import BaselineConfig
    from cifar.modeling.models import build_baseline

    labels = np.arange(6, dtype=np.uint8)
    folder = write_run(root, run_id, "baseline", labels, 0.5, epochs=1, **overrides)
    keras.utils.set_random_seed(0)
    model = build_baseline(BaselineConfig(epochs=1, **overrides))
    model.save_weights(str(folder / "model.weights.h5"))
    return folder, model


@pytest.mark.slow  # over 2 s: the quick loop leaves it to CI
@pytest.mark.parametrize("tta_flip", [False, True], ids=["plain", "tta_flip"])
def test_predictor_averages_over_the_horizontal_flip_with_tta_flip(tmp_path, monkeypatch, tta_flip):
    """No training: a fresh CNN's weights in a fixture run; the Predictor must give the model's
    probabilities, or with `tta_flip` their mean over the images and their mirror images."""
    from cifar.store.runs import load_run

    monkeypatch.setenv("CIFAR_ARTIFACTS", str(tmp_path / "artifacts"))
    _, model = _fresh_baseline_run(tmp_path / "artifacts", "fresh", tta_flip=tta_flip)

    images = np.random.default_rng(2).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    plain = model.predict(images, verbose=0)
    mirrored = model.predict(images[:, :, ::-1], verbose=0)  # (N, H, W, C): W is axis 2
    upside_down = model.predict(images[:, ::-1], verbose=0)
    assert np.abs(plain - mirrored).max() > 1e-4 and np.abs(mirrored - upside_down).max() > 1e-4
    expected = (plain + mirrored) / 2 if tta_flip else plain
    np.testing.assert_allclose(Predictor(load_run("fresh")).probabilities(images), expected, atol=1e-5)


@pytest.mark.slow  # over 2 s: the quick loop leaves it to CI
def test_predictor_averages_airbench94_s_six_views_with_tta_translate(tmp_path, monkeypatch):
    from cifar import tta
    from cifar.store.runs import load_run

    monkeypatch.setenv("CIFAR_ARTIFACTS", str(tmp_path / "artifacts"))
    # The tutorial CNN (a fresh airbench net's answers are too close to uniform to tell views
    # apart), with dropout: the Predictor must run the network in inference mode.
    recipe = {"tta_flip": True, "tta_translate": True, "dropout": 0.5}
    _, model = _fresh_baseline_run(tmp_path / "artifacts", "six", **recipe)

    images = np.random.default_rng(3).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    predict = lambda x: model.predict(x, verbose=0)  # noqa: E731
    six = tta.averaged(predict, images, flip=True, translate=True)
    assert np.abs(six - tta.averaged(predict, images, flip=True, translate=False)).max() > 1e-4
    np.testing.assert_allclose(Predictor(load_run("six")).probabilities(images), six, atol=1e-5)


# ----------------------------------------------------------------------------- a file the user names


def test_predict_file_reads_a_photo_and_refuses_a_huge_file_without_reading_it(tmp_path, monkeypatch):
    """A sparse file far over the upload limit is refused from its size, not read into memory."""
    import tracemalloc

    from cifar.store.runs import load_run

    monkeypatch.setenv("CIFAR_ARTIFACTS", str(tmp_path / "artifacts"))
    _fresh_baseline_run(tmp_path / "artifacts", "fresh")
    predictor = Predictor(load_run("fresh"))
    photo = tmp_path / "photo.png"
    photo.write_bytes(_png_bytes())
    assert len(predictor.predict_file(photo, top_k=2)) == 2 and len(predictor.predict_file(photo)) == 3
    # The photo's answer is the network's on the photo squeezed to 32 px.
    image = open_image(photo.read_bytes())
    by_pixels = predictor.probabilities(as_model_input(image, 32)[None])[0]
    np.testing.assert_allclose(predictor.distribution(image, calibrated=False), by_pixels, atol=1e-6)
    with pytest.raises(ValueError, match="only knows 32 x 32"):  # the options reach `predict`
        predictor.predict_file(photo, resolution="full")

    huge = tmp_path / "huge.png"
    huge.write_bytes(_png_bytes())
    os.truncate(huge, 4 * MAX_UPLOAD_BYTES)  # sparse: no disk used
    tracemalloc.start()
    try:
        with pytest.raises(ImageError, match="over the upload limit"):
            predictor.predict_file(huge)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < MAX_UPLOAD_BYTES / 4, f"{peak / 2**20:.0f} MB read to refuse it"
    with pytest.raises(ImageError, match="not a regular file|Is a directory"):
        predictor.predict_file(tmp_path)


# ----------------------------------------------------------------------------- a damaged run folder


def test_random_bytes_in_the_weights_file_are_a_run_error_not_a_traceback(tmp_path, monkeypatch, capsys):
    from cifar import cli
    from cifar.store.runs import load_run

    monkeypatch.setenv("CIFAR_ARTIFACTS", str(tmp_path / "artifacts"))
    folder, _ = _fresh_baseline_run(tmp_path / "artifacts", "junk")
    (folder / "model.weights.h5").write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(RunError, match="junk: cannot load model.weights.h5"):
        Predictor(load_run("junk"))

    photo = tmp_path / "photo.png"
    photo.write_bytes(_png_bytes())
    assert cli.main(["predict", "junk", str(photo)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: junk: cannot load model.weights.h5") and "Traceback" not in err, err


@pytest.mark.filterwarnings("ignore:Skipping nested container:UserWarning")  # Keras, on any mismatch
def test_head_weights_of_another_width_are_a_run_error(tmp_path, monkeypatch):
    """`head_units` 8 in config.json, a head of 16 units saved: refused before the backbone loads."""
    from cifar.config import TransferConfig
    from cifar.modeling.models import build_head
    from cifar.store.runs import load_run

    monkeypatch.setenv("CIFAR_ARTIFACTS", str(tmp_path / "artifacts"))
    labels = np.arange(6, dtype=np.uint8)
    folder = write_run(tmp_path / "artifacts", "narrow", "transfer", labels, 0.5, epochs=1, head_units=8)
    build_head(TransferConfig(head_units=16)).save_weights(str(folder / "head.weights.h5"))
    with pytest.raises(RunError, match="narrow: cannot load head.weights.h5 into the model its config"):
        load_model(load_run("narrow"))


def test_top_k_is_one_to_the_number_of_classes(tmp_path, monkeypatch):
    """`top_k=0` gave no answer and `-1` nine classes; both are refused, 1 and 10 are whole answers."""
    from cifar.store.runs import load_run

    monkeypatch.setenv("CIFAR_ARTIFACTS", str(tmp_path / "artifacts"))
    _fresh_baseline_run(tmp_path / "artifacts", "fresh")
    predictor = Predictor(load_run("fresh"))
    image = np.zeros((32, 32, 3), np.uint8)
    for bad in (0, -1, 11, 2.0, True):
        with pytest.raises(ValueError, match="top_k must be a whole number from 1 to 10"):
            predictor.predict(image, top_k=bad)
    assert len(predictor.predict(image, top_k=1)) == 1
    assert sorted(label for label, _ in predictor.predict(image, top_k=10)) == sorted(CLASS_NAMES)


def _recording_predictor(model: str, tta_flip: bool, temperature: float):
    from types import SimpleNamespace

    run = SimpleNamespace(run_id="t", model=model, class_names=list(CLASS_NAMES), temperature=temperature)
    return recording_predictor(run, tta_flip)


def test_the_full_resolution_path_gives_the_network_the_photo_itself():
    """Centre square, antialiased (Lanczos) resize straight to the base's input size, scaled to
    [-1, 1] as the 32 px path is; the flip averaged when the run was tested so; then calibrated."""
    from PIL import ImageOps

    from cifar.calibration import temperature_scaled

    photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, (200, 300, 3), dtype=np.uint8))
    predictor, seen = _recording_predictor("transfer", tta_flip=True, temperature=2.0)
    assert predictor.resolutions == ("full", "cifar") and predictor.resolution(None) == "full"
    raw = predictor.distribution(photo, "full", calibrated=False)
    expected = np.asarray(ImageOps.fit(photo, (75, 75), Image.Resampling.LANCZOS), np.float32) / 127.5 - 1
    assert [x.shape for x in seen] == [(1, 75, 75, 3)] * 2
    np.testing.assert_allclose(seen[0][0], expected, atol=1e-6)
    np.testing.assert_allclose(seen[1][0], expected[:, ::-1], atol=1e-6)
    np.testing.assert_allclose(predictor.distribution(photo, "full"), temperature_scaled(raw, 2.0), rtol=1e-5)
    assert len(seen) == 2, "the same pixels again: the network is not run again"

    seen.clear()
    predictor.distribution(photo, "cifar")
    assert [x.shape for x in seen] == [(1, 32, 32, 3)] * 2
    assert predictor.model_input(photo, "cifar").shape == (32, 32, 3)


def test_a_baseline_only_takes_32_px_images():
    photo = Image.new("RGB", (64, 48), RED)
    predictor, seen = _recording_predictor("baseline", tta_flip=False, temperature=1.0)
    assert predictor.resolutions == ("cifar",)
    with pytest.raises(ValueError) as refused:
        predictor.predict(photo, resolution="full")
    assert (
        str(refused.value)
        == "t (baseline) takes 'cifar' images, not 'full': a baseline CNN only knows 32 x 32 images"
    )
    with pytest.raises(ValueError, match="top_k"):
        predictor.predict(photo, top_k=11)
    assert seen == []  # refused before anything ran
    assert len(predictor.predict(photo, top_k=3)) == 3 and seen[0].shape == (1, 32, 32, 3)


def test_predict_defaults_to_the_calibrated_top_3():
    """What a library user gets from `predict(image)` alone."""
    photo = Image.new("RGB", (40, 30), RED)
    predictor, _ = _recording_predictor("baseline", tta_flip=False, temperature=2.0)
    answer = predictor.predict(photo)
    assert answer == predictor.predict(photo, top_k=3, calibrated=True)
    assert len(answer) == 3 and answer != predictor.predict(photo, top_k=3, calibrated=False)
    # Most likely first: the distribution's three largest, in order.
    distribution = predictor.distribution(photo)
    top = np.argsort(-distribution)[:3]
    assert answer == [(CLASS_NAMES[i], pytest.approx(float(distribution[i]))) for i in top]
    assert answer[0][1] > answer[1][1] > answer[2][1]


def test_a_transfer_run_answers_at_the_resolution_asked_for():
    predictor, seen = _recording_predictor("transfer", tta_flip=False, temperature=1.0)
    photo = Image.new("RGB", (40, 30), RED)
    predictor.predict(photo, resolution="cifar")
    predictor.predict(photo)
    assert [x.shape for x in seen] == [(1, 32, 32, 3), (1, 75, 75, 3)]


def test_a_transfer_run_names_both_resolutions_it_takes():
    predictor, seen = _recording_predictor("transfer", tta_flip=False, temperature=1.0)
    with pytest.raises(ValueError) as refused:
        predictor.predict(Image.new("RGB", (8, 8), RED), resolution="tiny")
    assert str(refused.value) == "t (transfer) takes 'full' and 'cifar' images, not 'tiny'"
    assert seen == []


def test_a_folder_that_cannot_be_listed_is_a_problem_not_a_traceback(tmp_path, monkeypatch):
    from cifar.sources import images

    def refuse(path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(images.os, "scandir", refuse)
    assert images.image_paths([str(tmp_path)]) == (
        [],
        [f"{tmp_path}: cannot list this folder (Permission denied)"],
    )


@pytest.mark.slow
def test_a_mixed_bfloat16_run_is_restored_computing_as_it_was_trained():
    """Rebuilt from config.json, the model computes in bfloat16 again, and answers as the run did
    (up to bfloat16's batch-to-batch rounding: the stored predictions came in batches of 1,000)."""
    import keras

    from cifar.config import BaselineConfig
    from cifar.store.runs import load_run
    from cifar.training.train import train
    from tests.factory import tiny_cifar

    data = tiny_cifar(60, 20)
    config = BaselineConfig(
        architecture="airbench",
        width=8,
        epochs=1,
        batch_size=16,
        validation_size=10,
        precision="mixed_bfloat16",
    )
    train(config, data=data, run_id="bf16")
    _, model = load_model(load_run("bf16"))
    convolutions = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert convolutions and {layer.compute_dtype for layer in convolutions} == {"bfloat16"}
    saved = load_run("bf16").test_predictions
    np.testing.assert_allclose(Predictor.for_run("bf16").probabilities(data.x_test[:5]), saved[:5], atol=2e-4)


@pytest.mark.slow  # over 2 s: the quick loop leaves it to CI
def test_predict_refuses_devices_and_fifos_before_any_model_loads(runs, tmp_path):
    """#30: `predict RUN /dev/zero` (or a FIFO) was refused only after the model had loaded (20 s,
    945 MB for a transfer run); a file over the upload limit likewise."""
    import subprocess
    import sys

    from tests.factory import REPO

    fifo = tmp_path / "photo.png"
    os.mkfifo(fifo)
    huge = tmp_path / "huge.png"
    with open(huge, "wb") as handle:
        handle.truncate(MAX_UPLOAD_BYTES + 1)  # sparse: costs no disk
    code = (
        "import sys\nfrom cifar.cli import main\nrc = main(sys.argv[1:])\n"
        "print('tensorflow imported:', 'tensorflow' in sys.modules)\nsys.exit(rc)"
    )
    argv = ["predict", runs[0], "/dev/zero", str(fifo), str(huge)]
    result = subprocess.run(
        [sys.executable, "-c", code, *argv], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1 and "tensorflow imported: False" in result.stdout, result
    lines = result.stderr.splitlines()
    assert lines == [
        "error: /dev/zero: not a regular file (a device, FIFO or socket)",
        f"error: {fifo}: not a regular file (a device, FIFO or socket)",
        f"error: {huge}: 25.0 MB, over the limit of 25 MB",
    ], result.stderr
