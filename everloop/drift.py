"""Drift metrics and failure-detector series for `everloop eval` (pure functions, no model).

A *window* is W consecutive frames, uint8 ``[W, H, W, 3]``.  ``summarise`` turns one window
into small per-metric summaries; ``set_distance`` compares two *sets* of windows through
them.  ``everloop.evaluate`` reports each distance as a ratio to the real-vs-real band.

The five drift metrics (stable names):

* ``feature_fd`` -- Frechet distance between Gaussians fitted to per-frame features of a
  fixed random conv net (``feature_net``): frames bilinearly resized to 64x64, scaled to
  [-1, 1]; four Conv2d(k=4, s=2, p=1) 3->32->64->128->256, each followed by ReLU; global
  average pool -> 256-d.  Weights N(0, 2/fan_in) drawn from ``torch.Generator`` seeded 0
  in layer order (weight only), biases 0.  The same net for everyone, no downloads.
* ``color_hist`` -- L1 distance (0..2) between joint RGB histograms, 8 bins per channel
  (value >> 5, 512 bins), pooled over every pixel of every frame of the set.
* ``diff_energy`` -- in decades: the 1-D Wasserstein-1 distance between the sets' values of
  log10(MSE(x_t, x_{t+1}) + 1e-10), x in [0, 1], over consecutive frames inside windows,
  plus |log10| of the ratio of the sets' mean MSE (each + 1e-10).  The floor is below one
  grey level on one pixel of a 64x64 frame (1.3e-9), so a still video sits ~7 decades from
  real motion on each term and its ratio to the band grows as the motion it lacks; the
  mean term tells a stream that moves half as much (0.3 decades of energy per halving of
  speed, squared) where a distribution distance alone saturates.
* ``flow_hist`` -- in octaves: earth mover's distance between histograms of per-pixel
  OpenCV Farneback optical-flow magnitudes (greyscale, consecutive frames), on half-octave
  log2 bins from 2^-6 to 2^4 pixels/frame (values outside are clipped into the end bins).
  A still video's flow is 0, all in the bottom bin: 12.5x the band on the lava lamp with
  4 streams. Two variants were tried and dropped: a log-ratio of the mean flow (noisier:
  held-out lava 1.64x against 1.25x) and bins down to 2^-10, which scored the invisible
  sub-1/64-pixel shimmer of a VAE's static background (a 30-minute lava dream: 7.2x
  against 2.8x on these bins).  Needs cv2; without it the metric is skipped.
* ``temporal_spectrum`` -- per window: greyscale (BT.601 luma) pixels, per-pixel mean
  removed, Hann taper, |rFFT over time|^2 averaged over pixels, DC dropped, normalised to
  sum 1 (all zeros for a static window).  Per set: the mean spectrum; distance: RMS over
  frequency bins of the difference of log10(spectrum + 1e-6).
* ``brightness`` -- Wasserstein-1 distance (grey levels / 255) between the sets' per-frame
  mean luma: a stream that slowly dims or brightens.

Until 2026-12 diff_energy had only its distribution term with a 1e-6 floor on
the MSE: a video repeating one frame scored 3.5x the band on diff_energy (one stream),
while held-out real footage scored up to 1.8x (docs/eval.md, negative controls).
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data import to_float

HORIZONS = (16, 128, 1000, 10000, 100000)
METRICS = ("feature_fd", "color_hist", "diff_energy", "flow_hist", "temporal_spectrum", "brightness")
APPEARANCE = ("feature_fd", "color_hist")
MOTION = ("diff_energy", "flow_hist", "temporal_spectrum")
MSE_FLOOR = 1e-10  # below any visible change (see diff_energy)
FLOW_EDGES = 2.0 ** np.arange(-6, 4.01, 0.5)  # 21 edges -> 20 bins, ends take what is outside
DS = 16  # detectors compare frames area-downsampled to at most 16x16

try:  # cv2 is an optional extra: only flow_hist needs it
    import cv2
except ImportError:  # pragma: no cover - depends on the environment
    cv2 = None

_NET: nn.Module | None = None


def feature_net() -> nn.Module:
    """The fixed random feature extractor (see module docstring); built once, eval mode."""
    global _NET
    if _NET is None:
        g = torch.Generator().manual_seed(0)
        layers: list[nn.Module] = []
        chans = (3, 32, 64, 128, 256)
        for a, b in itertools.pairwise(chans):
            conv = nn.Conv2d(a, b, 4, 2, 1)
            with torch.no_grad():
                conv.weight.normal_(0.0, math.sqrt(2.0 / (a * 16)), generator=g)
                conv.bias.zero_()
            layers += [conv, nn.ReLU()]
        _NET = nn.Sequential(*layers).eval().requires_grad_(False)
    return _NET


@torch.inference_mode()
def features(frames: np.ndarray, batch: int = 256) -> np.ndarray:
    """uint8 [n, H, W, 3] -> float64 [n, 256] random-net features."""
    net, out = feature_net(), []
    for i in range(0, len(frames), batch):
        x = to_float(np.ascontiguousarray(frames[i:i + batch])) * 2 - 1
        if tuple(x.shape[-2:]) != (64, 64):
            x = F.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False, antialias=True)
        out.append(net(x).mean((2, 3)).double().numpy())
    return np.concatenate(out)


def _grey(frames: np.ndarray) -> np.ndarray:
    f = frames.astype(np.float32)
    return (0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]) / 255.0


def flow_magnitudes(frames: np.ndarray) -> np.ndarray:
    """Farneback flow magnitude (pixels/frame) of every pixel of every consecutive pair."""
    grey = np.round(_grey(frames) * 255).astype(np.uint8)
    levels = max(1, min(3, int(math.log2(max(1, min(grey.shape[1:]) // 16))) + 1))
    out = []
    for a, b in itertools.pairwise(grey):
        flow = cv2.calcOpticalFlowFarneback(a, b, None, 0.5, levels, 9, 3, 5, 1.1, 0)
        out.append(np.hypot(flow[..., 0], flow[..., 1]).ravel())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def temporal_spectrum(frames: np.ndarray) -> np.ndarray:
    """Normalised temporal power spectrum of a window, DC dropped: [W // 2]."""
    g = _grey(frames).reshape(len(frames), -1).astype(np.float64)
    g = (g - g.mean(0)) * np.hanning(len(g))[:, None]
    p = (np.abs(np.fft.rfft(g, axis=0)) ** 2).mean(1)[1:]
    total = p.sum()
    return p / total if total > 1e-12 else np.zeros_like(p)


def summarise(window: np.ndarray, flow: bool = True) -> dict[str, np.ndarray]:
    """Per-metric summaries of one window uint8 [W, H, W, 3] (see the module docstring)."""
    q = (window >> 5).astype(np.int64)
    f = window.astype(np.float32) / 255.0
    mse = ((f[1:] - f[:-1]) ** 2).mean((1, 2, 3))
    s = {"feature_fd": features(window),
         "color_hist": np.bincount((q[..., 0] * 64 + q[..., 1] * 8 + q[..., 2]).ravel(), minlength=512),
         "diff_energy": mse.astype(np.float64),
         "temporal_spectrum": temporal_spectrum(window),
         "brightness": _grey(window).mean((1, 2)).astype(np.float64)}
    if flow and cv2 is not None:
        s["flow_hist"] = flow_counts(window)
    return s


def flow_counts(window: np.ndarray) -> np.ndarray:
    """flow_hist's summary of one window: its pixels' flow magnitudes per half-octave bin."""
    mags = np.clip(flow_magnitudes(window), FLOW_EDGES[0], FLOW_EDGES[-1])
    return np.histogram(np.log2(mags), np.log2(FLOW_EDGES))[0]


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to rows of a and b, via eigendecompositions:
    |mu_a - mu_b|^2 + tr S_a + tr S_b - 2 tr sqrt(S_a^1/2 S_b S_a^1/2)."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False, bias=True), np.cov(b, rowvar=False, bias=True)
    w, v = np.linalg.eigh(s_a)
    root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root @ s_b @ root), 0, None)).sum()
    return float(max(0.0, ((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * cross))


def wasserstein1(u: np.ndarray, v: np.ndarray) -> float:
    """Exact 1-D Wasserstein-1 distance between two empirical samples."""
    u, v = np.sort(np.ravel(u)), np.sort(np.ravel(v))
    both = np.sort(np.concatenate([u, v]))
    cu = np.searchsorted(u, both[:-1], "right") / len(u)
    cv = np.searchsorted(v, both[:-1], "right") / len(v)
    return float((np.abs(cu - cv) * np.diff(both)).sum())


def set_distance(name: str, xs: list[dict], ys: list[dict]) -> float:
    """Distance of metric `name` between two sets of window summaries."""
    a, b = [s[name] for s in xs], [s[name] for s in ys]
    if name == "feature_fd":
        return frechet(np.concatenate(a), np.concatenate(b))
    if name == "brightness":
        return wasserstein1(np.concatenate(a), np.concatenate(b))
    if name == "diff_energy":
        ma, mb = np.concatenate(a), np.concatenate(b)
        shape = wasserstein1(np.log10(ma + MSE_FLOOR), np.log10(mb + MSE_FLOOR))
        return shape + abs(_log_ratio(ma.mean() + MSE_FLOOR, mb.mean() + MSE_FLOOR, 10))
    if name in ("color_hist", "flow_hist"):
        ha, hb = np.sum(a, 0).astype(np.float64), np.sum(b, 0).astype(np.float64)
        ha, hb = ha / max(ha.sum(), 1), hb / max(hb.sum(), 1)
        if name == "color_hist":
            return float(np.abs(ha - hb).sum())
        return float(np.abs(np.cumsum(ha - hb)).sum() * 0.5)  # EMD, half-octave bins
    if name == "temporal_spectrum":
        la, lb = np.log10(np.mean(a, 0) + 1e-6), np.log10(np.mean(b, 0) + 1e-6)
        return float(np.sqrt(((la - lb) ** 2).mean()))
    raise KeyError(name)


def _log_ratio(a: float, b: float, base: float) -> float:
    return float(math.log(a / b, base))


# --------------------------------------------------------------------------- detector series


def _tensor(frames: np.ndarray) -> torch.Tensor:
    frames = np.ascontiguousarray(frames)
    return torch.from_numpy(frames if frames.flags.writeable else frames.copy())


def downsample(frames: np.ndarray) -> np.ndarray:
    """uint8 [n, H, W, 3] -> float32 [n, D], area mean to at most 16x16, grey levels 0-255."""
    x = _tensor(frames).to(torch.float32).movedim(-1, 1)
    h, w = x.shape[-2:]
    x = F.adaptive_avg_pool2d(x, (min(DS, h), min(DS, w)))
    return x.flatten(1).numpy()


def saturation(frames: np.ndarray) -> np.ndarray:
    """Fraction of channel values at 0 or 255, per frame: [n]."""
    t = _tensor(frames).flatten(1)
    return ((t == 0) | (t == 255)).float().mean(1).numpy()


class Track:
    """Per-stream series over contiguous segments of downsampled frames [n, D]:

    * ``mad``: mean |x_t - x_{t-1}| (grey levels), the frozen / flicker signal;
    * ``rms``: RMS(x_t - x_{t-1});
    * ``revisit``: min over lags 2..``window`` of RMS(x_t - x_{t-lag}) (the loop signal).

    Values are NaN where undefined (start of a segment).  A segment that does not start
    where the last one ended resets the history."""

    def __init__(self, window: int = 300):
        self.window, self.next, self.ring, self.ring_at = window, None, None, 0

    def feed(self, start: int, ds: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n, d = ds.shape
        if self.next != start or self.ring is None:
            self.ring, self.ring_at = ds[:0], start
        cand = np.concatenate([self.ring, ds])  # frames ring_at .. start + n - 1
        at = self.ring_at + np.arange(len(cand))
        now = start + np.arange(n)
        sq = (cand.astype(np.float64) ** 2).sum(1)
        d2 = sq[len(self.ring):, None] + sq[None, :] - 2 * (ds.astype(np.float64) @ cand.T.astype(np.float64))
        rms_all = np.sqrt(np.clip(d2, 0, None) / d)
        lag = now[:, None] - at[None, :]
        far = np.where((lag >= 2) & (lag <= self.window), rms_all, np.inf).min(1)
        revisit = np.where(np.isinf(far), np.nan, far)
        rows = np.arange(n)
        prev = rows + len(self.ring) - 1  # column of frame t - 1 in cand
        ok = prev >= 0
        mad, rms = np.full(n, np.nan), np.full(n, np.nan)
        mad[ok] = np.abs(ds[ok] - cand[prev[ok]]).mean(1)
        rms[ok] = rms_all[rows[ok], prev[ok]]
        keep = max(0, len(cand) - self.window)
        self.ring, self.ring_at, self.next = cand[keep:], self.ring_at + keep, start + n
        return mad, rms, revisit


class Runs:
    """Longest run of consecutive True flags (reset by gaps) and where a run first reached
    `min_run` frames (the frame index that completed it)."""

    def __init__(self, min_run: int):
        self.min_run, self.cur, self.longest, self.first, self.next = min_run, 0, 0, None, None

    def feed(self, start: int, flags: np.ndarray) -> None:
        if self.next != start:
            self.cur = 0
        for i, f in enumerate(flags):
            self.cur = self.cur + 1 if f else 0
            self.longest = max(self.longest, self.cur)
            if self.first is None and self.cur >= self.min_run:
                self.first = start + i
        self.next = start + len(flags)
