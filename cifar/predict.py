"""Classify any image with a run's model: bytes, a path, a PIL image or an array in; top-k out."""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cifar.config import IMAGE_SHAPE
from cifar.runs import WEIGHTS_FILES, Run, RunError, load_run

MAX_UPLOAD_BYTES = 25 * 1024 * 1024  # larger uploads are refused before decoding
MAX_PIXELS = 120_000_000  # decoded size cap (a 10000 x 10000 photo passes; bombs do not)
MODEL_SIDE = 32
DECODE_SIDE = 256  # JPEGs decode at >= this size (1/2 .. 1/8 scale), far cheaper than full size
WORKING_SIDE = 1024  # larger images are shrunk before colour conversion
READABLE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF", "ICO", "JPEG2000")


class ImageError(ValueError):
    """The input is not an image we can read; the message is meant for the user."""


def open_image(source: bytes | str | Path | Image.Image | np.ndarray) -> Image.Image:
    """A decoded RGB image as a person sees it (EXIF rotation applied, first frame, no alpha)."""
    if isinstance(source, Image.Image):
        image = source
    elif isinstance(source, np.ndarray):
        image = _from_array(source)
    else:
        data = Path(source).read_bytes() if isinstance(source, str | Path) else source
        image = _decode(data)
    return _to_rgb(image)


def _decode(data: bytes) -> Image.Image:
    if not data:
        raise ImageError("the file is empty")
    if len(data) > MAX_UPLOAD_BYTES:
        raise ImageError(
            f"the file is {len(data) / 2**20:.1f} MB, "
            f"over the upload limit of {MAX_UPLOAD_BYTES / 2**20:g} MB"
        )
    previous = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            Image.MAX_IMAGE_PIXELS = MAX_PIXELS
            image = Image.open(io.BytesIO(data), formats=READABLE_FORMATS)
            image.seek(0)  # animated GIF / WebP / APNG: the first frame
            image.draft("RGB", (DECODE_SIDE, DECODE_SIDE))  # JPEG: decode at reduced size
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(
            f"the image declares more than {MAX_PIXELS / 1e6:.0f} million pixels; refusing to decode it"
        ) from None
    except UnidentifiedImageError:
        raise ImageError(
            "this is not an image format we can read (PNG, JPEG, WebP, BMP, GIF, TIFF)"
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise ImageError(f"the image is damaged or truncated ({error})") from None
    except Exception as error:  # noqa: BLE001 (a decoder's own bug must reach the user as a message)
        raise ImageError(f"the image could not be decoded ({type(error).__name__})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = previous
    return image


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
    # A broken EXIF block should not lose the picture: keep it unrotated.
    with contextlib.suppress(Exception):
        image = ImageOps.exif_transpose(image)
    if image.width < 1 or image.height < 1:
        raise ImageError("the image has no pixels")
    try:
        # Shrink first: every conversion below then works on at most 1024 x 1024 pixels.
        if max(image.size) > WORKING_SIDE:  # a new image: the caller's stays untouched
            factor = max(image.size) // WORKING_SIDE
            if factor > 1 and image.mode in ("L", "LA", "RGB", "RGBA", "I", "F"):
                image = image.reduce(factor)  # integer box shrink: cheap, little extra memory
            image = ImageOps.contain(image, (WORKING_SIDE, WORKING_SIDE), Image.Resampling.BOX)
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


def as_model_input(image: Image.Image) -> np.ndarray:
    """What the model sees: the centre square, downscaled to 32 x 32, uint8 RGB."""
    small = ImageOps.fit(image, (MODEL_SIDE, MODEL_SIDE), Image.Resampling.LANCZOS)
    return np.asarray(small.convert("RGB"), dtype=np.uint8)


class Predictor:
    """A run's model, loaded once; `predict` takes raw pixels or any image."""

    def __init__(self, run: Run):
        import tensorflow as tf

        self.run = run
        self.class_names = run.class_names
        prepare, network = load_model(run)
        self.tta_flip = bool(run.hyperparameters.get("tta_flip"))
        # The network is XLA-compiled: besides being faster for one image on a CPU, the compiled
        # program survives `keras.backend.clear_session()`, which Streamlit calls after every
        # script run and which otherwise makes TensorFlow rebuild every kernel of InceptionV3 on
        # the next upload (~1 s). A transfer model's resize stays outside XLA (see `outside_xla`).
        compiled = tf.function(lambda x: network(x, training=False), reduce_retracing=True, jit_compile=True)
        self._forward = compiled if prepare is None else (lambda pixels: compiled(prepare(pixels)))
        self.probabilities(np.zeros((1, *IMAGE_SHAPE), np.uint8))  # compile for one image, now

    @classmethod
    def for_run(cls, run_id: str) -> Predictor:
        return cls(load_run(run_id))

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """(N, 32, 32, 3) uint8 -> (N, 10) class probabilities."""
        probs = np.asarray(self._forward(pixels))
        if self.tta_flip:
            probs = (probs + np.asarray(self._forward(np.ascontiguousarray(pixels[:, :, ::-1])))) / 2
        return probs

    def predict(self, source, top_k: int = 3) -> list[tuple[str, float]]:
        pixels = as_model_input(open_image(source))[None]
        probs = self.probabilities(pixels)[0]
        order = np.argsort(probs)[::-1][:top_k]
        return [(self.class_names[i], float(probs[i])) for i in order]

    def predict_file(self, path: str | Path, top_k: int = 3) -> list[tuple[str, float]]:
        try:
            data = Path(path).read_bytes()
        except OSError as error:
            raise ImageError(str(error)) from None
        return self.predict(data, top_k)


def load_model(run: Run):
    """The run's model rebuilt from its config with its weights (no code from the folder), as
    (resize, network): a transfer model's resize (run outside XLA) and the rest; a baseline
    has no resize (None, model)."""
    from cifar.config import load_config
    from cifar.features import outside_xla
    from cifar.models import build_baseline, build_head, build_resize, build_transfer_network

    config = load_config(run.hyperparameters)
    if config.model == "baseline":
        model = build_baseline(config)
        model.load_weights(str(_weights_file(run, WEIGHTS_FILES["baseline"])))
        return None, model
    from cifar.assets import load_inception_weights

    backbone = load_inception_weights(run.backbone_source)
    expected = run.config.get("assets", {}).get("backbone_sha256")
    if expected and expected != backbone.sha256:
        raise RunError(f"{run.run_id} was trained on other backbone weights ({expected[:12]})")
    head = build_head(config)
    head.load_weights(str(_weights_file(run, WEIGHTS_FILES["transfer"])))
    return outside_xla(build_resize(config)), build_transfer_network(config, backbone.path, head=head)


def _weights_file(run: Run, name: str) -> Path:
    path = run.path / name
    if not path.is_file():
        raise RunError(f"{run.run_id} has no {name}")
    return path
