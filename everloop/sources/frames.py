"""Folders of images: a plain frame folder (one episode) or an episode tree.

An episode tree holds ``Train/<episode>/<frames>`` and/or ``Test/<episode>/<frames>``
(names matched case-insensitively); each episode folder becomes one episode and the
split each came from is recorded in meta ``splits``.  An episode folder may hold
``actions.npy`` (``everloop record``: ``[frames - 1]`` integers, action t leads frame t to
t + 1); then every episode must, and ``prepare`` keeps them aligned with the frames.  Frames and episodes are ordered by
natural name order (``frame2`` before ``frame10``), which is plain name order for the
usual zero-padded names.  Images are read with Pillow and converted to RGB.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from PIL import Image

from everloop.data import ACTION_NONE, ACTIONS_FILE
from everloop.errors import EverloopError
from everloop.sources import Source

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
DEFAULT_FPS = 30.0


def open_folder(path: Path, geometry, fps: float | None = None) -> Source:
    """A frame folder, or an episode tree when ``path`` has Train/ or Test/ subfolders."""
    split_dirs = {d.name.lower(): d for d in _entries(path)
                  if d.is_dir() and d.name.lower() in ("train", "test")}
    if split_dirs:
        recorded = _recorded(path)
        fps = fps or _recorded_fps(recorded)
        return _episode_tree(split_dirs, geometry, fps, recorded)
    images = list_images(path)
    if not images:
        raise EverloopError(f"{path}: no images ({'/'.join(sorted(s[1:] for s in IMAGE_SUFFIXES))})"
                            " and no Train/ or Test/ episode folders")
    return Source(frames=_read(images, geometry), fps=fps or DEFAULT_FPS, total=len(images))


def _recorded(path: Path) -> dict | None:
    """What `everloop record` wrote into record.json, or None."""
    try:
        meta = json.loads((path / "record.json").read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def _recorded_fps(recorded: dict | None) -> float | None:
    """The frame rate `everloop record` wrote into record.json (Atari: 60 / frameskip)."""
    try:
        return float(recorded["fps"])
    except (KeyError, TypeError, ValueError):
        return None


def _actions(folder: Path, frames: int) -> np.ndarray | None:
    """An episode's actions.npy, checked against its frame count; None when there is none."""
    path = folder / ACTIONS_FILE
    if not path.is_file():
        return None
    try:
        actions = np.load(path)
    except (OSError, ValueError) as e:
        raise EverloopError(f"{path}: unreadable actions ({e})") from None
    if actions.ndim != 1 or actions.dtype.kind not in "iu" or len(actions) != frames - 1:
        raise EverloopError(f"{path}: holds {actions.dtype} {list(actions.shape)}; the episode has "
                            f"{frames} frames, so it must hold {frames - 1} integer actions")
    if len(actions) and (actions.min() < 0 or actions.max() >= ACTION_NONE):
        raise EverloopError(f"{path}: actions must be 0 to {ACTION_NONE - 1}")
    return actions.astype(np.uint8)


def _episode_tree(split_dirs: dict[str, Path], geometry, fps, recorded: dict | None = None) -> Source:
    files: list[Path] = []
    actions: list[np.ndarray | None] = []
    episodes: list[list[int]] = []
    splits: dict[str, list[int]] = {"train": [], "test": []}
    for name in ("train", "test"):
        if name not in split_dirs:
            continue
        episode_dirs = sorted((d for d in _entries(split_dirs[name]) if d.is_dir()),
                              key=natural_key)
        if not episode_dirs:
            raise EverloopError(f"{split_dirs[name]}: no episode folders inside")
        for d in episode_dirs:
            images = list_images(d)
            if not images:
                raise EverloopError(f"{d}: episode folder holds no images")
            splits[name].append(len(episodes))
            episodes.append([len(files), len(files) + len(images)])
            files += images
            actions.append(_actions(d, len(images)))
    with_actions = [a is not None for a in actions]
    if any(with_actions) and not all(with_actions):
        raise EverloopError(f"{split_dirs[name].parent}: some episodes hold {ACTIONS_FILE} and some do "
                            "not; a dataset has actions for every frame or for none")
    return Source(frames=_read(files, geometry), fps=fps or DEFAULT_FPS, total=len(files),
                  episodes=episodes, splits=splits, actions=actions if all(with_actions) else None,
                  recorded=recorded)


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, natural name order; hidden files skipped."""
    return sorted((p for p in _entries(folder) if p.suffix.lower() in IMAGE_SUFFIXES
                   and not p.name.startswith(".") and p.is_file()), key=natural_key)


def natural_key(p: Path):
    """Sort key that orders digit runs by value: frame2 < frame10."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t.lower())
            for t in re.split(r"(\d+)", p.name)]


def _entries(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except OSError as e:
        raise EverloopError(f"{folder}: unreadable folder ({e.strerror or e})") from None


def _read(files: list[Path], geometry):
    """Yield each image cropped/resized; without --size all must come out the same size."""
    first: tuple[Path, tuple] | None = None
    for p in files:
        try:
            with Image.open(p) as im:
                rgb = np.asarray(im.convert("RGB"))
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            raise EverloopError(f"{p}: unreadable image ({e})") from None
        out = geometry.apply(rgb)
        if first is None:
            first = (p, out.shape)
        elif out.shape != first[1]:
            h0, w0 = first[1][:2]
            raise EverloopError(f"{p}: frame is {rgb.shape[1]}x{rgb.shape[0]} (WxH) but "
                                f"{first[0].name} gave {w0}x{h0}; frames must share a size "
                                "(or pass --size)")
        yield out
