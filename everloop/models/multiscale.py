"""multiscale: next-frame prediction beyond mean square error (Mathieu, Couprie & LeCun 2016).

Four past frames in, the next frame out, predicted coarse to fine: scale k sees the history
resized to its size plus the upsampled prediction of scale k - 1.  Every generator is fully
convolutional, so a model trained on 32x32 crops runs on whole 210x160 frames (scales
26x20, 52x40, 105x80, 210x160), and a rollout feeds each prediction back as input.
Loss = lambda_lp * Lp + lambda_gdl * gradient-difference loss + lambda_adv * adversarial,
each term averaged over the scales, with one discriminator per scale.

What everloop keeps, fixes and changes, and why:
- the adversarial term is computed in the same graph as G's other terms, so its gradient
  reaches G (the TF port fed D's scores back as constants: no adversarial gradient ever
  reached G, its issue #2), and every loss weight is a Config field that train_step uses
  (the port ignored them, #32); tests/test_multiscale.py checks both;
- the paper's residual form (prediction = upsampled coarser prediction + G_k's output;
  the port is not residual) and the paper's conditional D (it also sees the history; the
  port's sees only the frame): `residual`, `d_history`;
- widths are one multiplier (`g_width`, `d_width`): the paper's 128 / 64 cost ~38 GMAC per
  64x64 frame, too much for a 2-core CPU; the default is 32 / 16 (1/16 of the FLOPs);
- crops are cut on the fly from the memory-mapped store with the port's movement filter
  (data.moving_crop: 5% accepted as they come, the rest among crops that move), no
  millions of files;
- the coarsest scale predicts the change from the last frame (`predict_change`);
- Adam for both players (the port: Adam 4e-5 for G, SGD 0.02 for D; the paper: SGD).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data import moving_crop, to_float
from ..errors import EverloopError
from ..metrics import psnr_of_mse
from .base import Family, FramesAreStates

# Per scale, coarse to fine: G kernels and hidden widths (x g_width / 128), D convs
# (channels x d_width / 64, kernels) and FC widths (x d_width / 64): the paper's tables.
G_KERNELS = [(3, 3, 3, 3), (5, 3, 3, 5), (5, 3, 3, 3, 3, 5), (7, 5, 5, 5, 5, 7)]
G_HIDDEN = [(128, 256, 128), (128, 256, 128), (128, 256, 512, 256, 128), (128, 256, 512, 256, 128)]
D_CONVS = [((64,), (3,)), ((64, 128, 128), (3, 3, 3)), ((128, 256, 256), (5, 5, 5)),
           ((128, 256, 512, 128), (7, 7, 5, 5))]
D_FC = [(512, 256), (1024, 512), (1024, 512), (1024, 512)]


@dataclass
class MultiscaleConfig:
    size: int = 32
    """Side of the square training crops; the trained model runs at any frame size."""
    history: int = 4
    """Past frames the generator sees (the paper: 4); a seed clip must hold at least this
    many (`generate --seed-clip`)."""
    scales: int = 4
    """Pyramid levels, each half the size of the next (the paper: 4, for 32px crops 4-32)."""
    g_width: int = 32
    """Generator width: its hidden layers are the paper's (128-256-128, 128-256-512-256-128)
    times g_width / 128.  The paper: 128."""
    d_width: int = 16
    """Discriminator width: the paper's conv and FC layers times d_width / 64 (the paper: 64)."""
    residual: bool = True
    """Scale k predicts a correction to the upsampled prediction of scale k - 1 (the paper);
    False: the whole frame from scratch (the TF port)."""
    predict_change: bool = True
    """The coarsest scale predicts a change to the (resized) last frame instead of the whole
    frame (not the paper's; `--preset paper` turns it off): most Atari pixels do not move
    from one frame to the next, and a CPU budget should not go into learning to copy them."""
    d_history: bool = True
    """Each D also sees the (resized) history, so it judges the frame as a continuation
    (the paper); False: the frame alone (the port)."""
    adversarial: bool = True
    """Train with the discriminators (False: the plain Lp + GDL baseline, `--no-adversarial`)."""
    lambda_adv: float = 0.05
    """Weight of the adversarial term in G's loss (the paper: 0.05)."""
    lambda_lp: float = 1.0
    """Weight of the Lp term (the paper: 1)."""
    lambda_gdl: float = 1.0
    """Weight of the gradient-difference term (the paper: 1)."""
    lp: int = 2
    """p of the Lp loss: 1 or 2 (the paper: 2)."""
    gdl_alpha: float = 1.0
    """alpha of the gradient-difference loss (the paper: 1; the port, by its bug #32: 2)."""
    batch_size: int = 8
    """Clips per step for G, and as many more for D (the port gives D and G different batches)."""
    lr_g: float = 2e-4
    """Adam learning rate of the generators (the port: 4e-5 over 500k+ GPU steps)."""
    lr_d: float = 2e-4
    """Adam learning rate of the discriminators."""
    clip_stride: int = 1
    """Real frames between two model steps (Ms. Pac-Man: 1, consecutive frames)."""
    move_threshold: float = 100.0
    """A crop 'moves' if the summed squared difference of its 4 consecutive frame pairs,
    in the port's [-1, 1] units, exceeds this (the port: 100)."""
    accept_any: float = 0.05
    """Share of crops taken wherever they fall, moving or not (the port: 0.05)."""


