"""A decoder's calibration to the footage it learned, fitted once after the VAE stage and
applied to every decoded frame, in this order: real detail from a bank of training frames
(PatchBank, at the end of this file), a colour table, and the still background.

**Colour table**: a 3-D lookup table that moves the colours a decoder draws onto the
colours of the footage.

A small decoder blurs: where the real frame has a red blob on a yellow ground it draws
a band of orange between them, and its colours drift by a few grey levels. Both are
visible, and the joint colour histogram of `everloop eval` counts them (a 1-px blur of
real lava footage is 7.8x the real band on color_hist; the default VAE's reconstructions
2.6x, bench/worldmodel_ceiling.py). The table is fitted once, after the VAE is trained,
from the decoder's reconstructions of training frames and those frames themselves, by
iterative distribution transfer (Pitie, Kokaram & Dahitt, "N-dimensional probability
density function transfer and its application to colour transfer", ICCV 2005): rotate
the colour space at random, match each axis's 1-D distribution by quantiles, repeat. The
composition of those monotone 1-D maps is evaluated on a regular grid of colours and
applied to every decoded pixel by trilinear interpolation. It is a fixed per-pixel colour
map, like a film grade: it cannot add detail, only put the decoder's colours where the
footage has its colours (the same histogram step Heeger & Bergen's texture synthesis
uses).

**Still background**: where the real footage never moves (the room around a lava lamp),
a decoder still shimmers: every latent step redraws the whole frame, and the optical flow
of a reconstructed lamp has 15% fewer still pixels than the real one (flow_hist 2.9x the
band). `still_plate` finds the pixels that depart from the footage's median frame in
under `STILL_SHARE` of the frames; `snap_to_plate` puts a decoded pixel there back on the
median frame when it is within a tolerance of it (a cinemagraph's still plate)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

FOREGROUND = 0.1  # a pixel this far from the median frame (some channel) shows something that comes and goes
STILL_SHARE = 0.05  # a pixel in the foreground in fewer frames than this is still background
GRID = 33  # table side: 33^3 colours, 1/32 of the range apart (trilinear in between)


def identity_table(grid: int = GRID) -> torch.Tensor:
    """[3, G, G, G] table indexed [channel, r, g, b] that maps every colour to itself."""
    axis = torch.linspace(0, 1, grid)
    r, g, b = torch.meshgrid(axis, axis, axis, indexing="ij")
    return torch.stack([r, g, b])


def fit_table(drawn: np.ndarray, real: np.ndarray, iterations: int = 60, grid: int = GRID,
              seed: int = 0, check_every: int = 5, check: tuple[np.ndarray, np.ndarray] | None = None,
              keep: torch.Tensor | None = None) -> torch.Tensor:
    """The table taking the colours `drawn` [N, 3] (a decoder's, in [0, 1]) towards the
    distribution of `real` [N, 3] (the same pixels of the real frames).

    Each iteration: a random rotation of colour space (fixed by `seed`), then on each
    rotated axis the monotone transport of the drawn values onto the real ones
    (`transport_1d`); the same maps move the table's grid of colours. Half the pixels fit,
    the other half check: every `check_every` iterations the table is applied to the
    checking half, and the table whose colours are closest to the real ones there
    (`histogram_l1`) is kept, the identity and `keep` (a table fitted before) included.
    `check`: (drawn, real) colours to choose on instead of half of these; for dreams, other
    dreams than the fit's, so that a table that paints the fit's scenes towards the
    footage's (more flame, say) is not kept, only one that fixes how colours are drawn. The check matters: where a scene is
    mostly one exact colour (a fire's black night) the transport is steep beside it, the
    table's grid cannot follow, and later iterations add a haze (a fire's dream without the
    check: color_hist 16x the band). ~12 s on one core for 300,000 pixels."""
    rng = np.random.default_rng(seed)
    pixels = np.asarray(drawn, np.float64).reshape(-1, 3), np.asarray(real, np.float64).reshape(-1, 3)
    half = len(pixels[0]) // 2 if check is None else len(pixels[0])
    x, y = pixels[0][:half], pixels[1][:half]
    check_drawn, check_real = ((pixels[0][half:], pixels[1][half:]) if check is None else
                               (np.asarray(c, np.float64).reshape(-1, 3) for c in check))
    check_drawn = torch.from_numpy(check_drawn).float()
    table = identity_table(grid).reshape(3, -1).T.double().numpy()  # [G^3, 3]
    best, best_l1 = None, np.inf
    for candidate in [identity_table(grid)] + ([] if keep is None else [keep.detach().cpu().float()]):
        l1 = histogram_l1(apply_pixels(check_drawn, candidate).numpy(), check_real)
        if l1 < best_l1:  # on a tie the identity
            best, best_l1 = candidate, l1
    for i in range(1, iterations + 1):
        rot, _ = np.linalg.qr(rng.standard_normal((3, 3)))
        xr, yr, tr = x @ rot, np.sort(y @ rot, 0), table @ rot
        for k in range(3):
            xr[:, k], knots, moved = transport_1d(xr[:, k], yr[:, k])
            tr[:, k] = np.interp(tr[:, k], knots, moved)
        x, table = xr @ rot.T, tr @ rot.T
        if i % check_every == 0 or i == iterations:
            candidate = torch.from_numpy(np.clip(table, 0, 1)).float().T.reshape(3, grid, grid, grid)
            l1 = histogram_l1(apply_pixels(check_drawn, candidate).numpy(), check_real)
            if l1 < best_l1:
                best, best_l1 = candidate, l1
    if not torch.isfinite(best).all():
        raise ValueError("colour table is not finite")
    return best


def apply_pixels(colours: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Colours [N, 3] in [0, 1] -> the table's colours [N, 3]."""
    return apply_table(colours.T[None, :, :, None], table)[0, :, :, 0].T


def transport_1d(x: np.ndarray, y_sorted: np.ndarray, levels: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The monotone (optimal) transport of samples x onto the distribution of y_sorted, on
    `levels` equal shares of the mass: each share's mean x goes to the mean of the real
    values of the same share (a smooth map: single pixels' noise is not matched one by
    one). Returns x moved, and the map as knots -> values (linear between). Equal x values
    (the clipped black of a decoder is one colour on thousands of pixels) are one knot that
    goes to the mean of all the real values they share: a per-pixel map cannot split one
    colour, and a plain quantile map would send the whole atom to one end of its share."""
    xs = np.sort(x)
    share = np.minimum((np.arange(len(xs)) * levels) // len(xs), levels - 1)
    target = np.interp((np.arange(len(xs)) + 0.5) / len(xs), (np.arange(len(y_sorted)) + 0.5) / len(y_sorted),
                       y_sorted)
    count = np.bincount(share, minlength=levels)
    knot, moved = np.bincount(share, xs, levels) / count, np.bincount(share, target, levels) / count
    new = np.r_[True, knot[1:] > knot[:-1]]  # shares inside one atom: one knot, their mean target
    group = np.cumsum(new) - 1
    weight = np.bincount(group, count)
    knot, moved = knot[new], np.bincount(group, moved * count) / weight
    return np.interp(x, knot, moved), knot, moved


def apply_table(frames: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Frames [N, 3, H, W] in [0, 1] -> the table's colours, trilinearly interpolated."""
    n, _, h, w = frames.shape
    # grid_sample's last coordinate indexes the volume's last axis (b), the first its depth (r)
    coords = frames.float().permute(0, 2, 3, 1).flip(-1).reshape(1, n, h, w, 3) * 2 - 1
    out = F.grid_sample(table[None].to(coords), coords, mode="bilinear", padding_mode="border",
                        align_corners=True)  # [1, 3, n, h, w]
    return out[0].permute(1, 0, 2, 3).to(frames.dtype)


def histogram_l1(a: np.ndarray, b: np.ndarray, levels: int = 8) -> float:
    """L1 distance (0..2) of two colour sets' joint histograms, `levels` per channel; a, b:
    [N, 3] in [0, 1]. Colours are rounded to the grey levels a frame is shown in first, so
    that 8 bins are exactly `everloop eval`'s color_hist (value >> 5): binned from the
    float values instead, a bin's edge sits up to half a grey level off, and a table chosen
    on that scored the waves' dreams 0.0108 where the eval's binning saw 0.0142."""
    def hist(x):
        u = np.rint(np.clip(np.asarray(x, np.float64), 0, 1) * 255).astype(np.int64)
        q = u * levels // 256
        h = np.bincount((q[:, 0] * levels + q[:, 1]) * levels + q[:, 2], minlength=levels ** 3).astype(np.float64)
        return h / max(h.sum(), 1)
    return float(np.abs(hist(a) - hist(b)).sum())


def still_plate(frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Training frames [N, 3, H, W] -> (median frame [3, H, W], stillness [1, H, W]): 1 where
    the frames leave the median (by more than FOREGROUND in some channel) in none of the frames,
    falling linearly to 0 at STILL_SHARE of them. On the five dev processes: 77% of the lava
    lamp's pixels still, 62% of the aquarium's, 4% of the fire's, none of the blobs' or
    the waves'."""
    plate = frames.median(0).values
    off = ((frames - plate).abs().amax(1) > FOREGROUND).float().mean(0, keepdim=True)
    return plate, (1 - off / STILL_SHARE).clamp(0, 1)


def snap_to_plate(x: torch.Tensor, plate: torch.Tensor, stillness: torch.Tensor, tolerance: float) -> torch.Tensor:
    """Frames [N, 3, H, W]: on still pixels, a colour within `tolerance` of the plate (max
    over channels) becomes the plate's, blending back to the decoded colour by 2 x tolerance."""
    near = ((x - plate).abs().amax(1, keepdim=True) / tolerance - 1).clamp(0, 1)  # 0 = on the plate
    return plate + (1 - stillness * (1 - near)) * (x - plate)


# ---- real detail: example-based super-resolution of the decoder's drawing ----------------

PATCH_DIMS = 32  # patches are matched on their first principal components (768 numbers at 16x16)


def patch_grid(size: int, side: int) -> tuple[int, torch.Tensor]:
    """(stride, top-left corners [L, 2]) of the overlapping patches of a frame: half the
    side apart, the last flush with the edge, so every pixel is in a patch (in four
    inside the frame). 8x8 patches 4 apart on one dream of the aquarium and one of the lava
    lamp did better than 16x16 ones 4 or 8 apart (docs/fidelity.md)."""
    stride = max(1, side // 2)
    starts = list(range(0, size - side + 1, stride))
    if starts[-1] != size - side:
        starts.append(size - side)
    ys, xs = torch.meshgrid(torch.tensor(starts), torch.tensor(starts), indexing="ij")
    return stride, torch.stack([ys.ravel(), xs.ravel()], 1)


def cut(frames: torch.Tensor, corners: torch.Tensor, side: int) -> torch.Tensor:
    """Frames [N, 3, S, S] -> their patches [L, N, 3 * side * side] at `corners`."""
    every = torch.arange(len(frames), device=frames.device).expand(len(corners), -1)
    return cut_at(frames, every, corners, side)


def paste(patches: torch.Tensor, corners: torch.Tensor, side: int, size: int) -> torch.Tensor:
    """Patches [L, N, 3 * side * side] -> frames [N, 3, S, S], overlaps averaged."""
    n = patches.shape[1]
    corners, r = corners.to(patches.device), torch.arange(side, device=patches.device)
    flat = ((corners[:, 0, None, None] + r[:, None]) * size + corners[:, 1, None, None] + r).flatten()
    vals = patches.view(len(corners), n, 3, side * side).permute(1, 2, 0, 3).flatten(2)  # [N, 3, L * side^2]
    total = torch.zeros(n, 3, size * size, device=patches.device, dtype=patches.dtype)
    total.index_add_(2, flat, vals)
    count = torch.zeros(size * size, device=patches.device, dtype=patches.dtype).index_add_(
        0, flat, torch.ones_like(flat, dtype=patches.dtype))
    return (total / count).view(n, 3, size, size)


def fit_projection(drawn: torch.Tensor, side: int, dims: int = PATCH_DIMS, sample: int = 20000) -> torch.Tensor:
    """[3 * side^2, dims]: the principal axes of the drawn frames' patches (a fixed sample)."""
    _, corners = patch_grid(drawn.shape[-1], side)
    flat = cut(drawn.float(), corners, side).flatten(0, 1)
    flat = flat[torch.randperm(len(flat), generator=torch.Generator().manual_seed(0))[:sample]]
    return torch.linalg.svd(flat - flat.mean(0), full_matrices=False)[2][:dims].T.contiguous()


class PatchBank:
    """Real detail for a blurry decoder (Freeman, Jones & Pasztor, "Example-based
    super-resolution", 2002): a bank of training frames and the decoder's own drawing of
    each. Every overlapping patch of a decoded frame is looked up among the drawn patches at
    the same place (on PATCH_DIMS principal components), and the real patch's difference
    from its drawing is added: the dream keeps its own shapes and colours, and gains the
    sharp detail the decoder blurred. Built from the model's buffers on first use."""

    def __init__(self, real: torch.Tensor, drawn: torch.Tensor, proj: torch.Tensor, side: int):
        self.side, self.size = side, real.shape[-1]
        _, self.corners = patch_grid(self.size, side)
        self.proj = proj.float()
        self.detail = real.float() / 255 - drawn.float() / 255  # [M, 3, S, S]
        self.keys = torch.cat([cut(drawn[i:i + 128].float() / 255, self.corners, side) @ self.proj
                               for i in range(0, len(drawn), 128)], 1)  # [L, M, d]
        self.key_norms = (self.keys * self.keys).sum(-1)[:, None]  # [L, 1, M]

    def __call__(self, x: torch.Tensor, chunk: int = 32) -> torch.Tensor:
        """Frames [N, 3, S, S] in [0, 1] -> with the nearest drawn patches' real detail added."""
        out = []
        for i in range(0, len(x), chunk):
            part = x[i:i + chunk].float()
            q = cut(part, self.corners, self.side) @ self.proj  # [L, n, d]
            nearest = torch.baddbmm(self.key_norms, q, self.keys.transpose(1, 2), alpha=-2).argmin(-1)  # [L, n]
            detail = cut_at(self.detail, nearest, self.corners, self.side)
            out.append((part + paste(detail, self.corners, self.side, self.size)).clamp(0, 1))
        return torch.cat(out).to(x.dtype)


def cut_at(frames: torch.Tensor, which: torch.Tensor, corners: torch.Tensor, side: int) -> torch.Tensor:
    """Patch l of frame which[l, j] for every place l and query j: [L, n, 3 * side^2]."""
    corners, r = corners.to(frames.device), torch.arange(side, device=frames.device)
    rows = (corners[:, 0, None] + r)[:, None, None, :, None]  # [L, 1, 1, side, 1]
    cols = (corners[:, 1, None] + r)[:, None, None, None, :]
    chan = torch.arange(3, device=frames.device)[None, None, :, None, None]
    return frames[which[:, :, None, None, None], chan, rows, cols].flatten(2)
