"""The data contract: how frames live on disk, and the one place where they change form.

A dataset folder DATA (written by prepare.py) holds two files:

* ``frames.npy`` -- every frame, uint8 ``[N, H, W, 3]`` RGB, opened memory-mapped so a
  dataset larger than RAM still trains;
* ``meta.json`` -- ``frames``, ``height``, ``width``, ``fps``, ``source``, ``episodes``
  (``[start, end)`` pairs that cover ``0..N`` in order; a clip never crosses one) and,
  for episode trees, ``splits`` (``{"train": [episode indices], "test": [...]}``);
* with actions (a recorded game), also ``actions.npy`` -- uint8 ``[N]``: ``actions[i]``
  leads frame ``i`` to frame ``i + 1``; the last frame of every episode, which nothing
  follows, holds ``ACTION_NONE``.  meta.json then says so: ``"actions": {"count": n,
  "meanings": [...]}``, and ``"recorded"`` keeps what the recorder wrote about the game
  (its name, native frame size and the crop prepare took from it).

Models see float32 ``[..., C, H, W]`` in [0, 1]; files and screens see uint8
``[..., H, W, C]``.  ``to_float`` and ``to_uint8`` are the only crossings between the two;
actions reach a model as int64 ``[B, T - 1, stride]`` beside the frames (``ActionClips``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from everloop.errors import EverloopError

FRAMES_FILE = "frames.npy"
META_FILE = "meta.json"
ACTIONS_FILE = "actions.npy"
ACTION_NONE = 255  # actions.npy at an episode's last frame: no action leads anywhere from it
MAX_SIDE = 4096  # --size and meta.json height/width: a 4096x4096 frame is already 50 MB


# --------------------------------------------------------------------------- conversions


def to_float(frames_uint8: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 ``[..., H, W, C]`` -> float32 ``[..., C, H, W]`` in [0, 1]."""
    if isinstance(frames_uint8, np.ndarray):
        if not frames_uint8.flags.writeable:  # memory-mapped data: torch refuses to alias it
            frames_uint8 = np.array(frames_uint8)
        frames_uint8 = torch.from_numpy(frames_uint8)
    if frames_uint8.dtype != torch.uint8:
        raise TypeError(f"to_float expects uint8 frames, got {frames_uint8.dtype}")
    return frames_uint8.to(torch.float32).div_(255.0).movedim(-1, -3)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float ``[..., C, H, W]`` (any float dtype, any device; clamped to [0, 1], rounded) ->
    uint8 ``[..., H, W, C]`` numpy on the CPU, C-contiguous (a GPU tensor is converted
    there and moves as uint8, a quarter of the bytes)."""
    x = x.detach().to(torch.float32).clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)
    return x.movedim(-3, -1).contiguous().cpu().numpy()


def resize_area(rgb_uint8: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Area-average an RGB uint8 ``[H, W, 3]`` image to ``hw = (h, w)``.

    This is swscale's ``area`` filter through PyAV, i.e. exactly what
    ``ffmpeg -vf scale=W:H -sws_flags area`` does (the reference pipeline's recipe), and
    what the video path does when it scales decoded frames directly, so a video and the
    same video exported as images give the same dataset.  We deliberately do not switch to
    cv2 when it happens to be installed: a dataset must not depend on optional packages.
    Note swscale's "area" is an exact block mean only at power-of-two factors; otherwise
    it is a close approximation (176 -> 64 lava frames: mean 0.07, max 3 levels from
    cv2's exact INTER_AREA).
    """
    import av  # a core dependency; imported here so `everloop.data` stays light to import

    h, w = hw
    if rgb_uint8.shape[:2] == (h, w):
        return rgb_uint8
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb_uint8), format="rgb24")
    return frame.reformat(w, h, format="rgb24", interpolation="AREA").to_ndarray()


