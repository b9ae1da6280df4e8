"""The contract of a model family, declared once: what train.py, rollout.py, evaluate.py and
the CLI may ask of a model, and nothing else.

A family is one file: a Config dataclass, its PRESETS, and a subclass of `Family` that
implements the six verbs marked *must*; the others have defaults that say what a plain
family does. Registering it is one line in models/__init__.py (FAMILIES).

Sampling (rollout.py): a *state* is a latent [B, L] or a tuple (latent, *rest);
`decode` turns stacked latents [N, L] (or frames, for a next-frame family) into frames
float [N, C, H, W] in [0, 1]. `start(seed_clip=...)` continues real frames when the family
takes `context_frames` of them; `advance` is one model step, `clip_stride` frames of video.

Training (train.py): `stages()` lists (name, share of the budget); each stage draws
batches with `sample_batch` and runs `train_step(batch, optimizers)`, which returns its
logs (floats). `begin_stage` / `end_stage` frame a stage (a stage with no steps, like the
worldmodel's `encode`, is only hooks). A family does no file I/O: what a stage computes and
the run folder keeps beside the weights (the worldmodel's latents) it hands over with
`take_artifacts`; the trainer writes it (checkpoint.write_artifacts) and passes what the
run folder holds back to `begin_stage` as `saved`. `extra_state` is what training needs that is not a
parameter (step counters, EMA statistics), saved with the run to resume exactly.
`training_only` names the modules sampling never runs (discriminators): their weights go to
train_state.pt, the rest to model.safetensors, each weight in one file."""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from ..data import to_float
from ..errors import EverloopError

DISCRIMINATOR_NAMES = ("disc", "discs", "discriminator")
"""What a family calls its discriminator(s): training-only by default (Family.training_only)."""


