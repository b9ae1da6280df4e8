"""Is the eval's real-vs-real band what fresh real footage scores?

    .venv/bin/python bench/band_fresh.py DATA [--stride 6] [--draws 64] [REPORT_DIR ...]

`everloop eval`'s band is the mean of d(k windows drawn from B, A) with B the later half's
fixed grid of non-overlapping windows (22 on the 10-minute lamp at stride 6, 4-5 on a
2-minute clip) and k = 8 streams.  A group of 8 drawn from 22 fixed windows is more alike
the whole of B than 8 windows taken afresh (a finite population: the group holds a third
of it), so its distance to A is smaller than what a new real sample of the same half
scores.  This prints, per metric, that band (`grid`) beside `fresh`: the mean of d(8
non-overlapping windows at random starts in B's time range, A) over --draws draws, A the
eval's own. With report folders, it also prints their cells at t = 1k / 10k / 100k
re-scored against the fresh band (report.json keeps each distance, so no eval is rerun).
Nothing under everloop/ uses this; it measures the yardstick."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from everloop import drift
from everloop.data import FrameStore
from everloop.reference import WINDOW, Reference, window_halves
from everloop.validate import positive

FIVE = drift.APPEARANCE + drift.MOTION  # the acceptance's five metrics
K = 8  # the protocol's streams per horizon


def later_starts(episodes, first_b: tuple[int, int]) -> list[tuple[int, int]]:
    """Every 4th (episode, start) of a whole window in B's time range (from B's first window
    on): a grid fine enough to be fresh, coarse enough to keep the summaries cached."""
    e0, t0 = first_b
    return [(e, s) for e, ep in enumerate(episodes) if e >= e0
            for s in range(-(-t0 // 4) * 4 if e == e0 else 0, len(ep) - WINDOW + 1, 4)]


def fresh_band(episodes, half_a, starts, draws: int, seed: int) -> dict[str, float]:
    rng, cache, d = np.random.default_rng(seed), {}, {m: [] for m in FIVE}
    for _ in range(draws):
        picked: list[tuple[int, int]] = []
        tries = 0
        while len(picked) < K:  # non-overlapping, as 8 streams' windows are 8 different moments,
            e, s = starts[int(rng.integers(len(starts)))]  # where B's time holds 8 (a 2-minute
            tries += 1  # clip's holds 4: then overlaps are let in)
            if tries > 200 or all(e != pe or abs(s - ps) >= WINDOW for pe, ps in picked):
                picked.append((e, s))
        for key in picked:
            if key not in cache:
                cache[key] = drift.summarise(np.asarray(episodes[key[0]][key[1]:key[1] + WINDOW]))
        for m in FIVE:
            d[m].append(drift.set_distance(m, half_a, [cache[key] for key in picked]))
    return {m: float(np.mean(v)) for m, v in d.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data")
    ap.add_argument("reports", nargs="*", help="eval report folders of runs on DATA")
    ap.add_argument("--stride", type=positive("--stride"), default=6)
    ap.add_argument("--draws", type=positive("--draws"), default=64)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    store = FrameStore(a.data)
    episodes = [store.frames[lo:hi:a.stride] for lo, hi in store.episodes]
    ref = Reference(episodes, store.fps / a.stride, seed=a.seed)  # the eval's own halves and band
    grid = {m: v[0] for m, v in ref.band(K, a.seed).items()}
    first_b = window_halves(episodes, WINDOW)[1][0]
    fresh = fresh_band(episodes, ref.A, later_starts(episodes, first_b), a.draws, a.seed)
    print(f"{a.data}: A {len(ref.A)} windows, B {len(ref.B)} (grid); fresh: {a.draws} draws of {K}")
    print("| band | " + " | ".join(FIVE) + " |\n|---|" + "---:|" * len(FIVE))
    print("| grid (the eval's) | " + " | ".join(f"{grid[m]:.4g}" for m in FIVE) + " |")
    print("| fresh | " + " | ".join(f"{fresh[m]:.4g}" for m in FIVE) + " |")
    print("| fresh / grid | " + " | ".join(f"{fresh[m] / grid[m]:.2f}" for m in FIVE) + " |")
    for rep_dir in a.reports:
        rep = json.loads((Path(rep_dir) / "report.json").read_text())
        hs = [h for h in ("1000", "10000", "100000") if h in rep["distance"]["color_hist"]]
        cells = [" / ".join(f"{rep['drift'][m][h]:.2f} -> {rep['distance'][m][h] / fresh[m]:.2f}" for h in hs)
                 for m in FIVE]
        print(f"{rep_dir} (t = {', '.join(hs)}; grid -> fresh): " + " | ".join(f"{m} {c}" for m, c in zip(FIVE, cells)))


if __name__ == "__main__":
    main()
