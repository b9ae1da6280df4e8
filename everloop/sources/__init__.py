"""Where frames come from: a video file, a folder of images, or an episode tree.

Each opener checks its input up front and returns a ``Source`` whose ``frames`` iterator
yields RGB uint8 ``[H, W, 3]`` frames already cropped and resized (``data.Geometry``), one
at a time, so ``prepare.prepare`` can stream them to disk without holding them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Source:
    frames: Iterator[np.ndarray]  # RGB uint8 [H, W, 3], final size
    fps: float
    total: int | None  # frame count for the progress bar; None when unknown
    episodes: list[list[int]] | None = None  # [start, end) pairs; None: one episode of all
    splits: dict[str, list[int]] | None = None  # episode indices per split (episode trees)
    actions: list[np.ndarray] | None = None  # per episode, [frames - 1]: actions[t] leads t -> t+1
    recorded: dict | None = None  # what the recorder wrote (record.json): game, action names, size


def open_source(path: Path, geometry, fps: float | None = None) -> Source:
    """A folder is a frame folder or an episode tree; anything else must be a video."""
    from everloop.sources import frames, video

    if Path(path).is_dir():
        return frames.open_folder(Path(path), geometry, fps)
    return video.open_video(Path(path), geometry, fps)
