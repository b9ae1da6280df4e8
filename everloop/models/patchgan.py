"""A patch discriminator and the adversarial term that sharpens an autoencoder's decoder.

Why: a decoder trained on squared error alone draws the mean of what a latent leaves
uncertain, and at a blob's edge that mean is a blur. On the lava lamp the World Models
VAE's reconstructions of *real* footage sat 8x outside the real band on the temporal
spectrum, as a 1-px Gaussian blur of the footage does (bench/worldmodel_ceiling.py): no RNN
can dream sharper frames than its decoder draws. The field's fix (VQGAN, Esser et al. 2021;
pix2pix's PatchGAN before it) is a discriminator that judges small patches: a blurred
edge is easy to tell from a real one, a sharp edge in a slightly wrong place is not.

- PatchGAN: strided 4x4 convs down to 1/8 of the frame, one logit per patch (a 64x64
  frame gets 8x8 logits, each seeing ~46 px): it judges texture and edges, not layout,
  which the reconstruction term already pins.
- Hinge loss (as VQGAN and StyleGAN-T): bounded logits, no saturation.
- The adversarial term's weight is set every step from the ratio of the two gradients at
  the decoder's last layer (VQGAN's adaptive weight), so `adv_weight` is a relative knob
  that does not depend on how the reconstruction loss is scaled (summed over pixels here).
"""
from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from ..grad_average import mean_over_processes


class PatchDiscriminator(nn.Module):
    """frames [N, 3, S, S] in [0, 1] -> patch logits [N, 1, S / 8, S / 8]."""

    def __init__(self, width: int = 32, layers: int = 3):
        super().__init__()
        mods: list[nn.Module] = []
        chans = [3] + [width * 2 ** i for i in range(layers)]
        for a, b in itertools.pairwise(chans):
            mods += [nn.Conv2d(a, b, 4, 2, 1), nn.LeakyReLU(0.2)]
        mods.append(nn.Conv2d(chans[-1], 1, 3, 1, 1))
        self.net = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * 2 - 1)  # centred inputs, as the convs' init expects


def d_hinge_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()


def g_hinge_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    return -fake_logits.mean()


def adaptive_weight(recon: torch.Tensor, adv: torch.Tensor, last: torch.Tensor,
                    cap: float = 1e4) -> torch.Tensor:
    """|d recon / d last| / |d adv / d last| (detached): the adversarial gradient at the
    decoder's last layer is scaled to the reconstruction's, then `adv_weight` sets the ratio."""
    g_rec = torch.autograd.grad(recon, last, retain_graph=True)[0]
    g_adv = torch.autograd.grad(adv, last, retain_graph=True)[0]
    g_rec, g_adv = mean_over_processes(g_rec), mean_over_processes(g_adv)  # the global batch's (grad_average.py)
    return (g_rec.norm() / (g_adv.norm() + 1e-4)).clamp(0.0, cap).detach()
