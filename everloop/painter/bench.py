"""Painter speed rows for BENCHMARKS.md: `python -m everloop.painter.bench [--threads N]`.

Real program strokes/s (skia, one stroke layer at a time, as the renderer's training
batches are drawn), neural renderer strokes/s (forward only, batches of 256, the default
net), renderer training steps/s and agent training steps/s (default configs, 64x64, 8
strokes), and the same in colour (colour.py: real colour strokes composited on a canvas, the
renderer's alpha composited in colour, agent steps at 15 and 50 strokes). Prints a markdown
table; `--colour` measures only the colour rows."""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from ..errors import EverloopError


def _rate(fn, n_items: int, seconds: float = 5.0) -> float:
    fn()  # warm-up
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        done += n_items
    return done / (time.perf_counter() - t0)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    p.add_argument("--colour", action="store_true", help="only the colour rows")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    rows = [] if a.colour else _grey(a)
    print(f"torch {torch.__version__}, {a.threads} thread(s)\n\n| measurement | rate | unit |\n|---|---:|---|")
    for name, rate, unit in rows + _colour(a):
        print(f"| {name} | {rate:,.2f} | {unit} |")


def _colour(a) -> list:
    from . import colour
    from .agent import AgentConfig, Painter, agent_step
    from .renderer import RendererConfig, StrokeNet

    env, rng = colour.ColourPaintEnv(64), np.random.default_rng(0)
    acts = colour.random_colour_actions(rng, 256)
    net = StrokeNet(RendererConfig(colour=True))
    real = _rate(lambda: env.render(acts[:64]), 64, a.seconds)
    at, canvas = torch.from_numpy(acts), torch.zeros(len(acts), 3, 64, 64)
    with torch.no_grad():
        neural = _rate(lambda: colour.composite(canvas, net(colour.shape_actions(at)), at[:, 9:]), len(at), a.seconds)
    rows = [(f"real program (skia) colour strokes 64x64, radius up to {colour.R_MAX:g}, composited", real, "strokes/s"),
            ("neural renderer colour strokes (alpha + composite), batch 256", neural, "strokes/s")]
    try:
        mypaint = colour.ColourPaintEnv(64, "mypaint")
    except EverloopError as e:  # libmypaint is not installed: no row
        print(f"(no MyPaint row: {e})")
    else:
        rows.append(("real program (MyPaint brush engine) colour strokes, same actions",
                     _rate(lambda: mypaint.render(acts[:64]), 64, a.seconds), "strokes/s"))
    for strokes in (15, 50):
        cfg = AgentConfig(colour=True, strokes=strokes)
        agent = Painter(cfg, 64)
        aopt = torch.optim.Adam(agent.parameters())
        target = torch.rand(cfg.batch, 3, 64, 64)
        sps = _rate(lambda cfg=cfg, agent=agent, aopt=aopt, target=target: agent_step(agent, net, aopt, target, cfg),
                    1, a.seconds)
        rows.append((f"train-agent colour step (batch {cfg.batch}, {strokes} strokes, no refresh)", sps, "steps/s"))
    return rows


def _grey(a) -> list:
    from .agent import AgentConfig, Painter, agent_step
    from .env import PaintEnv, random_actions
    from .renderer import RendererConfig, StrokeNet, real_batch, renderer_step

    env, rng = PaintEnv(64), np.random.default_rng(0)
    acts = random_actions(rng, 256)
    rcfg, acfg = RendererConfig(), AgentConfig()
    net = StrokeNet(rcfg)
    opt = torch.optim.Adam(net.parameters())
    at = torch.from_numpy(acts)
    real = _rate(lambda: env.strokes(acts[:64]), 64, a.seconds)
    with torch.no_grad():
        neural = _rate(lambda: net(at), len(at), a.seconds)
    renderer_sps = _rate(lambda: renderer_step(net, opt, *real_batch(env, rng, rcfg.batch)), 1, a.seconds)

    agent = Painter(acfg, 64)  # the train-agent step, without the renderer refresh
    aopt = torch.optim.Adam(agent.parameters())
    target = torch.rand(acfg.batch, 64, 64)
    agent_sps = _rate(lambda: agent_step(agent, net, aopt, target, acfg), 1, a.seconds)
    return [("real program (skia), stroke layers 64x64", real, "strokes/s"),
            ("neural renderer forward, batch 256", neural, "strokes/s"),
            (f"train-renderer step (batch {rcfg.batch}, real strokes drawn in the step)", renderer_sps, "steps/s"),
            (f"train-agent step (batch {acfg.batch}, {acfg.strokes} strokes, no refresh)", agent_sps, "steps/s")]


if __name__ == "__main__":
    main()
