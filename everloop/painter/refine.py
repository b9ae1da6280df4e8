"""Test-time stroke refinement through the world model.

Nakano's "Neural Painters" (2019) paints by gradient descent on the stroke parameters
themselves through a learned neural painter, and Huang et al. (Learning to Paint, 2019)
fine-tune an agent's strokes the same way. Here the agent's strokes are the start: every
target gets `steps` Adam steps on its own actions against itself, through the frozen
renderer and the analytic composite, and the real program then draws the refined actions
(only that counts in the score). This is inference compute, not training: nothing is
learned and nothing carries over from one target to the next.

Actions are optimised as logits (a = sigmoid(z)), so every refined action stays inside the
[0, 1] box the real program accepts, with no clamping to stall the gradient at a wall. Each
target keeps the best actions seen in the dream, the start included, so refinement never
makes the dream loss worse than the agent's own strokes. Each target's loss is its own
mean (summed over the batch), and Adam scales every number by itself, so a target's result
does not depend on which others share its batch."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from . import colour as col
from .env import ACTION_DIM
from .renderer import composite

EPS = 1e-5
"""Actions at exactly 0 or 1 start from logit(EPS) / logit(1 - EPS): finite, still 0 or 1
to the real program's rounding."""


@dataclass(frozen=True)
class Refine:
    steps: int = 0
    """Adam steps per target (0: the agent's strokes as they are)."""
    lr: float = 0.05
    """Adam learning rate on the action logits."""
    real: bool = False
    """The real program in the loop: every step it draws the current strokes, and the loss is
    the real canvas's MSE, its gradient taken through the renderer (straight-through:
    dream + (real - dream).detach()). The renderer then only says which way to move a
    stroke, the real program says how far the painting is off, so refinement cannot cash in
    on the renderer's mistakes, and each target keeps its best strokes by the real MSE."""


def dream(actions: torch.Tensor, renderer, colour: bool) -> torch.Tensor:
    """The dream canvases after each stroke, [N, B, ...], of actions [B, N, A]: every
    stroke's layer in one batched renderer call (the strokes do not depend on the canvas),
    then composited in order, as Painter.stroke does one by one."""
    b, n, a = actions.shape
    flat = actions.reshape(b * n, a)
    layers = renderer(col.shape_actions(flat) if colour else flat)
    layers = layers.view(b, n, *layers.shape[-2:])
    size = layers.shape[-1]
    canvas = actions.new_zeros((b, 3, size, size) if colour else (b, size, size))
    out = []
    for t in range(n):
        if colour:
            canvas = col.composite(canvas, layers[:, t], actions[:, t, ACTION_DIM - 1:])
        else:
            canvas = composite(canvas, layers[:, t])
        out.append(canvas)
    return torch.stack(out)


def _loss(canvas: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (canvas - target).pow(2).flatten(1).mean(1)  # [B]: each target's own MSE


def refine(actions: torch.Tensor, target: torch.Tensor, renderer, colour: bool, steps: int,
           lr: float, real=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(refined actions [B, N, A] in [0, 1], each target's MSE at the start and at the end,
    [B] each) of actions [B, N, A] painting targets [B, ...]: the dream's MSE, or with
    `real` (numpy actions [B, N, A] -> the real program's final canvases) the real one's."""
    was = [p.requires_grad for p in renderer.parameters()]
    renderer.requires_grad_(False)  # frozen: the gradient reaches the actions only
    try:
        with torch.enable_grad():
            return _refine(actions.detach(), target, renderer, colour, steps, lr, real)
    finally:
        for p, w in zip(renderer.parameters(), was):
            p.requires_grad_(w)


def _canvas(a, renderer, colour, real):
    canvas = dream(a, renderer, colour)[-1]
    if real is None:
        return canvas
    drawn = torch.from_numpy(np.asarray(real(a.detach().numpy()), np.float32))
    return canvas + (drawn - canvas).detach()  # the real canvas's value, the dream's gradient


def _refine(actions, target, renderer, colour, steps, lr, real):
    with torch.no_grad():
        start = _loss(_canvas(actions, renderer, colour, real), target)
    best, best_loss = actions.clone(), start.clone()
    a0 = actions.clamp(EPS, 1 - EPS)
    z = (torch.log(a0) - torch.log1p(-a0)).requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    for i in range(steps + 1):
        a = torch.sigmoid(z)
        loss = _loss(_canvas(a, renderer, colour, real), target)
        better = loss.detach() < best_loss
        best[better] = a.detach()[better]
        best_loss = torch.where(better, loss.detach(), best_loss)
        if i == steps:  # the last step's result is scored, not stepped from
            break
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        opt.step()
    return best, start, best_loss

