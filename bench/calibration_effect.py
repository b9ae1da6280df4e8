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
from worldmodel_ceiling import autoencode, held_out_streams, print_table

from everloop import rollout
from everloop.checkpoint import load_run
from everloop.data import FrameStore, to_uint8


@torch.no_grad()
def dream(model, streams: int, steps: int) -> np.ndarray:
    """`streams` dreams of `steps` steps from the prior, uint8 [streams, steps, H, W, 3]."""
    lat = next(rollout.latents(model, streams, seed=0, chunk=steps))
    frames = to_uint8(model.decode(lat.flatten(0, 1)))
    return frames.reshape(streams, steps, *frames.shape[1:])


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
    steps = -(-len(store) // stride)  # the data at the model's stride; its second half is held out
    ref, streams = held_out_streams(store, stride, min(600, steps - steps // 2 - 30))
    rows = {"real held-out footage": np.stack(streams)}
    for suffix, model in models.items():
        rows["reconstructions" + suffix] = np.stack([autoencode(model, s) for s in streams])
    for suffix, model in models.items():
        rows[f"dream, {a.steps} steps" + suffix] = dream(model, 4, a.steps)
    print(f"{a.run}: largest ratio to the real band over the horizons, 4 streams, stride {stride}\n")
    print_table(rows, ref, store.fps / stride)


if __name__ == "__main__":
    main()
