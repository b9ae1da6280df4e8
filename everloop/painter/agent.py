"""The agent: paints a target in N strokes, one per step, trained by back-propagating the
reconstruction loss through the frozen world model (renderer.py).

Per step it sees (canvas, target, x, y, step fraction) as a 5-channel image: 4x4 stride-2
convs down to 8x8, a residual block, FC -> an LSTM cell (which also gets the previous
action) -> FC -> sigmoid, so an action is always inside the [0, 1] box the real program
accepts. Actions stay continuous (no discrete lift/jump: it killed the gradients in SPIRAL
follow-ups); a stroke the agent does not want costs it nothing to make faint (opacity 0).

Loss: MSE of the final canvas to the target, plus `step_loss` x the mean MSE after each
earlier stroke (every stroke then gets a direct gradient, not only via the last canvas);
optionally a conditional WGAN-GP critic on (canvas, target) pairs as in SPIRAL / Nakano,
with L_G = recon_weight * MSE - D(fake). The agent exploits the renderer's mistakes, so
the number that counts is the real program's (eval re-renders every action with it)."""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import checkpoint, distributed, grad_average
from ..errors import EverloopError
from ..loop import cosine_lr
from . import colour as col
from . import runs, targets
from .env import ACTION_DIM
from .renderer import (
    StrokeNet,
    composite,
    coords,
    load_renderer,
    radius_max,
    real_env,
    renderer_step,
)
from .scoring import score

KIND = "paint-agent"


@dataclass
class AgentConfig:
    strokes: int = 8
    """Strokes per painting (one per agent step)."""
    width: int = 32
    """Channels of the first conv; each stride-2 conv doubles them, capped at 2x."""
    hidden: int = 256
    """FC and LSTM width."""
    batch: int = 16
    """Targets per training step. 3-minute CPU pilots: batch 16 reached batch 32's held-out
    MSE in half the wall-clock time (about the same per step, twice the steps)."""
    lr: float = 3e-4
    """Adam learning rate of the agent at the start."""
    lr_final: float = 0.1
    """The agent's rate decays on a cosine to lr x lr_final over the run's --steps /
    --minutes (1 = constant): the canvas MSE of batch-16 steps jumps by +-20% at a constant
    rate, and the late low rate lets it settle."""
    step_loss: float = 0.2
    """Weight of the mean MSE after strokes 1 .. N-1 (the final canvas has weight 1)."""
    critic: bool = False
    """Add the conditional WGAN-GP critic (SPIRAL / Nakano); costs about 1.5x per step."""
    recon_weight: float = 10.0
    """With the critic: L_G = recon_weight * MSE - mean D(fake)."""
    gp: float = 10.0
    """With the critic: gradient-penalty weight."""
    shift: int = 3
    """Training targets move by up to this many pixels (zero fill; a fresh shift per target
    per step). The 4,500 training digits are ~17 epochs of a 60-minute run: without it the
    agent fits them (training-batch MSE 0.0089) better than the held-out ones (0.0109)."""
    refresh_every: int = 4
    """Every this many steps, one BCE step of the renderer on `refresh_batch` of the agent's
    own latest strokes drawn by the real program (0 = never). The agent exploits whatever the
    renderer gets wrong where it paints; this keeps teaching the renderer exactly there.
    The agent's loss never updates the renderer."""
    refresh_batch: int = 64
    """Strokes per refresh step (a random subset of the step's batch x strokes)."""
    refresh_lr: float = 3e-4
    """Adam learning rate of the refresh steps."""
    colour: bool = False
    """Paint colour targets with colour strokes (colour.py: shape, opacity and r g b; the
    renderer, made with `train-renderer --colour`, draws the alpha, colour is composited
    analytically)."""


class ResBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.a, self.b = nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return F.relu(x + self.b(F.relu(self.a(x))))


