"""The real footage `everloop eval` compares with: windows of DATA split into halves A and B,
the real-vs-real band, and the detector thresholds calibrated on it (evaluate.py's
docstring says what each means)."""
from __future__ import annotations

import numpy as np
from tqdm import tqdm

from . import drift
from .errors import EverloopError

WINDOW, DRAWS, LOOP_SPAN = 64, 16, 300


def _longest(flags_per_episode) -> int:
    best = 0
    for flags in flags_per_episode:
        r = drift.Runs(1)
        r.feed(0, flags)
        best = max(best, r.longest)
    return best


class Reference:
    """Real windows (halves A and B, at most `max_windows` each) and detector thresholds.

    `episodes`: uint8 arrays [n, H, W, 3] (memory-mapped is fine), already at the stride."""

    def __init__(self, episodes, steps_per_second: float, window: int = WINDOW, seed: int = 0,
                 max_windows: int = 32, progress: bool = False):
        self.window, self.shape = window, tuple(episodes[0].shape[1:])
        self.second = max(2, round(steps_per_second))
        halves = window_halves(episodes, window, max_windows)
        with tqdm(total=sum(map(len, halves)), desc="reference", unit="window", disable=not progress,
                  dynamic_ncols=True) as bar:
            self.A, self.B = ([self._summary(np.asarray(episodes[i][s:s + window]), bar) for i, s in h]
                              for h in halves)
        self.metrics = [m for m in drift.METRICS if m in self.A[0]]
        self._calibrate(episodes, seed)

    @staticmethod
    def _summary(frames, bar):
        s = drift.summarise(frames)
        bar.update()
        return s

    def _calibrate(self, episodes, seed: int) -> None:
        mads, ratios, sats = [], [], []
        for ep in episodes:
            track, parts = drift.Track(LOOP_SPAN), []
            for i in range(0, len(ep), 512):
                chunk = np.asarray(ep[i:i + 512])
                parts.append(track.feed(i, drift.downsample(chunk)))
                sats.append(drift.saturation(chunk))
            mad, rms, rev = (np.concatenate(p) for p in zip(*parts))
            mads.append(mad)
            with np.errstate(divide="ignore", invalid="ignore"):
                ratios.append(rev / rms)
        every = np.concatenate(mads)
        self.frozen_thr = max(float(np.nanpercentile(every, 1)), 0.01)
        self.flicker_thr = max(float(np.nanpercentile(every, 99)), self.frozen_thr + 1e-3)
        moving = [r[m > self.frozen_thr] for r, m in zip(ratios, mads)]
        r_all = np.concatenate(moving)
        r_all = r_all[np.isfinite(r_all)]
        self.loop_thr = min(0.5, 0.5 * float(np.percentile(r_all, 1))) if len(r_all) else 0.5
        self.real_longest = {
            "frozen": _longest(m <= self.frozen_thr for m in mads),
            "flicker": _longest(m >= self.flicker_thr for m in mads),
            "loop": _longest(self._loop_flags(m, r) for m, r in zip(mads, ratios))}
        # Frozen: more than a second, whatever the footage does (lava64 holds still for 133
        # steps once, at stride 6: a camera/encoder artifact, while a stream that stops is
        # the failure).  Flicker and loop: also more than twice the footage's own longest.
        self.min_run = {"frozen": self.second + 1,
                        "flicker": max(self.second, 2 * self.real_longest["flicker"]) + 1,
                        "loop": max(2 * self.second, 2 * self.real_longest["loop"]) + 1}
        self.frozen_fraction = float(np.mean(every[np.isfinite(every)] <= self.frozen_thr))
        sat = np.concatenate(sats)
        self.saturation_p99 = float(np.percentile(sat, 99))
        # collapse: how close two random real frames are (1st percentile of 2,000 pairs)
        rng = np.random.default_rng(seed)
        offsets = np.cumsum([0] + [len(e) for e in episodes])
        pick = rng.integers(0, offsets[-1], size=(2000, 2))

        def frame(g):
            e = int(np.searchsorted(offsets, g, "right") - 1)
            return np.asarray(episodes[e][g - offsets[e]])
        a = drift.downsample(np.stack([frame(g) for g in pick[:, 0]]))
        b = drift.downsample(np.stack([frame(g) for g in pick[:, 1]]))
        self.spread_thr = float(np.percentile(np.sqrt(((a - b) ** 2).mean(1)), 1))

    def _loop_flags(self, mad, ratio):
        with np.errstate(invalid="ignore"):
            return (ratio < self.loop_thr) & (mad > self.frozen_thr)

    def band(self, k: int, seed: int) -> dict[str, tuple[float, float]]:
        """{metric: (mean, std)} of d(k random B windows, A) over DRAWS seeded draws."""
        return band(self.A, self.B, self.metrics, k, seed)


def window_halves(episodes, window: int, max_windows: int = 32) -> list[list[tuple[int, int]]]:
    """(episode, start) of every whole window of `window` frames, in order, split into the
    earlier half A and the later half B, each thinned evenly to at most `max_windows`."""
    starts = [(i, s) for i, ep in enumerate(episodes) for s in range(0, len(ep) - window + 1, window)]
    if len(starts) < 2:
        raise EverloopError(f"the real data has {sum(len(e) for e in episodes)} frames at this stride; "
                            f"need two windows of {window} consecutive frames (use fewer --frames "
                            f"or a longer DATA)")
    half = (len(starts) + 1) // 2
    halves = [starts[:half], starts[half:]]
    return [h if len(h) <= max_windows else
            [h[i] for i in np.linspace(0, len(h) - 1, max_windows).round().astype(int)] for h in halves]


def band(a: list[dict], b: list[dict], metrics, k: int, seed: int) -> dict[str, tuple[float, float]]:
    """{metric: (mean, std)} of d(k random windows of summaries `b`, `a`) over DRAWS seeded draws."""
    rng = np.random.default_rng(seed)
    d = {m: [] for m in metrics}
    for _ in range(DRAWS):
        sub = [b[i] for i in rng.choice(len(b), size=k, replace=len(b) < k)]
        for m in metrics:
            d[m].append(drift.set_distance(m, a, sub))
    return {m: (float(np.mean(v)), float(np.std(v))) for m, v in d.items()}
