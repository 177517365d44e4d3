"""Helpers of the robustness tests: memory, subprocesses, varied uploads (no pytest import here)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from tests.factory import REPO, encode


def rss_bytes() -> int:
    """Resident set size of this process (VmRSS in /proc/self/status)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def subprocess_env(**extra: str) -> dict[str, str]:
    """The current environment (private folders included) with the repository importable."""
    return {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


def varied_uploads(n: int, seed: int = 0) -> list[bytes | np.ndarray]:
    """`n` small images of assorted formats, modes and sizes, as an upload or a camera gives them."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    kinds = [
        ("PNG", "RGB", {}),
        ("JPEG", "RGB", {"quality": 85}),
        ("WEBP", "RGB", {}),
        ("PNG", "RGBA", {}),
        ("GIF", "P", {}),
        ("BMP", "RGB", {}),
        ("TIFF", "RGB", {}),
        ("JPEG", "L", {}),
        ("PNG", "I;16", {}),
    ]
    out: list[bytes | np.ndarray] = []
    for i in range(n):
        width, height = (int(v) for v in rng.integers(8, 160, 2))
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        if i % 10 == 9:  # camera frames and arrays, not only files
            out.append(pixels)
            continue
        fmt, mode, options = kinds[i % len(kinds)]
        image = Image.fromarray(pixels)
        if mode == "I;16":
            image = Image.fromarray(pixels[..., 0].astype(np.uint16) * 257)
        elif mode != "RGB":
            image = image.convert(mode)
        out.append(encode(image, fmt, **options))
    return out