PRESETS = {
    "default": {},
    "paper": {"g_width": 128, "d_width": 64, "lr_g": 4e-5, "predict_change": False},
    "tiny": {"size": 16, "scales": 3, "g_width": 8, "d_width": 8, "batch_size": 4},
}


def scale_sizes(h: int, w: int, scales: int) -> list[tuple[int, int]]:
    """Sizes of the pyramid, coarse to fine: 210x160 -> 26x20, 52x40, 105x80, 210x160."""
    return [(max(1, round(h / 2 ** k)), max(1, round(w / 2 ** k))) for k in reversed(range(scales))]


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


def lp_loss(pred: torch.Tensor, target: torch.Tensor, p: int) -> torch.Tensor:
    return (pred - target).abs().pow(p).mean()


def gdl_loss(pred: torch.Tensor, target: torch.Tensor, alpha: float) -> torch.Tensor:
    """Gradient-difference loss: mean ||d Y| - |d Y_hat||^alpha over horizontal and vertical
    neighbour differences inside the frame, summed over the two directions."""
    def grads(x):
        return (x[..., :, 1:] - x[..., :, :-1]).abs(), (x[..., 1:, :] - x[..., :-1, :]).abs()
    (px, py), (tx, ty) = grads(pred), grads(target)
    return (tx - px).abs().pow(alpha).mean() + (ty - py).abs().pow(alpha).mean()


