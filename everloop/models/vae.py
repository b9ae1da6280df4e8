"""The worldmodel family's ConvVAE: frames [N, 3, S, S] <-> latents z [N, L].

World Models' architecture (k4 s2 convs 32/64/128/256 down to 4x4, mirrored up), with the
decoder options that made a dream sharp enough on the lava lamp (docs/worldmodel.md):
a clipped linear output instead of the sigmoid, and optionally nearest-neighbour upsampling
and extra 3x3 blocks. The losses and the discriminator live in worldmodel.py / patchgan.py."""
from __future__ import annotations

import itertools
import math

import torch
from torch import nn

from ..errors import EverloopError


class VAE(nn.Module):
    """frames [N, 3, S, S] <-> z [N, L]: k4 s2 convs down to 4x4, mirrored transposed convs up.

    LeakyReLU, not World Models' ReLU: on lava64 at lr 1e-3 the ReLU VAE's units died and
    it drew one flat colour (10.6 dB PSNR after 290 steps); leaky reached 20.6 dB in 200."""

    def __init__(self, cfg):  # a WorldModelConfig
        super().__init__()
        n = round(math.log2(cfg.size)) if cfg.size > 0 else 0
        if cfg.size < 8 or 2 ** n != cfg.size:
            raise EverloopError(f"worldmodel needs square frames whose side is a power of two >= 8 "
                                f"(got {cfg.size}); prepare the data with --size 64")
        grid = getattr(cfg, "latent_grid", 0)
        if grid:  # a spatial latent: z is a grid x grid map of z_dim / grid^2 channels
            g = round(math.log2(grid))
            if 2 ** g != grid or not 1 <= grid <= cfg.size // 2 or cfg.z_dim % (grid * grid):
                raise EverloopError(f"latent_grid {grid}: use a power of two <= size / 2 that divides "
                                    f"z_dim {cfg.z_dim} into grid x grid channels")
            n = n - g + 2  # downsample to grid x grid, not to 4x4
        chans = [3] + [cfg.vae_width * 2 ** i for i in range(n - 2)]
        enc: list[nn.Module] = []
        for a, b in itertools.pairwise(chans):
            enc += [nn.Conv2d(a, b, 4, 2, 1), nn.LeakyReLU(0.2)]
        if grid:
            c = cfg.z_dim // (grid * grid)
            self.encoder = nn.Sequential(*enc)
            self.to_stats = nn.Conv2d(chans[-1], 2 * c, 3, 1, 1)
            self.from_z = nn.Sequential(nn.Unflatten(1, (c, grid, grid)), nn.Conv2d(c, chans[-1], 3, 1, 1))
            dec: list[nn.Module] = []
        else:
            self.encoder = nn.Sequential(*enc, nn.Flatten())
            flat = chans[-1] * 16
            self.to_stats = nn.Linear(flat, 2 * cfg.z_dim)
            self.from_z = nn.Linear(cfg.z_dim, flat)
            dec = [nn.Unflatten(1, (chans[-1], 4, 4))]
        rev = chans[::-1]
        if cfg.decoder_upsample not in ("transposed", "nearest"):
            raise EverloopError(f"decoder_upsample {cfg.decoder_upsample!r}: use transposed or nearest")
        for i, (a, b) in enumerate(itertools.pairwise(rev)):
            dec += ([nn.LeakyReLU(0.2), nn.ConvTranspose2d(a, b, 4, 2, 1)] if cfg.decoder_upsample == "transposed"
                    else [nn.LeakyReLU(0.2), nn.Upsample(scale_factor=2.0), nn.Conv2d(a, b, 3, 1, 1)])
            if i < len(rev) - 2:
                for _ in range(cfg.decoder_blocks):
                    dec += [nn.LeakyReLU(0.2), nn.Conv2d(b, b, 3, 1, 1)]
        if cfg.decoder_output not in ("sigmoid", "clip"):
            raise EverloopError(f"decoder_output {cfg.decoder_output!r}: use sigmoid or clip")
        self.decoder = nn.Sequential(*dec, nn.Sigmoid() if cfg.decoder_output == "sigmoid" else nn.Hardtanh(0.0, 1.0))

    @property
    def last_layer(self) -> nn.Module:
        """The decoder's output conv (before its sigmoid or clip): VQGAN's adaptive weight
        compares the two loss gradients there."""
        return self.decoder[-2]

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.to_stats(self.encoder(x)).chunk(2, dim=1)
        return mu.flatten(1), logvar.flatten(1).clamp(-12, 8)  # exp() of the extremes must stay finite

    def decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        """The decoder's output before its sigmoid or clip (`output` applies that)."""
        return self.decoder[:-1](self.from_z(z))

    def output(self, raw: torch.Tensor) -> torch.Tensor:
        return self.decoder[-1](raw)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.output(self.decode_raw(z))
