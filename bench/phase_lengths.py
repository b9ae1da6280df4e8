"""Do a dream's calm and busy phases last longer than the footage's? The latent motion
level of footage and dreams, as a distribution over 64-step windows and as a memory.

    .venv/bin/python bench/phase_lengths.py RUN --data DATA [--streams 16] [--steps 3000] [--pixels 4]

The motion of a step is |z_{t+1} - z_t| (latent L2; footage: the encoder's means at the
run's clip_stride, every stride phase of every episode; dreams: streams started as the
eval starts them). Printed for each: the mean and spread (std of the log) of the motion
over 64-step windows, and the lag in steps at which the autocorrelation of the 16-step
mean motion first falls below 1/e (how long a calm or busy phase lasts). For the dreams,
the spread of window motion between streams at one moment beside the spread within a
stream over time: an eval's 8 streams scatter if the first is large. With --pixels N, N
windows of each stream are decoded (held as played) beside the eval's real windows: their
log mean optical flow and log10 frame MSE, mean and spread over windows."""
from __future__ import annotations

import argparse

import numpy as np
import torch
from safetensors.torch import load_file

from everloop import rollout
from everloop.checkpoint import load_run
from everloop.data import FrameStore, spread_clips, to_uint8
from everloop.drift import flow_magnitudes
from everloop.reference import WINDOW, window_halves

BLOCK = 16


def memory(series: list[np.ndarray]) -> float:
    """Lag (steps) at which the autocorrelation of BLOCK-step mean motion falls below 1/e,
    pooled over series (each centred on the pooled mean)."""
    blocks = [s[:len(s) // BLOCK * BLOCK].reshape(-1, BLOCK).mean(1) for s in series]
    mean = np.concatenate(blocks).mean()
    var = np.mean(np.concatenate(blocks) ** 2) - mean ** 2
    for lag in range(1, max(len(b) for b in blocks)):
        pairs = [(b[:-lag] - mean) * (b[lag:] - mean) for b in blocks if len(b) > lag]
        if not pairs:
            break
        if np.concatenate(pairs).mean() / var < np.exp(-1):
            return lag * BLOCK
    return float("inf")


def windows(s: np.ndarray) -> np.ndarray:
    return s[:len(s) // WINDOW * WINDOW].reshape(-1, WINDOW).mean(1)


def describe(name: str, series: list[np.ndarray]) -> None:
    w = np.log(np.concatenate([windows(s) for s in series]))
    print(f"{name}: window motion mean {np.exp(w).mean():.3f}, log-std {w.std():.3f}, "
          f"5-95% {np.exp(np.percentile(w, 5)):.3f}-{np.exp(np.percentile(w, 95)):.3f}, memory {memory(series)} steps")


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--data", required=True)
    ap.add_argument("--streams", type=int, default=16)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pixels", type=int, default=0, help="also decode this many windows per stream")
    a = ap.parse_args()
    torch.set_num_threads(1)
    model, _ = load_run(a.run)
    model.eval()
    store, stride = FrameStore(a.data), model.cfg.clip_stride
    mu = load_file(f"{a.run}/latents.safetensors")["mu"].numpy()
    real = [np.linalg.norm(np.diff(mu[lo + p:hi:stride], axis=0), axis=1)
            for lo, hi in store.episodes for p in range(stride) if (hi - lo - p) // stride > 4 * WINDOW]
    describe("footage", real)
    clip = spread_clips(store, model.context_frames, stride, a.streams, a.seed)
    parts, done = [], 0
    for lat in rollout.latents(model, a.streams, a.seed, 1, 256, seed_clip=clip):
        parts.append(lat)
        done += lat.shape[1]
        if done > a.steps:
            break
    z = torch.cat(parts, 1)[:, :a.steps + 1].numpy()
    dream = list(np.linalg.norm(np.diff(z, axis=1), axis=2))
    describe("dreams ", dream)
    w = np.log(np.stack([windows(s) for s in dream]))  # [streams, windows]
    print(f"dreams: log window motion, std between streams at one moment {w.std(0).mean():.3f}, "
          f"within a stream over time {w.std(1).mean():.3f}; per-stream mean motion "
          + " ".join(f"{np.exp(r).mean():.2f}" for r in w))
    if a.pixels:
        episodes = [store.frames[lo:hi:stride] for lo, hi in store.episodes]
        shot = [np.asarray(episodes[i][t:t + WINDOW]) for half in window_halves(episodes, WINDOW) for i, t in half]
        at = np.linspace(WINDOW, a.steps - WINDOW, a.pixels).astype(int)
        made = [rollout.hold_still(to_uint8(model.decode(torch.from_numpy(z[s, t:t + WINDOW])))[None], None,
                                   rollout.still_hold(model))[0][0] for s in range(len(z)) for t in at]
        for name, ws in (("footage", shot), ("dreams ", made)):
            flow = np.log([flow_magnitudes(w).mean() for w in ws])
            mse = np.log10([np.mean((w[1:].astype(np.float32) - w[:-1]) ** 2) / 255 ** 2 for w in ws])
            print(f"{name} pixels, {len(ws)} windows: log mean flow {flow.mean():.3f} +- {flow.std():.3f}, "
                  f"log10 mse {mse.mean():.3f} +- {mse.std():.3f}")


if __name__ == "__main__":
    main()
