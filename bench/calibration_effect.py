"""What the decoder calibration (models/calibration.py) changes, on one trained worldmodel run:
reconstructions of real held-out footage and 1,000-step dreams from the prior, decoded
without and with the calibration, scored like `everloop eval` against the first half.

    .venv/bin/python bench/calibrate.py RUN --data DATA --out RUN-cal
    .venv/bin/python bench/calibration_effect.py RUN RUN-cal --data DATA

Prints a markdown table of the largest ratio to the real band over the horizons
(4 streams; reconstructions of up to 600 held-out steps, overlapping on short recordings)."""
from __future__ import annotations

import argparse

import numpy as np
import torch

from everloop import rollout
from everloop.checkpoint import load_run
from everloop.data import FrameStore, to_float, to_uint8
from everloop.evaluate import evaluate_frames

METRICS = ("feature_fd", "color_hist", "diff_energy", "flow_hist", "temporal_spectrum")


@torch.no_grad()
def reconstruct(model, frames: np.ndarray) -> np.ndarray:
    return np.concatenate([to_uint8(model.decode(model.vae.encode(to_float(frames[i:i + 200]))[0]))
                           for i in range(0, len(frames), 200)])


@torch.no_grad()
def dream(model, streams: int, steps: int) -> np.ndarray:
    lat = next(rollout.latents(model, streams, seed=0, chunk=steps))
    return to_uint8(model.decode(lat.flatten(0, 1))).reshape(streams, steps, *model.decode(lat[:1, 0]).shape[2:], 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("calibrated")
    ap.add_argument("--data", required=True)
    ap.add_argument("--steps", type=int, default=1000, help="dream steps per stream (4 streams)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    store = FrameStore(a.data)
    models = {"": load_run(a.run)[0].eval(), " + calibration": load_run(a.calibrated)[0].eval()}
    stride = models[""].cfg.clip_stride
    x = np.asarray(store.frames[::stride])
    ref, held = x[:len(x) // 2], x[len(x) // 2:]
    n = min(600, len(held) - 30)
    step = max(1, (len(held) - n) // 3)
    streams = [held[i * step:i * step + n] for i in range(4)]
    rows = {"real held-out footage": np.stack(streams)}
    for suffix, model in models.items():
        rows["reconstructions" + suffix] = np.stack([reconstruct(model, s) for s in streams])
    for suffix, model in models.items():
        rows[f"dream, {a.steps} steps" + suffix] = dream(model, 4, a.steps)
    print(f"{a.run}: largest ratio to the real band over the horizons, 4 streams, stride {stride}\n")
    print("| frames | " + " | ".join(METRICS) + " |")
    print("|---|" + "---:|" * len(METRICS))
    for name, frames in rows.items():
        horizons = tuple(sorted({16, 128, frames.shape[1]}))
        rep = evaluate_frames(frames, [ref], steps_per_second=store.fps / stride, horizons=horizons)
        print(f"| {name} | " + " | ".join(f"{max(rep['drift'][m].values()):.2f}" for m in METRICS) + " |",
              flush=True)


if __name__ == "__main__":
    main()
