"""Give a worldmodel run trained before the colour table (models/colour.py) the table that
training now fits at its encode stage, in a copy: what the table alone changes, on the
same weights.

    .venv/bin/python bench/colour_table.py RUN --data DATA --out RUN_WITH_TABLE

The copy's config.json gains colour_table (the family default) and its model.safetensors
the fitted table; the fit is the family's own (`WorldModel._fit_colours`) on the run's
saved posterior means, so it is the table a training run with the same VAE would have."""
from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from everloop.checkpoint import load_run
from everloop.data import FrameStore
from everloop.models.colour import identity_table
from everloop.models.worldmodel_config import WorldModelConfig


def save(weights: dict, run: Path) -> None:
    save_file(weights, run / "model.safetensors.tmp")
    os.replace(run / "model.safetensors.tmp", run / "model.safetensors")


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
    shutil.copytree(src, out)
    config = json.loads((out / "config.json").read_text())
    if config["config"].get("colour_table"):
        raise SystemExit(f"{src} already has a colour table")
    config["config"]["colour_table"] = WorldModelConfig.colour_table
    (out / "config.json").write_text(json.dumps(config, indent=2))
    weights = load_file(out / "model.safetensors")
    weights["colour_lut"] = identity_table(WorldModelConfig.colour_table)
    save(weights, out)
    model, _ = load_run(str(out))
    store = FrameStore(a.data)
    model.ranges = store.split(model.cfg.holdout) if model.cfg.holdout > 0 else ([list(e) for e in store.episodes], [])
    mu = load_file(out / "latents.safetensors")["mu"]
    logs = model._fit_colours(store, mu)
    weights["colour_lut"] = model.colour_lut.contiguous()
    save(weights, out)
    print(f"{out}: colour table fitted; joint colour histogram L1 on the fit pixels "
          f"{logs['colour_l1_before']:.4f} -> {logs['colour_l1_after']:.4f}")


if __name__ == "__main__":
    main()
