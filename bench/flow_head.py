"""Give a worldmodel run trained with the MDN dream head (`dream_head` 'mdn', every run
before the thirteenth session) the flow head's stage in a copy: the same VAE, latents and
RNN, a flow-matching head trained on the RNN's hidden states, and the dream fits redone
for it (models/flow_head.py). What the head alone changes, on the same weights. The
decoder's calibration is fitted again first (the same patch bank; the colour table of the
reconstructions, which a run whose MDN dreams refitted it no longer holds), so that the
dream colour fit starts where a fresh run's flow stage starts.

    .venv/bin/python bench/flow_head.py RUN --data DATA --out NEW_RUN [--updates N] [--set KEY=JSON ...]

A run that has a flow head gets a new one (--set changes its config first); with
`--refit` it keeps its head and only the dream fits (sigma scale, memory, colour table) are
redone, e.g. after a change to worldmodel_fit.

The stage runs as `everloop train` runs it (the model's sample_batch / train_step /
begin_stage / end_stage, 1 thread, torch seeded 0); the copy has no train_state.pt (it
cannot be resumed, only played, generated from and evaluated)."""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from everloop.checkpoint import (
    load_weights,
    model_from_config,
    read_config,
    write_tensors,
)
from everloop.data import FrameStore
from everloop.models.worldmodel import LATENTS_FILE
from everloop.models.worldmodel_fit import fit_decoder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--updates", type=int, help="flow-head updates (default: as training runs the stage)")
    ap.add_argument("--refit", action="store_true", help="keep the run's head: redo the dream fits only")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=JSON", help="config fields to change")
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    src, out = Path(a.run), Path(a.out)
    if out.exists():
        raise SystemExit(f"{out} exists")
    shutil.copytree(src, out, ignore=shutil.ignore_patterns("eval*", "samples", "train_state*"))
    config = json.loads((out / "config.json").read_text())
    config["config"].update(dream_head="flow", **{k: json.loads(v) for k, v in (kv.split("=", 1) for kv in a.set)})
    (out / "config.json").write_text(json.dumps(config, indent=2))
    model = model_from_config(read_config(out), out / "config.json")
    model.drop_training_only()  # the discriminator: not in model.safetensors
    weights = load_file(out / "model.safetensors")
    fresh_head = {} if a.refit else {k: v for k, v in model.state_dict().items() if k.startswith("flow.")}
    load_weights(model, {**weights, **fresh_head}, out / "model.safetensors")
    store = FrameStore(a.data)
    print("begin", model.begin_stage("flow", store, {LATENTS_FILE: load_file(out / LATENTS_FILE)}), flush=True)
    if model.cfg.dream_colours:  # the table the encode stage fitted, as a fresh run's flow stage finds it
        print("calibration", fit_decoder(model, store, model.latents[0]), flush=True)
    opt = {"flow": torch.optim.Adam(model.flow.parameters(), lr=model.cfg.lr_rnn)}  # as configure_optimizers makes it
    rng, t0 = np.random.default_rng(0), time.time()
    model.train()
    steps = (0 if a.refit else -(-a.updates // model.cfg.flow_updates) if a.updates
             else model.stage_steps("flow"))  # as train runs it
    for step in range(steps):
        logs = model.train_step(model.sample_batch(store, rng), opt)
        if step % 25 == 0 or step == steps - 1:
            print(f"step {step} {logs} {(step + 1) / (time.time() - t0):.2f} steps/s", flush=True)
    logs = model.end_stage("flow", store)
    write_tensors(out / "model.safetensors", {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()})
    print(f"{out}: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in logs.items()))


if __name__ == "__main__":
    main()
