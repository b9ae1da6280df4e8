"""Frame statistics everloop itself uses: motion by lag (the demo's check), and the
next-frame prediction metrics of `everloop eval` (PSNR, SSIM, sharp difference,
moving-pixel PSNR). The bench-only loop and collapse statistics are in bench/motion_stats.py;
`everloop eval`'s detectors are in drift.py."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def _f(frames: np.ndarray) -> np.ndarray:
    return frames.astype(np.float32)


def lag_motion(frames: np.ndarray, lags=(1, 2, 5, 10, 20)) -> dict[int, float]:
    """Mean |x_{t+k} - x_t| (0-255) at each lag k of uint8 frames [T, H, W, 3]: motion grows
    with the lag in a real video, not in a stream that jitters in place."""
    x = _f(frames)
    return {k: float(np.abs(x[k:] - x[:-k]).mean()) for k in lags if k < len(x)}


# --------------------------------------------------------------------------- prediction
# Next-frame metrics on float frames [N, C, H, W] in [0, 1] (the data contract), per
# sample.  Convention: peak 1 on [0, 1] data.  Mathieu et al. and their port used [-1, 1]
# data with peak 1, so their PSNR figures are 6.02 dB LOWER than the same error here
# (10 log10(4)); their sharp difference has a numerator of 1 on a range of 2, so it is
# 3.01 dB lower (the mean absolute gradient error doubles).

MOVING = 0.02  # a pixel "moves" where the real frame changes by more than ~5 grey levels


def psnr_of_mse(mse: float) -> float:
    """PSNR of an already pooled MSE (training logs: one number per batch), same convention."""
    return 10 * math.log10(1 / max(float(mse), 1e-10))


def psnr(pred, truth):
    """10 log10(1 / MSE) per sample; identical frames give 100 dB (MSE floored at 1e-10)."""
    mse = ((pred - truth) ** 2).flatten(1).mean(1)
    return 10 * torch.log10(1 / mse.clamp_min(1e-10))


def ssim(pred, truth):
    """SSIM per sample (torchmetrics: Gaussian window 11, sigma 1.5, data range 1), the
    window shrunk to the frame for frames smaller than 11 pixels."""
    from torchmetrics.functional.image import (
        structural_similarity_index_measure as _ssim,
    )
    k = min(11, min(pred.shape[-2:]) - (1 - min(pred.shape[-2:]) % 2))
    return _ssim(pred.float(), truth.float(), kernel_size=k, sigma=1.5 * k / 11, data_range=1.0,
                 reduction="none")


def _grad_sum(x):
    """|d/dx| + |d/dy| with the forward differences of Mathieu's port, zero beyond the
    right/bottom edge (so the last column/row differences are taken against 0)."""
    dx = F.pad(x, (0, 1, 0, 0))[..., :, 1:] - x
    dy = F.pad(x, (0, 0, 0, 1))[..., 1:, :] - x
    return dx.abs() + dy.abs()


def sharp_diff(pred, truth):
    """Mathieu's sharp difference per sample: 10 log10(1 / mean |G(truth) - G(pred)|), G the
    summed absolute gradients (higher = edges where the real frame has them)."""
    err = (_grad_sum(truth) - _grad_sum(pred)).abs().flatten(1).mean(1)
    return 10 * torch.log10(1 / err.clamp_min(1e-10))


def psnr_moving(pred, truth, prev, threshold: float = MOVING):
    """PSNR over the pixels (all channels) where the real frame moved: max over channels of
    |truth - prev| > threshold; NaN for a sample where nothing moved.  On mostly still
    footage (Ms. Pac-Man) this is where predictions differ; full-frame PSNR hides it."""
    mask = ((truth - prev).abs().amax(1, keepdim=True) > threshold).expand_as(truth).flatten(1)
    se = ((pred - truth) ** 2).flatten(1)
    n = mask.sum(1)
    mse = (se * mask).sum(1) / n.clamp_min(1)
    out = 10 * torch.log10(1 / mse.clamp_min(1e-10))
    return torch.where(n > 0, out, torch.full_like(out, float("nan")))


def prediction_table(pred, truth, last_context) -> dict[str, dict[str, float]]:
    """Per recursion step metrics averaged over samples.  pred, truth: [N, R, C, H, W];
    last_context: [N, C, H, W], the last real frame the model saw.  Returns
    {"1": {"psnr", "ssim", "sharp_diff", "psnr_moving"}, ..., "R": {...}}."""
    prev = torch.cat([last_context[:, None], truth[:, :-1]], 1)
    table = {}
    for r in range(pred.shape[1]):
        p, t, q = pred[:, r], truth[:, r], prev[:, r]
        mov = psnr_moving(p, t, q)
        table[str(r + 1)] = {"psnr": float(psnr(p, t).mean()), "ssim": float(ssim(p, t).mean()),
                             "sharp_diff": float(sharp_diff(p, t).mean()),
                             "psnr_moving": float(mov.nanmean()) if (~mov.isnan()).any() else float("nan")}
    return table
