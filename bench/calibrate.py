"""Give a worldmodel run trained before the decoder calibration (models/calibration.py:
colour table, still background, patch bank of real detail) the calibration that training
now fits at its encode stage (models/worldmodel_fit.py), in a copy: what the calibration
alone changes, on the same weights. `--set KEY=VALUE` overrides a calibration
field (e.g. patch_detail=0).

    .venv/bin/python bench/calibrate.py RUN --data DATA --out CALIBRATED_RUN [--set KEY=VALUE ...]
        [--dream-colours]

The copy's config.json gets colour_table and still_snap at the family defaults and its
model.safetensors the fitted buffers; the fit is the family's own encode stage
(`begin_stage("encode")`: every frame encoded again, then the calibration), so it is what
a training run with the same VAE would have. With `--dream-colours` the dreams' colour
table is then fitted as training fits it after its flow stage (worldmodel_fit.
fit_dream_colours; kept only where it beats the reconstructions' table), so the copy is
what a training with the same weights and these calibration fields would have played."""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file

from everloop.checkpoint import load_run, write_tensors
from everloop.data import FrameStore
from everloop.models.worldmodel import WorldModel
from everloop.models.worldmodel_config import WorldModelConfig
from everloop.models.worldmodel_fit import fit_dream_colours


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--set", nargs="*", default=[], help="calibration fields KEY=VALUE")
    ap.add_argument("--dream-colours", action="store_true",
                    help="then fit the dreams' colour table as training does after its flow stage")
    a = ap.parse_args()
    torch.set_num_threads(1)
    src, out = Path(a.run), Path(a.out)
    if out.exists():
        raise SystemExit(f"{out} exists")
    shutil.copytree(src, out, ignore=shutil.ignore_patterns("eval-*"))  # only what training wrote
    config = json.loads((out / "config.json").read_text())
    fields = ("colour_table", "still_snap", "patch_detail", "patch_bank", "still_hold")
    cfg = config["config"]
    cfg.update({k: getattr(WorldModelConfig, k) for k in fields})
    cfg.update({k: type(cfg[k])(v) for k, v in (kv.split("=", 1) for kv in a.set)})
    (out / "config.json").write_text(json.dumps(config, indent=2))
    buffers = ("colour_lut", "still_plate", "stillness", "patch_real", "patch_drawn", "patch_proj")
    weights = {k: v for k, v in load_file(out / "model.safetensors").items() if k not in buffers}
    fresh = WorldModel(WorldModelConfig(**cfg)).state_dict()  # placeholders of the right shape, then the fit
    weights.update({k: fresh[k] for k in buffers if k in fresh})
    write_tensors(out / "model.safetensors", weights)
    model, _ = load_run(str(out))
    store = FrameStore(a.data)
    logs = model.begin_stage("encode", store, {})
    if a.dream_colours and model.cfg.dream_colours and model.cfg.colour_table > 0:
        model.eval()
        logs.update(fit_dream_colours(model, store))
    weights.update({k: model.state_dict()[k].contiguous() for k in buffers if k in fresh})
    write_tensors(out / "model.safetensors", weights)
    print(f"{out}: calibrated; " + ", ".join(f"{k} {v:.4g}" for k, v in logs.items()))


if __name__ == "__main__":
    main()
