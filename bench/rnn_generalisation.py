"""Does the worldmodel's MDN-RNN learn the process or memorise the footage?

    .venv/bin/python bench/rnn_generalisation.py RUN --data DATA --steps 3000 --set rnn_dropout=0.2

Retrains RUN's MDN-RNN from scratch (or, with --steps 0, keeps it) on RUN's saved latents (its VAE and calibration kept),
with `--set` overriding config fields, logging the training NLL beside the held-out NLL
every `--every` steps; then dreams 8 streams of `--frames` steps from the prior and scores
them with `everloop eval`'s drift metrics and flags against the dataset at the run's stride.
A train NLL far below the held-out one is a model that knows where in the video it is; its
dreams replay and settle (loops, twins, the still empty lamp of docs/fidelity.md)."""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from everloop import rollout
from everloop.checkpoint import load_run, read_artifacts
from everloop.data import FrameStore
from everloop.evaluate import evaluate_frames
from everloop.metrics import lag_motion
from everloop.models import config_to_dict, make_config
from everloop.models.worldmodel import LATENTS_FILE
from everloop.models.worldmodel_fit import heldout_nll

METRICS = ("feature_fd", "color_hist", "diff_energy", "flow_hist", "temporal_spectrum")


def rnn_on_latents(run: str, data: str, overrides: list[str], fresh: bool):
    """(model, store): RUN's worldmodel with `overrides` (KEY=VALUE, read as `--set` reads
    them) applied to its config, in its RNN stage on its saved latents; with `fresh` a new
    MDN-RNN built from the overridden config (VAE and calibration kept)."""
    model, _ = load_run(run)
    pairs = dict(kv.split("=", 1) for kv in overrides)
    read = make_config("worldmodel", "default", {**config_to_dict(model.cfg), **pairs})
    for key in pairs:
        setattr(model.cfg, key, getattr(read, key))
    if fresh:
        model.reset_stage("rnn")
    store = FrameStore(data)
    model.ranges = store.split(model.cfg.holdout)
    saved = read_artifacts(run, [LATENTS_FILE])[LATENTS_FILE]
    model.latents = (saved["mu"], saved["logvar"])
    model.stage = "rnn"
    return model, store


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--data", required=True)
    ap.add_argument("--steps", type=int, default=3000, help="0: score the run's own RNN")
    ap.add_argument("--every", type=int, default=250)
    ap.add_argument("--frames", type=int, default=1000, help="dream steps per stream (8 streams)")
    ap.add_argument("--tau", type=float, nargs="+", default=[1.0], help="dream temperatures to score")
    ap.add_argument("--set", nargs="*", default=[], help="config overrides KEY=VALUE")
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model, store = rnn_on_latents(a.run, a.data, a.set, fresh=a.steps > 0)
    cfg = model.cfg
    opt = torch.optim.Adam(model.mdn.parameters(), lr=cfg.lr_rnn)
    rng = np.random.default_rng(0)
    t0, curve = time.time(), []
    for step in range(1, a.steps + 1):
        model.train()
        logs = model.train_step(model.sample_batch(store, rng), {"rnn": opt})
        if step % a.every == 0 or step == a.steps:
            model.eval()
            held = (heldout_nll(model) or {}).get("heldout_nll", float("nan"))  # a tail shorter than a window: none
            curve.append((step, round(logs["nll"], 3), round(held, 3)))
            print(f"step {step}: train nll {logs['nll']:.3f} held-out {held:.3f} sigma {logs['sigma']:.3f} "
                  f"({step / (time.time() - t0):.1f} steps/s)", flush=True)
    model.eval()
    stride = cfg.clip_stride
    real = np.asarray(store.frames[::stride])
    real_motion = lag_motion(real, (1, 5, 25))
    for tau in a.tau:
        rollout.set_temperature(model, tau)
        gen = np.concatenate(list(rollout.frames(model, a.frames, batch=8, seed=0)), 1)
        rep = evaluate_frames(gen, [real], steps_per_second=store.fps / stride, horizons=(100, a.frames))
        late = [lag_motion(s[len(s) // 2:], (1, 5, 25)) for s in gen]  # the last half of every stream
        motion = {k: float(np.mean([m[k] for m in late]) / real_motion[k]) for k in (1, 5, 25)}
        still = sum(m[5] < 0.33 * real_motion[5] for m in late)
        out = {"set": a.set, "tau": tau, "curve": curve,
               "worst": {m: round(max(rep["drift"][m].values()), 2) for m in METRICS},
               "flags": [k for k in ("frozen", "flicker", "loop", "collapse", "twins", "nan") if rep.get(k)],
               "late_motion_vs_real": {k: round(v, 2) for k, v in motion.items()}, "still_streams": int(still)}
        print(json.dumps(out), flush=True)

if __name__ == "__main__":
    main()
