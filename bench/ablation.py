"""Side by side: how each duralava change moves the "forever" statistics.

    .venv/bin/python bench/ablation.py NAME=RUN [NAME=RUN ...] [--steps 3000]

For each run: 64 streams' latent spread (per-dim std across streams, 1 = N(0, I)), the
8-stream frame spread at the last step, and per-stream motion at lags 1 and 10 over the
last 600 steps (the real video at stride 6: 1.48 and 8.33, ratio 5.6). Prints markdown."""
from __future__ import annotations

import argparse

import motion_stats
import numpy as np
import torch

from everloop import metrics, rollout, sheets
from everloop.checkpoint import load_run


def row(run: str, steps: int) -> dict:
    model, config = load_run(run)
    z = next(rollout.latents(model, batch=64, chunk=steps))[:, -1]
    x = np.concatenate(list(rollout.frames(model, steps, batch=4, chunk=600)), 1)[:, -600:]
    lm = [metrics.lag_motion(s, (1, 10)) for s in x]
    last = sheets.pick_frames(model, [steps - 1], streams=8)[:, 0]
    return {"step": config["step"], "z_std": float(z.std(0).mean()),
            "spread": motion_stats.stream_spread(last),
            "lag1": float(np.mean([m[1] for m in lm])), "lag10": float(np.mean([m[10] for m in lm])),
            "moving": sum(m[10] >= 3 * m[1] for m in lm),
            "revisit": min(motion_stats.nearest_revisit(s, 300, min_lag=10, every=5)["min_distance"] for s in x)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="NAME=RUN")
    ap.add_argument("--steps", type=int, default=3000)
    a = ap.parse_args()
    torch.manual_seed(0)
    print("| variant | train steps | latent std across streams | 8-stream spread (real 9.7) | "
          "lag-1 motion | lag-10 motion | streams with lag10 >= 3 x lag1 | min revisit, lag 10-300 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for spec in a.runs:
        name, run = spec.split("=", 1)
        r = row(run, a.steps)
        print(f"| {name} | {r['step']} | {r['z_std']:.2f} | {r['spread']:.1f} | {r['lag1']:.2f} | "
              f"{r['lag10']:.2f} | {r['moving']}/4 | {r['revisit']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
