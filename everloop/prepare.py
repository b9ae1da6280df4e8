"""`everloop prepare`: a video, a frame folder or an episode tree -> a dataset folder in the
layout data.py reads (frames.npy + meta.json), streamed to disk one frame at a time.

A recorded game (an episode tree with actions.npy per episode) keeps its actions aligned
with its frames through everything prepare does: actions.npy holds, at each written frame,
the action that leads it to the next written frame, and ACTION_NONE wherever the next
frame is not its successor in the recording (an episode's end, a stall's cut)."""

from __future__ import annotations

import itertools
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
from tqdm import tqdm

from everloop.data import (
    ACTION_NONE,
    ACTIONS_FILE,
    FRAMES_FILE,
    META_FILE,
    FrameStore,
    Geometry,
)
from everloop.errors import EverloopError
from everloop.outputs import claim, swap_into_place
from everloop.sources import open_source


class _NpyWriter:
    """Streams equal-shaped uint8 frames into an .npy file, never holding more than one.

    The frame count of a video is unknown until it is decoded, so a fixed-size header
    is reserved first and rewritten with the real count at the end; the data then starts
    at byte 128 (64-aligned, as numpy itself writes), so ``np.load(mmap_mode="r")`` works.
    """

    HEADER_BYTES = 128

    def __init__(self, path: Path, source: Path):
        self.source = source  # named in errors
        self.file = open(path, "wb")  # noqa: SIM115 (open across writes; closed in finish/abort)
        self.file.write(b"\0" * self.HEADER_BYTES)
        self.shape: tuple[int, ...] | None = None
        self.count = 0

    def write(self, frame: np.ndarray) -> None:
        if self.shape is None:
            self.shape = frame.shape
        elif frame.shape != self.shape:
            (h, w), (h0, w0) = frame.shape[:2], self.shape[:2]
            raise EverloopError(f"{self.source}: frame {self.count} is {w}x{h} (WxH) but earlier "
                                f"frames are {w0}x{h0}; pass --size to resize them all")
        self.file.write(np.ascontiguousarray(frame, dtype=np.uint8).data)
        self.count += 1

    def close(self) -> None:
        """Write the real header (shape ``[count, *frame shape]``) and close."""
        shape = (self.count, *(self.shape or (0, 0, 3)))
        text = repr({"descr": "|u1", "fortran_order": False, "shape": shape}).encode("latin1")
        pad = self.HEADER_BYTES - 10 - len(text) - 1
        self.file.seek(0)
        header_len = (self.HEADER_BYTES - 10).to_bytes(2, "little")
        self.file.write(np.lib.format.magic(1, 0) + header_len + text + b" " * pad + b"\n")
        self.file.close()


STALL_SECONDS = 1.0
"""The default --max-still of a video or a frame folder. Nothing filmed or simulated stays bit
for bit the same for a second, but a recorder that stops delivering pictures repeats its
last one: the shipped lava excerpt freezes for 25 s, and the demo's RNN, trained through
it, learnt that the lamp can stop for good (8 of 8 dream streams still after 500 steps,
docs/fidelity.md). An episode tree's repeats are its game's own (Ms. Pac-Man's pause before
each life): kept unless --max-still is given."""


