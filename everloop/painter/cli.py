"""everloop paint train-renderer | train-agent | draw | sheet | eval"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import EverloopError
from ..flags import add_flags, given
from ..outputs import claim, write_file
from ..validate import SEED, number
from ..validate import positive as _positive
from .env import BACKENDS


def _threads(a) -> None:
    import torch
    if getattr(a, "threads", None):
        torch.set_num_threads(a.threads)


def _seed(a) -> dict:
    return {} if a.seed is None else {"seed": a.seed}  # not given: the trainer's default


def cmd_train_renderer(a) -> None:
    from ..distributed import launched_rank
    from .renderer import RendererConfig, train_renderer
    _threads(a)
    cfg = RendererConfig(**given(a, RendererConfig))  # flags not given keep the config's defaults
    m = train_renderer(a.out, None if a.resume else cfg, steps=a.steps, minutes=a.minutes, **_seed(a),
                       resume=a.resume, force=a.force, progress=not a.quiet)
    if launched_rank() == 0:  # under torchrun: one line per run
        print(f"saved {a.out} at step {m['step']}: held-out strokes PSNR {m['val_psnr']:.2f} dB "
              f"(blank layer {m['blank_psnr']:.2f} dB), BCE {m['val_bce']:.4f}, MSE {m['val_mse']:.5f}")


def cmd_train_agent(a) -> None:
    from ..distributed import launched_rank
    from .agent import AgentConfig, train_agent
    _threads(a)
    if not a.resume and not a.renderer and not a.init:
        raise EverloopError("--renderer R is required (a folder made by `everloop paint train-renderer`)")
    cfg = AgentConfig(**given(a, AgentConfig))
    m = train_agent(a.renderer, a.targets, a.out, None if a.resume else cfg, steps=a.steps, minutes=a.minutes,
                    **_seed(a), resume=a.resume, force=a.force, progress=not a.quiet, init=a.init)
    if launched_rank() == 0:
        print(f"saved {a.out} at step {m['step']}: {m['targets']} held-out targets, MSE real {m['mse_real']:.4f}, "
              f"dream {m['mse_dream']:.4f}, blank {m['mse_blank']:.4f} (try `everloop paint eval {a.out}`)")


def _target(spec: str, agent_config: dict, size: int, colour: bool) -> np.ndarray:
    from . import targets
    if spec.startswith("test:"):
        try:
            k = int(spec[5:])
        except ValueError:
            raise EverloopError(f"--target {spec}: use test:K with an integer K") from None
        _, test = targets.train_test(agent_config["targets"], size, colour)
        if not 0 <= k < len(test):
            raise EverloopError(f"--target {spec}: the held-out split has {len(test)} targets")
        return test[k]
    return targets.to_canvas([targets.read_image(spec, colour)], size)[0]


def _rgb(img: np.ndarray) -> np.ndarray:
    """A grey [H, W] or colour [3, H, W] image in [0, 1] as uint8 [H, W, 3]."""
    img = np.repeat(img[..., None], 3, -1) if img.ndim == 2 else img.transpose(1, 2, 0)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def cmd_draw(a) -> None:
    from ..sinks import open_sink, output_kind
    from .agent import load_agent
    from .scoring import paint
    _threads(a)
    claim(a.out, output_kind(a.out), force=a.force, inputs={"AGENT": a.agent})  # before any work
    if a.actions:
        claim(a.actions, "json", force=a.force, flag="--actions", inputs={"AGENT": a.agent})
    agent, renderer, config, env = load_agent(a.agent)
    target = _target(a.target, config, env.size, agent.cfg.colour)
    actions, dream, real = paint(agent, renderer, target[None], env, _refine(a))
    frames = [np.zeros_like(target), *real[:, 0]]  # blank paper, then one frame per stroke
    with open_sink(a.out, fps=a.fps, frames=len(frames) + 1, force=a.force, inputs={"AGENT": a.agent}) as sink:
        for canvas in frames + [frames[-1]]:  # the finished painting shows for two frames
            img = np.concatenate([_rgb(target), np.full((env.size, 2, 3), 128, np.uint8), _rgb(canvas)], 1)
            sink.write(np.repeat(np.repeat(img, a.scale, 0), a.scale, 1)[None])
    mse = float(((real[-1, 0] - target) ** 2).mean())
    print(f"wrote {a.out}: target | real paint program, {len(actions[0])} strokes, MSE {mse:.4f} "
          f"(dream {float(((dream[-1, 0] - target) ** 2).mean()):.4f}, blank {float((target ** 2).mean()):.4f})")
    if a.actions:
        write_file(Path(a.actions), lambda p: p.write_text(json.dumps(actions[0].round(5).tolist())))


def cmd_sheet(a) -> None:
    from PIL import Image

    from . import targets
    from .agent import load_agent
    from .scoring import paint_detailed, real_canvases
    _threads(a)
    if Path(a.out).suffix.lower() != ".png":
        raise EverloopError(f"--out {a.out}: a sheet is a PNG image; give a name ending in .png")
    claim(a.out, "image", force=a.force, inputs={"AGENT": a.agent})
    agent, renderer, config, env = load_agent(a.agent)
    _, test = targets.train_test(config["targets"], env.size, agent.cfg.colour)
    test = test[np.unique(np.linspace(0, len(test) - 1, a.count).round().astype(int))]  # spread over the split
    _, dream, real, (own_actions, _), _ = paint_detailed(agent, renderer, test, env, _refine(a))
    # the agent's strokes before refining, drawn by the real program
    own = [real_canvases(own_actions.numpy(), env, dream.shape)[-1]] if a.refine else []
    rows = [test, *own, real[-1]] + ([dream[-1]] if a.dream else [])
    pad = lambda x: np.pad(_rgb(x), ((1, 1), (1, 1), (0, 0)), constant_values=128)
    grid = np.concatenate([np.concatenate([pad(img) for img in row], 1) for row in rows], 0)
    grid = np.repeat(np.repeat(grid, a.scale, 0), a.scale, 1)
    if not agent.cfg.colour:
        grid = np.ascontiguousarray(grid[..., 0])  # grey sheets stay single-channel PNGs
    write_file(Path(a.out), lambda p: Image.fromarray(grid).save(p, format="PNG"))
    print(f"wrote {a.out}: rows = held-out targets, " + ("the agent's strokes, refined (both drawn by the real "
          "program)" if a.refine else "real paint program") + (", dream" if a.dream else ""))


def _refine(a):
    from .refine import Refine
    return Refine(a.refine, a.refine_lr, a.refine_real) if a.refine else None


def _groups(spec: str, n: int, per: int):
    """colour-bench's parts, one per video (its frames are stored video after video)."""
    from . import targets
    if spec != targets.BENCH or n != per * len(targets.BENCH_VIDEOS):
        return None
    return [(Path(v).stem, per) for v in targets.BENCH_VIDEOS]


