"""The world model: a network from one action to its stroke layer, trained on strokes the
real program draws on the fly (never a fixed data set, so it cannot overfit one).

Loss: binary cross-entropy of the predicted layer against the real one. A CPU pilot found
that under MSE a thin stroke's few bright pixels cost so little that the net settles on the
blank layer, and an agent trained through that net learns nothing; BCE punishes a missed
bright pixel hard. Held-out quality is PSNR on a fixed, seeded set of strokes, reported
next to the blank layer's PSNR (the score of predicting nothing).

Network (after Huang et al.'s neural renderer, scaled for a CPU): MLP action -> 8x8 map,
then (nearest x2, 3x3 conv) up to half the canvas size and a pixel shuffle to full size; every conv also sees two coordinate
channels, which makes "where" cheap to learn."""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import checkpoint, distributed, grad_average
from ..errors import EverloopError
from ..loop import cosine_lr
from ..metrics import psnr_of_mse
from . import runs
from .env import ACTION_DIM, PaintEnv, random_actions

KIND = "paint-renderer"


@dataclass
class RendererConfig:
    size: int = 64
    """Canvas side in pixels (a power of two, at least 8)."""
    width: int = 16
    """Channels of the finest conv (at half the canvas size); each coarser scale has twice as
    many, capped at 8x."""
    hidden: int = 512
    """Width of the MLP from the action to the 8x8 map."""
    batch: int = 64
    """Strokes per training step, drawn fresh by the real program every step."""
    lr: float = 1e-3
    """Adam learning rate at the start."""
    lr_final: float = 0.1
    """The rate decays on a cosine to lr x lr_final over the run's --steps / --minutes (1 =
    constant). The strokes never repeat, but the late low rate averages the batch noise."""
    backend: str = "skia"
    """Real paint program that draws the training strokes (see env.BACKENDS)."""
    val_strokes: int = 512
    """Held-out strokes (seeded apart from training) for the reported PSNR / BCE."""
    colour: bool = False
    """A renderer for colour strokes (colour.py): trained on grey-1 strokes only, as its layer
    is the stroke's alpha (coverage x opacity), and with wider strokes by default (r_max)."""
    r_max: float = 0.0
    """Largest stroke radius as a fraction of the canvas side; 0 = the kind's default,
    env.R_MAX (0.08) for grey strokes, colour.R_MAX (0.25) for colour ones."""


def radius_max(cfg: RendererConfig) -> float:
    """The radius range the renderer (and its real program) draws with."""
    from . import colour, env
    return cfg.r_max or (colour.R_MAX if cfg.colour else env.R_MAX)


def real_env(cfg: RendererConfig) -> PaintEnv:
    """The real program drawing this renderer's stroke layers."""
    return PaintEnv(cfg.size, cfg.backend, radius_max(cfg))


def coords(size: int, like: torch.Tensor) -> torch.Tensor:
    """[1, 2, size, size] x and y in [-1, 1]."""
    r = torch.linspace(-1, 1, size, dtype=like.dtype, device=like.device)
    return torch.stack(torch.meshgrid(r, r, indexing="xy"))[None]


