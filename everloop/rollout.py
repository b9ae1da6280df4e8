"""Streaming generation at constant memory, for any family with start/advance/decode.

The latent step is cheap and sequential; the decoder is expensive and parallel. So a chunk
of latents is stepped first and then decoded in one batched call. Memory holds one chunk,
however many frames are asked for, and a stream does not depend on the chunk size.

A state is a latent [B, L] or a tuple (latent, *rest) whose rest (an RNN's hidden state)
only advance() reads: the latents alone are stacked, interpolated and decoded.

A model on a GPU rolls out there: the seeded generator stays on the CPU (the families draw
their noise from it and move it, so a seed gives the same stream on any device), a seed
clip is moved to the model, and frames() hands back uint8 numpy on the CPU as always."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from .data import to_uint8
from .devices import of
from .errors import EverloopError


def nlerp(a: torch.Tensor, b: torch.Tensor, w: float) -> torch.Tensor:
    """Interpolate between two latents on the prior's shell (mean 0, std 1 per sample)."""
    x = (1 - w) * a + w * b
    x = x - x.mean(dim=1, keepdim=True)
    return x / x.std(dim=1, unbiased=False, keepdim=True).clamp_min(1e-6)


def start(model, batch: int, gen: torch.Generator, seed_clip: torch.Tensor | None = None):
    """The model's first state; from a real clip [B or 1, T, C, H, W] in [0, 1] if given."""
    if seed_clip is None:
        return model.start(batch, gen)
    if not model.context_frames:
        raise EverloopError(f"the {model.family} family cannot start from a seed clip")
    return model.start(batch, gen, seed_clip=seed_clip.to(of(model)))


def set_temperature(model, tau: float | None) -> None:
    """Sampling temperature of a family that has one (None: leave it); others: one-line error."""
    if tau is None:
        return
    if not model.has_temperature:
        raise EverloopError(f"--temperature: the {model.family} family has no sampling temperature")
    model.temperature = tau


def still_hold(model) -> int:
    """Grey levels below which a shown pixel holds (hold_still): the family config's
    `still_hold`, 0 for a family without one."""
    return int(getattr(model.cfg, "still_hold", 0))


def latent_of(state) -> torch.Tensor:
    """The part of a state that is stacked and decoded: the state itself or its first item."""
    return state[0] if isinstance(state, tuple) else state


@torch.inference_mode()
def latents(model, batch: int = 1, seed: int = 0, interp: int = 1,
            chunk: int = 256, seed_clip: torch.Tensor | None = None) -> Iterator[torch.Tensor]:
    """Endless chunks [batch, n, latent] of the latent trajectory.

    With interp = k > 1, k - 1 interpolated latents are put between two model steps, so a
    model trained on every 6th frame plays at the video's real speed with interp = 6."""
    gen = torch.Generator().manual_seed(seed)  # on the CPU whatever the model's device
    state = start(model, batch, gen, seed_clip)
    prev = None
    buf: list[torch.Tensor] = []
    while True:
        z = latent_of(state)
        if prev is None or interp <= 1:
            buf.append(z)
        else:
            buf.extend(model.interpolate(prev, z, j / interp) for j in range(1, interp + 1))
        prev, state = z, model.advance(state, gen)
        while len(buf) >= chunk:
            yield torch.stack(buf[:chunk], 1)
            buf = buf[chunk:]


def hold_still(frames: np.ndarray, shown: np.ndarray | None, levels: int) -> tuple[np.ndarray, np.ndarray | None]:
    """uint8 frames [B, n, H, W, 3] of streams whose last shown frames are `shown` [B, H, W, 3]
    (None: these start them): a pixel that moved by fewer than `levels` grey levels in every
    channel from what was shown keeps what was shown. A decoder redraws every pixel every
    step; a camera's still pixels stay still (the family's `still_hold`; 0 = off)."""
    if levels <= 0:
        return frames, None
    out = frames.copy()
    for t in range(out.shape[1]):
        if shown is not None:
            keep = (np.abs(out[:, t].astype(np.int16) - shown).max(-1, keepdims=True) < levels)
            out[:, t] = np.where(keep, shown, out[:, t])
        shown = out[:, t]
    return out, shown.copy()


@torch.inference_mode()
def frames(model, n_frames: int | None, batch: int = 1, seed: int = 0, interp: int = 1,
           chunk: int = 256, seed_clip: torch.Tensor | None = None) -> Iterator[np.ndarray]:
    """Chunks of uint8 frames [batch, n, H, W, 3]; endless when n_frames is None."""
    done, shown, hold = 0, None, still_hold(model)
    for lat in latents(model, batch, seed, interp, chunk, seed_clip):
        if n_frames is not None:
            lat = lat[:, :n_frames - done]
        b, n = lat.shape[:2]
        x = model.decode(lat.flatten(0, 1))
        u8, shown = hold_still(to_uint8(x.view(b, n, *x.shape[1:])), shown, hold)
        yield u8
        done += n
        if n_frames is not None and done >= n_frames:
            return
