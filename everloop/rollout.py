"""Streaming generation at constant memory, for any family with reset/advance/decode.

The latent step is cheap and sequential; the decoder is expensive and parallel. So a chunk
of latents is stepped first and then decoded in one batched call. Memory holds one chunk,
however many frames are asked for, and a stream does not depend on the chunk size."""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from .data import to_uint8


def nlerp(a: torch.Tensor, b: torch.Tensor, w: float) -> torch.Tensor:
    """Interpolate between two latents on the prior's shell (mean 0, std 1 per sample)."""
    x = (1 - w) * a + w * b
    x = x - x.mean(dim=1, keepdim=True)
    return x / x.std(dim=1, unbiased=False, keepdim=True).clamp_min(1e-6)


@torch.inference_mode()
def latents(model, batch: int = 1, seed: int = 0, interp: int = 1,
            chunk: int = 256) -> Iterator[torch.Tensor]:
    """Endless chunks [batch, n, latent] of the latent trajectory.

    With interp = k > 1, k - 1 interpolated latents are put between two model steps, so a
    model trained on every 6th frame plays at the video's real speed with interp = 6."""
    gen = torch.Generator().manual_seed(seed)
    z = model.start(batch, gen)
    prev = None
    buf: list[torch.Tensor] = []
    while True:
        if prev is None or interp <= 1:
            buf.append(z)
        else:
            buf.extend(nlerp(prev, z, j / interp) for j in range(1, interp + 1))
        prev, z = z, model.advance(z, gen)
        while len(buf) >= chunk:
            yield torch.stack(buf[:chunk], 1)
            buf = buf[chunk:]


@torch.inference_mode()
def frames(model, n_frames: int | None, batch: int = 1, seed: int = 0, interp: int = 1,
           chunk: int = 256) -> Iterator[np.ndarray]:
    """Chunks of uint8 frames [batch, n, H, W, 3]; endless when n_frames is None."""
    done = 0
    for lat in latents(model, batch, seed, interp, chunk):
        if n_frames is not None:
            lat = lat[:, :n_frames - done]
        b, n = lat.shape[:2]
        x = model.decode(lat.flatten(0, 1))
        yield to_uint8(x.view(b, n, *x.shape[1:]))
        done += n
        if n_frames is not None and done >= n_frames:
            return
