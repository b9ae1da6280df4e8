"""Give a worldmodel run trained before the decoder calibration (models/calibration.py:
colour table, still background) the calibration that training now fits at its encode
stage, in a copy: what the calibration alone changes, on the same weights.

    .venv/bin/python bench/calibrate.py RUN --data DATA --out CALIBRATED_RUN

The copy's config.json gets colour_table and still_snap at the family defaults and its
model.safetensors the fitted buffers; the fit is the family's own encode stage
(`begin_stage("encode")`: every frame encoded again, then the calibration), so it is what
a training run with the same VAE would have."""
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
from everloop.models.calibration import identity_table
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
    shutil.copytree(src, out, ignore=shutil.ignore_patterns("eval-*"))  # only what training wrote
    config = json.loads((out / "config.json").read_text())
    config["config"].update(colour_table=WorldModelConfig.colour_table, still_snap=WorldModelConfig.still_snap)
    (out / "config.json").write_text(json.dumps(config, indent=2))
    size = config["config"]["size"]
    weights = load_file(out / "model.safetensors")  # placeholders of the right shape, then the fit
    weights.update(colour_lut=identity_table(WorldModelConfig.colour_table),
                   still_plate=torch.zeros(3, size, size), stillness=torch.zeros(1, size, size))
    save(weights, out)
    model, _ = load_run(str(out))
    logs = model.begin_stage("encode", FrameStore(a.data), {})
    weights.update({k: model.state_dict()[k].contiguous() for k in ("colour_lut", "still_plate", "stillness")})
    save(weights, out)
    print(f"{out}: calibrated; still pixels {logs['still_share']:.1%}; joint colour histogram L1 on the "
          f"fit pixels {logs['colour_l1_before']:.4f} -> {logs['colour_l1_after']:.4f}")


if __name__ == "__main__":
    main()
