"""Bench-only "forever" statistics of frame sequences (uint8 [T, H, W, 3], values 0-255):
does a stream revisit a frame it showed recently (a loop), freeze, or do streams from
different seeds show the same scene (collapse). bench/quality.py and bench/ablation.py
report them; `everloop eval` has its own calibrated detectors (everloop/drift.py)."""
from __future__ import annotations

import numpy as np


def _f(frames: np.ndarray) -> np.ndarray:
    return frames.astype(np.float32)


def nearest_revisit(frames: np.ndarray, window: int = 300, min_lag: int = 2, every: int = 1) -> dict:
    """For frames t (every `every`-th), the smallest mean |x_t - x_s| over the `window` earlier
    frames s at least `min_lag` back, and where it happens.

    A stream in a short loop has a revisit distance far below its lag-1 motion; the lava
    recording's own value is the reference."""
    x = _f(frames).reshape(len(frames), -1)
    best, where = np.inf, None
    for t in range(min_lag, len(x), every):
        lo = max(0, t - window)
        if t - min_lag < lo:
            continue
        d = np.abs(x[lo:t - min_lag + 1] - x[t]).mean(1)
        i = int(d.argmin())
        if d[i] < best:
            best, where = float(d[i]), (t, lo + i)
    return {"min_distance": best, "at": where}


def stream_spread(frames: np.ndarray) -> float:
    """Mean pairwise |a - b| between streams at one moment: uint8 [S, H, W, 3]."""
    x = _f(frames).reshape(len(frames), -1)
    d = [np.abs(x[i] - x[j]).mean() for i in range(len(x)) for j in range(i + 1, len(x))]
    return float(np.mean(d))


def identical_runs(frames: np.ndarray) -> int:
    """Length of the longest run of pixel-identical consecutive frames (a frozen stream)."""
    same = np.all(frames[1:] == frames[:-1], axis=(1, 2, 3))
    best = run = 0
    for s in same:
        run = run + 1 if s else 0
        best = max(best, run)
    return best
