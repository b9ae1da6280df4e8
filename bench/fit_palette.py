"""Give a trained playable run the game's palette (docs/play.md, section 6b): copies RUN to
OUT with `palette` set and its colours counted from DATA's training frames, as training
does when it starts, so a run trained before the option existed plays snapped.

    .venv/bin/python bench/fit_palette.py runs/play/pacman60 --data data/mspacman200 --out runs/play/pacman60s"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from everloop import checkpoint
from everloop.data import FrameStore
from everloop.models import build


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--palette", type=int, default=256)
    a = ap.parse_args()
    old, meta = checkpoint.load_run(a.run)
    cfg = old.cfg
    cfg.palette = a.palette
    model = build("playable", cfg)
    model.load_state_dict(old.state_dict(), strict=False)  # all but the palette's buffers
    print(model.begin_stage("train", FrameStore(a.data), {}, fresh=True))
    out = Path(a.out)
    shutil.copytree(a.run, out)
    (out / "train_state.pt").unlink(missing_ok=True)  # a copy to play and evaluate, not to resume
    checkpoint.save_run(out, model, {k: v for k, v in meta.items() if k not in ("family", "config")})


if __name__ == "__main__":
    main()