class Geometry:
    """What ``--crop`` and ``--size`` do to each source frame: crop, then area-resize.

    ``crop`` is ``(x, y, w, h)`` in source pixels.  ``size`` is an int (square output) or
    ``(h, w)``.  Without ``--crop``, the frame is centre-cropped to the output's aspect
    ratio first, so a size never distorts the picture; with ``--crop``, the crop box is
    scaled to ``size`` as given.  Flags are checked here, before any file is touched.
    """

    def __init__(self, size=None, crop=None):
        self.size = _parse_size(size)
        self.crop = _parse_crop(crop)

    def box(self, h: int, w: int) -> tuple[int, int, int, int] | None:
        """Crop box ``(x, y, w, h)`` for an ``h x w`` source frame; None when nothing to cut."""
        if self.crop is not None:
            x, y, cw, ch = self.crop
            if x + cw > w or y + ch > h:
                raise EverloopError(
                    f"--crop {x},{y},{cw},{ch} reaches outside the {w}x{h} (WxH) frame")
            return None if (x, y, cw, ch) == (0, 0, w, h) else self.crop
        if self.size is None:
            return None
        th, tw = self.size
        cw, ch = min(w, round(h * tw / th)), min(h, round(w * th / tw))
        return None if (cw, ch) == (w, h) else ((w - cw) // 2, (h - ch) // 2, cw, ch)

    def apply(self, rgb: np.ndarray) -> np.ndarray:
        """Crop and resize one RGB uint8 ``[H, W, 3]`` frame."""
        box = self.box(*rgb.shape[:2])
        if box is not None:
            x, y, cw, ch = box
            rgb = rgb[y:y + ch, x:x + cw]
        return resize_area(rgb, self.size) if self.size is not None else rgb


def _parse_size(size) -> tuple[int, int] | None:
    if size is None:
        return None
    hw = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    if len(hw) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                               and 1 <= v <= MAX_SIDE for v in hw):
        raise EverloopError(f"--size must be 1 to {MAX_SIDE} (an int or (height, width)), got {size!r}")
    return int(hw[0]), int(hw[1])


def _parse_crop(crop) -> tuple[int, int, int, int] | None:
    if crop is None:
        return None
    box = tuple(crop)
    if (len(box) != 4 or not all(isinstance(v, (int, np.integer)) for v in box)
            or box[0] < 0 or box[1] < 0 or box[2] < 1 or box[3] < 1):
        raise EverloopError(
            f"--crop must be x,y,w,h with x,y >= 0 and w,h >= 1 (source pixels), got {crop!r}")
    return tuple(int(v) for v in box)


# --------------------------------------------------------------------------- reading


def window_starts(ranges, span: int, n: int, rng: np.random.Generator) -> np.ndarray | None:
    """n start indices of `span` consecutive frames, each window inside one [start, end)
    range, every valid start equally likely; None when no range holds `span` frames."""
    starts = np.array([s for s, _ in ranges], dtype=np.int64)
    counts = np.array([max(0, e - s - span + 1) for s, e in ranges], dtype=np.int64)
    if counts.sum() == 0:
        return None
    flat = rng.integers(0, counts.sum(), size=n)
    ends = np.cumsum(counts)
    which = np.searchsorted(ends, flat, side="right")
    return starts[which] + flat - (ends[which] - counts[which])