def cmd_eval(a) -> None:
    from . import targets
    from .agent import load_agent
    from .scoring import score
    _threads(a)
    if a.json:
        claim(a.json, "json", force=a.force, flag="--json", inputs={"AGENT": a.agent})
    agent, renderer, config, env = load_agent(a.agent, a.backend)
    spec = a.targets or config["targets"]
    pair = targets.train_test(spec, env.size, agent.cfg.colour)
    test = pair[a.split == "test"]  # (train, test)
    groups = _groups(spec, len(test), targets.PER_VIDEO[a.split == "test"]) if a.per_source else None
    if a.per_source and not groups:
        raise EverloopError("--per-source: only for all of colour-bench's split (no --limit or --sample)")
    if a.sample:
        test = test[np.unique(np.linspace(0, len(test) - 1, a.sample).round().astype(int))]  # spread over the split
    if a.limit:
        test = test[:a.limit]
    others = {b: load_agent(a.agent, b)[3] for b in a.also or () if b != env.backend.name}
    m = score(agent, renderer, test, env, refine_with=_refine(a), groups=groups, others=others)
    m.update(agent=str(a.agent), strokes=agent.cfg.strokes, step=config.get("step") or config["metrics"].get("step"),
             backend=env.backend.name, split=a.split)
    where = "held-out" if a.split == "test" else "TRAINING"
    print(f"{m['targets']} {where} targets, {m['strokes']} strokes: MSE real {m['mse_real']:.4f} "
          f"({m['real_over_blank']:.3f} of blank), dream {m['mse_dream']:.4f} ({m['dream_over_blank']:.3f} of blank), "
          f"gap {m['gap']:+.4f}, blank {m['mse_blank']:.4f}")
    if "refine_steps" in m:
        print(f"  refined ({m['refine_steps']} Adam steps, lr {m['refine_lr']:g}"
              f"{', the real program in the loop' if m['refine_real'] else ''}, "
              f"{m['refine_seconds_per_target']:.2f} s/target); the agent alone: real {m['agent_mse_real']:.4f}, "
              f"dream {m['agent_mse_dream']:.4f}")
    for b in others:
        print(f"  with {b}: real {m[f'mse_real_{b}']:.4f}" + (f" (the agent alone: {m[f'agent_mse_real_{b}']:.4f})"
                                                            if "refine_steps" in m else ""))
    for name, g in (m.get("by_source") or {}).items():
        print(f"  {name:14s} real {g['mse_real']:.4f} ({g['real_over_blank']:.3f} of blank), dream "
              f"{g['mse_dream']:.4f}, blank {g['mse_blank']:.4f}")
    if a.json:
        write_file(Path(a.json), lambda p: p.write_text(json.dumps(m, indent=2)))