def _encoder(cin: int, width: int, size: int) -> tuple[nn.Sequential, int]:
    layers, c = [], cin
    for i in range(int(math.log2(size // 8))):  # size -> 8x8
        out = width * min(2 ** i, 2)
        layers += [nn.Conv2d(c, out, 4, stride=2, padding=1), nn.ReLU()]
        c = out
    return nn.Sequential(*layers, ResBlock(c), nn.Flatten()), c * 64


def channels(x: torch.Tensor) -> torch.Tensor:
    """[B, H, W] grey or [B, 3, H, W] colour images as [B, C, H, W]."""
    return x[:, None] if x.dim() == 3 else x


class Painter(nn.Module):
    def __init__(self, cfg: AgentConfig, size: int):
        super().__init__()
        self.cfg, self.size = cfg, size
        self.channels, self.action_dim = (3, col.COLOUR_DIM) if cfg.colour else (1, ACTION_DIM)
        self.encoder, feat = _encoder(2 * self.channels + 3, cfg.width, size)
        self.fc = nn.Linear(feat, cfg.hidden)
        self.lstm = nn.LSTMCell(cfg.hidden + self.action_dim, cfg.hidden)
        self.head = nn.Linear(cfg.hidden, self.action_dim)

    def act(self, canvas, target, t: int, prev, state):
        b = canvas.shape[0]
        frac = torch.full((b, 1, self.size, self.size), t / self.cfg.strokes, dtype=canvas.dtype)
        x = torch.cat([channels(canvas), channels(target), coords(self.size, canvas).expand(b, -1, -1, -1), frac], 1)
        h, c = self.lstm(torch.cat([F.relu(self.fc(self.encoder(x))), prev], 1), state)
        return torch.sigmoid(self.head(h)), (h, c)

    def stroke(self, canvas, action, renderer: StrokeNet):
        """The canvas after one stroke in the dream (colour: alpha from the renderer, colour
        composited analytically)."""
        if self.cfg.colour:
            return col.composite(canvas, renderer(col.shape_actions(action)), action[:, ACTION_DIM - 1:])
        return composite(canvas, renderer(action))

    def paint(self, target: torch.Tensor, renderer: StrokeNet):
        """Paint [B, H, W] (grey) or [B, 3, H, W] (colour) targets in the dream: (actions
        [B, N, A], canvases [N, *target.shape])."""
        b = target.shape[0]
        canvas = target.new_zeros(target.shape)
        prev = target.new_zeros(b, self.action_dim)
        state = (target.new_zeros(b, self.cfg.hidden), target.new_zeros(b, self.cfg.hidden))
        actions, canvases = [], []
        for t in range(self.cfg.strokes):
            prev, state = self.act(canvas, target, t, prev, state)
            canvas = self.stroke(canvas, prev, renderer)
            actions.append(prev)
            canvases.append(canvas)
        return torch.stack(actions, 1), torch.stack(canvases)


class Critic(nn.Module):
    """Conditional WGAN critic: D(canvas, target) -> score; real pairs are (target, target)."""

    def __init__(self, size: int, width: int = 16, channels: int = 1):
        super().__init__()
        self.net, feat = _encoder(2 * channels, width, size)
        self.fc = nn.Linear(feat, 1)

    def forward(self, canvas, target):
        return self.fc(self.net(torch.cat([channels(canvas), channels(target)], 1)))[:, 0]


def recon_loss(canvases: torch.Tensor, target: torch.Tensor, step_loss: float) -> tuple[torch.Tensor, torch.Tensor]:
    per_step = (canvases - target[None]).pow(2).mean(dim=tuple(range(1, canvases.dim())))  # [N]
    final = per_step[-1]
    return final + step_loss * (per_step[:-1].mean() if len(per_step) > 1 else 0.0), final


def shifted(images: torch.Tensor, most: int, rng: np.random.Generator) -> torch.Tensor:
    """[B, H, W] (or [B, C, H, W]) images, each moved by its own (dy, dx) in -most..most,
    zeros moving in."""
    if most <= 0:
        return images
    h, w = images.shape[-2:]
    padded = F.pad(images, (most, most, most, most))
    d = rng.integers(0, 2 * most + 1, size=(len(images), 2))
    return torch.stack([p[..., y:y + h, x:x + w] for p, (y, x) in zip(padded, d.tolist())])


def _gradient_penalty(critic, fake, target):
    eps = torch.rand(fake.shape[0], *[1] * (fake.dim() - 1))
    mix = (eps * target + (1 - eps) * fake).requires_grad_(True)
    grad, = torch.autograd.grad(critic(mix, target).sum(), mix, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()


def agent_step(agent: Painter, renderer, opt, target: torch.Tensor, cfg: AgentConfig, critic=None,
               copt=None) -> tuple[dict, torch.Tensor]:
    """One step of the agent on `target` through the renderer (and of the critic, if any);
    returns (logs, the strokes' actions)."""
    # Frozen world model for the agent's loss: gradients flow through it, never into it.
    renderer.requires_grad_(False)
    actions, canvases = agent.paint(target, renderer)
    renderer.requires_grad_(True)
    loss, final = recon_loss(canvases, target, cfg.step_loss)
    logs = {"mse": final.item()}
    if critic:
        fake = canvases[-1].detach()
        d_loss = critic(fake, target).mean() - critic(target, target).mean()
        d_all = d_loss + cfg.gp * _gradient_penalty(critic, fake, target)
        copt.zero_grad(set_to_none=True)
        d_all.backward()
        copt.step()
        loss = cfg.recon_weight * loss - critic(canvases[-1], target).mean()
        logs["wdist"] = -d_loss.item()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return logs, actions


def train_agent(renderer_dir, target_spec: str, out, cfg: AgentConfig | None = None, *, steps=None, minutes=None,
                seed=0, resume=False, force=False, progress=True, init=None) -> dict:
    """Train (or --resume) an agent into `out`; returns the held-out metrics it saved. Under
    torchrun the processes train it together (distributed.py; `batch` and `refresh_batch`
    are global), every process reading the targets, rank 0 alone the run and the renderer.
    `init`: an agent folder of the same width, hidden size and colour whose weights (and, if
    no renderer is given, refreshed renderer) the new run starts from; any stroke count."""
    out = Path(out)
    with distributed.session(torch.device("cpu"), str(out)):
        return _train_agent(renderer_dir, target_spec, out, cfg, steps, minutes, seed, resume, force, progress, init)


def _read(renderer_dir, target_spec, out: Path, cfg, resume: bool, force: bool, init=None):
    """What an agent run starts from (rank 0 reads it): (cfg, renderer_dir, target_spec,
    renderer source, train state, the agent's weights, the renderer (net, cfg, config))."""
    runs.check_out(out, resume, force)
    state, weights, source = None, None, str(renderer_dir)
    if init and not resume:
        init = Path(init)
        other = runs.config_from(AgentConfig, runs.read_folder(init, KIND)["config"], str(init / "config.json"))
        mine = cfg or AgentConfig()
        if (other.width, other.hidden, other.colour) != (mine.width, mine.hidden, mine.colour):
            raise EverloopError(f"--init {init}: its width, hidden size and colour must match this agent's")
        weights = checkpoint.read_weights(init / "model.safetensors")
        renderer_dir = renderer_dir or init / "renderer"
        source = str(renderer_dir)
    if resume:
        config = runs.read_folder(out, KIND)
        cfg = runs.config_from(AgentConfig, config["config"], str(out / "config.json"))
        renderer_dir, target_spec = out / "renderer", config["targets"]
        source = config.get("renderer_source", str(renderer_dir))
        state = checkpoint.load_train_state(out)
    renderer = load_renderer(renderer_dir)
    if state is not None:
        weights = checkpoint.resume_weights(out, state)
    return cfg, target_spec, source, state, weights, renderer


def _train_agent(renderer_dir, target_spec, out: Path, cfg, steps, minutes, seed, resume, force, progress,
                 init) -> dict:
    cfg, target_spec, source, state, weights, (renderer, rcfg, rconfig) = distributed.from_main(
        lambda: _read(renderer_dir, target_spec, out, cfg, resume, force, init))
    cfg = cfg or AgentConfig()
    renderer.train()
    col.check_pair(cfg.colour, rcfg.colour, renderer_dir)
    env = make_env(cfg, rcfg)
    grey_env = real_env(rcfg) if cfg.colour else env  # draws the renderer's layers for the refresh
    ropt = torch.optim.Adam(renderer.parameters(), lr=cfg.refresh_lr)
    train_set, test_set = targets.train_test(target_spec, rcfg.size, cfg.colour)
    torch.manual_seed(seed)
    agent = Painter(cfg, rcfg.size)
    opt = torch.optim.Adam(agent.parameters(), lr=cfg.lr, betas=(0.5, 0.9) if cfg.critic else (0.9, 0.999))
    critic = Critic(rcfg.size, channels=agent.channels) if cfg.critic else None
    copt = torch.optim.Adam(critic.parameters(), lr=1e-4, betas=(0.5, 0.9)) if critic else None
    rng = distributed.rank_generator(seed)  # rank 0's is world size 1's
    step, elapsed = 0, 0.0
    if state is not None:
        agent.load_state_dict(weights)
        opt.load_state_dict(state["optim"])
        if critic:
            critic.load_state_dict(state["critic"])
            copt.load_state_dict(state["critic_optim"])
        ropt.load_state_dict(state["renderer_optim"])
        step, elapsed = state["step"], state["elapsed"]
        distributed.resume_rngs(rng, state, seed, torch.device("cpu"))
    else:
        distributed.seed_noise(seed)
        if weights is not None:  # --init
            checkpoint.load_weights(agent, weights, str(init))
    nets = [agent, renderer] + ([critic] if critic else [])
    for net in nets:
        distributed.broadcast_module(net)
    grad_average.average_gradients([p for net in nets for p in net.parameters()],
                                  {"agent": opt, "renderer": ropt, **({"critic": copt} if critic else {})})
    share = distributed.share_batch(cfg, ("batch", "refresh_batch"))  # this process's part of a step
    main = distributed.is_main()
    counter = [step]
    train_t = torch.from_numpy(train_set)
    quick_test = test_set[:: max(1, len(test_set) // 100)][:100]  # spread: MNIST's split is in class order
    metrics = {}

    def refresh(actions):  # the agent's own latest strokes, drawn by the real program
        a = actions.detach().reshape(-1, agent.action_dim)
        a = a[torch.from_numpy(rng.choice(len(a), min(share.refresh_batch, len(a)), replace=False))]
        if cfg.colour:
            a = col.shape_actions(a)
        return renderer_step(renderer, ropt, a, torch.from_numpy(grey_env.strokes(a.numpy())))

    def step_fn(progress: float):
        cosine_lr(opt, cfg.lr, cfg.lr_final, progress)
        target = shifted(train_t[torch.from_numpy(rng.integers(0, len(train_t), share.batch))], cfg.shift, rng)
        logs, actions = agent_step(agent, renderer, opt, target, cfg, critic, copt)
        counter[0] += 1
        if cfg.refresh_every and counter[0] % cfg.refresh_every == 0:
            logs["refresh_bce"] = refresh(actions)
        return distributed.mean_logs(logs)

    def save(at: int, seconds: float):
        ts = {"optim": opt.state_dict(), "step": at, "elapsed": elapsed + seconds,
              "renderer_optim": ropt.state_dict(),
              "numpy_rng": runs.rng_state(rng), "torch_rng": torch.get_rng_state(),
              **distributed.other_rng_states(rng, torch.device("cpu"))}
        if not main:  # rank 0 alone scores and writes
            return
        metrics.clear()
        metrics.update(score(agent, renderer, quick_test, env), step=at)
        if critic:
            ts.update(critic=critic.state_dict(), critic_optim=copt.state_dict())
        # The agent folder carries the world model it was trained through (refreshed, if so);
        # renderer first, agent config last, as every run folder is written.
        rmeta = {k: v for k, v in rconfig.items() if k not in ("family", "config")}
        runs.save_folder(out / "renderer", "paint-renderer", rcfg, renderer.state_dict(),
                         {**rmeta, "refreshed_by_agent": bool(cfg.refresh_every)})
        runs.save_folder(out, KIND, cfg, agent.state_dict(),
                         {"seed": seed, "size": rcfg.size, "targets": target_spec,
                          "renderer_source": source, **({"init": str(init)} if init else {}),
                          "metrics": dict(metrics)}, ts)

    runs.loop(step_fn, save, step=step, steps=steps, minutes=minutes, desc="train agent", progress=progress,
              where=out)
    return distributed.from_main(lambda: metrics)


def load_agent(run, backend: str | None = None):
    """(agent, renderer, config dict, env) of an agent folder, in eval mode; `backend` scores
    it with another real program than the one its renderer learned (env.BACKENDS)."""
    run = Path(run)
    config = runs.read_folder(run, KIND)
    cfg = runs.config_from(AgentConfig, config["config"], str(run / "config.json"))
    renderer, rcfg, _ = load_renderer(run / "renderer")
    agent = Painter(cfg, rcfg.size)
    checkpoint.load_weights(agent, checkpoint.read_weights(run / "model.safetensors"), str(run))
    return agent.eval(), renderer, config, make_env(cfg, replace(rcfg, backend=backend or rcfg.backend))


def make_env(cfg: AgentConfig, rcfg):
    """The real program the agent's strokes are scored with: grey (env.PaintEnv) or colour."""
    return col.ColourPaintEnv(rcfg.size, rcfg.backend, radius_max(rcfg)) if cfg.colour else real_env(rcfg)
