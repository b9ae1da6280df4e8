"""`make demo`: learn the embedded lava-lamp clip for a few minutes and write it out.

It runs exactly the commands a user would type, printing each one first, so the demo is
also the tutorial, and ends by measuring the one thing a viewer sees first: does the lamp
move as much as the real clip, at lags of 1, 2 and 10 seconds (mean |x_{t+k} - x_t| of the
written video against the clip's; within 0.67x-1.5x is the target, docs/fidelity.md).
EVERLOOP_DEMO_MINUTES changes the training time (default 7)."""
from __future__ import annotations

import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from .cli import main as everloop
from .sources.demo import DEMO_CLIP

LAGS = (30, 60, 300)  # video frames: 1, 2 and 10 seconds at 30 fps


def run(*args: str) -> None:
    print(f"\n$ everloop {' '.join(shlex.quote(a) for a in args)}", flush=True)
    code = everloop(list(args))
    if code:
        sys.exit(code)


def motion_ratios(video: Path, data: Path, lags=LAGS) -> dict[int, float]:
    """Mean frame difference at each lag of the written video / the real clip's."""
    from .data import FrameStore, Geometry
    from .metrics import lag_motion
    from .sources import open_source
    gen = np.stack(list(open_source(video, Geometry()).frames))
    real = np.asarray(FrameStore(data).frames[:len(gen) + max(lags)])
    g, r = lag_motion(gen, lags), lag_motion(real, lags)
    return {k: g[k] / max(r[k], 1e-9) for k in lags if k in g and k in r}


def main() -> None:
    out = Path("demo")
    minutes = os.environ.get("EVERLOOP_DEMO_MINUTES", "7")
    t0 = time.time()
    run("prepare", str(DEMO_CLIP), "--size", "64", "--out", str(out / "data"), "--force")
    run("train", "--data", str(out / "data"), "--out", str(out / "run"), "--preset", "demo",
        "--minutes", minutes, "--sample-every", "200", "--force")
    run("generate", str(out / "run"), "--frames", "600", "--out", str(out / "lava.png"), "--force")
    run("generate", str(out / "run"), "--frames", "1800", "--out", str(out / "lava.mp4"), "--force")
    run("sheet", str(out / "run"), "--start", "0", "--count", "12", "--stride", "8", "--streams", "6",
        "--out", str(out / "sheet.png"), "--force")
    ratios = motion_ratios(out / "lava.mp4", out / "data")
    print("motion of demo/lava.mp4 / the real clip's (mean frame difference; 1 = as much): "
          + ", ".join(f"lag {k}: {v:.2f}x" for k, v in ratios.items()))
    print(f"""
Done in {(time.time() - t0) / 60:.1f} min. Look at:
  {out}/lava.png   an animated PNG that loops forever (open it in a browser)
  {out}/lava.mp4   one minute of endless lava lamp
  {out}/sheet.png  6 streams x 12 moments; {out}/run/samples/ shows training progress

Go live (a window; Esc or q quits):
  .venv/bin/everloop live {out}/run --scale 6

Train on your own video (an hour of footage and 30+ minutes of training is better):
  .venv/bin/everloop prepare my_video.mp4 --size 64 --out data/mine
  .venv/bin/everloop train --data data/mine --out runs/mine --minutes 30
  .venv/bin/everloop generate runs/mine --frames 100000 --out mine.mp4
  (Ctrl-C stops training and saves; add --resume to continue.)""")


if __name__ == "__main__":
    main()