class Family(nn.Module):
    family: ClassVar[str] = ""
    """The registry name, written to config.json."""
    requires_seed_clip: ClassVar[bool] = False
    """True: there is no prior to dream from, every rollout continues real frames."""
    trains_on_crops: ClassVar[bool] = False
    """True: cfg.size is a training crop and any frame size >= it samples (fully convolutional)."""
    has_temperature: ClassVar[bool] = False
    """True: `temperature` scales the sampling noise (`--temperature`)."""
    context_frames: int = 0
    """Real frames `start(seed_clip=...)` takes (0: the family cannot continue real frames)."""
    n_actions: int = 0
    """Actions `advance(state, generator, action=...)` takes (0: none; the family is a video,
    not a game). An action-conditioned family (playable) steps on the action given, action 0
    (NOOP) when None; generic code passes one only where n_actions > 0 (`everloop play`)."""
    temperature: float = 1.0
    """Sampling temperature, where has_temperature."""
    batch_state: ClassVar[tuple[str, ...]] = ()
    """Keys of `extra_state` that hold one row per clip of the batch (duralava's persistent
    latents): under torch.distributed each process holds the rows of its share; a
    checkpoint keeps every process's, and a resume at any world size hands out the shares."""
    artifact_files: ClassVar[tuple[str, ...]] = ()
    """Files of the run folder a stage makes (e.g. latents.safetensors): not parameters, too
    dear to remake on every resume. The trainer reads and writes them (checkpoint.py)."""

    # ---- must: sampling ----------------------------------------------------------------------
    def start(self, batch: int, generator: torch.Generator | None = None,
              seed_clip: torch.Tensor | None = None):
        """The first state of `batch` streams (from a prior, or the last frame of seed_clip)."""
        raise NotImplementedError

    def advance(self, state, generator: torch.Generator | None = None, action=None):
        """One model step of every stream; `action` (int64 [B], families with n_actions > 0)
        is what each stream's player pressed."""
        raise NotImplementedError

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Latents [N, ...] -> frames float [N, C, H, W] in [0, 1]."""
        raise NotImplementedError

    # ---- must: training ----------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        raise NotImplementedError

    def clip_spec(self) -> tuple[int, int, int]:
        """(clips per batch, frames per clip, video frames between two of them)."""
        raise NotImplementedError

    def train_step(self, batch: torch.Tensor, opt: dict, autocast: bool = False) -> dict[str, float]:
        """One optimisation step of the current stage; returns its logs."""
        raise NotImplementedError

    # ---- may: what a plain family does -------------------------------------------------------
    @property
    def clip_stride(self) -> int:
        """Video frames per model step: generation plays at the source's speed with it."""
        return int(self.cfg.clip_stride)

    @property
    def frame_size(self) -> int | None:
        """The square frame side the model draws (None: any size, trains_on_crops)."""
        return None if self.trains_on_crops else self.cfg.size

    @staticmethod
    def interpolate(a: torch.Tensor, b: torch.Tensor, w: float) -> torch.Tensor:
        """A latent between two model steps (`generate --interp`); flat latent spaces lerp."""
        return torch.lerp(a, b, w)

    def stages(self) -> list[tuple[str, float]]:
        """(name, share of the training budget) in order; one stage by default."""
        return [("train", 1.0)]

    def stage_steps(self, name: str) -> int | None:
        """Trainer steps of a stage of fixed length (None: its share of --steps / --minutes).
        Such a stage runs its steps whatever the budget (a stop still saves): its share is
        the time the stages before it leave for it. For work whose right amount is a number
        of updates, not a share of a budget that differs from machine to machine. A last
        stage resumed once past its length trains on to the new --steps / --minutes."""
        return None

    def reset_stage(self, name: str) -> None:
        """Forget what stage `name` made (`train --stage NAME` redoes it)."""
        raise EverloopError(f"--stage: the {self.family} family trains in one stage; use --force to start over")

    def begin_stage(self, name: str, store, saved: dict, fresh: bool = True) -> dict | None:
        """Called as a stage starts (fresh) or resumes; may return logs. `saved`: the
        artifact_files the run folder holds, {file name: {key: tensor}} on the CPU."""
        return None

    def take_artifacts(self) -> dict[str, dict[str, torch.Tensor]]:
        """Artifacts made since the last call, {file name: {key: tensor}}, for the trainer to
        write into the run folder; forgotten here once taken."""
        return {}

    def end_stage(self, name: str, store) -> dict | None:
        """Called as a stage completes (`store`: the training data); may return logs."""
        return None

    def sample_batch(self, store, rng: np.random.Generator) -> torch.Tensor:
        """A training batch: clips float [B, T, C, H, W] per clip_spec()."""
        return to_float(store.sample_clips(*self.clip_spec(), rng))

    def batch_fields(self) -> tuple[str, ...]:
        """Config fields that count what one training step draws (clips, frames, windows): the
        global batch, which torch.distributed splits over the processes. Default: every field
        named batch_size or ending in _batch."""
        return tuple(f.name for f in dataclasses.fields(self.cfg) if f.name == "batch_size" or f.name.endswith("_batch"))

    def prepare_sampling(self) -> None:
        """Make the weights ready to sample (e.g. recalibrate statistics) before a save."""

    def training_only(self) -> tuple[str, ...]:
        """Child modules that only training uses: the run folder keeps their weights in
        train_state.pt, not model.safetensors, and a model loaded to generate goes without
        them. Default: the discriminator, under the names the families give it."""
        return tuple(name for name, _ in self.named_children() if name in DISCRIMINATOR_NAMES)

    def drop_training_only(self) -> tuple[str, ...]:
        """Remove the training-only modules (a model loaded to generate has no weights for
        them); returns their names."""
        names = self.training_only()
        for name in names:
            delattr(self, name)
        return names

    def extra_state(self) -> dict:
        """Training state that is not a parameter, saved to resume exactly."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        """Restore extra_state() (moving it to the model's device)."""


class FramesAreStates:
    """Mixin (before Family) for families whose state's latent is the frame itself
    (multiscale, playable): decoding is the identity, and a frame between two steps is
    their cross-fade, written as (1 - w) a + w b so old runs' --interp stays bit-identical."""

    def decode(self, frame: torch.Tensor) -> torch.Tensor:
        return frame

    @staticmethod
    def interpolate(a: torch.Tensor, b: torch.Tensor, w: float) -> torch.Tensor:
        return (1 - w) * a + w * b

