"""Give a worldmodel run trained before `fit_dream` / `dream_colours` the dream fits that
training now makes at the end of its RNN stage (models/worldmodel_fit.py: fit_dream, a
scale of the mixture sigmas and a memory of the sampling noise whose dreamt latents move
like the footage's; then fit_dream_colours, the colour table refitted on dreams), in a
copy: what the fits alone change, on the same weights.

    .venv/bin/python bench/fit_dream.py RUN --data DATA --out FITTED_RUN

The copy's config.json gets fit_dream and dream_colours true and its model.safetensors the two fitted
scalars and the table (replacing the temperature a development version of the fit saved); the latents are the ones the run's encode stage saved (RUN/latents.safetensors)."""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file

from everloop.checkpoint import load_run, write_tensors
from everloop.data import FrameStore
from everloop.models.worldmodel import LATENTS_FILE
from everloop.models.worldmodel_fit import fit_dream, fit_dream_colours

FITTED = ("dream_sigma", "dream_rho")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    torch.set_num_threads(1)
    src, out = Path(a.run), Path(a.out)
    if out.exists():
        raise SystemExit(f"{out} exists")
    shutil.copytree(src, out, ignore=shutil.ignore_patterns("eval*", "samples"))  # only what training wrote
    config = json.loads((out / "config.json").read_text())
    config["config"].update(fit_dream=True, dream_colours=True)
    (out / "config.json").write_text(json.dumps(config, indent=2))
    weights = {k: v for k, v in load_file(out / "model.safetensors").items() if k != "dream_tau"}  # an early fit's
    weights.update({k: torch.tensor(v) for k, v in zip(FITTED, (1.0, 0.0)) if k not in weights})
    write_tensors(out / "model.safetensors", weights)
    model, _ = load_run(str(out))  # eval mode, no dropout: as a dream runs
    store = FrameStore(a.data)
    model.begin_stage("rnn", store, {LATENTS_FILE: load_file(out / LATENTS_FILE)})
    logs = fit_dream(model)
    if model.cfg.colour_table > 0:
        logs.update(fit_dream_colours(model, store))
    weights.update({k: getattr(model, k).detach().cpu().contiguous()
                    for k in (*FITTED, "colour_lut") if hasattr(model, k)})
    write_tensors(out / "model.safetensors", weights)
    print(f"{out}: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in logs.items()))


if __name__ == "__main__":
    main()
