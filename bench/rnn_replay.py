"""Does a worldmodel's dream replay its footage? Latent-space measures, no decoding.

    .venv/bin/python bench/rnn_replay.py RUN --data DATA [--steps 4000 --set posterior_noise=1.0] [--out COPY]

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
With --out the retrained run is written as a copy for `everloop eval`."""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from everloop.checkpoint import load_run, read_artifacts, write_tensors
from everloop.data import FrameStore
from everloop.models.worldmodel import LATENTS_FILE
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
    ap.add_argument("--out", help="write the retrained run here (a copy of RUN)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    model, _ = load_run(a.run)
    cfg = model.cfg
    for kv in a.set:
        key, value = kv.split("=", 1)
        setattr(cfg, key, type(getattr(cfg, key))(value))
    store = FrameStore(a.data)
    model.ranges = store.split(cfg.holdout)
    saved = read_artifacts(a.run, [LATENTS_FILE])[LATENTS_FILE]
    model.latents = (saved["mu"], saved["logvar"])
    logs: dict = {}
    if a.steps > 0:
        model.reset_stage("rnn")
        model.stage = "rnn"
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
    held = float(torch.cdist(mu[torch.from_numpy(held_idx)], train_z).min(1).values.median()) if len(held_idx) else None
    follows = np.abs(np.diff(nn_at, axis=1) - cfg.clip_stride) <= 1
    held_track = None
    if len(held_idx) > cfg.clip_stride:  # unseen footage's own share (its nearest training moments)
        hz = mu[torch.from_numpy(held_idx)]
        h_at = train_idx[torch.cdist(hz, train_z).min(1).indices.numpy()]
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
           "nn_dream": round(float(nn_dist.median()), 3), "nn_heldout": round(held, 3) if held else None,
           "track_share": round(float(follows.mean()), 3),
           "track_heldout": round(held_track, 3) if held_track is not None else None,
           "track_longest": max(longest_run(f) for f in follows),
           "revisit_thr": round(thr, 3), "revisit_longest": runs, "revisit_per_1k": round(1000 * below / dream[:, 2:, 0].numel(), 1),
           "real_revisit_longest": longest_run((real_r < thr).numpy())}
    print(json.dumps(out), flush=True)
    if a.out:
        dst = Path(a.out)
        if dst.exists():
            raise SystemExit(f"{dst} exists")
        shutil.copytree(a.run, dst, ignore=shutil.ignore_patterns("eval*", "samples"))
        config = json.loads((dst / "config.json").read_text())
        config["config"].update({k: getattr(cfg, k) for k in (kv.split("=", 1)[0] for kv in a.set)})
        (dst / "config.json").write_text(json.dumps(config, indent=2))
        weights = load_file(dst / "model.safetensors")
        weights.update({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()
                        if k.startswith(("mdn.", "dream_"))})
        write_tensors(dst / "model.safetensors", weights)
        (dst / "train_state.pt").unlink(missing_ok=True)  # not this model's: no resuming a copy


if __name__ == "__main__":
    main()
