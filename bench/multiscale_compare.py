"""Adversarial vs plain multiscale runs on held-out episodes, against copy-the-last-frame.

    .venv/bin/python bench/multiscale_compare.py runs/ms_adv runs/ms_plain --data data/pacman \
        --clips 8 --steps 64 --out docs/multiscale

Both runs continue the same `--clips` seeded clips from DATA's Test episodes (4 real frames,
then `--steps` recursive predictions at full frame size) and are scored per step with the
metrics of `everloop eval` (everloop.metrics.prediction_table). Prints a markdown table at
steps 1, 4, 16, 64 and writes OUT/rollouts.gif (real | plain | adversarial, one clip) and
OUT/rollouts.png (a sheet of the same at those steps)."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from everloop import metrics
from everloop.checkpoint import load_run
from everloop.data import FrameStore, seed_clips, to_uint8
from everloop.prediction import rollout_from
from everloop.sheets import save_sheet
from everloop.sinks import open_sink

KEYS = ("psnr", "sharp_diff", "psnr_moving", "ssim")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("adv")
    ap.add_argument("plain")
    ap.add_argument("--data", required=True)
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    store = FrameStore(a.data)
    models = {"plain": load_run(a.plain)[0], "adversarial": load_run(a.adv)[0]}
    clip = seed_clips(store, 4 + a.steps, 1, a.clips, a.seed)
    context, truth = clip[:, :4], clip[:, 4:]
    last = context[:, -1]
    preds = {"copy last frame": last[:, None].expand_as(truth)}
    for name, model in models.items():
        t0 = time.time()
        preds[name] = torch.cat([rollout_from(model, context[i:i + 4], a.steps, a.seed)
                                 for i in range(0, a.clips, 4)])
        print(f"{name}: {a.clips} clips x {a.steps} steps at {tuple(truth.shape[-2:])} in {time.time() - t0:.0f} s")
    tables = {name: metrics.prediction_table(p, truth, last) for name, p in preds.items()}
    steps = [s for s in (1, 4, 16, 64) if s <= a.steps]
    print(f"\n{a.clips} clips from the Test episodes of {a.data}, seed {a.seed}; PSNR on [0, 1] data, peak 1\n")
    print("| model | " + " | ".join(f"{k} @{s}" for k in KEYS[:3] for s in steps) + " |")
    print("|---|" + "---:|" * (3 * len(steps)))
    for name, t in tables.items():
        print(f"| {name} | " + " | ".join(f"{t[str(s)][k]:.2f}" for k in KEYS[:3] for s in steps) + " |")
    print("\nSSIM: " + "; ".join(f"{n} " + ", ".join(f"@{s} {t[str(s)]['ssim']:.3f}" for s in steps)
                                 for n, t in tables.items()))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    # One clip side by side: real | plain | adversarial, 2 px white gaps.
    rows = [truth[0], preds["plain"][0], preds["adversarial"][0]]
    u8 = [to_uint8(r) for r in rows]  # [steps, H, W, 3] each
    gap = np.full((a.steps, u8[0].shape[1], 2, 3), 255, np.uint8)
    side = np.concatenate([u8[0], gap, u8[1], gap, u8[2]], 2)
    with open_sink(str(out / "rollouts.gif"), fps=15, frames=a.steps, force=True) as sink:
        sink.write(side)
    cols = [s - 1 for s in steps]
    save_sheet(np.stack([x[cols] for x in u8]), out / "rollouts.png", labels=[f"step {s}" for s in steps])
    print(f"\nwrote {out / 'rollouts.gif'} and {out / 'rollouts.png'} (rows: real, plain, adversarial)")


if __name__ == "__main__":
    main()
