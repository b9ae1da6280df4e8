"""Decoupled colour (colour.py) against a renderer that learns everything, at equal CPU time.

`python -m everloop.painter.learned_colour --minutes 1.4 --threads 1` trains, one after the
other for the same wall-clock time on fresh real strokes:
  decoupled  the colour renderer (RendererConfig(colour=True)): 10 inputs, the stroke's alpha;
             colour composited analytically (Learning to Paint's decoupling)
  learned    the same network with the 12-number colour action as input and four output
             channels, alpha and premultiplied r g b (BCE on each)
and scores both on 256 held-out colour strokes painted over canvases that already hold three
strokes: MSE of the predicted canvas against the real program's, next to the MSE of leaving
the canvas as it was. Prints one markdown row per renderer."""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import colour
from .renderer import RendererConfig, StrokeNet, radius_max


class LearnedColourNet(StrokeNet):
    """StrokeNet from the colour action to alpha and premultiplied colour."""

    def __init__(self, cfg: RendererConfig):
        super().__init__(cfg)
        self.mlp[0] = nn.Linear(colour.COLOUR_DIM, self.mlp[0].out_features)
        self.out = nn.Conv2d(self.out.in_channels, 16, 3, padding=1)

    def logits(self, action):
        h = self.mlp(action).view(-1, self.c0, 8, 8)
        h = F.relu(self.first(self._xy(h)))
        for conv in self.ups:
            h = F.relu(conv(self._xy(F.interpolate(h, scale_factor=2, mode="nearest"))))
        return F.pixel_shuffle(self.out(self._xy(h)), 2)  # [B, 4, H, W]


def _batch(env: colour.ColourPaintEnv, rng, n: int):
    """Colour actions, their alpha and premultiplied colour layers (torch)."""
    a = colour.random_colour_actions(rng, n)
    alpha = torch.from_numpy(np.stack([env.alpha(x) for x in a]))
    return torch.from_numpy(a), alpha, alpha[:, None] * torch.from_numpy(a[:, 9:])[..., None, None]


def _predict(net, kind: str, actions, canvas):
    with torch.no_grad():
        if kind == "decoupled":
            return colour.composite(canvas, net(colour.shape_actions(actions)), actions[:, 9:])
        out = torch.sigmoid(net.logits(actions.clamp(0, 1)))
        return canvas * (1 - out[:, :1]) + out[:, 1:]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=1.4, help="training time of each renderer")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--size", type=int, default=64)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    cfg = RendererConfig(size=a.size, colour=True)
    env = colour.ColourPaintEnv(a.size, r_max=radius_max(cfg))
    vrng = np.random.default_rng(10_000)
    val = colour.random_colour_actions(vrng, 256)
    under = np.stack([env.render(colour.random_colour_actions(vrng, 3)) for _ in range(256)])
    real = torch.from_numpy(np.stack([env.paint(c, x) for c, x in zip(under, val)]))
    val, under = torch.from_numpy(val), torch.from_numpy(under)
    print(f"| renderer | steps in {a.minutes:g} min | held-out canvas MSE | unchanged canvas MSE |\n|---|---:|---:|---:|")
    for kind in ("decoupled", "learned"):
        torch.manual_seed(0)
        rng = np.random.default_rng(0)
        net = StrokeNet(cfg) if kind == "decoupled" else LearnedColourNet(cfg)
        opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
        steps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < 60 * a.minutes:
            acts, alpha, premult = _batch(env, rng, cfg.batch)
            if kind == "decoupled":
                loss = F.binary_cross_entropy_with_logits(net.logits(colour.shape_actions(acts)), alpha)
            else:
                loss = F.binary_cross_entropy_with_logits(net.logits(acts), torch.cat([alpha[:, None], premult], 1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
        net.eval()
        mse = float((_predict(net, kind, val, under) - real).pow(2).mean())
        print(f"| {kind} | {steps:,} | {mse:.5f} | {float((under - real).pow(2).mean()):.5f} |")


if __name__ == "__main__":
    main()
