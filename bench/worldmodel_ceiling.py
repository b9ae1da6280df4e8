"""What a world model's VAE alone allows on the motion metrics of `everloop eval`.

    .venv/bin/python bench/worldmodel_ceiling.py RUN --data data/lava64 [--frames 600]

A dream can only be as sharp as its decoder: this scores real held-out footage (the last
half of DATA at the run's stride), the same footage blurred by a 1-px Gaussian, and the
same footage encoded and decoded by RUN's VAE (posterior mean, and mean + p x posterior
std noise), against the first half as the reference. If the reconstructions of real
motion already sit outside 2x the band, no RNN can bring a dream inside it. Prints a
markdown table of the largest ratio to the real band over the horizons."""
from __future__ import annotations

import argparse

import numpy as np
import torch

from everloop.checkpoint import load_run
from everloop.data import FrameStore, to_float, to_uint8
from everloop.evaluate import evaluate_frames

METRICS = ("feature_fd", "color_hist", "diff_energy", "flow_hist", "temporal_spectrum")


@torch.no_grad()
def autoencode(model, frames: np.ndarray, noise: float = 0.0, gen: torch.Generator | None = None,
               batch: int = 256) -> np.ndarray:
    """Frames through the VAE's encoder and the family's decode (with its calibration)."""
    out = []
    for i in range(0, len(frames), batch):
        mu, logvar = model.vae.encode(to_float(frames[i:i + batch]))
        z = mu + noise * torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=gen) if noise else mu
        out.append(to_uint8(model.decode(z)))
    return np.concatenate(out)


def held_out_streams(store: FrameStore, stride: int, frames: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """(the first half of DATA at `stride`: the reference, 4 streams of up to `frames` steps
    spread over the second half; they overlap where the recording is short)."""
    x = np.asarray(store.frames[::stride])
    ref, held = x[:len(x) // 2], x[len(x) // 2:]
    step = max(1, (len(held) - frames) // 3)
    streams = [held[i * step:i * step + frames] for i in range(4)]
    if len(streams[-1]) < frames:
        raise SystemExit(f"{len(held)} held-out frames at stride {stride}; use a smaller --frames")
    return ref, streams


def print_table(rows: dict[str, np.ndarray], ref: np.ndarray, steps_per_second: float) -> None:
    """A markdown row per set of streams [4, T, H, W, 3]: the largest ratio to the real band
    over the horizons 16, 128 and T."""
    print("| frames | " + " | ".join(METRICS) + " |")
    print("|---|" + "---:|" * len(METRICS))
    for name, gen in rows.items():
        horizons = tuple(sorted({16, 128, gen.shape[1]}))
        rep = evaluate_frames(gen, [ref], steps_per_second=steps_per_second, horizons=horizons)
        print(f"| {name} | " + " | ".join(f"{max(rep['drift'][m].values()):.2f}" for m in METRICS) + " |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--data", required=True)
    ap.add_argument("--frames", type=int, default=600, help="frames per stream (4 streams)")
    ap.add_argument("--noise", type=float, nargs="*", default=[0.35, 1.0])
    a = ap.parse_args()
    torch.set_num_threads(1)
    model, config = load_run(a.run)
    stride = int(config["config"].get("clip_stride", 1))
    store = FrameStore(a.data)
    ref, streams = held_out_streams(store, stride, a.frames)
    rows = {"real footage": np.stack(streams)}
    try:  # the same footage a little blurred: how much of the gap is sharpness alone
        import cv2
        rows["real footage, Gaussian blur sigma 1 px"] = np.stack(
            [np.stack([cv2.GaussianBlur(f, (0, 0), 1.0) for f in s]) for s in streams])
    except ImportError:
        pass
    for p in [0.0, *a.noise]:
        gen = torch.Generator().manual_seed(0)
        name = "VAE, posterior mean" if p == 0 else f"VAE, mean + {p:g} x posterior std"
        rows[name] = np.stack([autoencode(model, s, p, gen) for s in streams])
    print(f"{a.run}: largest ratio to the real band over horizons 16, 128, {a.frames}; 4 streams, stride {stride}\n")
    print_table(rows, ref, store.fps / stride)


if __name__ == "__main__":
    main()
