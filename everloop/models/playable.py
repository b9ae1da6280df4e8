"""playable: an action-conditioned next-frame predictor, a game a person can play inside the
model (`everloop play`, docs/play.md).

The last `context` frames and the actions pressed at each of them go in (the last one is
the key pressed now; the earlier ones tell what the game may still be answering: the
console reads its input on its own frames, and sticky actions delay a key's effect); the
next frame comes out, as a correction to the last frame (most pixels of a game do not move from one
step to the next). A small U-Net at 64x64 draws the correction; the action, and the noise
level of the context (below), reach every residual block as a FiLM scale and shift, so
one global key press can move one small sprite.

Against drift, DIAMOND's two remedies (Alonso et al. 2024), in their cheap forms for a
deterministic predictor:
- noised context: on a share of the training samples Gaussian noise of a random level is
  added to the context frames and the level is an input, so the model learns to clean up
  a context that is not quite real (its own predictions) instead of copying it;
- its own rollouts: every training clip is rolled out `rollout_steps` steps, each
  prediction (detached, clamped and rounded to 8 bits, as at play time) becoming context
  for the next, and every step is scored against the real continuation.
The loss is L1 + L2 per pixel (or, with `head` "colours", cross-entropy over the game's
palette, so a pixel is drawn as one whole colour and never a blend), with `motion_weight`
extra weight where the real frame changes: on a still maze the plain loss is won by copying
the last frame.

Why not DIAMOND's diffusion model itself: at 3 denoising steps its U-Net costs ~5 GMAC per
64x64 frame, 1.8-28 frames/s at batch 1 on this machine's 2 cores (seed-systems.md), mostly
below play's 15 steps/s, and too dear to train in 60 CPU minutes; this predictor is one
pass of a 0.5 GMAC net (docs/play.md has the measurements)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data import ActionClips, frequent_colours
from ..errors import EverloopError
from ..metrics import psnr_of_mse
from .base import Family, FramesAreStates
from .playable_config import PlayableConfig

MOVING = 0.02  # a pixel moves where some channel changes by more than ~5 grey levels
KEY_MARGIN = 0.05  # nats per moving pixel: ~3 a frame over Ms. Pac-Man's moving pixels (median 68 at 64x64)
PALETTE_COVER = 0.95  # a palette that covers less of the training pixels is not a game's: off


class ResBlock(nn.Module):
    """GroupNorm -> FiLM(cond) -> SiLU -> conv, twice, plus the input."""

    def __init__(self, ch: int, cond_dim: int):
        super().__init__()
        self.norm1, self.norm2 = nn.GroupNorm(min(8, ch), ch), nn.GroupNorm(min(8, ch), ch)
        self.conv1, self.conv2 = nn.Conv2d(ch, ch, 3, padding=1), nn.Conv2d(ch, ch, 3, padding=1)
        self.film = nn.Linear(cond_dim, 4 * ch)
        nn.init.zeros_(self.conv2.weight)  # every block starts as the identity
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x, cond):
        s1, b1, s2, b2 = self.film(cond)[:, :, None, None].chunk(4, 1)
        h = self.conv1(F.silu(self.norm1(x) * (1 + s1) + b1))
        return x + self.conv2(F.silu(self.norm2(h) * (1 + s2) + b2))


class UNet(nn.Module):
    def __init__(self, c_in: int, cfg: PlayableConfig):
        super().__init__()
        w, per_level = list(cfg.widths), [cfg.fine_blocks, *cfg.blocks]
        self.stem = nn.Conv2d(c_in, w[0], 3, padding=1)
        self.down = nn.ModuleList(nn.ModuleList(ResBlock(w[i], cfg.cond_dim) for _ in range(n))
                                  for i, n in enumerate(per_level))
        self.pool = nn.ModuleList(nn.Conv2d(w[i], w[i + 1], 3, stride=2, padding=1) for i in range(len(w) - 1))
        self.unpool = nn.ModuleList(nn.Conv2d(w[i + 1], w[i], 3, padding=1) for i in range(len(w) - 1))
        self.merge = nn.ModuleList(nn.Conv2d(2 * w[i], w[i], 1) for i in range(len(w) - 1))
        self.up = nn.ModuleList(nn.ModuleList(ResBlock(w[i], cfg.cond_dim) for _ in range(n))
                                for i, n in enumerate(per_level[:-1]))
        self.out = nn.Sequential(nn.GroupNorm(min(8, w[0]), w[0]), nn.SiLU(), nn.Conv2d(w[0], 3, 3, padding=1))
        # per pixel (a 3x3 conv to 256 channels at 64x64 would cost 60% of the rest of the net),
        # channels last: softmax, argmax and the loss then run over contiguous memory
        self.colour_logits = nn.Linear(w[0], cfg.palette) if cfg.head == "colours" else None
        with torch.no_grad():  # starts near a copy of the last frame (not exactly: a stream moves)
            for layer in (self.out[-1], self.colour_logits):
                if layer is not None:
                    layer.weight.mul_(0.1)
                    layer.bias.zero_()

    def forward(self, x, cond, colours: bool = False):
        """The RGB correction [B, 3, H, W], or with `colours` the palette logits [B, H, W, palette]."""
        h, skips = self.stem(x), []
        for i, blocks in enumerate(self.down):
            for b in blocks:
                h = b(h, cond)
            if i < len(self.pool):
                skips.append(h)
                h = self.pool[i](h)
        for i in reversed(range(len(self.up))):
            h = self.unpool[i](F.interpolate(h, scale_factor=2.0, mode="nearest"))
            h = self.merge[i](torch.cat([h, skips[i]], 1))
            for b in self.up[i]:
                h = b(h, cond)
        h = self.out[:2](h)
        if not colours:
            return self.out[2](h)
        with torch.autocast(h.device.type, enabled=False):  # fp32: bf16 copies of 256 logits cost more
            return self.colour_logits(h.permute(0, 2, 3, 1).float())


class Playable(FramesAreStates, Family):
    """Sampling state: (frame [B, 3, H, W], history [B, context, 3, H, W] in [0, 1], the
    keys pressed before [B, action_history - 1, clip_stride]); decode is the identity, as
    multiscale's. advance() takes the action pressed now."""

    family = "playable"
    requires_seed_clip = True  # a game continues from real frames (a start screen, a moment of play)

    def __init__(self, cfg: PlayableConfig):
        super().__init__()
        if len(cfg.widths) != len(cfg.blocks) + 1:
            raise EverloopError(f"playable: {len(cfg.widths)} widths need {len(cfg.widths) - 1} blocks "
                                "(one per level below the finest)")
        if not all(0 <= p <= 1 for p in (cfg.noise_prob, cfg.history_dropout, cfg.key_dropout)):
            raise EverloopError("playable: noise_prob, history_dropout and key_dropout must be in [0, 1]")
        if not 1 <= cfg.action_history <= cfg.context:
            raise EverloopError(f"playable: action_history must be 1 to context ({cfg.context})")
        if cfg.size % 2 ** (len(cfg.widths) - 1):
            raise EverloopError(f"playable: size {cfg.size} must be a multiple of {2 ** (len(cfg.widths) - 1)} "
                                f"for {len(cfg.widths)} levels")
        if not 1 <= cfg.n_actions < 255 or cfg.context < 1 or cfg.rollout_steps < 1 or cfg.clip_stride < 1:
            raise EverloopError("playable: n_actions must be 1..254, context, rollout_steps and clip_stride >= 1")
        self.cfg, self.context_frames, self.n_actions = cfg, cfg.context, cfg.n_actions
        self.action_emb = nn.Embedding(cfg.n_actions * cfg.clip_stride * cfg.action_history, cfg.cond_dim)
        if cfg.key_dropout > 0:  # stands for the key pressed now (all its sub-steps) when it is not known
            self.unknown_key = nn.Parameter(torch.zeros(cfg.cond_dim))
        self.cond = nn.Sequential(nn.Linear(cfg.cond_dim + 1, cfg.cond_dim), nn.SiLU(),
                                  nn.Linear(cfg.cond_dim, cfg.cond_dim))
        self.net = UNet(3 * cfg.context, cfg)
        self._train_ranges = None
        if cfg.palette < 0:
            raise EverloopError(f"playable: palette must be >= 0 (0 = off), got {cfg.palette}")
        if cfg.head not in ("pixels", "colours") or (cfg.head == "colours" and cfg.palette == 0):
            raise EverloopError(f"playable: head is pixels or colours (which needs a palette), got {cfg.head}")
        if not (np.isfinite(cfg.key_contrast) and cfg.key_contrast >= 0) or (cfg.key_contrast and cfg.head != "colours"):
            raise EverloopError(f"playable: key_contrast must be a finite number >= 0, with head colours "
                                f"(got {cfg.key_contrast}, head {cfg.head})")
        if not (np.isfinite(cfg.key_guidance) and cfg.key_guidance >= 0):
            raise EverloopError(f"playable: key_guidance must be a finite number >= 0, got {cfg.key_guidance}")
        if cfg.head == "colours":  # the bonus for keeping the last frame's colour: starts as a copy
            self.copy_bonus = nn.Parameter(torch.tensor(4.0))
        if cfg.palette > 0:  # fitted as training starts (begin_stage); saved with the weights
            self.register_buffer("palette_colours", torch.zeros(cfg.palette, 3))
            self.register_buffer("palette_on", torch.zeros((), dtype=torch.bool))

    # ------------------------------------------------------------------ prediction
    def predict(self, hist: torch.Tensor, action: torch.Tensor, noise: torch.Tensor | None = None,
                last_index: torch.Tensor | None = None, unknown: torch.Tensor | None = None) -> torch.Tensor:
        """The next frame (unclamped; under the colours head, its palette logits [B, H, W,
        palette]) from history [B, k, 3, H, W] in [0, 1], actions
        [B, action_history, clip_stride] (oldest first, the last pressed now; [B, stride]:
        the one pressed now after NOOPs) and the context's noise level [B] (None: clean);
        `last_index`: the palette index of the clean last frame, when the caller has it;
        `unknown` (bool [B], with `key_dropout`): whose key pressed now is the unknown key."""
        b, c = hist.shape[0], self.cfg
        if action.ndim == 2:
            action = F.pad(action[:, None], (0, 0, c.action_history - 1, 0))
        # each (history position, sub-step of the stride) has its own rows of the table
        slots = action.flatten(1) + c.n_actions * torch.arange(action[0].numel(), device=action.device)
        level = torch.zeros(b, device=hist.device) if noise is None else noise
        keys = self.action_emb(slots)
        if unknown is None:
            keys = keys.sum(1)
        else:  # the last clip_stride rows are the key pressed now
            now = torch.where(unknown[:, None], self.unknown_key, keys[:, -c.clip_stride:].sum(1))
            keys = keys[:, :-c.clip_stride].sum(1) + now
        cond = self.cond(torch.cat([keys, 10 * level[:, None]], 1))
        if not self.draws_colours():
            return hist[:, -1] + self.net(hist.flatten(1, 2) * 2 - 1, cond)
        logits = self.net(hist.flatten(1, 2) * 2 - 1, cond, colours=True)
        last = (self.colour_index(hist[:, -1]) if last_index is None else last_index)[..., None]
        return logits.scatter_add(-1, last, self.copy_bonus.expand(last.shape))

    def next_frame(self, hist: torch.Tensor, action: torch.Tensor, noise: torch.Tensor | None = None):
        """predict(), as a frame: the most likely colour of each pixel under the colours head;
        with `key_guidance`, the key pressed now amplified against the unknown key or NOOP."""
        out, g = self.predict(hist, action, noise), self.cfg.key_guidance
        if g and self.cfg.key_dropout > 0:
            unknown = torch.ones(hist.shape[0], dtype=torch.bool, device=hist.device)
            out = out + g * (out - self.predict(hist, action, noise, unknown=unknown))
        elif g and bool((action[:, -1] if action.ndim == 3 else action).any()):
            # the key pressed now released; the earlier ones as they were
            noop = (torch.cat([action[:, :-1], torch.zeros_like(action[:, -1:])], 1) if action.ndim == 3
                    else torch.zeros_like(action))
            out = out + g * (out - self.predict(hist, noop, noise))
        return self.palette_colours[out.argmax(-1)].permute(0, 3, 1, 2).to(hist.dtype) if self.draws_colours() else out

    def draws_colours(self) -> bool:
        return self.cfg.head == "colours" and bool(self.palette_on)

    def _actions(self, action, batch: int, device) -> torch.Tensor:
        """int64 [B, clip_stride] from None (NOOP), an int, [B] or [B, clip_stride]."""
        s = self.cfg.clip_stride
        if action is None:
            action = 0
        a = torch.as_tensor(action, dtype=torch.long, device=device)
        if a.ndim == 0:
            a = a.expand(batch)
        if a.ndim == 1:
            a = a[:, None].expand(-1, s)
        if a.shape != (batch, s):
            raise EverloopError(f"playable: actions are [{batch}] or [{batch}, {s}], got {list(a.shape)}")
        if (a < 0).any() or (a >= self.cfg.n_actions).any():
            raise EverloopError(f"playable: actions must be 0 to {self.cfg.n_actions - 1}")
        return a

    def start(self, batch: int, generator: torch.Generator | None = None, seed_clip: torch.Tensor | None = None):
        k = self.cfg.context
        if seed_clip is None:
            raise EverloopError(f"playable continues real frames: give a seed clip of {k} frames "
                                f"(play RUN starts from the run's data)")
        if seed_clip.ndim != 5 or seed_clip.shape[1] < k or seed_clip.shape[2] != 3:
            raise EverloopError(f"playable: a seed clip is [B, >= {k}, 3, H, W], got {list(seed_clip.shape)}")
        hist = seed_clip[:, -k:].float()
        if hist.shape[0] != batch:
            hist = hist.expand(batch, *hist.shape[1:]) if hist.shape[0] == 1 else hist[:batch]
        past = torch.zeros(batch, self.cfg.action_history - 1, self.cfg.clip_stride, dtype=torch.long,
                           device=hist.device)  # the keys before the first frame: NOOP
        return hist[:, -1], hist.contiguous(), past

    def advance(self, state, generator: torch.Generator | None = None, action=None):
        """One step with `action` pressed (None: NOOP); the frame is rounded to 8 bits, as
        the real frames the model learned from."""
        _, hist, past = state
        acts = torch.cat([past, self._actions(action, hist.shape[0], hist.device)[:, None]], 1)
        frame = self.next_frame(hist, acts)
        if not self.draws_colours():  # the colours head's frame is made of palette colours already
            frame = self.snap(quantize(frame))
        return frame, torch.cat([hist[:, 1:], frame[:, None]], 1), acts[:, 1:]

    def snap(self, frame: torch.Tensor) -> torch.Tensor:
        """Frames [B, 3, H, W]: each pixel the nearest palette colour (the frame itself
        when there is no palette)."""
        if self.cfg.palette == 0 or not bool(self.palette_on):
            return frame
        return self.palette_colours[self.colour_index(frame)].permute(0, 3, 1, 2).to(frame.dtype).contiguous()

    def colour_index(self, frame: torch.Tensor) -> torch.Tensor:
        """int64 [B, H, W]: the nearest palette colour of each pixel of frames [B, 3, H, W]."""
        b, _, h, w = frame.shape
        pixels = frame.permute(0, 2, 3, 1).reshape(-1, 3).float()
        return torch.cdist(pixels, self.palette_colours).argmin(1).view(b, h, w)

    # ------------------------------------------------------------------ training
    def begin_stage(self, name: str, store, saved: dict, fresh: bool = True) -> dict | None:
        """A fresh run counts the training frames' colours (a resumed one has them)."""
        if self.cfg.palette == 0 or not fresh:
            return None
        colours, cover = frequent_colours(store, store.split()[0], self.cfg.palette)
        self.palette_colours.copy_(torch.from_numpy(colours))
        self.palette_on.fill_(bool(cover >= PALETTE_COVER))
        return {"palette_cover": cover, "palette_on": float(self.palette_on)}

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"model": torch.optim.AdamW(self.parameters(), self.cfg.lr, weight_decay=self.cfg.weight_decay)}

    def clip_spec(self) -> tuple[int, int, int]:
        return self.cfg.batch_size, self.cfg.context + self.cfg.rollout_steps, self.cfg.clip_stride

    def sample_batch(self, store, rng: np.random.Generator) -> ActionClips:
        """Clips of the training split with their actions; a dataset without actions trains
        as if every action were NOOP (a plain next-frame predictor)."""
        if self._train_ranges is None:
            if store.n_actions > self.cfg.n_actions:
                raise EverloopError(f"{store.path}: {store.n_actions} actions, more than the model's "
                                    f"n_actions {self.cfg.n_actions} (--set n_actions={store.n_actions})")
            self._train_ranges = store.split()[0]
        b, t, s = self.clip_spec()
        if store.actions is None:
            from ..data import to_float
            frames = to_float(store.sample_clips(b, t, s, rng, ranges=self._train_ranges))
            return ActionClips(frames, torch.zeros(b, t - 1, s, dtype=torch.long))
        return store.sample_action_clips(b, t, s, rng, ranges=self._train_ranges)

    def train_step(self, batch: ActionClips, opt: dict, autocast: bool = False) -> dict[str, float]:
        c, x, acts = self.cfg, batch.frames, batch.actions
        b, k, n = x.shape[0], c.context, c.action_history
        hist, loss, mse, colours, contrast = x[:, :k], 0.0, 0.0, self.draws_colours(), 0.0
        if colours:  # palette indices of the clean last context frame and the targets
            index = self.colour_index(x[:, k - 1:].flatten(0, 1)).view(b, -1, *x.shape[-2:])
            last = index[:, 0]
        forget = torch.rand(b, device=x.device) < c.history_dropout  # earlier keys unknown, as at a start
        unknown = (torch.rand(b, device=x.device) < c.key_dropout) if c.key_dropout > 0 else None
        earlier = torch.arange(n, device=x.device) < n - 1
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
            for r in range(c.rollout_steps):
                noisy = torch.rand(b, device=x.device) < c.noise_prob
                level = torch.rand(b, device=x.device) * c.noise_max * noisy
                ctx = hist + level[:, None, None, None, None] * torch.randn_like(hist)
                a = acts[:, k - n + r:k + r]  # the n keys up to the one pressed now
                a = a.masked_fill(forget[:, None, None] & earlier[None, :, None], 0)
                # the colour bonus keeps the clean last frame: at play it is exact (a palette frame)
                out = self.predict(ctx, a, level, last if colours else None, unknown).float()
                target, before = x[:, k + r], x[:, k - 1 + r]
                moving = (target - before).abs().amax(1, keepdim=True) > MOVING
                weight = 1 + c.motion_weight * moving.float()
                if colours:
                    ce = F.cross_entropy(out.flatten(0, 2), index[:, r + 1].flatten(), reduction="none")
                    loss = loss + (weight.flatten() * ce).mean()
                    if c.key_contrast > 0 and r == 0:
                        contrast = c.key_contrast * self._key_contrast(ctx, a, level, last, unknown, ce, index[:, 1],
                                                                       moving)
                    last = out.detach().argmax(-1)
                    pred = self.palette_colours[last].permute(0, 3, 1, 2)
                else:
                    err = (pred := out) - target
                    loss = loss + (weight * (err.abs() + err ** 2)).mean()
                mse = mse + (pred.detach().clamp(0, 1) - target).pow(2).mean().item()
                # pixels head: not snapped; a run trained on snapped rollouts lost her more by step 16
                # (docs/play.md 6b). The colours head's rollouts are palette frames, as at play.
                hist = torch.cat([hist[:, 1:], quantize(pred.detach())[:, None]], 1)
            loss = loss / c.rollout_steps + contrast
        opt["model"].zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.parameters(), 1.0)
        opt["model"].step()
        return {"loss": loss.item(), "psnr": psnr_of_mse(mse / c.rollout_steps)}

    def _key_contrast(self, ctx, a, level, last, unknown, ce, target, moving) -> torch.Tensor:
        """key_contrast's hinge: the mean CE over each sample's moving pixels (`moving` [B, 1,
        H, W]) under its own key pressed now (`ce`, flat [B H W]) against under another
        sample's (torch's global RNG, which the trainer seeds and saves, picks whose)."""
        other = a.clone()
        other[:, -1] = a[torch.randperm(len(a), device=a.device), -1]
        out = self.predict(ctx, other, level, last, unknown).float()
        ce_other = F.cross_entropy(out.flatten(0, 2), target.flatten(), reduction="none")
        m = moving.flatten(1).float()
        gap = ((ce - ce_other).view_as(m) * m).sum(1) / m.sum(1).clamp_min(1)
        return F.relu(gap + KEY_MARGIN).mean()


def quantize(frame: torch.Tensor) -> torch.Tensor:
    """Clamped to [0, 1] and rounded to 8 bits (what a saved frame holds)."""
    return frame.clamp(0, 1).mul(255).round().div(255)
