"""Whose is a worldmodel run's flow_hist miss: the decoder's or the dream's? Optical-flow
histograms (`everloop eval`'s: Farneback magnitudes in half-octave bins, EMD between them)
of the training footage at the run's stride, of its reconstructions and of its dreams.

    .venv/bin/python bench/dream_flow.py RUN --data DATA [--at 1000 --streams 16]
        [--sigmas 0.71,1.0 --rhos 0,0.5,0.85]

The real frames are cut as `everloop eval` cuts them (every clip_stride-th frame of each
episode, windows of 64 steps, the earlier half A and the later half B, at most 32 each,
evenly spread). Printed, each as EMD to A's histogram, over the band (the mean EMD of 8
random B windows to A over 16 draws, as the eval's band for 8 streams), and the histogram
itself (% of pixels per bin, slowest first):
- `recon` (8 windows of A, encoded to posterior means and decoded as a dream is,
  `still_hold` included), to A and to the 8 real windows it encodes: what the decoder
  alone does to motion;
- `dream`: `--streams` dreams from the prior, the 64 steps from `--at` on, at the run's
  fitted sigma scale and noise memory, and at every (sigma, rho) of --sigmas x --rhos.
A dream at several times the band moves unlike the footage; a recon near it says the
decoder is not the cause."""
from __future__ import annotations

import argparse
import itertools

import numpy as np
import torch

from everloop import drift, rollout
from everloop.checkpoint import load_run
from everloop.data import FrameStore, to_float, to_uint8
from everloop.reference import WINDOW, band, window_halves


def summaries(windows) -> list[dict]:
    """Each uint8 window's flow_hist summary, as the eval summarises it."""
    return [{"flow_hist": drift.flow_counts(w)} for w in windows]


def share(summed: list[dict]) -> list[float]:
    """% of the windows' flow magnitudes per bin, slowest first."""
    h = np.sum([s["flow_hist"] for s in summed], 0).astype(np.float64)
    return np.round(100 * h / h.sum(), 1).tolist()


@torch.inference_mode()
def decode(model, z: torch.Tensor) -> np.ndarray:
    """Latents [S, T, L] -> uint8 frames [S, T, H, W, 3] as a stream shows them."""
    x = to_uint8(torch.stack([model.decode(s) for s in z]))
    return rollout.hold_still(x, None, rollout.still_hold(model))[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--data", required=True)
    ap.add_argument("--at", type=int, default=1000, help="dream step the 64-step window starts at")
    ap.add_argument("--streams", type=int, default=16)
    ap.add_argument("--sigmas", default="", help="comma-separated sigma scales to try besides the fitted one")
    ap.add_argument("--rhos", default="", help="comma-separated noise memories to try")
    a = ap.parse_args()
    torch.set_num_threads(1)
    model, _ = load_run(a.run)
    store, stride = FrameStore(a.data), model.cfg.clip_stride
    episodes = [store.frames[lo:hi:stride] for lo, hi in store.episodes]  # as `everloop eval` takes them
    half_a, half_b = ([np.asarray(episodes[i][t:t + WINDOW]) for i, t in h] for h in window_halves(episodes, WINDOW))
    ref = summaries(half_a)
    width = band(ref, summaries(half_b), ["flow_hist"], 8, 0)["flow_hist"][0]
    print(f"real A: {len(half_a)} windows; band (8 windows of B) emd {width:.3f}")

    def show(name: str, got: list[dict], against: list[dict] = ref) -> None:
        d = drift.set_distance("flow_hist", against, got)
        print(f"{name:<28} emd {d:.3f} = {d / width:.2f}x  {share(got)}", flush=True)
    show("real A", ref)
    with torch.inference_mode():
        z = torch.stack([model.vae.encode(to_float(w))[0] for w in half_a[:8]])
    recon = summaries(decode(model, z))
    show("recon (8 windows of A)", recon)
    show("  recon to those windows", recon, ref[:8])
    fitted = (float(model.dream_sigma), float(model.dream_rho)) if model.cfg.fit_dream else None
    grid = list(itertools.product([float(s) for s in a.sigmas.split(",") if s],
                                  [float(r) for r in a.rhos.split(",") if r]))
    for setting in [fitted] + [g for g in grid if g != fitted]:
        if setting is not None:
            model.dream_sigma.fill_(setting[0])
            model.dream_rho.fill_(setting[1])
        z = next(rollout.latents(model, batch=a.streams, seed=0, chunk=a.at + WINDOW))[:, a.at:]
        name = "dream" + ("" if setting is None else f" s{setting[0]:.2f} r{setting[1]:.2f}")
        show(name + (" (fitted)" if setting == fitted and setting else ""), summaries(decode(model, z)))


if __name__ == "__main__":
    main()
