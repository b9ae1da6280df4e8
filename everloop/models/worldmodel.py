"""worldmodel: World Models' VAE + MDN-RNN (Ha & Schmidhuber 2018), dreaming with no actions.

A ConvVAE compresses each frame to a small latent z; an MDN-RNN (mdn.py) learns
p(z_{t+1} | z_<=t) as a mixture of Gaussians per dimension; a dream samples that mixture
step after step and decodes every z. Four training stages under one `train` call, each
resumable (train.py runs them; `--stage NAME` redoes one and what follows):
  vae    -- reconstruction (L1 + L2) + KL, and a patch discriminator's term, on single frames;
  encode -- every frame of the dataset -> (mu, logvar), written to RUN/latents.safetensors;
  rnn    -- windows of latents, z = posterior mean + 0.35 x posterior noise (World Models
            drew full posterior samples: measured to shimmer; means alone loop);
  flow   -- (dream_head 'flow', the default) the head that draws a dream's next latent
            from the RNN's hidden state, on the frozen RNN (flow_head.py).

What everloop changes from the seed (NN-Dreams and the World Models port), and why:
- a dream starts from the latent of a real clip (`generate --seed-clip`) or from the VAE
  prior plus `burn_in` steps, never from the encoding of a random-noise image;
- the mixture NLL is computed in log space with a soft floor on sigma (mdn.py);
- temperature scales the std by sqrt(tau) (NN-Dreams scaled the variance by tau);
- against drift: noise on the RNN's input latents (`context_noise`) and, optionally, a
  share of inputs drawn from the model's own predictions (`self_feed`);
- the RNN models every `clip_stride`-th frame, so one step carries visible motion;
- optionally (`mirror`), every stage also trains on the footage's mirror image where the
  footage has no left and right: a second clip that the RNN has not learnt by heart;
- the VAE's depth follows the frame size (down to 4x4), so 16x16 test frames work, and
  it uses LeakyReLU (ReLU units died at the learning rate a short CPU budget needs);
- the decoder is trained to be sharp (L1, a clipped linear output, a PatchGAN term): with
  World Models' squared error its reconstructions of real footage were as soft as a 1-px
  blur, and no dream could come inside 2x of the real temporal spectrum (vae.py, patchgan.py).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import devices, global_batch
from ..data import to_float, window_starts
from ..errors import EverloopError
from . import calibration
from .base import Family
from .conv_dynamics import make_flow_head, make_rnn
from .mdn import mixture_nll, mixture_sample
from .multiscale import gdl_loss
from .patchgan import PatchDiscriminator, adaptive_weight, d_hinge_loss, g_hinge_loss
from .vae import VAE
from .worldmodel_config import WorldModelConfig, check
from .worldmodel_fit import (
    encode_frames,
    fit_decoder,
    fit_dream,
    fit_dream_colours,
    heldout_nll,
    hidden_pairs,
    mirror_symmetric,
    psnr,
    reconstruction_psnr,
    spread,
)

LATENTS_FILE = "latents.safetensors"  # {"mu", "logvar"[, "mu_mirror", "logvar_mirror"]}: [frames, z_dim] float32
PIXEL_LOSSES = {"l1": torch.abs, "l2": torch.square, "l1+l2": lambda d: d.abs() + d * d}  # of y - x


def _window_starts(ranges, span: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """data.window_starts with the worldmodel's own advice when no episode is long enough."""
    first = window_starts(ranges, span, n, rng)
    if first is None:
        raise EverloopError(f"worldmodel needs {span} consecutive training frames in one episode "
                            f"(seq_len x clip_stride + 1); lower --set seq_len or clip_stride")
    return first


