"""Dream speed of worldmodel runs, measured in one process: model steps per second at a
batch, the latents alone (RNN + dream head) and decoded to frames as a stream shows them.

    .venv/bin/python bench/dream_speed.py RUN [RUN ...] [--batch 1 8] [--steps 300]

Compare runs of one invocation only (the machine is shared and noisy); the flow head's
16 Euler steps of a small MLP against the MDN's one mixture draw is the row it was made for."""
from __future__ import annotations

import argparse
import time

import torch

from everloop import rollout
from everloop.checkpoint import load_run


@torch.inference_mode()
def steps_per_second(model, batch: int, steps: int, decode: bool) -> float:
    """Model steps per second of `batch` streams from the prior (after one warm-up chunk)."""
    chunks = rollout.latents(model, batch=batch, seed=0, chunk=steps)
    next(chunks)
    t0 = time.perf_counter()
    z = next(chunks)
    if decode:
        for i in range(z.shape[1]):
            model.decode(z[:, i])
    return steps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--steps", type=int, default=300)
    a = ap.parse_args()
    torch.set_num_threads(1)
    print("| run | dream head | batch | latent steps/s | decoded steps/s |\n|---|---|---|---|---|")
    for run in a.runs:
        model, _ = load_run(run)
        for b in a.batch:
            lat, dec = (steps_per_second(model, b, a.steps, d) for d in (False, True))
            print(f"| {run} | {model.cfg.dream_head} | {b} | {lat:.0f} | {dec:.0f} |", flush=True)


if __name__ == "__main__":
    main()