class FrameStore:
    """A prepared dataset folder, frames memory-mapped (nothing is read until sampled)."""

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.is_dir():
            raise EverloopError(f"{self.path}: no such dataset folder (run `everloop prepare`)")
        self.meta = _read_meta(self.path / META_FILE)
        frames_path = self.path / FRAMES_FILE
        try:
            self.frames = np.load(frames_path, mmap_mode="r")
        except (OSError, ValueError) as e:
            raise EverloopError(f"{frames_path}: unreadable frames file ({e})") from None
        expect = (self.meta["frames"], self.meta["height"], self.meta["width"], 3)
        if self.frames.dtype != np.uint8 or self.frames.shape != expect:
            raise EverloopError(
                f"{frames_path}: holds {self.frames.dtype} {list(self.frames.shape)}, "
                f"but {META_FILE} says uint8 {list(expect)}")
        self.episodes = [tuple(e) for e in self.meta["episodes"]]
        self.height, self.width = self.meta["height"], self.meta["width"]
        self.fps = float(self.meta["fps"])
        self.actions = _read_actions(self.path, self.meta) if "actions" in self.meta else None
        """uint8 [N] or None: actions[i] leads frame i -> i + 1 (ACTION_NONE at an episode's end)."""
        self.n_actions = int(self.meta["actions"]["count"]) if self.actions is not None else 0

    def __len__(self) -> int:
        return len(self.frames)

    def sample_clips(self, batch: int, length: int, stride: int, rng: np.random.Generator,
                     episodes=None, ranges=None) -> np.ndarray:
        """``batch`` random clips, uint8 ``[B, T, H, W, 3]``: ``length`` frames ``stride``
        apart, each wholly inside one ``[start, end)`` range.

        Every valid start position is equally likely, so longer episodes are picked more
        often.  ``episodes`` restricts to those episode indices; ``ranges`` instead gives
        the ``[start, end)`` ranges themselves (e.g. from ``split()``).
        """
        first = self._starts(batch, length, stride, rng, episodes, ranges)
        return np.asarray(self.frames[first[:, None] + np.arange(length) * stride])

    def sample_action_clips(self, batch: int, length: int, stride: int, rng: np.random.Generator,
                            episodes=None, ranges=None) -> ActionClips:
        """Clips as ``sample_clips`` draws them (the same starts for the same rng) with the
        actions between their frames: ``ActionClips`` of float frames ``[B, T, C, H, W]`` and
        int64 actions ``[B, T - 1, stride]``, ``actions[:, t]`` the ``stride`` actions that
        lead frame ``t`` of the clip to frame ``t + 1``."""
        if self.actions is None:
            raise EverloopError(f"{self.path}: this dataset has no actions (record a game with "
                                "`everloop record atari` and prepare it)")
        first = self._starts(batch, length, stride, rng, episodes, ranges)
        return self.action_clips_at(first, length, stride)

    def action_clips_at(self, first: np.ndarray, length: int, stride: int) -> ActionClips:
        """The clips of ``length`` frames ``stride`` apart that begin at the indices ``first``
        (each inside one episode), with their actions, as ``sample_action_clips``."""
        idx = np.asarray(first)[:, None] + np.arange(length) * stride
        steps = idx[:, :-1, None] + np.arange(stride)  # [B, T - 1, stride]: every frame between
        actions = np.asarray(self.actions[steps.reshape(-1)]).reshape(steps.shape)
        if (actions == ACTION_NONE).any():
            raise EverloopError(f"{self.path}: a clip crosses the end of an episode")
        return ActionClips(to_float(np.asarray(self.frames[idx])), torch.from_numpy(actions.astype(np.int64)))

    def _starts(self, batch, length, stride, rng, episodes, ranges) -> np.ndarray:
        if length < 1 or stride < 1:
            raise EverloopError(f"clip length and stride must be >= 1, got {length}, {stride}")
        if ranges is None:
            ranges = self.episodes if episodes is None else [self.episodes[i] for i in episodes]
        span = (length - 1) * stride + 1
        first = window_starts(ranges, span, batch, rng)
        if first is None:
            longest = max((e - s for s, e in ranges), default=0)
            raise EverloopError(
                f"{self.path}: clips of {length} frames at stride {stride} need {span} "
                f"consecutive frames in one episode, but the longest has {longest}")
        return first

    def split(self, holdout_fraction: float = 0.1):
        """``(train_ranges, test_ranges)``, lists of ``[start, end)``.

        An episode tree's recorded ``splits`` win.  Otherwise the last
        ``holdout_fraction`` of every episode becomes a test range and the rest a train
        range -- for a single video, simply its tail.  Empty ranges are dropped.
        """
        splits = self.meta.get("splits")
        if splits:
            return ([list(self.episodes[i]) for i in splits.get("train", [])],
                    [list(self.episodes[i]) for i in splits.get("test", [])])
        if not 0.0 <= holdout_fraction < 1.0:
            raise EverloopError(f"holdout fraction must be in [0, 1), got {holdout_fraction}")
        train, test = [], []
        for s, e in self.episodes:
            cut = e - round((e - s) * holdout_fraction)
            train += [[s, cut]] if cut > s else []
            test += [[cut, e]] if e > cut else []
        return train, test


def seed_clips(store: FrameStore, length: int, stride: int, clips: int, seed: int) -> torch.Tensor:
    """float [clips, length, C, H, W] from the held-out ranges (reproducible under seed): the
    real clips a next-frame family continues, in sample sheets and in `everloop eval`."""
    test = _held_out(store, length, stride)
    return to_float(store.sample_clips(clips, length, stride, np.random.default_rng(seed), ranges=test))


