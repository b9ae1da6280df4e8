"""The real paint program: quadratic Bezier strokes drawn by skia, behind a tiny env API.

Convention (one for the whole painter): a canvas is float32 [H, W] in [0, 1], black paper
(0) and light ink, like MNIST's white digits on black, so targets need no inversion. A
stroke is drawn by skia on its own black layer; the canvas keeps the lighter of canvas and
layer per pixel (max, which is skia's kLighten on opaque pixels). The world model learns only
the stroke layer and composites with the same max, so the composite is never a source of
dream-vs-real error.

An action is ACTION_DIM numbers in [0, 1] (values outside are clamped):
    x0 y0  x1 y1  x2 y2   start, control, end point (x right, y down, 0..1 of the canvas)
    r0 r2                 radius at the start / end (linear along the curve)
    opacity grey          the layer is coverage * opacity * grey
On a black canvas opacity and grey multiply. A colour action (colour.py) keeps the first nine
numbers and puts r g b in place of grey; its alpha is this layer with grey 1.

The stroke is a chain of antialiased round dabs (as a brush engine stamps them) spaced at
most half a radius apart, filled as one skia path, so a stroke with a varying radius has
smooth edges and no overlap artefacts. `backend="mypaint"` drags MyPaint's brush engine
along the same curve instead (mypaint.py)."""
from __future__ import annotations

import numpy as np

from ..errors import EverloopError

ACTION_DIM = 10
NAMES = ("x0", "y0", "x1", "y1", "x2", "y2", "r0", "r2", "opacity", "grey")
R_MIN, R_MAX = 0.008, 0.08
"""Radius range as a fraction of the canvas side: 0.5 to 5 px at 64x64 (MNIST strokes at
64x64 are about 2-3 px in radius)."""


def radius_px(r, size: int, r_max: float = R_MAX):
    return size * (R_MIN + (r_max - R_MIN) * np.asarray(r, dtype=np.float64))


def _dabs(a: np.ndarray, size: int, r_max: float = R_MAX):
    """Dab centres (pixels) and radii along the curve of one clamped action."""
    p0, p1, p2 = a[0:2] * size, a[2:4] * size, a[4:6] * size
    r0, r2 = radius_px(a[6], size, r_max), radius_px(a[7], size, r_max)
    # Control polygon length bounds the curve length. Dabs half a radius apart (at least
    # 0.5 px) leave edge scallops of 3% of the radius (0.15 px at the largest radius).
    length = np.hypot(*(p1 - p0)) + np.hypot(*(p2 - p1))
    n = int(min(200, np.ceil(length / max(0.5 * min(r0, r2), 0.5)))) + 1
    t = np.linspace(0.0, 1.0, n)[:, None]
    pts = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t ** 2 * p2
    return pts, r0 + (r2 - r0) * t[:, 0]


class SkiaBackend:
    """Draws stroke layers with skia-python (a wheel; CPU raster, 8-bit coverage)."""
    name = "skia"

    def __init__(self, size: int, r_max: float = R_MAX):
        try:
            import skia
        except ImportError:
            raise EverloopError("the painter needs skia-python: pip install 'everloop[paint]'") from None
        self.skia, self.size, self.r_max = skia, size, r_max
        self.surface = skia.Surface(size, size)
        self.paint = skia.Paint(AntiAlias=True, Color=skia.ColorWHITE, Style=skia.Paint.kFill_Style)

    def path(self, a: np.ndarray):
        """The stroke of one clamped action as one skia path of round dabs."""
        path = self.skia.Path()
        pts, radii = _dabs(a, self.size, self.r_max)
        for (x, y), r in zip(pts.tolist(), radii.tolist()):  # Python floats: 20% faster than numpy scalars
            path.addCircle(x, y, r)  # same direction: nonzero fill = union
        return path

    def coverage(self, a: np.ndarray) -> np.ndarray:
        canvas = self.surface.getCanvas()
        canvas.clear(self.skia.ColorBLACK)
        canvas.drawPath(self.path(a), self.paint)
        return self.surface.makeImageSnapshot().toarray()[..., 0].astype(np.float32) / 255.0


def _mypaint(size: int, r_max: float = R_MAX):
    from .mypaint import MyPaintBackend  # libmypaint through ctypes (mypaint.py)
    return MyPaintBackend(size, r_max)


BACKENDS = {"skia": SkiaBackend, "mypaint": _mypaint}  # (size, r_max) -> an object with .coverage(action) -> [H, W]


def make_backend(name: str, size: int, r_max: float = R_MAX):
    if name not in BACKENDS:
        raise EverloopError(f"--backend {name!r}: use one of {', '.join(BACKENDS)}")
    return BACKENDS[name](size, r_max)


class PaintEnv:
    """reset() -> blank canvas; step(action) -> canvas; render(actions) -> canvas.

    Deterministic: the canvas depends only on the actions since reset."""

    def __init__(self, size: int = 64, backend: str = "skia", r_max: float = R_MAX):
        self.size, self.backend = size, make_backend(backend, size, r_max)
        self.canvas = np.zeros((size, size), np.float32)

    def stroke(self, action) -> np.ndarray:
        """The stroke layer of one action: float32 [H, W] in [0, 1]."""
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(-1), 0.0, 1.0)
        if a.shape != (ACTION_DIM,):
            raise EverloopError(f"an action has {ACTION_DIM} numbers ({' '.join(NAMES)}), got {a.size}")
        return self.backend.coverage(a) * np.float32(a[8] * a[9])

    def strokes(self, actions) -> np.ndarray:
        """Stroke layers of [N, ACTION_DIM] actions: float32 [N, H, W]."""
        return np.stack([self.stroke(a) for a in np.asarray(actions).reshape(-1, ACTION_DIM)])

    def reset(self) -> np.ndarray:
        self.canvas = np.zeros((self.size, self.size), np.float32)
        return self.canvas.copy()

    def step(self, action) -> np.ndarray:
        self.canvas = np.maximum(self.canvas, self.stroke(action))
        return self.canvas.copy()

    def render(self, actions) -> np.ndarray:
        """The canvas after painting every action on blank paper (does not touch the state)."""
        canvas = np.zeros((self.size, self.size), np.float32)
        for a in np.asarray(actions).reshape(-1, ACTION_DIM):
            canvas = np.maximum(canvas, self.stroke(a))
        return canvas


def random_actions(rng: np.random.Generator, n: int) -> np.ndarray:
    """Training strokes for the world model: uniform in the action box, except that half the
    strokes are short (end and control near the start), as digit strokes often are, and
    opacity and grey lean bright."""
    a = rng.random((n, ACTION_DIM))
    a[:, 8:10] = np.sqrt(a[:, 8:10])  # brighter on average (digits are white): opacity x grey ~ 0.44
    short = rng.random(n) < 0.5
    near = a[short, 0:2][:, None, :] + (rng.random((short.sum(), 2, 2)) - 0.5) * 0.4
    a[short, 2:6] = np.clip(near, 0, 1).reshape(-1, 4)
    return a.astype(np.float32)
