"""Recursive next-frame prediction scores for `everloop eval` (families with context_frames > 0).

From `clips` seeded random places in the held-out split of DATA (an episode tree's Test
episodes, else the tail of each episode; see FrameStore.split), the model gets
`context_frames` real frames, then rolls out `steps` frames on its own, each prediction
becoming input to the next.  Every step is scored against the real continuation with
everloop.metrics.prediction_table, and so is the copy-the-last-real-frame baseline, which
a model must beat to have learned anything about motion."""
from __future__ import annotations

import torch

from . import metrics, rollout
from .data import FrameStore, seed_clips
from .errors import EverloopError


def steps_that_fit(store: FrameStore, context: int, stride: int, steps: int) -> int:
    """The most recursion steps (<= `steps`) whose clips fit in one held-out stretch; 0 if none.
    A 2-minute recording's held-out tail (12 s) holds 72 frames at stride 6, not 8 + 64."""
    _, test = store.split()
    longest = max((e - s for s, e in test), default=0)
    return max(0, min(steps, (longest - 1) // stride + 1 - context)) if longest else 0


@torch.inference_mode()
def rollout_from(model, context: torch.Tensor, steps: int, seed: int = 0) -> torch.Tensor:
    """float [B, steps, C, H, W] on the CPU: the model's own continuation of `context`
    [B, k, C, H, W] (on any device; rollout.start moves it to the model's).

    Convention of every family that takes a seed clip: decode(start(...)) shows the last
    context frame and each advance() one new frame."""
    gen = torch.Generator().manual_seed(seed)
    state = rollout.start(model, context.shape[0], gen, seed_clip=context)
    out = []
    for _ in range(steps):
        state = model.advance(state, gen)
        out.append(model.decode(rollout.latent_of(state)).clamp(0, 1))
    return torch.stack(out, 1).cpu()


def evaluate_prediction(model, store: FrameStore, stride: int, steps: int = 64, clips: int = 8,
                        seed: int = 0) -> dict:
    """{"prediction": {step: metrics}, "prediction_baseline": {...}, "prediction_setup": {...}}."""
    k = int(model.context_frames)
    if k < 1:
        raise EverloopError(f"the {model.family} family does not predict from real frames")
    clip = seed_clips(store, k + steps, stride, clips, seed)
    context, truth = clip[:, :k], clip[:, k:]
    pred = rollout_from(model, context, steps, seed)
    if pred.shape[2:] != truth.shape[2:]:
        raise EverloopError(f"the model predicts {list(pred.shape[2:])} frames, DATA has {list(truth.shape[2:])}")
    last = context[:, -1]
    return {"prediction": metrics.prediction_table(pred, truth, last),
            "prediction_baseline": metrics.prediction_table(last[:, None].expand_as(truth), truth, last),
            "prediction_setup": {"clips": clips, "context_frames": k, "steps": steps, "stride": stride,
                                 "split": "test", "psnr": "10 log10(1 / MSE), data in [0, 1], peak 1",
                                 "moving_threshold": metrics.MOVING}}