class StrokeNet(nn.Module):
    def __init__(self, cfg: RendererConfig):
        super().__init__()
        if cfg.size < 8 or cfg.size & (cfg.size - 1):
            raise EverloopError(f"size {cfg.size}: use a power of two >= 8")
        # Convs run at 8x8 ... size/2; the last one makes 4 channels that a pixel shuffle
        # turns into the full-size layer (full-size convs would cost 2/3 of the compute).
        ups = int(math.log2(cfg.size // 8)) - 1
        chans = [cfg.width * min(2 ** (ups - i), 8) for i in range(max(ups, 0) + 1)]  # 8x8 ... size/2
        self.mlp = nn.Sequential(nn.Linear(ACTION_DIM, 256), nn.ReLU(), nn.Linear(256, cfg.hidden), nn.ReLU(),
                                 nn.Linear(cfg.hidden, chans[0] * 64), nn.ReLU())
        self.first = nn.Conv2d(chans[0] + 2, chans[0], 3, padding=1)
        self.ups = nn.ModuleList(nn.Conv2d(a + 2, b, 3, padding=1) for a, b in itertools.pairwise(chans))
        self.out = nn.Conv2d(chans[-1] + 2, 4, 3, padding=1)
        self.c0 = chans[0]

    @staticmethod
    def _xy(h):
        return torch.cat([h, coords(h.shape[-1], h).expand(h.shape[0], -1, -1, -1)], 1)

    def logits(self, action: torch.Tensor) -> torch.Tensor:
        """[B, ACTION_DIM] -> [B, size, size] logits of the stroke layer."""
        h = self.mlp(action).view(-1, self.c0, 8, 8)
        h = F.relu(self.first(self._xy(h)))
        for conv in self.ups:
            h = F.relu(conv(self._xy(F.interpolate(h, scale_factor=2, mode="nearest"))))
        return F.pixel_shuffle(self.out(self._xy(h)), 2)[:, 0]

    def forward(self, action: torch.Tensor) -> torch.Tensor:
        """The stroke layer in [0, 1]; actions are clamped like the real program clamps them."""
        return torch.sigmoid(self.logits(action.clamp(0, 1)))


def composite(canvas: torch.Tensor, layer: torch.Tensor) -> torch.Tensor:
    """The fixed differentiable rule, the same max the real program uses (env.PaintEnv)."""
    return torch.maximum(canvas, layer)


def real_batch(env: PaintEnv, rng: np.random.Generator, n: int):
    a = random_actions(rng, n)
    return torch.from_numpy(a), torch.from_numpy(env.strokes(a))


def alpha_batch(env: PaintEnv, rng: np.random.Generator, n: int):
    """real_batch for a colour renderer: grey 1, so the layer is the stroke's alpha."""
    a = random_actions(rng, n)
    a[:, -1] = 1.0
    return torch.from_numpy(a), torch.from_numpy(env.strokes(a))


def renderer_step(net: StrokeNet, opt, actions: torch.Tensor, layers: torch.Tensor) -> float:
    """One BCE step of the renderer on strokes the real program drew; returns the loss."""
    loss = F.binary_cross_entropy_with_logits(net.logits(actions), layers)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.item()


@torch.no_grad()
def evaluate(net: StrokeNet, actions: torch.Tensor, layers: torch.Tensor) -> dict:
    net.eval()
    logits = torch.cat([net.logits(a) for a in actions.split(256)])
    net.train()
    mse = F.mse_loss(torch.sigmoid(logits), layers).item()
    blank = layers.pow(2).mean().item()
    return {"val_bce": F.binary_cross_entropy_with_logits(logits, layers).item(), "val_mse": mse,
            "val_psnr": psnr_of_mse(mse), "blank_mse": blank, "blank_psnr": psnr_of_mse(blank)}


def load_renderer(run) -> tuple[StrokeNet, RendererConfig, dict]:
    run = Path(run)
    config = runs.read_folder(run, KIND)
    cfg = runs.config_from(RendererConfig, config["config"], str(run / "config.json"))
    net = StrokeNet(cfg)
    checkpoint.load_weights(net, checkpoint.read_weights(run / "model.safetensors"), str(run))
    return net.eval(), cfg, config


def train_renderer(out, cfg: RendererConfig | None = None, *, steps=None, minutes=None, seed=0,
                   resume=False, force=False, progress=True) -> dict:
    """Train (or --resume) a renderer into `out`; returns the held-out metrics it saved.
    Under torchrun the processes train it together (distributed.py; `batch` is the global
    batch), and each returns rank 0's metrics."""
    out = Path(out)
    with distributed.session(torch.device("cpu"), str(out)):
        return _train_renderer(out, cfg, steps, minutes, seed, resume, force, progress)


def _train_renderer(out: Path, cfg, steps, minutes, seed, resume, force, progress) -> dict:
    def read():  # rank 0 alone reads the run folder
        runs.check_out(out, resume, force)
        if not resume:
            return cfg, None, None
        config = runs.read_folder(out, KIND)
        saved = runs.config_from(RendererConfig, config["config"], str(out / "config.json"))
        state = checkpoint.load_train_state(out)
        return saved, state, checkpoint.resume_weights(out, state)
    cfg, state, weights = distributed.from_main(read)
    cfg = cfg or RendererConfig()
    env = real_env(cfg)
    torch.manual_seed(seed)
    net = StrokeNet(cfg)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    rng = distributed.rank_generator(seed)  # rank 0's is world size 1's
    step, elapsed = 0, 0.0
    if state is not None:
        net.load_state_dict(weights)
        opt.load_state_dict(state["optim"])
        step, elapsed = state["step"], state["elapsed"]
        distributed.resume_rngs(rng, state, seed, torch.device("cpu"))
    else:
        distributed.seed_noise(seed)
    distributed.broadcast_module(net)
    grad_average.average_gradients(net.parameters(), {"renderer": opt})
    share = distributed.share_batch(cfg, ("batch",))  # this process's strokes per step
    main = distributed.is_main()
    draw = alpha_batch if cfg.colour else real_batch
    val = draw(env, np.random.default_rng(10_000 + seed), cfg.val_strokes) if main else None  # never trained on
    metrics = {}

    def step_fn(progress: float):
        cosine_lr(opt, cfg.lr, cfg.lr_final, progress)
        return distributed.mean_logs({"bce": renderer_step(net, opt, *draw(env, rng, share.batch))})

    def save(at: int, seconds: float):
        ts = {"optim": opt.state_dict(), "step": at, "elapsed": elapsed + seconds,
              "numpy_rng": runs.rng_state(rng), "torch_rng": torch.get_rng_state(),
              **distributed.other_rng_states(rng, torch.device("cpu"))}
        if main:
            metrics.clear()
            metrics.update(evaluate(net, *val), step=at)
            runs.save_folder(out, KIND, cfg, net.state_dict(), {"seed": seed, "metrics": dict(metrics)}, ts)

    runs.loop(step_fn, save, step=step, steps=steps, minutes=minutes, desc="train renderer",
              progress=progress, where=out)
    return distributed.from_main(lambda: metrics)
