"""Painter speed rows for BENCHMARKS.md: `python -m everloop.painter.bench [--threads N]`.

Real program strokes/s (skia, one stroke layer at a time, as the renderer's training
batches are drawn), neural renderer strokes/s (forward only, batches of 256, the default
net), renderer training steps/s and agent training steps/s (default configs, 64x64, 8
strokes). Prints a markdown table."""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch


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
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
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
    rows = [("real program (skia), stroke layers 64x64", real, "strokes/s"),
            ("neural renderer forward, batch 256", neural, "strokes/s"),
            (f"train-renderer step (batch {rcfg.batch}, real strokes drawn in the step)", renderer_sps, "steps/s"),
            (f"train-agent step (batch {acfg.batch}, {acfg.strokes} strokes, no refresh)", agent_sps, "steps/s")]
    print(f"torch {torch.__version__}, {a.threads} thread(s)\n\n| measurement | rate | unit |\n|---|---:|---|")
    for name, rate, unit in rows:
        print(f"| {name} | {rate:,.1f} | {unit} |")


if __name__ == "__main__":
    main()
