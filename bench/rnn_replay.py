"""Does a worldmodel's dream replay its footage? Latent-space measures, no decoding.

    .venv/bin/python bench/rnn_replay.py RUN --data DATA [--steps 4000 --set posterior_noise=1.0]

With --steps > 0 the MDN-RNN is retrained from scratch on RUN's saved latents (VAE and
calibration kept; `--set` overrides config fields) and the dream fit is redone as training
does; --steps 0 scores the run as it is. Then 8 streams dream `--frames` steps from the
prior and are compared with the footage's latents (posterior means, every frame):
- `nn`: median distance of a dreamt latent to the nearest training latent, beside the
  same for the held-out tail's latents (a model that generalises dreams about as far from
  the training frames as unseen footage lies; one that has the clip by heart lies closer);
- `track`: share of dream steps whose nearest training latent is the one `clip_stride`
  frames after the previous step's nearest (the dream follows the clip), and the longest
  such run;
- `revisit`: eval's loop signal in latent space: each step's distance to the nearest of its
  stream's latents 2..300 steps back, over the training sequence's lag-1 step; runs below
  the training sequence's own 1st percentile (longest, and steps in such runs per 1,000).
To eval a retrained RNN, redo the stage in a copy of the run instead: edit the copy's
config.json and run `everloop train --data DATA --out COPY --stage rnn --steps N`."""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

# bench/ is on the path of a script run from it
from rnn_generalisation import rnn_on_latents

from everloop.models.worldmodel_fit import fit_dream


def revisit(z: torch.Tensor, window: int = 300) -> torch.Tensor:
    """[T, L] -> [T - 2]: distance of z_t to the nearest z_{t-lag}, lag 2..window."""
    out = []
    for t in range(2, len(z)):
        past = z[max(0, t - window):t - 1]
        out.append((past - z[t]).norm(dim=-1).min())
    return torch.stack(out)


def longest_run(mask: np.ndarray) -> int:
    best = run = 0
    for m in mask:
        run = run + 1 if m else 0
        best = max(best, run)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--data", required=True)
    ap.add_argument("--steps", type=int, default=0)
    ap.add_argument("--frames", type=int, default=2000, help="dream steps per stream (8 streams)")
    ap.add_argument("--set", nargs="*", default=[], help="config overrides KEY=VALUE")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    model, store = rnn_on_latents(a.run, a.data, a.set, fresh=a.steps > 0)
    cfg = model.cfg
    logs: dict = {}
    if a.steps > 0:
        opt = torch.optim.Adam(model.mdn.parameters(), lr=cfg.lr_rnn)
        rng, t0 = np.random.default_rng(a.seed), time.time()
        model.train()
        for step in range(1, a.steps + 1):
            got = model.train_step(model.sample_batch(store, rng), {"rnn": opt})
            if step % 1000 == 0:
                print(f"step {step}: nll {got['nll']:.3f} ({step / (time.time() - t0):.1f} steps/s)", flush=True)
        model.eval()
        if cfg.fit_dream:  # a run saved before the fit (--set fit_dream=True) has no buffers for it
            model.register_buffer("dream_sigma", torch.tensor(1.0))
            model.register_buffer("dream_rho", torch.tensor(0.0))
            logs = fit_dream(model)
    model.eval()
    mu = model.latents[0]
    train_idx = np.concatenate([np.arange(s, e) for s, e in model.ranges[0]])
    held_idx = np.concatenate([np.arange(s, e) for s, e in model.ranges[1]]) if model.ranges[1] else train_idx[:0]
    train_z = mu[torch.from_numpy(train_idx)]
    with torch.no_grad():
        gen = torch.Generator().manual_seed(a.seed)
        state, zs = model.start(8, gen), []
        for _ in range(a.frames):
            state = model.advance(state, gen)
            zs.append(state[0])
        dream = torch.stack(zs, 1)  # [8, T, L]
    d = torch.cdist(dream.flatten(0, 1), train_z)
    nn_dist, nn_at = d.min(1)
    nn_at = torch.from_numpy(train_idx)[nn_at].view(8, -1).numpy()
    follows = np.abs(np.diff(nn_at, axis=1) - cfg.clip_stride) <= 1
    held, held_track = None, None
    if len(held_idx) > cfg.clip_stride:  # unseen footage: how near the training moments, how often it follows them
        h_dist, h_at = torch.cdist(mu[torch.from_numpy(held_idx)], train_z).min(1)
        held, h_at = float(h_dist.median()), train_idx[h_at.numpy()]
        h_follow = [np.abs(np.diff(h_at[p::cfg.clip_stride]) - cfg.clip_stride) <= 1 for p in range(cfg.clip_stride)]
        held_track = float(np.concatenate(h_follow).mean())
    real = mu[torch.from_numpy(np.arange(model.ranges[0][0][0], model.ranges[0][0][1], cfg.clip_stride))]
    step = float((real[1:] - real[:-1]).norm(dim=-1).median())
    real_r = revisit(real) / step
    thr = float(torch.quantile(real_r, 0.01))
    runs, below = [], 0
    for s in dream:
        r = (revisit(s) / step).numpy()
        runs.append(longest_run(r < thr))
        below += int((r < thr).sum())
    out = {"run": a.run, "set": a.set, "steps": a.steps, **{k: round(v, 3) if isinstance(v, float) else v
                                                            for k, v in logs.items()},
           "nn_dream": round(float(nn_dist.median()), 3), "nn_heldout": round(held, 3) if held is not None else None,
           "track_share": round(float(follows.mean()), 3),
           "track_heldout": round(held_track, 3) if held_track is not None else None,
           "track_longest": max(longest_run(f) for f in follows),
           "revisit_thr": round(thr, 3), "revisit_longest": runs, "revisit_per_1k": round(1000 * below / dream[:, 2:, 0].numel(), 1),
           "real_revisit_longest": longest_run((real_r < thr).numpy())}
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
