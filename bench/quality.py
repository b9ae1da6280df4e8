"""Does a run play forever? Motion, loops and diversity of a run's streams against the real data.

    .venv/bin/python bench/quality.py RUN --data DATA [--frames 100000] [--sheets docs/NAME]

Streams are rolled out at raw model steps (interp 1), the unit the model is trained in;
the real reference is the video at the run's clip stride. Prints JSON and, with --sheets,
writes sample sheets of frames 1,000+ and 99,000+ (or the last 1,000 of --frames)."""
from __future__ import annotations

import argparse
import json
import sys
import time

import motion_stats
import numpy as np

from everloop import metrics, rollout, sheets
from everloop.checkpoint import load_run
from everloop.data import FrameStore
from everloop.models.duralava import latent_moments


def stream_window(model, start: int, count: int, seed: int = 0) -> np.ndarray:
    """uint8 [count, H, W, 3]: frames start .. start+count of stream `seed`, at constant memory."""
    return sheets.pick_frames(model, range(start, start + count), streams=1, seed=seed)[0]


def report(run: str, data: str, frames: int, sheet_prefix: str | None) -> dict:
    model, config = load_run(run)
    stride = int(config["config"].get("clip_stride", 1))
    store = FrameStore(data)
    real = np.asarray(store.frames[: min(len(store), 6000 * stride): stride])
    t0 = time.time()
    early = stream_window(model, 1000, 1000)
    late = stream_window(model, frames - 1000, 1000)
    lags = (1, 2, 5, 10, 20)
    res = {"run": run, "frames": frames, "stride": stride, "seconds": None,
           "real": {"lag_motion": metrics.lag_motion(real, lags),
                    "revisit_300": motion_stats.nearest_revisit(real[:1000], 300)["min_distance"],
                    "spread": motion_stats.stream_spread(real[np.linspace(0, len(real) - 1, 8).astype(int)])}}
    for name, x in (("early", early), ("late", late)):
        m = metrics.lag_motion(x, lags)
        res[name] = {"lag_motion": m, "lag10_over_lag1": m[10] / max(m[1], 1e-9),
                     "revisit_300": motion_stats.nearest_revisit(x, 300),
                     "identical_run": motion_stats.identical_runs(x),
                     "mean_rgb": x.reshape(-1, 3).mean(0).round(1).tolist()}
    res["real"]["lag10_over_lag1"] = res["real"]["lag_motion"][10] / res["real"]["lag_motion"][1]
    last = sheets.pick_frames(model, [frames - 1], streams=8)[:, 0]
    res["late"]["spread_8_streams"] = motion_stats.stream_spread(last)
    z = next(rollout.latents(model, batch=64, chunk=1001))[:, -1]  # 64 streams at step 1000
    res["latent_1000"] = {"per_dim_std_across_streams": float(z.std(0).mean()),
                          **{k: float(v) for k, v in latent_moments(z).items()}}
    res["seconds"] = round(time.time() - t0, 1)
    if sheet_prefix:
        for name, start in (("1000", 1000), (str(frames - 1000), frames - 1000)):
            sheets.window_sheet(model, f"{sheet_prefix}-frames-{name}.png", start=start, count=12,
                                stride=10, streams=8)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--data", required=True)
    ap.add_argument("--frames", type=int, default=100_000)
    ap.add_argument("--sheets", help="prefix for sheet PNGs, e.g. docs/duralava")
    a = ap.parse_args()
    print(json.dumps(report(a.run, a.data, a.frames, a.sheets), indent=1, default=str))


if __name__ == "__main__":
    sys.exit(main())
