"""How much of an `everloop eval` ratio is the draw of its 8 streams: the ratio of every
drift metric at each horizon as a distribution, from more streams than the eval's 8.

    .venv/bin/python bench/eval_draws.py RUN --data DATA [--streams 32] [--horizons 16,128,1000]
        [--metrics color_hist,brightness] [--seed 0] [--seeds 1]

`--streams` streams continue real clips spread over DATA, as the eval's do (same seeding,
same stride, `still_hold` as played); at each horizon the 64-step window is decoded, and
d(8 of those windows, A) over the eval's band (8 windows of B against A) is taken for 200
random groups of 8: printed are the mean ("expected ratio": what one eval shows on
average), its 5-95% range (how far one eval's cell can fall from it by the draw alone), and
the ratio of all the windows pooled (the bias without the draw). A process whose cells sit
near 1.5 in one eval can have its mean at 1.1 (the fire's colour, fifteenth session) or
at 1.4 (the waves'); only the mean says which. ~2 minutes for 32 streams to t = 1k on one
core; horizons past 10k take as long as the eval's stepping.

`--seeds N` repeats it with N stream seeds (other start moments, other draws) and prints
the mean of the expected ratios and their range over the seeds: on a short, bursty
footage the 32 streams' start moments decide much of what they show, and one seed's
expected colour ratio of the fire at t = 1k was 1.45-2.16 over four stream seeds of one
run (one of them with 48 streams; twenty-first session, docs/fidelity.md). The groups of 8 are drawn from an rng of the
seed, horizon and metric, so a cell does not change with the list of --metrics (until
the twenty-first session one rng ran through all of them: the lamp's colour at t = 1k
read 1.35 with five metrics and 1.53 with colour alone, from the same windows)."""
from __future__ import annotations

import argparse

import numpy as np
import torch

from everloop import drift, rollout
from everloop.checkpoint import load_run
from everloop.data import FrameStore, spread_clips, to_uint8
from everloop.reference import WINDOW, band, window_halves
from everloop.validate import positive

GROUP, DRAWS = 8, 200  # the eval's streams per horizon; random groups per horizon


@torch.inference_mode()
def horizon_windows(model, store, streams: int, horizons: list[int], seed: int) -> dict[int, np.ndarray]:
    """uint8 windows [streams, WINDOW, H, W, 3] at each horizon, streams as the eval starts them."""
    stride, wanted = model.cfg.clip_stride, {h: [] for h in horizons}
    clip = spread_clips(store, model.context_frames, stride, streams, seed) if model.context_frames > 0 else None
    done = 0
    for lat in rollout.latents(model, streams, seed, 1, 256, seed_clip=clip):
        for h in horizons:
            lo, hi = max(h - done, 0), min(h + WINDOW - done, lat.shape[1])
            if lo < hi:
                wanted[h].append(lat[:, lo:hi])
        done += lat.shape[1]
        if done >= max(horizons) + WINDOW:
            break
    out = {}
    for h, parts in wanted.items():
        z = torch.cat(parts, 1)
        frames = to_uint8(torch.stack([model.decode(s) for s in z]))
        out[h] = rollout.hold_still(frames, None, rollout.still_hold(model))[0]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--data", required=True)
    ap.add_argument("--streams", type=positive("--streams"), default=32)
    ap.add_argument("--horizons", default="16,128,1000", help="comma-separated model steps")
    ap.add_argument("--metrics", default="color_hist,brightness", help="comma-separated eval metrics")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seeds", type=positive("--seeds"), default=1, help="stream seeds seed, seed + 1, ...: each its own streams")
    a = ap.parse_args()
    torch.set_num_threads(1)
    metrics, horizons = a.metrics.split(","), [int(h) for h in a.horizons.split(",")]
    flow = "flow_hist" in metrics
    model, _ = load_run(a.run)
    model.eval()
    store, stride = FrameStore(a.data), model.cfg.clip_stride
    episodes = [store.frames[lo:hi:stride] for lo, hi in store.episodes]  # as `everloop eval` takes them
    half_a, half_b = ([drift.summarise(np.asarray(episodes[i][t:t + WINDOW]), flow=flow) for i, t in h]
                      for h in window_halves(episodes, WINDOW))
    width = band(half_a, half_b, metrics, GROUP, a.seed)
    means = {(h, m): [] for h in horizons for m in metrics}
    print(f"{a.run}: {a.streams} streams, ratios of groups of {GROUP} (mean, 5-95%) and of all pooled")
    for seed in range(a.seed, a.seed + a.seeds):
        for h, windows in horizon_windows(model, store, a.streams, horizons, seed).items():
            got = [drift.summarise(w, flow=flow) for w in windows]
            cells = []
            for m in metrics:  # a metric's groups come from its place in the eval's fixed list, not in --metrics
                rng = np.random.default_rng([seed, h, drift.METRICS.index(m)])
                r = np.array([drift.set_distance(m, [got[i] for i in rng.choice(len(got), GROUP, replace=False)],
                                                 half_a) for _ in range(DRAWS)]) / width[m][0]
                pooled = drift.set_distance(m, got, half_a) / width[m][0]
                means[h, m].append(r.mean())
                cells.append(f"{m} {r.mean():.2f} ({np.percentile(r, 5):.2f}-{np.percentile(r, 95):.2f}) "
                             f"pooled {pooled:.2f}")
            print(f"{'' if a.seeds == 1 else f'seed {seed} '}t={h}: " + " | ".join(cells), flush=True)
    if a.seeds > 1:  # the streams' start moments and draws are the seed's: their spread is part of the figure
        for h in horizons:
            print(f"over {a.seeds} seeds t={h}: " + " | ".join(
                f"{m} {np.mean(means[h, m]):.2f} ({np.min(means[h, m]):.2f}-{np.max(means[h, m]):.2f})"
                for m in metrics), flush=True)


if __name__ == "__main__":
    main()
