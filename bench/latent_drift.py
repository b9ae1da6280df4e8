"""Where long dreams go, in latent space: are a worldmodel run's dreams at steps 1,000-3,000
still among the footage's latents, or somewhere of their own?

    .venv/bin/python bench/latent_drift.py RUN --data DATA [--streams 16] [--clusters 24]

`--streams` dreams continue training latents spread over the footage (as the dream fit's
do, `worldmodel_fit.footage_seeds` and `dream_on`) for 3,000 steps at tau 1. Printed:
- occupancy: the total-variation distance between the share of the footage's latents in
  each of `--clusters` k-means cells (fitted on the footage) and the dreams' share, at
  steps 0-300, 1,000-2,000 and 2,000-3,000; beside it the same distance of each fifth of
  the footage to the whole (how much the footage itself moves between scenes);
- detectability: a small MLP trained to tell footage latents (posterior draws) from dream
  latents of steps 1,000-3,000, scored on streams and footage frames it did not train on
  (balanced accuracy; 0.5 = cannot tell), and the share of steps 0-300 it calls dreams.
One run takes ~1 minute on one core (lamp, flow head). Nothing under everloop/ uses this:
it measured, in the twenty-third session, that the lamp's dreams leave the footage's latent
distribution by t = 1k (0.88 held-out balanced accuracy at steps 1,000-3,000; 63% of steps
0-300 called dreams) while their latent speed stays the footage's (docs/fidelity.md)."""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from everloop.checkpoint import load_run, read_artifacts
from everloop.data import FrameStore
from everloop.models.worldmodel import LATENTS_FILE
from everloop.models.worldmodel_fit import dream_on, footage_seeds
from everloop.validate import positive

SPANS = ((0, 300), (1000, 2000), (2000, 3000))


def kmeans(x: torch.Tensor, k: int, seed: int, iters: int = 50) -> torch.Tensor:
    """Lloyd's k-means centres [k, L] of x [N, L], started from k points drawn by seed."""
    centres = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:k]].clone()
    for _ in range(iters):
        cell = torch.cdist(x, centres).argmin(1)
        for j in range(k):
            if (cell == j).any():
                centres[j] = x[cell == j].mean(0)
    return centres


def occupancy(z: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Share of latents z [..., L] nearest each centre."""
    cell = torch.cdist(z.reshape(-1, z.shape[-1]), centres).argmin(1)
    return torch.bincount(cell, minlength=len(centres)).float() / len(cell)


def detectability(real: torch.Tensor, fake: torch.Tensor, early: torch.Tensor, seed: int) -> tuple[float, float]:
    """(balanced accuracy on the held-out halves, share of `early` called fake) of an MLP
    trained on the first halves of real [N, L] and fake [S, T, L] (halves of streams)."""
    torch.manual_seed(seed)
    half_r, half_f = len(real) // 2, fake.shape[0] // 2
    train_x = torch.cat([real[:half_r], fake[:half_f].flatten(0, 1)])
    train_y = torch.cat([torch.ones(half_r), torch.zeros(half_f * fake.shape[1])])
    weight = torch.where(train_y > 0, 0.5 / half_r, 0.5 / (half_f * fake.shape[1]))
    net = torch.nn.Sequential(torch.nn.Linear(real.shape[1], 128), torch.nn.SiLU(),
                              torch.nn.Linear(128, 128), torch.nn.SiLU(), torch.nn.Linear(128, 1))
    opt = torch.optim.Adam(net.parameters(), 1e-3, weight_decay=1e-4)
    for _ in range(1500):
        i = torch.randint(len(train_x), (1024,))
        loss = F.binary_cross_entropy_with_logits(net(train_x[i])[:, 0], train_y[i], weight=weight[i]) / weight[i].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        real_ok = (net(real[half_r:])[:, 0] > 0).float().mean()
        fake_ok = (net(fake[half_f:].flatten(0, 1))[:, 0] <= 0).float().mean()
        early_fake = (net(early.flatten(0, 1))[:, 0] <= 0).float().mean()
    return float(real_ok + fake_ok) / 2, float(early_fake)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--data", required=True)
    ap.add_argument("--streams", type=positive("--streams"), default=16)
    ap.add_argument("--clusters", type=positive("--clusters"), default=24)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(1)
    model, _ = load_run(a.run)
    model.eval()
    store = FrameStore(a.data)
    # the run's own split and latents, as its RNN stage had them; a copied run folder without
    # its latents encodes the footage again (and refits the decoder's calibration, unused here)
    model.begin_stage("rnn", store, read_artifacts(a.run, [LATENTS_FILE]))
    train = torch.cat([torch.arange(s, e) for s, e in model.ranges[0]])
    mu, logvar = model.latents[0][train], model.latents[1][train]
    real = mu + (0.5 * logvar).exp() * torch.randn(mu.shape, generator=torch.Generator().manual_seed(a.seed))
    every = real[::model.cfg.clip_stride]
    centres = kmeans(every, a.clusters, a.seed)
    footage = occupancy(every, centres)
    z = dream_on(model, footage_seeds(model, a.streams), SPANS[-1][1], torch.Generator().manual_seed(a.seed))
    fifths = [0.5 * (occupancy(c, centres) - footage).abs().sum().item() for c in every.chunk(5)]
    print(f"{a.run}: {a.streams} dreams x {z.shape[1]} steps, {a.clusters} k-means cells of the footage's latents")
    print("occupancy TV to the footage's: " + ", ".join(
        f"steps {lo}-{hi} {0.5 * (occupancy(z[:, lo:hi], centres) - footage).abs().sum().item():.3f}" for lo, hi in SPANS)
        + f" (the footage's fifths to its whole: {' / '.join(f'{f:.3f}' for f in fifths)})")
    step = (z[:, 1:] - z[:, :-1]).norm(dim=-1).mean().item()
    real_step = (every[1:] - every[:-1]).norm(dim=-1).mean().item()
    print(f"latent step {step:.3f} (footage {real_step:.3f}), |z| {z.norm(dim=-1).mean().item():.2f} "
          f"(footage {every.norm(dim=-1).mean().item():.2f})")
    acc, early = detectability(real[torch.randperm(len(real), generator=torch.Generator().manual_seed(a.seed))],
                               z[:, 1000:3000], z[:, :300], a.seed)
    print(f"detectability of steps 1000-3000: balanced accuracy {acc:.3f} on held-out halves; "
          f"steps 0-300 called dreams {early:.3f}")


if __name__ == "__main__":
    main()