def _refine_flags(s) -> None:
    s.add_argument("--refine", type=number("--refine", int, lo=0, hi=100000), metavar="N", default=0,
                   help="refine the agent's strokes with N Adam steps each through the renderer before the real "
                   "program draws them (inference compute; default 0: the agent's strokes as they are)")
    s.add_argument("--refine-lr", type=_positive("--refine-lr", float, hi=100.0), default=0.05,
                   help="Adam learning rate of --refine on the action logits")
    s.add_argument("--refine-real", action="store_true", help="--refine with the real program in the loop: the "
                   "real canvas's MSE, its gradient through the renderer (straight-through)")


def _budget(s) -> None:
    s.add_argument("--steps", type=_positive("--steps"), help="stop after this many steps in total")
    s.add_argument("--minutes", type=_positive("--minutes", float, hi=1e7), help="stop after this many minutes")
    s.add_argument("--seed", type=SEED, help="seeds the weights and the data drawn (default: the trainer's)")
    s.add_argument("--resume", action="store_true", help="continue the run in --out")
    s.add_argument("--force", action="store_true", help="start over, replacing the painter run in --out")
    s.add_argument("--threads", type=_positive("--threads", hi=1024))
    s.add_argument("--quiet", action="store_true")


def _output_flags(s, func, replaces: str) -> None:
    """The flags every painter command that writes a file ends with, and the command."""
    s.add_argument("--force", action="store_true", help=f"replace {replaces}")
    s.add_argument("--threads", type=_positive("--threads", hi=1024))
    s.set_defaults(func=func)


