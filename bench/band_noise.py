"""How often real footage itself reads past 1.5x the real-vs-real band: the noise floor of
an `everloop eval` cell, per metric and jointly.

    .venv/bin/python bench/band_noise.py DATA [--stride 6] [--draws 400] [--seed 0]

The eval's band is the mean distance d(8 random windows of the later half B, the earlier
half A) over seeded draws (reference.band). Here groups of 8 windows of B are drawn again
(other seeds) and their ratio d(group, A) / band taken, as an eval would score 8 streams
that were real footage: per metric the 95th percentile and the share of groups past 1.5x,
and the share of groups inside 1.5x on every metric at once (one horizon of a passing
eval); three horizons are three such draws. B has few windows on a short clip (a 2-minute
clip at stride 6 has 9 windows of 64 steps), so its groups overlap and this is, if
anything, a floor on the scatter of independent real windows."""
from __future__ import annotations

import argparse

import numpy as np
import torch

from everloop import drift
from everloop.data import FrameStore
from everloop.reference import Reference

METRICS = ("feature_fd", "color_hist", "diff_energy", "flow_hist", "temporal_spectrum")
LIMIT = 1.5  # the acceptance's ratio


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data")
    ap.add_argument("--stride", type=int, default=6, help="the run's clip_stride (the default recipe's: 6)")
    ap.add_argument("--group", type=int, default=8, help="windows per group: the eval's --streams")
    ap.add_argument("--draws", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(1)
    store = FrameStore(a.data)
    episodes = [store.frames[lo:hi:a.stride] for lo, hi in store.episodes]  # as `everloop eval` takes them
    ref = Reference(episodes, store.fps / a.stride)  # the eval's halves A and B
    half_a, half_b = ref.A, ref.B
    width = ref.band(a.group, a.seed)
    rng = np.random.default_rng(a.seed + 1)  # other draws than the band's own
    ratios = np.array([[drift.set_distance(m, group, half_a) / width[m][0] for m in METRICS]
                       for group in ([half_b[i] for i in rng.choice(len(half_b), a.group, replace=len(half_b) < a.group)]
                                     for _ in range(a.draws))])
    inside = (ratios <= LIMIT).all(1).mean()
    print(f"{a.data}: {len(half_a)} + {len(half_b)} windows; groups of {a.group} real windows over the band:")
    for m, r in zip(METRICS, ratios.T):
        print(f"  {m}: 95% {np.percentile(r, 95):.2f}, past {LIMIT}x {np.mean(r > LIMIT):.0%}")
    print(f"  every metric inside {LIMIT}x: {inside:.0%} of groups (one horizon); three horizons ~{inside ** 3:.0%}")


if __name__ == "__main__":
    main()
