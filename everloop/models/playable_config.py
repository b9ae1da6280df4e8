"""The playable family's options (playable.py): one documented field each, with the
measurement behind its default (docs/play.md)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


@dataclass
class PlayableConfig:
    # Options added after runs were saved: a config.json without them loads with these,
    # which reproduce what such a run did (models.config_from_dict).
    LEGACY: ClassVar[dict] = {"action_history": 1, "palette": 0, "head": "pixels", "key_guidance": 0.0}

    size: int = 64
    """Frame height = width in pixels, a multiple of 2^(levels - 1) (DIAMOND: 64)."""
    context: int = 4
    """Past frames the predictor sees (DIAMOND: 4); a seed clip must hold this many."""
    n_actions: int = 18
    """Size of the action vocabulary; a dataset's action count must not exceed it (ALE's
    full action set is 18; Ms. Pac-Man uses the first 9). Action 0 is NOOP."""
    action_history: int = 4
    """Actions the predictor sees: the key pressed now and the ones before it (at most
    `context`: the ones that led between the context frames). A rollout starts with NOOPs
    for the actions before its first frame."""
    history_dropout: float = 0.1
    """Share of training samples whose earlier actions are replaced by NOOP, as at the
    start of a rollout (the key pressed now is always the real one)."""
    widths: tuple = (32, 64, 96, 128)
    """Channels of the U-Net per level, fine to coarse; each level halves the side
    (64x64: 64, 32, 16, 8)."""
    blocks: tuple = (1, 1, 2)
    """Residual blocks per level below the finest (32, 16, 8 at 64x64), on the way down; as
    many on the way up but at the coarsest level, which is passed once."""
    fine_blocks: int = 0
    """Residual blocks at the finest level (64x64). None by default: there a block costs as
    much as all the coarser ones, and the skip connection already carries the detail."""
    cond_dim: int = 64
    """Width of the conditioning vector (action embedding + noise level) fed to every block."""
    clip_stride: int = 1
    """Dataset frames per model step (1: a recording at --ale-v5 already steps 4 emulator
    frames); the stride's actions all go in, each its own embedding."""
    rollout_steps: int = 3
    """Steps each training clip is rolled out on the model's own predictions (1: plain
    teacher forcing). A step costs one forward and backward pass."""
    noise_prob: float = 0.5
    """Share of training samples whose context frames get Gaussian noise."""
    noise_max: float = 0.15
    """Largest std of that noise (in [0, 1] pixel units), drawn uniformly per sample; its level
    is an input. At play time the level is 0."""
    motion_weight: float = 10.0
    """Extra loss weight on pixels where the real frame differs from the one before
    (by more than 0.02 in some channel); 0 = a plain per-pixel loss."""
    palette: int = 256
    """Every frame the model plays is snapped, pixel by pixel, to the nearest of the `palette`
    most frequent colours of the training frames (fitted as training starts, saved with the
    run; its own rollouts in training stay unsnapped): a game's screen is drawn from few colours
    (Ms. Pac-Man at 64x64: 256 cover 98.8% of the pixels), and off-palette tints are where a
    maze fades and a sprite smears (docs/play.md). Off where those colours cover less than
    PALETTE_COVER of the training pixels (natural footage); 0 = off."""
    head: str = "colours"
    """What the U-Net draws. "pixels": a correction to the last frame's RGB, trained with L1 +
    L2, so an uncertain pixel becomes a blend (a faint sprite). "colours": per pixel, logits
    over the palette (plus a learnt bonus for the colour the last frame has there), trained
    with cross-entropy and played as the most likely colour, so each pixel is one of the
    game's colours, whole (docs/play.md 6c: it holds the maze, IoU 0.99 against 0.82). Needs a
    palette that is on; footage without one uses "pixels"."""
    key_dropout: float = 0.0
    """Share of training samples whose key pressed now is replaced by a learnt "unknown key",
    so the model also learns what comes next whatever the key (classifier-free guidance's
    condition dropout, Ho & Salimans 2022): the reference `key_guidance` steers away from.
    0 = off (no unknown key; guidance then steers away from NOOP). docs/play.md 6d: 0.2 did
    not place her better at step 16 than NOOP guidance."""
    key_guidance: float = 1.0
    """At play, how much the key pressed now is amplified: the prediction becomes p(key) +
    g * (p(key) - p(ref)) (on the colours head's logits, the pixels head's frame), as in
    classifier-free guidance, so what a key changes (a turn) counts more than the habit of
    going on. ref is the unknown key (`key_dropout` > 0; every step then costs two passes) or
    else NOOP (a second pass only when a key is down). docs/play.md 6c: at 1 her position at
    step 16 is within a tile in 0.35 / 0.36 of the starts (seeds 0 / 7) against 0.32 / 0.27
    without, median error 13 px against 20; 3 froze a maze. 0 = off."""
    key_contrast: float = 0.0
    """Weight of a ranking loss on the first rollout step: the real next frame's cross-entropy
    on its moving pixels under the key pressed now must be lower, by KEY_MARGIN nats a pixel,
    than under another clip's key (the batch rolled), so that what a key changes is learnt
    even where it is a few pixels of 4,096 (docs/play.md 8). A margin, not an open-ended
    push: where the key changes nothing (a corridor, the ghosts) the wrong key is pushed off
    the real frame only that far. Costs one more forward and backward per training step.
    Colours head only; 0 = off. docs/play.md 6e: at 1 and 0.3 (60 minutes, ~1,100 steps
    against the default's 1,611) within a tile at step 16 in 0.16 / 0.22 of the starts
    against the default's 0.35; the keys mattered more at step 4 only."""
    batch_size: int = 16
    """Clips per step."""
    lr: float = 3e-4
    """AdamW learning rate."""
    weight_decay: float = 0.0
    """AdamW weight decay."""


PRESETS = {
    "default": {},
    "tiny": {"size": 16, "context": 2, "action_history": 2, "n_actions": 9, "widths": (8, 16), "blocks": (1,),
             "cond_dim": 16, "batch_size": 4, "rollout_steps": 2},
}