def _stack(chans, kernels, c_in: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for c, k in zip(chans, kernels[:-1]):
        layers += [nn.Conv2d(c_in, c, k, padding=k // 2), nn.ReLU()]
        c_in = c
    return nn.Sequential(*layers, nn.Conv2d(c_in, 3, kernels[-1], padding=kernels[-1] // 2))


class ScaleGenerator(nn.Module):
    def __init__(self, cfg: MultiscaleConfig, level: int, first: bool):
        super().__init__()
        k = len(G_KERNELS) - cfg.scales + level  # the finest scales use the paper's last rows
        chans = [max(1, c * cfg.g_width // 128) for c in G_HIDDEN[k]]
        self.net = _stack(chans, G_KERNELS[k], 3 * cfg.history + (0 if first else 3))

    def forward(self, x):
        return self.net(x)


class ScaleDiscriminator(nn.Module):
    """VALID convs + ReLU, one 2x2 max-pool, FC layers -> one logit (sized for the crops).
    The paper's row is picked by the crop side at this scale (4, 8, 16, 32 px -> rows 1-4),
    so small test crops get the small discriminators."""

    def __init__(self, cfg: MultiscaleConfig, side: int):
        super().__init__()
        k = min(len(D_CONVS) - 1, max(0, side.bit_length() - 3))
        chans, kernels = D_CONVS[k]
        layers: list[nn.Module] = []
        c_in = 3 * (cfg.history + 1 if cfg.d_history else 1)
        for c, kk in zip(chans, kernels):
            c = max(1, c * cfg.d_width // 64)
            layers += [nn.Conv2d(c_in, c, kk), nn.ReLU()]
            c_in, side = c, side - kk + 1
        if side < 1:
            raise EverloopError(f"multiscale: crops of {cfg.size}px are too small for {cfg.scales} scales")
        layers += [nn.MaxPool2d(2, ceil_mode=True), nn.Flatten()]
        n = c_in * ((side + 1) // 2) ** 2
        for f in D_FC[k]:
            f = max(1, f * cfg.d_width // 64)
            layers += [nn.Linear(n, f), nn.ReLU()]
            n = f
        self.net = nn.Sequential(*layers, nn.Linear(n, 1))

    def forward(self, x):
        return self.net(x).squeeze(1)


class Multiscale(FramesAreStates, Family):
    """The family: one generator (and, when adversarial, one discriminator) per scale.

    Sampling state: (frame [B, 3, H, W], history [B, T, 3, H, W]) in [0, 1]; rollout.py
    stacks and "decodes" the frame (decode is the identity), advance() feeds it back."""

    family = "multiscale"
    requires_seed_clip = True  # there is no prior to dream from: every rollout continues real frames
    trains_on_crops = True     # cfg.size is the crop, not the frame: any frame size >= it will do

    def __init__(self, cfg: MultiscaleConfig):
        super().__init__()
        if cfg.lp not in (1, 2):
            raise EverloopError(f"multiscale: lp must be 1 or 2, got {cfg.lp}")
        if not 1 <= cfg.scales <= len(G_KERNELS):
            raise EverloopError(f"multiscale: scales must be 1..{len(G_KERNELS)}, got {cfg.scales}")
        self.cfg, self.context_frames = cfg, cfg.history
        self.gens = nn.ModuleList(ScaleGenerator(cfg, k, k == 0) for k in range(cfg.scales))
        sides = [h for h, _ in scale_sizes(cfg.size, cfg.size, cfg.scales)]
        # No discriminators at all without the adversarial term: nothing can leak into G.
        self.discs = nn.ModuleList(ScaleDiscriminator(cfg, s) for s in sides) \
            if cfg.adversarial else nn.ModuleList()
        self._train_ranges = None

    # ------------------------------------------------------------------ prediction
    def predict(self, hist: torch.Tensor) -> list[torch.Tensor]:
        """History [B, T, 3, H, W] in [-1, 1] -> the next frame at every scale, coarse to fine."""
        flat, out, prev = hist.flatten(1, 2), [], None
        for gen, size in zip(self.gens, scale_sizes(*hist.shape[-2:], self.cfg.scales)):
            h = resize(flat, size)
            if prev is None:
                pred = resize(hist[:, -1], size) + gen(h) if self.cfg.predict_change else torch.tanh(gen(h))
            else:
                up = resize(prev, size)
                raw = gen(torch.cat([h, up], 1))
                pred = up + raw if self.cfg.residual else torch.tanh(raw)
            out.append(pred)
            prev = pred
        return out

    def next_frame(self, hist01: torch.Tensor) -> torch.Tensor:
        """History in [0, 1] -> next frame in [0, 1] (finest scale, clamped)."""
        return (self.predict(hist01 * 2 - 1)[-1].clamp(-1, 1) + 1) / 2

    def start(self, batch: int, generator: torch.Generator | None = None, seed_clip: torch.Tensor | None = None):
        c = self.cfg
        if seed_clip is None:
            raise EverloopError(f"multiscale predicts from real frames: give a seed clip of {c.history} "
                                f"frames (generate --seed-clip DATA)")
        if seed_clip.ndim != 5 or seed_clip.shape[2] != 3:
            raise EverloopError(f"multiscale: a seed clip is [B, T, 3, H, W], got {list(seed_clip.shape)}")
        if seed_clip.shape[1] < c.history:
            raise EverloopError(f"multiscale needs a history of {c.history} frames, the seed clip has "
                                f"{seed_clip.shape[1]}")
        h, w = seed_clip.shape[-2:]
        if min(h, w) < 2 ** (c.scales - 1):
            raise EverloopError(f"multiscale: {h}x{w} frames are too small for {c.scales} scales")
        hist = seed_clip[:, -c.history:].float()
        if hist.shape[0] != batch:
            hist = hist.expand(batch, *hist.shape[1:]) if hist.shape[0] == 1 else hist[:batch]
        return hist[:, -1], hist.contiguous()

    def advance(self, state, generator: torch.Generator | None = None):
        _, hist = state
        frame = self.next_frame(hist)
        return frame, torch.cat([hist[:, 1:], frame[:, None]], 1)

    # ------------------------------------------------------------------ training
    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        opt = {"g": torch.optim.Adam(self.gens.parameters(), self.cfg.lr_g)}
        if self.cfg.adversarial:
            opt["d"] = torch.optim.Adam(self.discs.parameters(), self.cfg.lr_d)
        return opt

    def clip_spec(self) -> tuple[int, int, int]:
        return self.cfg.batch_size, self.cfg.history + 1, self.cfg.clip_stride

    def sample_batch(self, store, rng: np.random.Generator) -> torch.Tensor:
        """float [n, T + 1, 3, size, size]: crops of clips from the training split, with the
        port's movement filter (data.moving_crop); n = 2 x batch when adversarial (D and G
        get different clips)."""
        c = self.cfg
        if self._train_ranges is None:
            self._train_ranges = store.split()[0]
            if min(store.height, store.width) < c.size:
                raise EverloopError(f"{store.path}: frames are {store.height}x{store.width}, smaller "
                                    f"than the {c.size}px training crops")
        n = c.batch_size * (2 if c.adversarial else 1)
        clips = store.sample_clips(n, c.history + 1, c.clip_stride, rng, ranges=self._train_ranges)
        crops = np.stack([moving_crop(clip, c.size, c.move_threshold, c.accept_any, rng) for clip in clips])
        return to_float(crops)

    def _d_input(self, flat_hist: torch.Tensor, frame: torch.Tensor) -> torch.Tensor:
        if not self.cfg.d_history:
            return frame
        return torch.cat([resize(flat_hist, frame.shape[-2:]), frame], 1)

    def generator_terms(self, hist: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """G's loss terms, each averaged over the scales; 'adv' only when adversarial.
        hist [B, T, 3, H, W], target [B, 3, H, W], both in [-1, 1]."""
        c, preds = self.cfg, self.predict(hist)
        flat = hist.flatten(1, 2)
        targets = [resize(target, p.shape[-2:]) for p in preds]
        terms = {"lp": sum(lp_loss(p, t, c.lp) for p, t in zip(preds, targets)) / len(preds),
                 "gdl": sum(gdl_loss(p, t, c.gdl_alpha) for p, t in zip(preds, targets)) / len(preds)}
        if c.adversarial:
            logits = [d(self._d_input(flat, p)) for d, p in zip(self.discs, preds)]
            terms["adv"] = sum(F.binary_cross_entropy_with_logits(l, torch.ones_like(l)) for l in logits) / len(preds)
        terms["mse_finest"] = ((preds[-1].clamp(-1, 1) - target) ** 2).mean().detach()
        return terms

    def discriminator_loss(self, hist: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            preds = self.predict(hist)
        flat, loss = hist.flatten(1, 2), 0.0
        for d, p in zip(self.discs, preds):
            real, fake = d(self._d_input(flat, resize(target, p.shape[-2:]))), d(self._d_input(flat, p))
            loss = loss + F.binary_cross_entropy_with_logits(real, torch.ones_like(real)) \
                + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))
        return loss / len(preds)

    def train_step(self, batch: torch.Tensor, opt: dict, autocast: bool = False) -> dict[str, float]:
        c = self.cfg
        x = batch * 2 - 1
        hist, target = x[:, :c.history], x[:, c.history]
        logs = {}
        with torch.autocast(batch.device.type, dtype=torch.bfloat16, enabled=autocast):
            if c.adversarial:
                half = x.shape[0] // 2
                loss_d = self.discriminator_loss(hist[:half], target[:half])
                opt["d"].zero_grad(set_to_none=True)
                loss_d.backward()
                opt["d"].step()
                hist, target, logs["loss_d"] = hist[half:], target[half:], loss_d.item()
            terms = self.generator_terms(hist, target)
            loss_g = c.lambda_lp * terms["lp"] + c.lambda_gdl * terms["gdl"]
            if c.adversarial:
                loss_g = loss_g + c.lambda_adv * terms["adv"]
        opt["g"].zero_grad(set_to_none=True)
        loss_g.backward()
        opt["g"].step()
        psnr = psnr_of_mse(terms.pop("mse_finest").item() / 4)  # [-1, 1] error -> [0, 1] convention
        return {"loss_g": loss_g.item(), **{k: v.item() for k, v in terms.items()}, **logs, "psnr": psnr}

    def prepare_sampling(self) -> None:
        pass

    def extra_state(self) -> dict:
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass
