"""Painting held-out targets and scoring them: the agent paints in the dream, optionally its
strokes are refined through the world model (refine.py), and the real program re-draws the
actions (open loop: the same actions). The number that counts is the real program's."""
from __future__ import annotations

import time

import numpy as np
import torch

from .refine import Refine, dream, refine


def real_canvases(actions: np.ndarray, env, shape) -> np.ndarray:
    """The real program's canvas after each stroke, [N, *shape], of actions [B, N, A]."""
    real = np.zeros(shape, np.float32)
    for i, acts in enumerate(actions):
        env.reset()
        for t, a in enumerate(acts):
            real[t, i] = env.step(a)
    return real


def paint(agent, renderer, target: np.ndarray, env, refine_with: Refine | None = None):
    """Actions [B, N, A], dream canvases and real canvases [N, *target.shape] (numpy), the
    real ones after each stroke re-rendered by the real program. `refine_with`: the agent's
    strokes refined through the renderer first (refine.py)."""
    return paint_detailed(agent, renderer, target, env, refine_with)[:3]


@torch.no_grad()
def paint_detailed(agent, renderer, target, env, refine_with: Refine | None = None):
    """paint(), plus the agent's own (actions, dream) before refinement and the seconds it took."""
    was = agent.training
    agent.eval()
    t = torch.from_numpy(np.asarray(target, np.float32))
    actions, canvases = agent.paint(t, renderer)
    agent.train(was)
    own, seconds = (actions, canvases), 0.0
    if refine_with and refine_with.steps:
        t0 = time.perf_counter()
        real = (lambda acts: np.stack([env.render(x) for x in acts])) if refine_with.real else None
        actions = refine(actions, t, renderer, agent.cfg.colour, refine_with.steps, refine_with.lr, real)[0]
        seconds = time.perf_counter() - t0
        canvases = dream(actions, renderer, agent.cfg.colour)
    actions = actions.numpy()
    return actions, canvases.numpy(), real_canvases(actions, env, canvases.shape), own, seconds


def score(agent, renderer, test: np.ndarray, env, chunk: int = 100, refine_with: Refine | None = None,
          groups=None, others=None) -> dict:
    """MSE of the final canvas to the targets, in the dream and with the real program.
    With `refine_with`, the refined strokes' numbers, the agent's own beside them
    (`agent_mse_real`, `agent_mse_dream`) and the refinement's seconds per target.
    `groups`: [(name, count)] consecutive parts of `test`, each also scored (`by_source`).
    `others`: {name: env} more real programs drawing the same actions (`mse_real_<name>`):
    refinement is paid for once, whichever program scores it."""
    was = renderer.training
    renderer.eval()
    try:
        return _score(agent, renderer, test, env, chunk, refine_with, groups, others or {})
    finally:
        renderer.train(was)


def _summary(real, dream_, blank) -> dict:
    out = {"mse_real": float(real.mean()), "mse_dream": float(dream_.mean()), "mse_blank": float(blank.mean())}
    out.update(gap=out["mse_real"] - out["mse_dream"], real_over_blank=out["mse_real"] / out["mse_blank"],
               dream_over_blank=out["mse_dream"] / out["mse_blank"], targets=len(real))
    return out


def _score(agent, renderer, test, env, chunk, refine_with, groups, others):
    refined = bool(refine_with and refine_with.steps)
    keys = [*others] + ([f"agent_{k}" for k in others] if refined else [])
    per = {k: [] for k in ("real", "dream", "agent_real", "agent_dream", *keys)}
    mse = lambda x, t: ((x - t) ** 2).reshape(len(t), -1).mean(1)
    seconds = 0.0
    for i in range(0, len(test), chunk):
        t = test[i:i + chunk]
        actions, dream_, real, (own_actions, own_dream), s = paint_detailed(agent, renderer, t, env, refine_with)
        seconds += s
        per["real"].append(mse(real[-1], t))
        per["dream"].append(mse(dream_[-1], t))
        own = own_actions.numpy()
        for name, other in others.items():
            per[name].append(mse(real_canvases(actions, other, dream_.shape)[-1], t))
            if refined:
                per[f"agent_{name}"].append(mse(real_canvases(own, other, dream_.shape)[-1], t))
        if refined:
            per["agent_real"].append(mse(real_canvases(own, env, own_dream.shape)[-1], t))
            per["agent_dream"].append(mse(own_dream[-1].numpy(), t))
    per = {k: np.concatenate(v) if v else None for k, v in per.items()}
    blank = (test ** 2).reshape(len(test), -1).mean(1)
    out = _summary(per["real"], per["dream"], blank)
    out.update({f"mse_real_{k}": float(per[k].mean()) for k in keys if not k.startswith("agent_")})
    out.update({f"agent_mse_real_{k[6:]}": float(per[k].mean()) for k in keys if k.startswith("agent_")})
    if refined:
        out.update(refine_steps=refine_with.steps, refine_lr=refine_with.lr, refine_real=refine_with.real,
                   refine_seconds_per_target=seconds / len(test),
                   agent_mse_real=float(per["agent_real"].mean()), agent_mse_dream=float(per["agent_dream"].mean()))
    if groups:
        out["by_source"], at = {}, 0
        for name, n in groups:
            part = slice(at, at + n)
            out["by_source"][name] = _summary(per["real"][part], per["dream"][part], blank[part])
            if refined:
                out["by_source"][name]["agent_mse_real"] = float(per["agent_real"][part].mean())
            at += n
    return out
