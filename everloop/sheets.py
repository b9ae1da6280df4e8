"""Sample sheets: a grid of frames as one PNG, the picture people look at first."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from . import rollout
from .data import to_uint8
from .outputs import write_file


def grid(frames: np.ndarray, pad: int = 2) -> np.ndarray:
    """uint8 [rows, cols, H, W, 3] -> one uint8 image with `pad` white pixels between tiles."""
    rows, cols, h, w, _ = frames.shape
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, np.uint8)
    for r in range(rows):
        for c in range(cols):
            y, x = pad + r * (h + pad), pad + c * (w + pad)
            out[y:y + h, x:x + w] = frames[r, c]
    return out


def save_sheet(frames: np.ndarray, path: Path, scale: int = 2, labels: list[str] | None = None) -> Path:
    """Write a grid; optional column labels (e.g. the step of each column) on a strip above."""
    img = Image.fromarray(grid(frames))
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    if labels:
        strip = Image.new("RGB", (img.width, 14), "white")
        draw, cols = ImageDraw.Draw(strip), frames.shape[1]
        for c, text in enumerate(labels):
            draw.text((c * img.width // cols + 3, 1), text, fill="black")
        canvas = Image.new("RGB", (img.width, img.height + 14), "white")
        canvas.paste(strip, (0, 0))
        canvas.paste(img, (0, 14))
        img = canvas
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_file(path, lambda p: img.save(p, format="PNG"))  # temp + rename: a kill leaves no half sheet
    return path


def pick_frames(model, steps, streams: int, seed: int = 0, interp: int = 1, seed_clip=None) -> np.ndarray:
    """uint8 [streams, len(steps), H, W, 3] at the given frame indices (sorted, distinct).

    Only the chosen latents are decoded: stepping the latent is cheap, decoding is not,
    so a sheet of frames 99,000+ costs seconds."""
    steps, picked, done = sorted(steps), [], 0
    wanted = set(steps)
    chunk = 1024 if seed_clip is None else steps[-1] + 1  # a next-frame family's "latents" are frames
    for lat in rollout.latents(model, streams, seed, interp, chunk=chunk, seed_clip=seed_clip):
        picked += [lat[:, i] for i in range(lat.shape[1]) if done + i in wanted]
        done += lat.shape[1]
        if done > steps[-1]:
            break
    with torch.inference_mode():
        x = model.decode(torch.stack(picked, 1).flatten(0, 1))
    return to_uint8(x.view(streams, len(steps), *x.shape[1:]))


def stream_sheet(model, path: Path, streams: int = 8, steps=(0, 1, 2, 3, 4, 8, 16, 32, 64, 128, 256, 512),
                 seed: int = 0, interp: int = 1, seed_clip=None) -> Path:
    """Rows = streams (different noise, or different real seed clips), columns = chosen
    frame indices of each."""
    return save_sheet(pick_frames(model, steps, streams, seed, interp, seed_clip), path,
                      labels=[str(s) for s in sorted(steps)])


def window_sheet(model, path: Path, start: int, count: int = 16, stride: int = 1, streams: int = 4,
                 seed: int = 0, interp: int = 1) -> Path:
    """Frames start, start+stride, ... of `streams` streams: e.g. frames 99,000+ of a long run."""
    steps = [start + i * stride for i in range(count)]
    return save_sheet(pick_frames(model, steps, streams, seed, interp), path, labels=[str(s) for s in steps])