def prepare(source, out, size=None, crop=None, progress=True, force=False, fps=None,
            max_still: float | None = None) -> dict:
    """Turn a video, a frame folder or an episode tree into the dataset folder ``out``.

    Frames stream to disk one at a time, so memory stays flat however long the video.
    Everything is written to a hidden temp folder beside ``out`` and renamed into place
    only on success; on any error the temp folder is removed and ``out`` is untouched.
    ``fps`` overrides the source's rate (frame folders default to 30).  ``max_still``
    (seconds) treats a longer run of bit-identical frames as a stall of the recorder, not the
    process: the repeats past that many seconds are dropped and the episode is cut there
    (see ``_Stalls``); 0 keeps every frame; None is STALL_SECONDS for a video or a frame
    folder and 0 for an episode tree.  Returns the meta.
    """
    source, out = Path(source), Path(out)
    geometry = Geometry(size, crop)
    if fps is not None and not (isinstance(fps, (int, float)) and math.isfinite(fps) and 0 < fps <= 1000):
        raise EverloopError(f"--fps must be a number in (0, 1000], got {fps!r}")
    if max_still is not None and not (isinstance(max_still, (int, float)) and math.isfinite(max_still)
                                      and max_still >= 0):
        raise EverloopError(f"--max-still must be a number of seconds >= 0, got {max_still!r}")
    # An empty or absent `out` is fine; a dataset needs --force; anything else never (a typo'd
    # path), nor the SOURCE being read (outputs.claim).
    claim(out, "dataset", force=force, inputs={"SOURCE": source})
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        src = open_source(source, geometry, fps)
        writer = _NpyWriter(tmp / FRAMES_FILE, source)
        if max_still is None:
            max_still = STALL_SECONDS if src.episodes is None else 0
        stalls = _Stalls(max(1, round(max_still * src.fps)) if max_still > 0 else None)
        try:
            with tqdm(total=src.total, unit="frame", desc=f"prepare {source.name}",
                      disable=not progress, dynamic_ncols=True) as bar:
                for frame in src.frames:
                    if stalls.keep(frame, writer.count):
                        writer.write(frame)
                    bar.update()
        finally:
            writer.close()
        if writer.count == 0:
            raise EverloopError(f"{source}: no frames found")
        n, h, w, _ = (writer.count, *writer.shape)
        episodes, splits = stalls.episodes(src.episodes or [[0, len(stalls.out_at) - 1]], src.splits)
        meta = {"frames": n, "height": h, "width": w, "fps": float(src.fps),
                "episodes": episodes, "source": str(source)}
        if stalls.dropped:
            meta["stalls"] = {"max_still_frames": stalls.limit, "dropped_frames": stalls.dropped}
        if splits is not None:
            meta["splits"] = splits
        if src.actions is not None:
            np.save(tmp / ACTIONS_FILE, _aligned_actions(src.actions, stalls.kept, episodes))
            meta["actions"] = _actions_meta(src.actions, src.recorded)
        if src.recorded is not None:
            meta["recorded"] = _recorded_meta(src.recorded, geometry)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=1) + "\n")
        FrameStore(tmp)  # read back what we wrote: a broken dataset never replaces a good one
        swap_into_place(tmp, out)  # an old dataset is moved aside first, deleted after
        return meta
    except OSError as e:  # disk full, permissions, ...: str(e) names the file at fault
        raise EverloopError(f"cannot prepare {out}: {e}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _aligned_actions(source_actions: list[np.ndarray], kept: list[int], episodes) -> np.ndarray:
    """uint8 [written frames]: the action leading each written frame to the next one.

    `source_actions` per source episode ([frames - 1] each), `kept[k]` the source index of
    written frame k, `episodes` the written [start, end) ranges. Written frame k takes its
    source frame's action only where written frame k + 1, in the same episode, is that
    source frame's successor; everywhere else ACTION_NONE."""
    per_source = np.concatenate([np.append(a, ACTION_NONE) for a in source_actions]).astype(np.uint8)
    kept_idx = np.asarray(kept, dtype=np.int64)
    out = per_source[kept_idx]
    follows = np.zeros(len(kept_idx), bool)
    follows[:-1] = kept_idx[1:] == kept_idx[:-1] + 1
    follows[[e - 1 for _, e in episodes]] = False  # nothing follows an episode's last frame
    out[~follows] = ACTION_NONE
    return out


def _actions_meta(source_actions: list[np.ndarray], recorded: dict | None) -> dict:
    """meta.json "actions": how many there are and, from the recorder, what each means."""
    meanings = (recorded or {}).get("action_meanings")
    top = max((int(a.max()) for a in source_actions if len(a)), default=0) + 1
    if isinstance(meanings, list) and len(meanings) >= top:
        return {"count": len(meanings), "meanings": [str(m) for m in meanings]}
    return {"count": top}


def _recorded_meta(recorded: dict, geometry: Geometry) -> dict:
    """meta.json "recorded": the game, and where the dataset's pixels sit in the native
    screen (the crop box prepare took, in native pixels), so that positions measured in
    dataset pixels can be given in native ones (everloop.control)."""
    keys = ("game", "env_id", "frameskip", "repeat_action_probability", "policy", "seed")
    out = {k: recorded[k] for k in keys if k in recorded}
    h, w = recorded.get("height"), recorded.get("width")
    if isinstance(h, int) and isinstance(w, int):
        box = geometry.box(h, w) or (0, 0, w, h)
        out.update(native_height=h, native_width=w, crop=list(box))
    return out


class _Stalls:
    """Drops the frames of a recorder stall while `prepare` streams, and re-cuts episodes.

    A stall (a renderer or camera that stops delivering new pictures, as lava64's source
    does for 27 s once) is not the process: a model trained on it learns that the scene can
    stop for good, and a dream that wanders into that state stays there.  With `limit` set,
    a run of identical frames keeps its first `limit` frames; the rest are dropped and the
    next new frame starts a new episode (time jumps there).  limit None keeps everything."""

    def __init__(self, limit: int | None):
        self.limit, self.prev, self.run, self.dropped, self.stalled = limit, None, 0, 0, False
        self.out_at = [0]  # out_at[i]: frames written before source frame i
        self.kept: list[int] = []  # kept[k]: the source index of written frame k
        self.cuts: list[int] = []  # output indices where a stall cut the episode

    def keep(self, frame: np.ndarray, written: int) -> bool:
        """Whether to write `frame`, the next source frame; `written` frames so far."""
        same = self.prev is not None and self.prev.shape == frame.shape and np.array_equal(self.prev, frame)
        self.run = self.run + 1 if same else 0
        self.prev = frame.copy()  # a source may reuse its buffer
        drop = self.limit is not None and self.run >= self.limit
        if drop:
            self.dropped += 1
        elif self.stalled:  # the first new picture after a stall begins an episode
            self.cuts.append(written)
        self.stalled = drop
        self.out_at.append(written + (not drop))
        if not drop:
            self.kept.append(len(self.out_at) - 2)
        return not drop

    def episodes(self, source_episodes, source_splits):
        """Source episodes (in source frame indices) -> output episodes cut at the stalls,
        and the source's splits re-indexed to them."""
        out, new_index = [], []
        for s, e in source_episodes:
            a, b = self.out_at[s], self.out_at[e]
            edges = [a, *[c for c in self.cuts if a < c < b], b]
            new_index.append([])
            for lo, hi in itertools.pairwise(edges):
                if hi > lo:
                    new_index[-1].append(len(out))
                    out.append([lo, hi])
        if source_splits is None:
            return out, None
        return out, {k: [j for i in v for j in new_index[i]] for k, v in source_splits.items()}
