"""Negative controls of `everloop eval` on real data: each must fail the metric meant to catch it.

    .venv/bin/python bench/eval_controls.py --data data/lava [--stride 6] [--frames 2000] [--streams 4]

The reference is the first half of DATA at the stride; the controls are built from the
second half, as `--streams` streams (eval's default 4) of consecutive frames: held-out real
frames (should score ~1), one frame repeated (frozen), a cycle of 5 real frames (loop),
uniform noise, and the held-out frames shuffled in time (right appearance, wrong motion).
Prints a markdown table of the largest ratio to the real band over the horizons."""
from __future__ import annotations

import argparse

import numpy as np

from everloop.data import FrameStore
from everloop.evaluate import evaluate_frames

FLAGS = ("frozen", "flicker", "loop", "collapse", "saturation")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--stride", type=int, default=6)
    ap.add_argument("--frames", type=int, default=2000, help="held-out frames in all, split into the streams")
    ap.add_argument("--streams", type=int, default=4)
    a = ap.parse_args()
    store = FrameStore(a.data)
    x = np.asarray(store.frames[::a.stride])
    half = len(x) // 2
    real, held = x[:half], x[half:half + a.frames]
    n = len(held) // a.streams
    held = held[:n * a.streams].reshape(a.streams, n, *held.shape[1:])
    rng = np.random.default_rng(0)
    controls = {
        "held-out real": held,
        "one frame repeated": np.stack([np.repeat(s[:1], n, 0) for s in held]),
        "5-frame cycle": np.stack([np.resize(s[:5], s.shape) for s in held]),
        "uniform noise": rng.integers(0, 256, held.shape, dtype=np.uint8),
        "real, shuffled in time": np.stack([s[rng.permutation(n)] for s in held]),
    }
    sps = store.fps / a.stride
    rows = []
    for name, gen in controls.items():
        rep = evaluate_frames(gen, real, steps_per_second=sps, seed=0)
        if not rows:
            metrics = list(rep["drift"])
            print("| control | " + " | ".join(metrics) + " | flags |")
            print("|---|" + "---:|" * len(metrics) + "---|")
        cells = [f"{max(rep['drift'][m].values()):.2f}" for m in metrics]
        flags = ", ".join(f for f in FLAGS if rep.get(f)) or "none"
        rows.append(name)
        print(f"| {name} | " + " | ".join(cells) + f" | {flags} |", flush=True)


if __name__ == "__main__":
    main()
