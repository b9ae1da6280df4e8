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
import torch.nn.functional as F


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
    from .agent import AgentConfig, Painter, recon_loss
    from .env import PaintEnv, random_actions
    from .renderer import RendererConfig, StrokeNet

    env, rng = PaintEnv(64), np.random.default_rng(0)
    acts = random_actions(rng, 256)
    rcfg, acfg = RendererConfig(), AgentConfig()
    net = StrokeNet(rcfg)
    opt = torch.optim.Adam(net.parameters())
    at = torch.from_numpy(acts)

    def renderer_step():
        a = random_actions(rng, rcfg.batch)
        loss = F.binary_cross_entropy_with_logits(net.logits(torch.from_numpy(a)), torch.from_numpy(env.strokes(a)))
        opt.zero_grad()
        loss.backward()
        opt.step()

    real = _rate(lambda: env.strokes(acts[:64]), 64, a.seconds)
    with torch.no_grad():
        neural = _rate(lambda: net(at), len(at), a.seconds)
    renderer_sps = _rate(renderer_step, 1, a.seconds)

    agent = Painter(acfg, 64)
    aopt = torch.optim.Adam(agent.parameters())
    net.requires_grad_(False)  # frozen, as in train-agent
    target = torch.rand(acfg.batch, 64, 64)

    def agent_step():
        loss, _ = recon_loss(agent.paint(target, net)[1], target, acfg.step_loss)
        aopt.zero_grad()
        loss.backward()
        aopt.step()

    rows = [("real program (skia), stroke layers 64x64", real, "strokes/s"),
            ("neural renderer forward, batch 256", neural, "strokes/s"),
            (f"train-renderer step (batch {rcfg.batch}, real strokes drawn in the step)", renderer_sps, "steps/s"),
            (f"train-agent step (batch {acfg.batch}, {acfg.strokes} strokes, no refresh)", _rate(agent_step, 1, a.seconds), "steps/s")]
    print(f"torch {torch.__version__}, {a.threads} thread(s)\n\n| measurement | rate | unit |\n|---|---:|---|")
    for name, rate, unit in rows:
        print(f"| {name} | {rate:,.1f} | {unit} |")


if __name__ == "__main__":
    main()
