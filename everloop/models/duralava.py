"""duralava: a frame generator on an N(0, I) latent plus a latent-to-latent step.

The seed system (muxamilian/duralava) decodes a 64-d latent into a frame with a DCGAN
generator and learns the dynamics as z_{t+1} = R(z_t), renormalised after every step so
the latent never leaves the prior. A sequence discriminator judges 20-frame clips.

What everloop changes, and why (each is an option in duralava_config.py, so the seed stays
one preset away):
- the latent step is residual and stochastic (noise in, noise added): the seed's
  deterministic step falls into fixed points or short loops, and then every stream plays
  the same few frames;
- the normality penalty also holds each latent dimension's batch mean/std at N(0, 1)
  (`dim_weight`): the seed's pooled moments are satisfied by a batch whose samples all
  share one latent, which is exactly "all streams show the same scene";
- a motion loss matches each clip's log mean frame difference at lags 1-11 to the real
  clips', a long-range signal a short-window discriminator does not give; a spread loss
  does the same for the difference between streams (against G ignoring its latent);
- training continues 90% of latents into the next clip, so the model learns on its own
  long rollouts, where drift happens;
- the discriminator sees the frame and its difference to the previous one, the batch's
  spread (minibatch std), has spectral norm and the hinge loss; Adam instead of SGD; an
  EMA of G and R for sampling. docs/duralava.md has the measured effect of each change.
"""
from __future__ import annotations

import copy
import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from .. import devices, global_batch
from ..errors import EverloopError
from ..rollout import nlerp
from .base import Family
from .duralava_config import DuralavaConfig


def _check_size(size: int) -> int:
    n = round(math.log2(size)) if size > 0 else 0
    if size < 8 or 2 ** n != size:
        raise EverloopError(
            f"duralava needs square frames whose side is a power of two >= 8 (got {size}); "
            "prepare the data with --size 64")
    return n


class Generator(nn.Module):
    """z [N, latent] -> frame [N, 3, size, size] in [0, 1]: transposed convs doubling the size."""

    def __init__(self, cfg: DuralavaConfig):
        super().__init__()
        n_up = _check_size(cfg.size) - 2  # from 4x4 up to size/2, then the RGB layer
        chans = [cfg.g_width * 2 ** (n_up - 1 - i) for i in range(n_up)]
        layers: list[nn.Module] = [nn.ConvTranspose2d(cfg.latent_dim, chans[0], 4, 4, bias=False),
                                   nn.BatchNorm2d(chans[0]), nn.LeakyReLU(0.2)]
        for a, b in itertools.pairwise(chans):
            layers += [nn.ConvTranspose2d(a, b, 4, 2, 1, bias=False), nn.BatchNorm2d(b), nn.LeakyReLU(0.2)]
        layers += [nn.ConvTranspose2d(chans[-1], 3, 4, 2, 1), nn.Sigmoid()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z[:, :, None, None])


class LatentStep(nn.Module):
    """z_t [B, latent] + noise -> raw u; the caller renormalises u into z_{t+1}."""

    def __init__(self, cfg: DuralavaConfig):
        super().__init__()
        self.residual, self.noise_std = cfg.step_residual, cfg.latent_noise
        self.noise_dim = cfg.step_noise_dim
        h = cfg.step_hidden
        self.mlp = nn.Sequential(nn.Linear(cfg.latent_dim + cfg.step_noise_dim, h), nn.LeakyReLU(0.2),
                                 nn.Linear(h, h), nn.LeakyReLU(0.2), nn.Linear(h, cfg.latent_dim))
        if self.residual:  # start near the identity so early training does not scramble the latent
            nn.init.zeros_(self.mlp[-1].weight)
            nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, z: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """`noise` is [B, noise_dim + latent_dim] of N(0, 1); split into MLP input and additive part."""
        inp, add = noise[:, :self.noise_dim], noise[:, self.noise_dim:]
        u = self.mlp(torch.cat([z, inp], dim=1))
        if self.residual:
            u = z + u
        return u + self.noise_std * add


def standardize(u: torch.Tensor) -> torch.Tensor:
    """Per-sample renormalisation onto the prior's shell: mean 0, std 1 over the latent dims.

    The seed pools mean/std over the whole batch, which couples samples (a stream's frames
    depend on its batch mates); per sample keeps every stream independent of the batch."""
    u = u.float()
    mu = u.mean(dim=1, keepdim=True)
    sd = u.std(dim=1, unbiased=False, keepdim=True).clamp_min(1e-6)
    return (u - mu) / sd


