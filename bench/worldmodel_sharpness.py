"""Which VAE recipe draws real motion sharply enough: trains the worldmodel's VAE stage alone
for a fixed number of steps per variant and scores its reconstructions like
bench/worldmodel_ceiling.py (real footage -> VAE -> the motion metrics of `everloop eval`).

    .venv/bin/python bench/worldmodel_sharpness.py --data data/lava64c --variant base --steps 5000
    .venv/bin/python bench/worldmodel_sharpness.py --data data/lava64c --variant adv0.5 \
        --set adv_weight=0.5 adv_start=1000 --steps 3000 --device cuda --json out.json

Steps, not minutes: on a GPU a CPU budget is replayed exactly (15 CPU minutes on one core
are ~5,000 plain VAE steps of 32 frames; an adversarial step costs ~2 plain ones), so
variants can be compared at the CPU budget the acceptance run will have. Prints one
markdown row: held-out PSNR and the largest ratio to the real band per metric."""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from everloop.data import FrameStore, to_float, to_uint8
from everloop.drift import METRICS
from everloop.evaluate import evaluate_frames
from everloop.loop import TrainLoop, cosine_lr
from everloop.models import build, make_config


@torch.no_grad()
def reconstruct(model, frames: np.ndarray, device: str, batch: int = 256) -> np.ndarray:
    out = []
    for i in range(0, len(frames), batch):
        x = to_float(frames[i:i + batch]).to(device)
        out.append(to_uint8(model.vae.decode(model.vae.encode(x)[0]).cpu()))
    return np.concatenate(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--variant", default="base", help="a name for the row")
    ap.add_argument("--set", nargs="*", default=[], help="worldmodel config overrides key=value")
    ap.add_argument("--steps", type=int, default=5000)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--lr-final", type=float, default=1.0, help="cosine decay of the lr to this fraction")
    ap.add_argument("--frames", type=int, default=600, help="frames per stream (4 streams)")
    ap.add_argument("--json", help="also write the row here")
    ap.add_argument("--sheet", help="PNG: held-out frames (top) over their reconstructions")
    a = ap.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    overrides = dict(kv.split("=", 1) for kv in a.set)
    model = build("worldmodel", make_config("worldmodel", "default", overrides)).to(a.device)
    cfg, store = model.cfg, FrameStore(a.data)
    model.begin_stage("vae", store, {})  # as the trainer starts the stage: split, background frame
    opt = model.configure_optimizers()
    rng = np.random.default_rng(0)
    base = {k: o.param_groups[0]["lr"] for k, o in opt.items()}
    logs: dict = {}

    def step(progress: float) -> dict:
        for k, o in opt.items():  # a cosine from 1 down to lr_final over the run
            cosine_lr(o, base[k], a.lr_final, progress)
        return model.train_step(model.sample_batch(store, rng).to(a.device), opt)

    def keep(last: dict) -> None:
        logs.clear()
        logs.update(last)

    t0 = time.time()
    # The one training loop (steps, non-finite losses, Ctrl-C); a bench saves nothing.
    with TrainLoop(step=0, steps=a.steps, minutes=None, save=lambda: None, where="nothing (a bench run)",
                   desc=f"vae {a.variant}", progress=False) as run:
        run.run(step, on_step=keep)
        run.finish()
    train_s = time.time() - t0
    model.eval()
    held = np.concatenate([np.arange(s, e) for s, e in model.ranges[1]])
    held = held[np.linspace(0, len(held) - 1, 256).astype(np.int64)]
    real = np.asarray(store.frames[held])
    recon = reconstruct(model, real, a.device)
    mse = ((real.astype(np.float64) - recon) ** 2).mean() / 255.0 ** 2
    row = {"variant": a.variant, "set": overrides, "steps": a.steps, "train_s": round(train_s, 1),
           "heldout_psnr": round(10 * np.log10(1 / mse), 2), "last": {k: round(v, 3) for k, v in logs.items()}}
    if a.sheet:
        from PIL import Image
        pick = np.linspace(0, 255, 8).astype(np.int64)
        grid = np.concatenate([np.concatenate(list(real[pick]), 1), np.concatenate(list(recon[pick]), 1)], 0)
        Image.fromarray(grid).save(a.sheet)
    stride = cfg.clip_stride
    x = np.asarray(store.frames[::stride])
    half = len(x) // 2
    step = max(1, (len(x) - half - a.frames) // 3)
    streams = np.stack([reconstruct(model, x[half + i * step:half + i * step + a.frames], a.device)
                        for i in range(4)])
    rep = evaluate_frames(streams, [x[:half]], steps_per_second=store.fps / stride,
                          horizons=(16, 128, a.frames))
    row.update({m: round(max(rep["drift"][m].values()), 2) for m in METRICS})
    print(f"| {a.variant} | {a.steps} | {row['heldout_psnr']} | "
          + " | ".join(f"{row[m]:.2f}" for m in METRICS) + f" | {train_s:.0f} s |", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(row, f)


if __name__ == "__main__":
    main()
