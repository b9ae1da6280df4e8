"""Colour strokes and the colour canvas (Learning to Paint's decoupling).

A colour action is COLOUR_DIM numbers in [0, 1] (clamped like a grey one):
    x0 y0  x1 y1  x2 y2  r0 r2  opacity    the grey action's shape and opacity (env.py)
    r g b                                  the stroke's colour
A colour canvas is float32 [3, H, W] in [0, 1], black paper. A stroke's alpha is the real
program's coverage x opacity, which is the grey stroke layer of the same shape with grey 1,
so the world model (renderer.py) keeps learning only shape and opacity and colour is applied
analytically, the same in the dream and in the real program:

    canvas = canvas * (1 - alpha) + alpha * rgb          ("over": skia's kSrcOver)

The real program draws the coverage (env.PaintEnv) and composites in float; a test checks
that this is what skia's own kSrcOver draws on an 8-bit RGBA surface (within rounding).
`blend="lighten"` (canvas = max(canvas, alpha * rgb) per channel) is the grey painter's
rule: a grey action painted as colour (r = g = b = grey) gives the grey canvas in every
channel, so grey agents and grey targets score the same through the colour path (tested)."""
from __future__ import annotations

import numpy as np
import torch

from ..errors import EverloopError
from .env import ACTION_DIM, PaintEnv, random_actions

COLOUR_DIM = ACTION_DIM + 2  # the grey layout with grey replaced by r g b
NAMES = ("x0", "y0", "x1", "y1", "x2", "y2", "r0", "r2", "opacity", "r", "g", "b")
R_MAX = 0.25
"""Largest radius of a colour renderer (a fraction of the canvas side: 16 px at 64x64),
the default `RendererConfig.r_max` of `--colour` renderers. Photographs and video frames
need wide strokes for their backgrounds: Learning to Paint's go up to half the canvas."""
BLENDS = ("over", "lighten")


def shape_actions(actions):
    """Colour actions [..., COLOUR_DIM] -> the renderer's grey actions [..., ACTION_DIM]
    with grey 1 (their layer is the stroke's alpha). Torch or numpy."""
    if isinstance(actions, torch.Tensor):
        return torch.cat([actions[..., :ACTION_DIM - 1], torch.ones_like(actions[..., :1])], -1)
    a = np.asarray(actions, np.float32)
    return np.concatenate([a[..., :ACTION_DIM - 1], np.ones_like(a[..., :1])], -1)


def from_grey(actions) -> np.ndarray:
    """Grey actions [..., ACTION_DIM] -> colour actions with r = g = b = grey."""
    a = np.asarray(actions, np.float32)
    return np.concatenate([a[..., :ACTION_DIM - 1], np.repeat(a[..., ACTION_DIM - 1:], 3, -1)], -1)


def composite(canvas, alpha, rgb, blend: str = "over"):
    """The colour rule, torch or numpy: canvas [B, 3, H, W] (or [3, H, W]), alpha [B, H, W]
    (or [H, W]), rgb [B, 3] (or [3])."""
    a, c = alpha[..., None, :, :], rgb[..., :, None, None]
    if blend == "lighten":
        return torch.maximum(canvas, a * c) if isinstance(canvas, torch.Tensor) else np.maximum(canvas, a * c)
    return canvas * (1 - a) + a * c


class ColourPaintEnv:
    """The real paint program in colour: reset() -> blank [3, H, W]; step(action) -> canvas;
    render(actions) -> canvas. Deterministic, like PaintEnv, whose coverage it draws."""

    def __init__(self, size: int = 64, backend: str = "skia", r_max: float = R_MAX, blend: str = "over"):
        if blend not in BLENDS:
            raise EverloopError(f"blend {blend!r}: use one of {', '.join(BLENDS)}")
        self.grey, self.size, self.blend = PaintEnv(size, backend, r_max), size, blend
        self.canvas = self.reset()

    @property
    def backend(self):
        return self.grey.backend

    def _check(self, action) -> np.ndarray:
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(-1), 0.0, 1.0)
        if a.shape != (COLOUR_DIM,):
            raise EverloopError(f"a colour action has {COLOUR_DIM} numbers ({' '.join(NAMES)}), got {a.size}")
        return a

    def alpha(self, action) -> np.ndarray:
        """The stroke's alpha, coverage x opacity: float32 [H, W]."""
        return self.grey.stroke(shape_actions(self._check(action)))

    def reset(self) -> np.ndarray:
        self.canvas = np.zeros((3, self.size, self.size), np.float32)
        return self.canvas.copy()

    def paint(self, canvas: np.ndarray, action) -> np.ndarray:
        a = self._check(action)
        return composite(canvas, self.alpha(a), a[ACTION_DIM - 1:].astype(np.float32), self.blend)

    def step(self, action) -> np.ndarray:
        self.canvas = self.paint(self.canvas, action)
        return self.canvas.copy()

    def render(self, actions) -> np.ndarray:
        canvas = np.zeros((3, self.size, self.size), np.float32)
        for a in np.asarray(actions).reshape(-1, COLOUR_DIM):
            canvas = self.paint(canvas, a)
        return canvas


def check_pair(agent_colour: bool, renderer_colour: bool, renderer_dir) -> None:
    """A grey agent cannot use a colour renderer (trained on grey 1 only); a colour agent can
    use a grey one (its strokes then have the grey radius range)."""
    if renderer_colour and not agent_colour:
        raise EverloopError(f"{renderer_dir} is a colour renderer (train-renderer --colour): "
                            "pass --colour to train a colour agent with it")


def random_colour_actions(rng: np.random.Generator, n: int) -> np.ndarray:
    """env.random_actions' shapes and opacities with a uniform colour each."""
    a = random_actions(rng, n)
    return np.concatenate([a[:, :ACTION_DIM - 1], rng.random((n, 3), dtype=np.float32)], 1)


def skia_over(actions, size: int, r_max: float = R_MAX) -> np.ndarray:
    """The same strokes drawn by skia itself in colour (kSrcOver, antialiased, on an 8-bit
    RGBA surface): float32 [3, H, W]. Only for checking the float composite against."""
    from .env import SkiaBackend
    backend = SkiaBackend(size, r_max)
    skia = backend.skia
    surface = skia.Surface(size, size)
    canvas = surface.getCanvas()
    canvas.clear(skia.ColorBLACK)
    for a in np.clip(np.asarray(actions, np.float64).reshape(-1, COLOUR_DIM), 0, 1):
        paint = skia.Paint(AntiAlias=True, Style=skia.Paint.kFill_Style,
                           Color4f=skia.Color4f(*(float(v) for v in a[9:12]), float(a[8])))
        canvas.drawPath(backend.path(a), paint)
    rgba = surface.makeImageSnapshot().toarray(colorType=skia.kRGBA_8888_ColorType)
    return np.ascontiguousarray(rgba[..., :3].transpose(2, 0, 1)).astype(np.float32) / 255.0