class WorldModel(Family):
    """The family: the VAE and the MDN-RNN, with the stage hooks the trainer calls."""

    family = "worldmodel"
    has_temperature = True
    context_frames: int = 8  # set per config in __init__ (seed_frames)

    def __init__(self, cfg: WorldModelConfig):
        super().__init__()
        check(cfg, PIXEL_LOSSES)
        self.cfg = cfg
        self.vae = VAE(cfg)
        self.mdn = make_rnn(cfg)
        if cfg.adv_weight > 0:  # training only; saved with the run so --resume continues it
            self.disc = PatchDiscriminator(cfg.disc_width)
        if cfg.colour_table > 0:  # identity until the encode stage fits it (calibration.py)
            self.register_buffer("colour_lut", calibration.identity_table(cfg.colour_table))
        if cfg.still_snap > 0:  # nothing still until the encode stage finds the plate
            self.register_buffer("still_plate", torch.zeros(3, cfg.size, cfg.size))
            self.register_buffer("stillness", torch.zeros(1, cfg.size, cfg.size))
        if cfg.patch_detail > 0:  # an empty bank (no detail added) until the encode stage fills it
            frames = (cfg.patch_bank, 3, cfg.size, cfg.size)
            self.register_buffer("patch_real", torch.zeros(frames, dtype=torch.uint8))
            self.register_buffer("patch_drawn", torch.zeros(frames, dtype=torch.uint8))
            self.register_buffer("patch_proj", torch.zeros(3 * cfg.patch_detail ** 2, calibration.PATCH_DIMS))
        if cfg.dream_head == "flow":
            self.flow = make_flow_head(cfg)
        self._flow_pairs: torch.Tensor | None = None  # [P, hidden + 2 z_dim] for the flow stage (hidden_pairs)
        if cfg.fit_dream:  # sigmas as learnt, no noise memory until the RNN stage's end fits them
            self.register_buffer("dream_sigma", torch.tensor(1.0))
            self.register_buffer("dream_rho", torch.tensor(0.0))
        self._patches: tuple[tuple, calibration.PatchBank] | None = None  # built from the buffers on use
        self.vae_steps = 0  # counts towards adv_start; kept in the training state
        self.context_frames = cfg.seed_frames
        self.temperature = 1.0  # sampling only; `generate --temperature` sets it
        self.stage = "vae"
        self.latents: tuple[torch.Tensor, torch.Tensor] | None = None  # (mu, logvar) [N, L]
        self.mirror_latents: tuple[torch.Tensor, torch.Tensor] | None = None  # of the mirrored frames
        self.mirror_on: bool | None = None  # cfg.mirror, 'auto' decided on the footage (begin_stage)
        self._unsaved: dict = {}  # latents encoded since the trainer last took them (take_artifacts)
        self.ranges: tuple[list, list] | None = None  # (train, held-out) [start, end) ranges
        self.background: torch.Tensor | None = None  # median training frame [3, S, S] (foreground_weight)

    # ---- sampling: start / advance / decode; a state is (z [B, L], RNN hidden[, recent z][, draws])
    def start(self, batch: int, generator: torch.Generator | None = None, seed_clip: torch.Tensor | None = None):
        """Dreams from a real clip's latents (float [B or 1, seed_frames, 3, S, S] in [0, 1]),
        whose last frame is the first one shown, or from the prior plus `burn_in` steps."""
        if seed_clip is None:
            state = self.warm_state(devices.randn(batch, 1, self.cfg.z_dim, generator=generator, device=devices.of(self)))
            for _ in range(self.cfg.burn_in):
                state = self.advance(state, generator)
            return state
        want = (self.context_frames, 3, self.cfg.size, self.cfg.size)
        if seed_clip.dim() != 5 or tuple(seed_clip.shape[1:]) != want or seed_clip.shape[0] not in (1, batch):
            raise EverloopError(f"seed clip is {list(seed_clip.shape)}, the model wants [{batch}, "
                                f"{', '.join(map(str, want))}]")
        clip = seed_clip.float().expand(batch, *want)
        return self.warm_state(self.vae.encode(clip.flatten(0, 1))[0].view(batch, want[0], -1))

    def warm_state(self, latents: torch.Tensor):
        """The state of dreams that continue latents [B, T, L]: the RNN run from a zero state
        over all but the last, which is the current latent (and, with `hidden_refresh`, the
        latents the state was warmed on, which advance() extends)."""
        _, hidden = self.mdn(latents[:, :-1]) if latents.shape[1] > 1 else (None, None)
        return (latents[:, -1], hidden, latents) if self.cfg.hidden_refresh else (latents[:, -1], hidden)

    def advance(self, state, generator: torch.Generator | None = None):
        """One RNN step of every stream: feed z, sample the next z at `temperature` (the flow
        head: _advance_flow; the MDN's mixture, here), every
        sigma times the fitted `dream_sigma` (fit_dream). With a fitted noise memory rho both
        draws (the component's, through the normal CDF, and the Gaussian's) are rho x the
        last one + sqrt(1 - rho^2) x a fresh normal: each draw is distributed as before, but
        a stream keeps its branch and its direction for ~1 / (1 - rho) steps. The last draws
        ride in the state, so a stream is the same however it is chunked; so do the latents
        since the RNN was last warmed up, with `hidden_refresh`."""
        z, hidden, *last = state
        recent = last.pop(0) if self.cfg.hidden_refresh else None
        step = self._advance_flow if self.cfg.dream_head == "flow" else self._advance_mdn
        new = step(z, hidden, last, generator)
        if recent is None:
            return new
        z, hidden, *last = new
        recent = torch.cat([recent, z[:, None]], 1)
        if recent.shape[1] >= self.cfg.hidden_refresh + self.context_frames:  # K steps since the warm-up
            z, hidden, recent = self.warm_state(recent[:, -self.context_frames:])
        return (z, hidden, recent, *last)

    def _advance_mdn(self, z, hidden, last, generator):
        """advance() with the MDN's mixture."""
        (logits, mu, log_sigma), hidden = self.mdn(z[:, None], hidden)
        logits, mu, log_sigma = logits[:, 0], mu[:, 0], log_sigma[:, 0]
        if not self.cfg.fit_dream:  # World Models' sampling, as every run saved before the fit
            return mixture_sample(logits, mu, log_sigma, self.temperature, generator), hidden
        log_sigma, rho = log_sigma + self.dream_sigma.log(), float(self.dream_rho)
        if rho == 0:
            return mixture_sample(logits, mu, log_sigma, self.temperature, generator), hidden
        noise = devices.randn(*z.shape, 2, generator=generator, device=z.device)
        if last:
            noise = rho * last[0] + (1 - rho * rho) ** 0.5 * noise
        return mixture_sample(logits, mu, log_sigma, self.temperature, generator, noise=noise), hidden, noise

    def _advance_flow(self, z, hidden, last, generator):
        """advance() with the flow head: the noise it maps to the next latent is N(0, I)
        times the fitted sigma scale and sqrt(temperature), with the fitted memory rho."""
        out, hidden = self.mdn.features(z[:, None], hidden)
        noise = devices.randn(*z.shape, generator=generator, device=z.device)
        rho = float(self.dream_rho) if self.cfg.fit_dream else 0.0
        if last and rho > 0:
            noise = rho * last[0] + (1 - rho * rho) ** 0.5 * noise
        scale = (float(self.dream_sigma) if self.cfg.fit_dream else 1.0) * self.temperature ** 0.5
        z = self.flow.sample(out[:, 0], noise * scale, self.cfg.flow_steps)
        return (z, hidden, noise) if rho > 0 else (z, hidden)  # the draw rides along only with memory

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents [N, L] -> frames (rollout.latent_of takes a state's latent), calibrated to
        the footage: real detail, its colours, its still background (calibration.py)."""
        x = self.decode_detail(self.vae.decode(z).float())
        if self.cfg.colour_table > 0:
            x = calibration.apply_table(x, self.colour_lut)
        if self.cfg.still_snap > 0:
            x = calibration.snap_to_plate(x, self.still_plate, self.stillness, self.cfg.still_snap)
        return x

    def decode_detail(self, x: torch.Tensor) -> torch.Tensor:
        """The decoder's frames [N, 3, S, S] with the patch bank's real detail (if on)."""
        return self.patch_bank()(x) if self.cfg.patch_detail > 0 else x

    def patch_bank(self) -> calibration.PatchBank:
        """The bank of real detail, rebuilt whenever its buffers were replaced or loaded."""
        key = tuple((t.data_ptr(), t._version) for t in (self.patch_real, self.patch_drawn, self.patch_proj))
        if self._patches is None or self._patches[0] != key:
            self._patches = key, calibration.PatchBank(self.patch_real, self.patch_drawn, self.patch_proj,
                                                       self.cfg.patch_detail)
        return self._patches[1]

    @staticmethod
    def interpolate(a: torch.Tensor, b: torch.Tensor, w: float) -> torch.Tensor:
        """Between two model steps (generate --interp): the VAE latent space is flat, so lerp."""
        return torch.lerp(a, b, w)

    # ---- training: stages and their hooks ---------------------------------------------------
    def stages(self) -> list[tuple[str, float]]:
        """(name, share of the budget) in order; train.py runs them, `encode` is hook only."""
        share = min(max(self.cfg.vae_share, 0.0), 1.0)
        if self.cfg.dream_head != "flow":
            return [("vae", share), ("encode", 0.0), ("rnn", 1.0 - share)]
        flow = min(self.cfg.flow_share, 1.0 - share)
        return [("vae", share), ("encode", 0.0), ("rnn", 1.0 - share - flow), ("flow", flow)]

    def stage_steps(self, name: str) -> int | None:
        """The flow stage: flow_head_epochs passes over its pairs (begin_stage made them) or
        flow_head_updates updates, flow_updates per trainer step."""
        if name != "flow":
            return None
        c, updates = self.cfg, self.cfg.flow_head_updates
        if c.flow_head_epochs > 0 and self._flow_pairs is not None:
            updates = math.ceil(c.flow_head_epochs * len(self._flow_pairs) / c.flow_batch)
        return -(-updates // c.flow_updates)

    def reset_stage(self, name: str) -> None:
        """Forget what stage `name` made (for `train --stage`): fresh weights or latents."""
        if name == "vae":
            self.vae = VAE(self.cfg)
            self.vae_steps = 0
            if self.cfg.adv_weight > 0:
                self.disc = PatchDiscriminator(self.cfg.disc_width)
            if self.cfg.colour_table > 0:
                self.colour_lut = calibration.identity_table(self.cfg.colour_table).to(devices.of(self))
            if self.cfg.still_snap > 0:
                self.stillness = torch.zeros_like(self.stillness)
        elif name == "encode":
            self.latents = self.mirror_latents = None
        elif name == "rnn":
            self.mdn = make_rnn(self.cfg)
        elif name == "flow":
            self.flow = make_flow_head(self.cfg)

    artifact_files = (LATENTS_FILE,)

    def begin_stage(self, name: str, store, saved: dict, fresh: bool = True) -> dict | None:
        """Called by the trainer as a stage starts (fresh) or resumes; may return logs."""
        self.stage = name
        if self.ranges is None:
            self.ranges = (store.split(self.cfg.holdout) if self.cfg.holdout > 0
                           else ([list(e) for e in store.episodes], []))
        logs = None  # the mirror's decision, logged where the option is in use
        if self.mirror_on is None:  # decided on the same frames on every resume: nothing to save
            logs = mirror_symmetric(self, store) if self.cfg.mirror == "auto" else None
            self.mirror_on = bool(logs["mirror"]) if logs else self.cfg.mirror == "on"
        if name == "vae" and self.cfg.foreground_weight > 0 and self.background is None:
            self.background = self._median_frame(store)  # the same on resume: no state to save
        if name == "encode":
            return self._encode(store)
        if name in ("rnn", "flow") and self.latents is None:
            self._load_or_encode(store, saved.get(LATENTS_FILE))
        if name == "flow":
            self._flow_pairs = hidden_pairs(self)
            return {"flow_pairs": len(self._flow_pairs)}
        return logs


    def _median_frame(self, store, frames: int = 512) -> torch.Tensor:
        """Per-pixel median of up to `frames` training frames spread evenly: the still scene."""
        return to_float(store.frames[spread(self.ranges[0], frames)]).median(0).values.to(devices.of(self))

    def end_stage(self, name: str, store) -> dict | None:
        """Called by the trainer as a stage completes; its logs go to log.jsonl."""
        last = "flow" if self.cfg.dream_head == "flow" else "rnn"
        if name not in ("rnn", last):
            return None
        was_training = self.training
        self.eval()  # as a dream runs: no dropout
        logs = (heldout_nll(self) or {}) if name == "rnn" else {}
        if name == last:  # the dream's sampling is fitted once its last part is trained
            logs.update(fit_dream(self) if self.cfg.fit_dream else {})
            if self.cfg.dream_colours and self.cfg.colour_table > 0:
                logs.update(fit_dream_colours(self, store))
        self.train(was_training)
        return logs or None

    def _load_or_encode(self, store, saved: dict | None) -> None:
        """The latents the encode stage saved, unless the data changed size since: encode again."""
        if (saved is not None and saved["mu"].shape == (len(store), self.cfg.z_dim)
                and ("mu_mirror" in saved) == self.mirror_on):
            def pair(key: str) -> tuple[torch.Tensor, torch.Tensor]:
                return saved[f"mu{key}"].to(devices.of(self)), saved[f"logvar{key}"].to(devices.of(self))
            self.latents, self.mirror_latents = pair(""), pair("_mirror") if self.mirror_on else None
            return
        self._encode(store)

    def take_artifacts(self) -> dict[str, dict[str, torch.Tensor]]:
        made, self._unsaved = self._unsaved, {}
        return made

    @torch.no_grad()
    def _encode(self, store) -> dict:
        """Every frame (and its mirror image, when mirrored) -> (mu, logvar), held, and handed
        to the trainer for RUN/latents.safetensors; then the decoder's calibration."""
        encoded = {"": encode_frames(self, store)}
        if self.mirror_on:
            encoded["_mirror"] = encode_frames(self, store, mirrored=True)
        self.latents, self.mirror_latents = encoded[""], encoded.get("_mirror")
        self._unsaved = {LATENTS_FILE: {f"{name}{key}": t.cpu() for key, pair in encoded.items()
                                        for name, t in zip(("mu", "logvar"), pair)}}
        mu = self.latents[0]
        return {"latent_std": mu.std(0).mean().item(), **reconstruction_psnr(self, store, mu),
                **fit_decoder(self, store, mu)}

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        opt = {"vae": torch.optim.Adam(self.vae.parameters(), lr=self.cfg.lr_vae),
               "rnn": torch.optim.Adam(self.mdn.parameters(), lr=self.cfg.lr_rnn)}
        if self.cfg.dream_head == "flow":
            opt["flow"] = torch.optim.Adam(self.flow.parameters(), lr=self.cfg.lr_rnn)
        if self.cfg.adv_weight > 0:
            opt["disc"] = torch.optim.Adam(self.disc.parameters(), lr=self.cfg.lr_disc, betas=(0.5, 0.9))
        return opt

    def sample_batch(self, store, rng: np.random.Generator) -> torch.Tensor:
        """vae: frames [B, 3, S, S]; rnn: latent windows [B, seq_len + 1, L], each z drawn
        from its frame's posterior with the trainer's rng (so a resumed run draws the same)."""
        c = self.cfg
        if self.stage == "vae":
            x = to_float(store.sample_clips(c.vae_batch, 1, 1, rng, ranges=self.ranges[0]))[:, 0]
            if self.mirror_on:
                flip = torch.from_numpy(rng.random(len(x)) < 0.5)
                x[flip] = x[flip].flip(-1)
            return x
        if self.stage == "flow":
            picks = self._flow_pairs[torch.from_numpy(rng.integers(0, len(self._flow_pairs), c.flow_batch * c.flow_updates))]
            h, mu, logvar = picks.split([self.mdn.feature_size, c.z_dim, c.z_dim], -1)
            eps = torch.from_numpy(rng.standard_normal(mu.shape).astype(np.float32)).to(mu.device)
            # the next latent drawn from its posterior as the RNN's targets are: from the means
            # alone the head's draws were narrower and two fire streams of 8 became one by t = 100k
            z = mu + c.posterior_noise * torch.exp(0.5 * logvar) * eps
            return torch.cat([h, z], -1).view(c.flow_batch, c.flow_updates, -1)  # rows first, as every batch
        span = c.seq_len * (c.clip_stride + c.stride_jitter) + 1
        starts = _window_starts(self.ranges[0], span, c.rnn_batch, rng)
        stride = c.clip_stride
        if c.stride_jitter:
            stride = c.clip_stride + rng.integers(-c.stride_jitter, c.stride_jitter + 1, (c.rnn_batch, 1))
        idx = torch.from_numpy(starts[:, None] + np.arange(c.seq_len + 1) * stride)
        mu, logvar = self.latents[0][idx], self.latents[1][idx]
        if self.mirror_on:  # each window from the footage or from its mirror image
            flip = torch.from_numpy(rng.random(c.rnn_batch) < 0.5).to(mu.device)[:, None, None]
            mu = torch.where(flip, self.mirror_latents[0][idx], mu)
            logvar = torch.where(flip, self.mirror_latents[1][idx], logvar)
        eps = torch.from_numpy(rng.standard_normal(mu.shape).astype(np.float32)).to(mu.device)
        return mu + c.posterior_noise * torch.exp(0.5 * logvar) * eps

    def train_step(self, batch: torch.Tensor, opt: dict, autocast: bool = False) -> dict[str, float]:
        if self.stage == "flow":  # fp32 always: under bf16 its loss ran 1.7 -> 225,000 in the demo
            return {"flow_loss": self.flow.train_updates(batch, self.mdn.feature_size, opt["flow"])}
        with torch.autocast(batch.device.type, dtype=torch.bfloat16, enabled=autocast):
            if self.stage == "vae":
                return self._vae_step(batch, opt)
            if self.stage == "rnn":
                return self._rnn_step(batch, opt["rnn"])
        raise EverloopError(f"worldmodel has no training steps in stage {self.stage!r}")

    def _vae_step(self, x: torch.Tensor, opt: dict) -> dict[str, float]:
        c = self.cfg
        mu, logvar = self.vae.encode(x)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        raw = self.vae.decode_raw(z).float()
        y = self.vae.output(raw)
        per_pixel = PIXEL_LOSSES[c.recon_loss](y - x)
        if c.foreground_weight > 0:
            moving = ((x - self.background).abs().amax(1, keepdim=True) > calibration.FOREGROUND).float()
            per_pixel = per_pixel * (1 + c.foreground_weight * moving)
        recon = per_pixel.flatten(1).sum(1).mean()  # summed over pixels, as World Models
        if c.gdl_weight:
            recon = recon + c.gdl_weight * gdl_loss(y, x, 2.0) * x[0].numel()
        # [L], the global batch's mean: free bits clamp it, so each process's half would differ
        kl_dim = global_batch.gather_rows(-0.5 * (1 + logvar - mu ** 2 - logvar.exp())).float().mean(0)
        kl = torch.clamp(kl_dim, min=c.free_bits).sum() if c.free_bits > 0 else kl_dim.sum()
        loss = recon + c.kl_weight * kl
        if c.decoder_output == "clip" and c.clip_weight > 0:  # no pixel may hide past the clip for good
            loss = loss + c.clip_weight * (F.relu(raw - 1) + F.relu(-raw)).flatten(1).sum(1).mean()
        logs = {}
        adversarial = c.adv_weight > 0 and self.vae_steps >= c.adv_start
        if adversarial:  # the decoder is also charged for patches the discriminator can tell
            g_adv = g_hinge_loss(self.disc(y))
            w = c.adv_weight * adaptive_weight(recon, g_adv, self.vae.last_layer.weight)
            loss = loss + w * g_adv
            logs.update(g_adv=g_adv.item(), adv_w=w.item())
        opt["vae"].zero_grad(set_to_none=True)
        loss.backward()
        opt["vae"].step()
        if adversarial:
            d_loss = d_hinge_loss(self.disc(x), self.disc(y.detach()))
            opt["disc"].zero_grad(set_to_none=True)  # also drops what the decoder's loss left here
            d_loss.backward()
            opt["disc"].step()
            logs["d_loss"] = d_loss.item()
        self.vae_steps += 1
        return {"loss": loss.item(), "psnr": psnr(y.detach(), x), "kl": kl_dim.sum().item(),
                "recon": recon.item(), **logs}

    def _rnn_step(self, z: torch.Tensor, opt) -> dict[str, float]:
        c = self.cfg
        inp, target = z[:, :-1], z[:, 1:]
        noise = c.context_noise * torch.randn_like(inp) if c.context_noise > 0 else 0.0
        if c.self_feed > 0:
            params = self.mdn.self_fed(inp, noise, c.self_feed)
        else:
            params, _ = self.mdn(inp + noise)
        nll = mixture_nll(*params, target)
        opt.zero_grad(set_to_none=True)
        nll.backward()
        norm = (nn.utils.clip_grad_norm_(self.mdn.parameters(), c.grad_clip) if c.grad_clip > 0
                else torch.zeros(()))
        opt.step()
        sigma = params[2].detach().exp().mean()
        return {"nll": nll.item(), "grad_norm": float(norm), "sigma": sigma.item()}

    def prepare_sampling(self) -> None:
        """Nothing to do: no EMA, no BatchNorm."""

    def extra_state(self) -> dict:
        return {"vae_steps": torch.tensor(self.vae_steps)}

    def load_extra_state(self, state: dict) -> None:
        self.vae_steps = int(state.get("vae_steps", 0))