def latent_moments(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Mean, std, skew and kurtosis pooled over all entries (the seed's statistics)."""
    x = x.float()
    mu = x.mean()
    sd = x.std(unbiased=False).clamp_min(1e-6)
    c = x - mu
    return {"mean": mu, "std": sd, "skew": (c ** 3).mean() / sd ** 3, "kurt": (c ** 4).mean() / sd ** 4}


def normality_penalty(u: torch.Tensor) -> torch.Tensor:
    """mean^2 + (std-1)^2 + skew^2 + (kurt-3)^2 of all entries of u; 0 for N(0, 1) samples."""
    m = latent_moments(u)
    return m["mean"] ** 2 + (m["std"] - 1) ** 2 + m["skew"] ** 2 + (m["kurt"] - 3) ** 2


def per_dim_penalty(z: torch.Tensor) -> torch.Tensor:
    """Each latent dimension's mean^2 + (std-1)^2 over the batch [B, D].

    N(0, I) as the distribution of every stream at every time needs this; pooled moments
    alone are met by a batch whose samples all sit on one latent (streams collapse)."""
    z = z.float()
    return (z.mean(0) ** 2).mean() + ((z.std(0, unbiased=False) - 1) ** 2).mean()


class Discriminator(nn.Module):
    """Clip [B, T, 3, H, W] -> logits [B, T]: a frame CNN, then a GRU over the sequence.

    Real and fake clips go through separate calls, so they get separate recurrent states."""

    def __init__(self, cfg: DuralavaConfig):
        super().__init__()
        sn = spectral_norm if cfg.spectral_norm else (lambda m: m)
        n_down = _check_size(cfg.size) - 2
        chans = [3 * (2 if cfg.d_diff else 1)] + [cfg.d_width * 2 ** i for i in range(n_down)]
        layers: list[nn.Module] = []
        for a, b in itertools.pairwise(chans):
            layers += [sn(nn.Conv2d(a, b, 4, 2, 1)), nn.LeakyReLU(0.2)]
        self.encoder = nn.Sequential(*layers, nn.Flatten(), sn(nn.Linear(chans[-1] * 16, cfg.d_feat)),
                                     nn.LeakyReLU(0.2))
        self.batch_std = cfg.d_batch_std
        self.rnn = nn.GRU(cfg.d_feat + int(self.batch_std), cfg.d_feat, batch_first=True)
        self.head = sn(nn.Linear(cfg.d_feat, 1))
        self.diff = cfg.d_diff

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        b, t = clip.shape[:2]
        x = clip
        if self.diff:
            d = torch.cat([torch.zeros_like(clip[:, :1]), clip[:, 1:] - clip[:, :-1]], dim=1)
            x = torch.cat([clip, d], dim=2)
        feats = self.encoder(x.flatten(0, 1)).view(b, t, -1).float()
        if self.batch_std:  # one scalar per step: how different the batch's samples are
            spread = global_batch.gather_rows(feats).std(dim=0, unbiased=False).mean(dim=1)  # [t], global batch
            feats = torch.cat([feats, spread[None, :, None].expand(b, t, 1)], dim=2)
        h, _ = self.rnn(feats)
        return self.head(h).squeeze(-1).float()


def gan_losses(kind: str, real: torch.Tensor, fake_d: torch.Tensor, fake_g: torch.Tensor):
    """(D loss, G loss) from logits; every logit of every step counts equally."""
    if kind == "hinge":
        return F.relu(1 - real).mean() + F.relu(1 + fake_d).mean(), -fake_g.mean()
    if kind == "bce":
        return F.softplus(-real).mean() + F.softplus(fake_d).mean(), F.softplus(-fake_g).mean()
    raise EverloopError(f"unknown GAN loss {kind!r} (use 'hinge' or 'bce')")


def spread_loss(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Squared log-ratio of fake to real mean |x_b - x_{b+1}| across the batch, same step
    (the global batch, under torch.distributed)."""
    f = global_batch.mean_rows((fake - global_batch.roll_rows(fake)).abs()).float()
    r = global_batch.mean_rows((real - global_batch.roll_rows(real)).abs()).float()
    return (torch.log(f + 1e-3) - torch.log(r + 1e-3)) ** 2


def motion_loss(fake: torch.Tensor, real: torch.Tensor, lags, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Squared difference of fake and real mean log |x_{t+k} - x_t| per clip, at each lag k.

    Per clip and in log space: a batch mean of raw differences is met by a few clips that
    move a lot (a fresh latent settling in) while the rest stand still, and a model trained
    that way has streams that stand still. `mask` [B] picks the fake clips that count.
    Means over the global batch, under torch.distributed."""
    loss = fake.new_zeros(())
    mask = global_batch.gather_rows(mask) if mask is not None else None
    lags = [k for k in lags if k < fake.shape[1]]
    per_clip = [torch.log((x[:, k:] - x[:, :-k]).abs().float().mean(dim=(1, 2, 3, 4)) + 1e-3)
                for k in lags for x in (fake, real)]
    per_clip = global_batch.gather_each(per_clip)  # [B] each, of the global batch
    for i in range(len(lags)):
        f, r = per_clip[2 * i], per_clip[2 * i + 1]
        f = f[mask] if mask is not None and bool(mask.any()) else f
        loss = loss + (f.mean() - r.mean()) ** 2
    return loss


class Duralava(Family):
    """The family: G, the latent step R, D, and EMA copies of G and R for sampling."""

    family = "duralava"
    batch_state = ("carry", "carried")  # one persistent latent per clip of the batch
    interpolate = staticmethod(nlerp)  # the latents live on the prior's shell: stay on it

    def __init__(self, cfg: DuralavaConfig):
        super().__init__()
        self.cfg = cfg
        self.generator, self.step = Generator(cfg), LatentStep(cfg)
        self.discriminator = Discriminator(cfg)
        if cfg.ema_decay > 0:
            self.generator_ema, self.step_ema = copy.deepcopy(self.generator), copy.deepcopy(self.step)
            for p in [*self.generator_ema.parameters(), *self.step_ema.parameters()]:
                p.requires_grad_(False)
            # Sampling only: channels_last runs the transposed convs ~1.9x faster on CPU
            # (bench/, BENCHMARKS.md); the trained G stays contiguous (faster backward).
            self.generator_ema.to(memory_format=torch.channels_last)
            self.register_buffer("ema_steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("carry", torch.zeros(0, cfg.latent_dim), persistent=False)
        self.carried = torch.zeros(0, dtype=torch.bool)

    # ---- sampling: the world model as reset()/step()/decode() ------------------------------
    def _sampler(self):
        if self.cfg.ema_decay > 0:
            return self.generator_ema, self.step_ema
        return self.generator, self.step

    def noise(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """On the model's device; drawn on the CPU from a seeded `generator` (devices.randn)."""
        return devices.randn(batch, self.cfg.step_noise_dim + self.cfg.latent_dim, generator=generator,
                             device=devices.of(self))

    def reset(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """A fresh latent per stream, on the prior's shell."""
        return standardize(devices.randn(batch, self.cfg.latent_dim, generator=generator, device=devices.of(self)))

    def start(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """The first shown latent of each stream: a fresh draw, run `burn_in` steps."""
        z = self.reset(batch, generator)
        for _ in range(self.cfg.burn_in):
            z = self.advance(z, generator)
        return z

    def advance(self, z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One model step of every stream; one noise draw of a fixed shape per step, so a
        stream is the same however it is chunked."""
        return standardize(self._sampler()[1](z, self.noise(z.shape[0], generator)))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self._sampler()[0](z).float()

    # ---- training ------------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        c = self.cfg
        g_params = [*self.generator.parameters(), *self.step.parameters()]
        if c.optimizer == "adam":
            mk = lambda ps, lr: torch.optim.Adam(ps, lr=lr, betas=(0.5, 0.999))
        elif c.optimizer == "sgd":
            mk = lambda ps, lr: torch.optim.SGD(ps, lr=lr)
        else:
            raise EverloopError(f"unknown optimizer {c.optimizer!r} (use 'adam' or 'sgd')")
        return {"g": mk(g_params, c.lr_g), "d": mk(self.discriminator.parameters(), c.lr_d)}

    def clip_spec(self) -> tuple[int, int, int]:
        return self.cfg.batch_size, self.cfg.clip_length, self.cfg.clip_stride

    def train_step(self, real: torch.Tensor, opt: dict, autocast: bool = False) -> dict[str, float]:
        """One G/D update on a real clip batch [B, T, 3, H, W]; returns scalar logs."""
        c = self.cfg
        b, t = real.shape[:2]
        if self.carry.shape[0] != b:
            self.carry, self.carried = self.reset(b), torch.zeros(b, dtype=torch.bool, device=real.device)
        z, zs, us, penalty = self.carry, [], [], 0.0
        with torch.autocast(real.device.type, dtype=torch.bfloat16, enabled=autocast):
            for _ in range(t):  # truncated BPTT through the t steps of this clip
                zs.append(z)
                u = self.step(z, self.noise(b))
                z = standardize(u)
                us.append(u)
            for u in global_batch.gather_each(us):  # the global batch's moments at each step
                penalty = penalty + normality_penalty(u)
            penalty = penalty / t
            lat = torch.stack(zs, 1)
            spread_z = per_dim_penalty(global_batch.gather_rows(torch.cat([lat[:, 1:], z[:, None]], 1)).flatten(0, 1))
            fake = self.generator(lat.flatten(0, 1)).float().view_as(real)
            d_real, d_fake = self.discriminator(real), self.discriminator(fake)
            loss_d, adv = gan_losses(c.loss, d_real, d_fake, d_fake)
            motion = (motion_loss(fake, real, c.motion_lags, self.carried) if c.motion_weight > 0
                      else fake.new_zeros(()))
            spread = spread_loss(fake, real) if c.spread_weight > 0 else fake.new_zeros(())
            loss_g = (adv + c.moment_weight * penalty + c.dim_weight * spread_z + c.motion_weight * motion
                      + c.spread_weight * spread)
        d_params = [p for p in self.discriminator.parameters()]
        g_params = [p for group in opt["g"].param_groups for p in group["params"]]
        # One forward through D for both players: D's gradient from loss_d, G's from loss_g
        # (autograd.grad computes only what each needs: no weight grads of D for G's pass).
        grads_d = torch.autograd.grad(loss_d, d_params, retain_graph=True)
        grads_g = torch.autograd.grad(loss_g, g_params)
        for p, g in zip([*d_params, *g_params], [*grads_d, *grads_g]):
            p.grad = g
        opt["d"].step()
        opt["g"].step()
        self.update_ema()
        keep = torch.rand(b, 1, device=z.device) < c.carry_prob  # the persistent latent batch
        self.carry = torch.where(keep, z.detach(), self.reset(b))
        self.carried = keep[:, 0]  # only these clips continue a rollout; fresh ones settle in first
        m = latent_moments(lat.detach())
        return {"loss_d": loss_d.item(), "loss_g": loss_g.item(), "adv": adv.item(),
                "penalty": float(penalty.detach()) if torch.is_tensor(penalty) else penalty,
                "dim_penalty": spread_z.item(), "motion": motion.item(), "spread": spread.item(),
                "d_real": d_real.mean().item(), "d_fake": d_fake.mean().item(),
                **{f"z_{k}": v.item() for k, v in m.items()}}

    @torch.no_grad()
    def update_ema(self) -> None:
        """EMA of G and R, warmed up so early samples are not dominated by the random init."""
        if self.cfg.ema_decay <= 0:
            return
        self.ema_steps += 1
        d = min(self.cfg.ema_decay, (1 + self.ema_steps.item()) / (10 + self.ema_steps.item()))
        for ema, live in ((self.generator_ema, self.generator), (self.step_ema, self.step)):
            for pe, p in zip(ema.parameters(), live.parameters()):
                pe.lerp_(p, 1 - d)

    @torch.no_grad()
    def prepare_sampling(self, batches: int = 4, batch: int = 256) -> None:
        """Recompute the EMA generator's BatchNorm statistics for its own weights.

        The live G's running stats belong to the live weights; averaged weights need their
        own, measured on latents from the EMA step's own rollouts (what sampling sees)."""
        if self.cfg.ema_decay <= 0:
            return
        g = self.generator_ema
        bns = [m for m in g.modules() if isinstance(m, nn.BatchNorm2d)]
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average over the calibration batches
        gen = torch.Generator().manual_seed(1234)
        z = self.reset(batch, gen)
        g.train()
        for _ in range(batches):
            for _ in range(8):
                z = standardize(self.step_ema(z, self.noise(batch, gen)))
            g(z)
        g.eval()
        for bn in bns:
            bn.momentum = 0.1

    def training_only(self) -> tuple[str, ...]:
        """D, and with an EMA the live G and step too: sampling runs their averages."""
        return ("discriminator", "generator", "step") if self.cfg.ema_decay > 0 else ("discriminator",)

    def extra_state(self) -> dict[str, torch.Tensor]:
        """Training state beyond the weights: the persistent latent batch."""
        return {"carry": self.carry, "carried": self.carried}

    def load_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        """`state` as saved (on the CPU): moved to the model's device."""
        device = devices.of(self)
        self.carry = state["carry"].to(device)
        self.carried = state.get("carried", torch.zeros(len(self.carry), dtype=torch.bool)).to(device)