def spread_clips(store: FrameStore, length: int, stride: int, clips: int, seed: int) -> torch.Tensor:
    """float [clips, length, C, H, W] starting at moments spread evenly over every episode
    (the same spacing, shifted by a seed-drawn offset): the real clips that the streams of
    `everloop eval` continue. Each stream starts as far from the others as the footage
    allows; random starts in a 2-minute clip's 12-second held-out tail began 8 streams
    within seconds of each other, twins by construction."""
    span = (length - 1) * stride + 1
    starts = np.concatenate([np.arange(s, e - span + 1) for s, e in store.episodes if e - s >= span]
                            or [np.zeros(0, np.int64)])
    if not len(starts):
        raise EverloopError(f"{store.path}: no episode holds {span} consecutive frames for {length} frames "
                            f"at stride {stride}")
    gap = len(starts) / clips
    pick = (np.random.default_rng(seed).uniform(0, gap) + np.arange(clips) * gap).astype(np.int64)
    first = starts[np.minimum(pick, len(starts) - 1)]
    return to_float(np.asarray(store.frames[first[:, None] + np.arange(length) * stride]))


def seed_action_clips(store: FrameStore, length: int, stride: int, clips: int, seed: int) -> ActionClips:
    """seed_clips with the actions between the frames: the same clips for the same seed."""
    test = _held_out(store, length, stride)
    return store.sample_action_clips(clips, length, stride, np.random.default_rng(seed), ranges=test)


def _held_out(store: FrameStore, length: int, stride: int) -> list:
    _, test = store.split()
    span = (length - 1) * stride + 1
    if not test or max(e - s for s, e in test) < span:
        raise EverloopError(f"{store.path}: the held-out split has no {span} consecutive frames "
                            f"for {length} frames at stride {stride} (use fewer --pred-steps)")
    return test


@dataclass
class ActionClips:
    """A batch of clips with the actions between their frames (what an action-conditioned
    family trains on): ``frames`` float ``[B, T, C, H, W]`` in [0, 1], ``actions`` int64
    ``[B, T - 1, stride]``, ``actions[:, t]`` leading frame ``t`` to ``t + 1``."""
    frames: torch.Tensor
    actions: torch.Tensor

    def to(self, device, non_blocking: bool = False) -> ActionClips:
        """Both on `device` (the trainer moves every batch it draws)."""
        return ActionClips(self.frames.to(device, non_blocking=non_blocking),
                           self.actions.to(device, non_blocking=non_blocking))

    def __getitem__(self, index) -> ActionClips:
        return ActionClips(self.frames[index], self.actions[index])

    def __len__(self) -> int:
        return len(self.frames)


