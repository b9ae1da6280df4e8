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
- `one-step mean` / `one-step sample`: the same 8 windows, each latent the RNN's prediction
  (its MDN mixture's mean, or a draw at the fitted sigma scale; a run whose dream_head is
  'flow' dreams with its flow head instead, which these rows do not show) from the real latents before it
  (up to `seed_frames` of context ahead of the window): what a dream starts from, one step
  at a time, with no drift and no noise memory;
- `dream`: `--streams` dreams from the prior, the 64 steps from `--at` on, at the run's
  fitted sigma scale and noise memory, and at every (sigma, rho) of --sigmas x --rhos.
A dream at several times the band moves unlike the footage; a recon near it says the
decoder is not the cause. Each line gives the ratio of all its windows pooled and the mean
ratio of its groups of 8 (the eval's 8 streams against a band of 8 windows): pooled, 16 or
more streams average out how much streams differ from one another, which 8 streams show
(the lamp s0 at t = 1k: 1.22x pooled, 1.75x 8 at a time)."""
from __future__ import annotations

import argparse
import itertools

import numpy as np
import torch

from everloop import drift, rollout
from everloop.checkpoint import load_run
from everloop.data import FrameStore, to_float, to_uint8
from everloop.models.mdn import mixture_sample
from everloop.reference import WINDOW, band, window_halves


def summaries(windows, metric: str = "flow_hist") -> list[dict]:
    """Each uint8 window's summary of `metric` (flow_hist or color_hist), as the eval makes it."""
    if metric == "flow_hist":
        return [{metric: drift.flow_counts(w)} for w in windows]
    return [{metric: drift.summarise(w, flow=False)[metric]} for w in windows]


def share(summed: list[dict], metric: str = "flow_hist") -> list[float]:
    """% of the windows' flow magnitudes per bin, slowest first (colour: the 8 fullest bins)."""
    h = np.sum([s[metric] for s in summed], 0).astype(np.float64)
    h = 100 * h / h.sum()
    return np.round(h if metric == "flow_hist" else np.sort(h)[::-1][:8], 1).tolist()


@torch.inference_mode()
def decode(model, z: torch.Tensor) -> np.ndarray:
    """Latents [S, T, L] -> uint8 frames [S, T, H, W, 3] as a stream shows them."""
    x = to_uint8(torch.stack([model.decode(s) for s in z]))
    return rollout.hold_still(x, None, rollout.still_hold(model))[0]


@torch.inference_mode()
def one_step(model, episodes, starts) -> dict[str, torch.Tensor]:
    """Latents [8, WINDOW, L] the RNN predicts for the windows at `starts` (episode, t),
    each from the real latents before it: the mixture's mean, and a draw (fixed seed)."""
    gen, got = torch.Generator().manual_seed(0), {"one-step mean": [], "one-step sample": []}
    for i, t in starts:
        lo = max(t - model.cfg.seed_frames, 0)
        z = model.vae.encode(to_float(np.asarray(episodes[i][lo:t + WINDOW])))[0]
        (logits, mu, log_sigma), _ = model.mdn(z[None, :-1])
        k = t - lo  # the prediction for the window's first frame needs a frame before it
        logits, mu, log_sigma = (p[0, max(k - 1, 0):] for p in (logits, mu, log_sigma))
        head = z[:1] if k == 0 else z[:0]  # a window at an episode's start keeps its real first latent
        scale = model.dream_sigma.log() if model.cfg.fit_dream else 0.0
        got["one-step mean"].append(torch.cat([head, (torch.softmax(logits.float(), -1) * mu).sum(-1)]))
        got["one-step sample"].append(torch.cat([head, mixture_sample(logits, mu, log_sigma + scale, 1.0, gen)]))
    return {k: torch.stack(v) for k, v in got.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--data", required=True)
    ap.add_argument("--at", type=int, default=1000, help="dream step the 64-step window starts at")
    ap.add_argument("--streams", type=int, default=16)
    ap.add_argument("--sigmas", default="", help="comma-separated sigma scales to try besides the fitted one")
    ap.add_argument("--rhos", default="", help="comma-separated noise memories to try")
    ap.add_argument("--metric", default="flow_hist", choices=["flow_hist", "color_hist"])
    a = ap.parse_args()
    metric = a.metric
    torch.set_num_threads(1)
    model, _ = load_run(a.run)
    store, stride = FrameStore(a.data), model.cfg.clip_stride
    episodes = [store.frames[lo:hi:stride] for lo, hi in store.episodes]  # as `everloop eval` takes them
    half_a, half_b = ([np.asarray(episodes[i][t:t + WINDOW]) for i, t in h] for h in window_halves(episodes, WINDOW))
    ref = summaries(half_a, metric)
    width = band(ref, summaries(half_b, metric), [metric], 8, 0)[metric][0]
    print(f"real A: {len(half_a)} windows; band (8 windows of B) {metric} {width:.4f}")

    def show(name: str, got: list[dict], against: list[dict] = ref) -> None:
        d = drift.set_distance(metric, against, got)
        groups = [got[i:i + 8] for i in range(0, len(got) - 7, 8)]  # what the eval's 8 streams would see
        by8 = np.mean([drift.set_distance(metric, against, g) for g in groups]) / width if len(groups) > 1 else d / width
        print(f"{name:<28} {d:.4f} = {d / width:.2f}x (8 at a time {by8:.2f}x)  {share(got, metric)}", flush=True)
    show("real A", ref)
    with torch.inference_mode():
        z = torch.stack([model.vae.encode(to_float(w))[0] for w in half_a[:8]])
    recon = summaries(decode(model, z), metric)
    show("recon (8 windows of A)", recon)
    show("  recon to those windows", recon, ref[:8])
    for name, predicted in one_step(model, episodes, window_halves(episodes, WINDOW)[0][:8]).items():
        show(name, summaries(decode(model, predicted), metric))
    fitted = (float(model.dream_sigma), float(model.dream_rho)) if model.cfg.fit_dream else None
    grid = list(itertools.product([float(s) for s in a.sigmas.split(",") if s],
                                  [float(r) for r in a.rhos.split(",") if r]))
    for setting in [fitted] + [g for g in grid if g != fitted]:
        if setting is not None:
            model.dream_sigma.fill_(setting[0])
            model.dream_rho.fill_(setting[1])
        z = next(rollout.latents(model, batch=a.streams, seed=0, chunk=a.at + WINDOW))[:, a.at:]
        name = "dream" + ("" if setting is None else f" s{setting[0]:.2f} r{setting[1]:.2f}")
        show(name + (" (fitted)" if setting == fitted and setting else ""), summaries(decode(model, z), metric))


if __name__ == "__main__":
    main()