def add_paint_parser(sub) -> None:
    p = sub.add_parser("paint", help="the world-model painter: learn to paint targets with a real paint program")
    ps = p.add_subparsers(dest="paint_cmd", required=True)

    s = ps.add_parser("train-renderer", help="train the neural renderer on strokes of the real paint program")
    s.add_argument("--out", required=True, help="renderer folder to write")
    from .renderer import RendererConfig
    add_flags(s, RendererConfig, only={"size": {"type": _positive("--size", hi=1024)}, "backend": {},
                                       "batch": {"type": _positive("--batch", hi=65536)}, "colour": {},
                                       "r_max": {"type": number("--r-max", float, lo=0, hi=0.5)}})
    _budget(s)
    s.set_defaults(func=cmd_train_renderer)

    s = ps.add_parser("train-agent", help="train the painting agent through the frozen renderer")
    s.add_argument("--renderer", help="renderer folder (from train-renderer)")
    s.add_argument("--targets", default="mnist", help="mnist, colour-bench (--colour), an MNIST IDX image file, "
                   "a folder of images or an `everloop prepare` dataset folder (--colour)")
    from .agent import AgentConfig
    add_flags(s, AgentConfig, only={"strokes": {"type": _positive("--strokes", hi=1000)}, "critic": {},
                                    "batch": {"type": _positive("--batch", hi=65536)}, "colour": {},
                                    "shift": {"type": number("--shift", int, lo=0, hi=64)},
                                    "lr": {"type": _positive("--lr", float, hi=1.0)}})
    s.add_argument("--out", required=True, help="agent folder to write")
    s.add_argument("--init", metavar="AGENT", help="start from this agent's weights (same width, hidden, colour; "
                   "any --strokes) and, without --renderer, its refreshed renderer")
    _budget(s)
    s.set_defaults(func=cmd_train_agent)

    s = ps.add_parser("draw", help="paint one target, re-rendered by the real program, as a stroke-by-stroke animation")
    s.add_argument("agent")
    s.add_argument("--target", required=True, help="an image file, or test:K for the K-th held-out target")
    s.add_argument("--out", required=True, help=".gif, .png (APNG), .mp4 or a folder/")
    s.add_argument("--fps", type=_positive("--fps", float, hi=1000), default=2)
    s.add_argument("--scale", type=_positive("--scale", hi=64), default=4)
    s.add_argument("--actions", metavar="FILE", help="also write the strokes' actions as JSON")
    _refine_flags(s)
    _output_flags(s, cmd_draw, replaces="an existing animation (and --actions file)")

    s = ps.add_parser("sheet", help="a PNG grid: held-out targets above the real program's paintings")
    s.add_argument("agent")
    s.add_argument("--out", required=True, help=".png to write")
    s.add_argument("--count", type=_positive("--count", hi=1024), default=16)
    s.add_argument("--scale", type=_positive("--scale", hi=64), default=2)
    s.add_argument("--dream", action="store_true", help="add a row of the renderer's (dream) paintings")
    _refine_flags(s)
    _output_flags(s, cmd_sheet, replaces="an existing sheet image")

    s = ps.add_parser("eval", help="MSE on held-out targets: real program, dream, blank canvas")
    s.add_argument("agent")
    s.add_argument("--targets", help="another target source (default: the agent's own, held-out split)")
    s.add_argument("--limit", type=_positive("--limit"), help="only the first N held-out targets")
    s.add_argument("--sample", type=_positive("--sample"), metavar="N", help="only N targets spread over the split")
    s.add_argument("--split", choices=("test", "train"), default="test",
                   help="score the held-out targets (default) or the training ones (to choose --refine's N and lr)")
    s.add_argument("--per-source", action="store_true", help="colour-bench: also each video's MSE")
    s.add_argument("--also", action="append", choices=sorted(BACKENDS), metavar="BACKEND",
                   help="also score the same strokes with this real program (mse_real_BACKEND); repeatable")
    _refine_flags(s)
    s.add_argument("--json", metavar="FILE", help="also write the numbers as JSON")
    s.add_argument("--backend", choices=sorted(BACKENDS), help="score with this real program (default: the one "
                   "the agent's renderer learned)")
    _output_flags(s, cmd_eval, replaces="an existing --json file")