def moving_crop(clip: np.ndarray, size: int, threshold: float, accept_any: float,
                rng: np.random.Generator) -> np.ndarray:
    """One size x size crop of a uint8 clip [T, H, W, 3], preferring crops that move (the
    multiscale paper's TF port): with chance `accept_any` anywhere, else one drawn uniformly
    among the crops whose summed squared difference of consecutive frames, in the port's
    [-1, 1] units, exceeds `threshold` (anywhere when none does). Instead of the port's up to
    100 random tries, the crops that pass are found at once with an integral image."""
    h, w = clip.shape[1:3]
    if rng.random() >= accept_any:
        f = clip.astype(np.float32) / 127.5 - 1
        energy = ((f[1:] - f[:-1]) ** 2).sum((0, 3))
        ii = np.pad(energy.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
        sums = ii[size:, size:] - ii[:-size, size:] - ii[size:, :-size] + ii[:-size, :-size]
        ys, xs = np.nonzero(sums > threshold)
        if len(ys):
            i = rng.integers(len(ys))
            return clip[:, ys[i]:ys[i] + size, xs[i]:xs[i] + size]
    y, x = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
    return clip[:, y:y + size, x:x + size]


def _read_actions(folder: Path, meta: dict) -> np.ndarray:
    """actions.npy of a dataset whose meta.json says it has actions, checked against it."""
    path, info = folder / ACTIONS_FILE, meta["actions"]
    count = info.get("count") if isinstance(info, dict) else None
    if not (isinstance(count, int) and 1 <= count < ACTION_NONE):
        raise EverloopError(f"{folder / META_FILE}: 'actions' must say its 'count' (1 to {ACTION_NONE - 1})")
    try:
        actions = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as e:
        raise EverloopError(f"{path}: unreadable actions file ({e})") from None
    if actions.dtype != np.uint8 or actions.shape != (meta["frames"],):
        raise EverloopError(f"{path}: holds {actions.dtype} {list(actions.shape)}, but {META_FILE} "
                            f"says uint8 [{meta['frames']}]")
    last = np.array([e - 1 for _, e in meta["episodes"]])
    if (actions[last] != ACTION_NONE).any():
        raise EverloopError(f"{path}: an episode's last frame must hold {ACTION_NONE} (nothing follows it)")
    inner = np.asarray(actions).copy()
    inner[last] = 0
    if (inner >= count).any():
        raise EverloopError(f"{path}: an action inside an episode is not 0 to {count - 1}")
    return actions


def _read_meta(path: Path) -> dict:
    """Parse and check meta.json; every inconsistency is one line naming the file."""
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise EverloopError(f"{path}: unreadable dataset metadata ({e})") from None
    if not isinstance(meta, dict):
        raise EverloopError(f"{path}: not a JSON object")
    missing = [k for k in ("frames", "height", "width", "fps", "episodes") if k not in meta]
    if missing:
        raise EverloopError(f"{path}: missing keys {missing}")
    for key, top in (("frames", None), ("height", MAX_SIDE), ("width", MAX_SIDE)):
        v = meta[key]
        if not (isinstance(v, int) and not isinstance(v, bool) and v >= 1 and (top is None or v <= top)):
            raise EverloopError(f"{path}: {key!r} is {v!r}; it must be an integer from 1"
                                + (f" to {top}" if top else ""))
    fps = meta["fps"]
    if not (isinstance(fps, (int, float)) and not isinstance(fps, bool) and math.isfinite(fps) and fps > 0):
        raise EverloopError(f"{path}: 'fps' is {fps!r}; it must be a number > 0")
    if not isinstance(meta["episodes"], list):
        raise EverloopError(f"{path}: 'episodes' must be a list of [start, end) pairs")
    at = 0
    for pair in meta["episodes"]:
        if not (isinstance(pair, list) and len(pair) == 2 and pair[0] == at and pair[1] > at):
            raise EverloopError(f"{path}: episodes must be [start, end) pairs covering the "
                                f"frames in order; {pair!r} does not follow frame {at}")
        at = pair[1]
    if at != meta["frames"]:
        raise EverloopError(f"{path}: episodes cover {at} frames, but frames is {meta['frames']}")
    n_eps = len(meta["episodes"])
    splits = meta.get("splits") or {}
    if not isinstance(splits, dict) or not all(isinstance(v, list) for v in splits.values()):
        raise EverloopError(f"{path}: 'splits' must map split names to lists of episode indices")
    for name, idx in splits.items():
        if not all(isinstance(i, int) and 0 <= i < n_eps for i in idx):
            raise EverloopError(f"{path}: split {name!r} names episodes outside 0..{n_eps - 1}")
    return meta


def frequent_colours(store, ranges, k: int, frames: int = 2000) -> tuple[np.ndarray, float]:
    """The k most frequent colours (float [k, 3] in [0, 1]; fewer are padded with repeats of
    the most frequent) of `frames` frames spread over `ranges`, and the share of those
    frames' pixels they cover."""
    idx = np.concatenate([np.arange(s, e) for s, e in ranges] or [np.zeros(0, np.int64)])
    idx = idx[np.linspace(0, len(idx) - 1, min(frames, len(idx))).astype(np.int64)]
    px = np.asarray(store.frames[idx]).reshape(-1, 3).astype(np.int64)
    codes, counts = np.unique((px[:, 0] << 16) | (px[:, 1] << 8) | px[:, 2], return_counts=True)
    order = np.argsort(-counts, kind="stable")[:k]  # ties: the lower code first, deterministic
    top = codes[order]
    top = np.concatenate([top, np.full(k - len(top), top[0])])
    colours = (np.stack([top >> 16, (top >> 8) & 255, top & 255], 1) / 255.0).astype(np.float32)
    return colours, float(counts[order].sum() / max(counts.sum(), 1))
