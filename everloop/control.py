"""`everloop eval`'s `control` section: does a world model obey the keys? (docs/play.md)

On held-out episodes, from real start frames, an action-conditioned run rolls out with the
true actions and with the same actions shuffled in time, and both are compared with the
real continuation:

* position -- Ms. Pac-Man's position (the centroid of her colour) against the real one, in
  native screen pixels, at steps 1, 4, 16 and 64: the share of starts within one maze tile
  (8 px), and the median error. With the true actions she must be where the game put her;
  with shuffled ones she goes elsewhere, so the gap is what the keys do;
* maze -- IoU of the wall-colour mask of the model's frame after 1,000 steps of play with
  random keys (the recorder's `mixed` policy) against the real maze at the start: the maze
  must still be there;
* moving-pixel PSNR -- per step, on the pixels where the real frame changed (metrics.psnr_moving),
  for the true and shuffled actions and for copying the last real frame;
* NaN anywhere, and frozen streams: no pixel changes for longer than the real footage ever
  holds still (and at least a second).

Colours are measured on the dataset's frames (64x64 squashes 210x160: a model pixel is
2.5 x 3.3 native pixels, and Ms. Pac-Man covers ~3x3 of them, mostly in part). Each pixel
is read as the nearest mixture of up to three colours of the game's palette (GAMES), and
her share of it is her weight; the centroid of those weights around their peak is her
position. Against her exact centroid on the native screens, on the dataset's own frames
it finds her in 95.5% of those that show her (a step whose real frame it does not find her
in is not counted), at a median error of 0.73 native pixels, 99.8% of them within a tile
(docs/play.md). Games without a palette here get the PSNR and NaN/frozen parts only."""
from __future__ import annotations

import itertools

import numpy as np
import torch

from . import metrics
from .data import FrameStore, seed_action_clips, to_float, to_uint8

TILE = 8.0  # native pixels: one maze tile, the acceptance's "within one tile"
FOUND = 1.5
"""Her colour's share summed over a 3x3 patch that says she is there. Real frames hold 2.95
in the median and 1.81 at the 5th percentile; a model's blur left up to ~1.3 of scattered
yellowish mixtures in frames where she was gone (the smoke runs of docs/play.md)."""
STEPS = (1, 4, 16, 64)

GAMES = {
    "MsPacman": {
        "player": (210, 164, 74), "walls": (228, 111, 111), "play_rows": 172,
        "palette": [(0, 0, 0), (0, 28, 136), (66, 114, 194), (84, 184, 153), (180, 122, 48),
                    (184, 50, 50), (198, 89, 179), (200, 72, 72), (210, 164, 74), (214, 214, 214),
                    (228, 111, 111)],
    },
}
"""Per game (record.json's name): her colour, the walls' colour, the native rows of the
maze (below them: score and lives, where her colour also is), and every colour the maze
area shows (measured over a recording: background, walls and pellets, ghosts, frightened
ghosts, fruit, Ms. Pac-Man)."""


def colour_shares(frames: np.ndarray, palette, targets, penalty: float = 4.0) -> np.ndarray:
    """float [len(targets), ..., H, W]: how much of each pixel of uint8 frames [..., H, W, 3]
    is each target colour. A pixel is read as the mixture of at most three palette colours
    (non-negative shares summing to 1, what area-averaging makes) nearest to it; a mixture of
    more colours costs `penalty` (squared grey levels) per extra colour, so a pure or
    two-colour pixel is read as such. Solved once per distinct colour of the frames."""
    pal = np.asarray(palette, np.float32)
    keys = (frames[..., 0].astype(np.int32) << 16) | (frames[..., 1].astype(np.int32) << 8) | frames[..., 2]
    uniq, inverse = np.unique(keys.reshape(-1), return_inverse=True)
    x = np.stack([uniq >> 16, (uniq >> 8) & 255, uniq & 255], 1).astype(np.float32)
    best = np.full(len(x), np.inf, np.float32)
    shares = np.zeros((len(targets), len(x)), np.float32)
    which = [pal.tolist().index(list(map(float, t))) for t in targets]
    for n in (1, 2, 3):
        for idx in itertools.combinations(range(len(pal)), n):
            c = pal[list(idx)]
            r = x - c[-1]
            a = np.ones((len(x), 1), np.float32)
            if n > 1:  # least squares for the first n - 1 shares; the last one makes the sum 1
                d = (c[:-1] - c[-1]).T
                coef = r @ d @ np.linalg.inv(d.T @ d).T
                a = np.concatenate([coef, 1 - coef.sum(1, keepdims=True)], 1)
                r = r - coef @ d.T
            err = (r ** 2).sum(1) + penalty * (n - 1)
            better = (a >= -1e-4).all(1) & (err < best)
            best = np.where(better, err, best)
            for k, t in enumerate(which):
                shares[k] = np.where(better, a[:, idx.index(t)] if t in idx else 0.0, shares[k])
    return shares[:, inverse].reshape(len(targets), *frames.shape[:-1])


class Geometry:
    """Dataset pixels <-> native screen pixels, from meta.json's "recorded" crop."""

    def __init__(self, store: FrameStore):
        rec = store.meta.get("recorded") or {}
        x, y, w, h = rec.get("crop") or (0, 0, store.width, store.height)
        self.x0, self.y0 = x, y
        self.sx, self.sy = w / store.width, h / store.height  # native pixels per dataset pixel
        self.game = GAMES.get(rec.get("game"))
        # whole dataset rows above the score: a row across the edge mixes in the lives icons
        self.rows = store.height if self.game is None else \
            int(np.clip(np.floor((self.game["play_rows"] - y) / self.sy), 1, store.height))


def positions(frames: np.ndarray, geo: Geometry) -> np.ndarray:
    """float [..., 2]: her (y, x) in native pixels in uint8 frames [..., H, W, 3]; NaN where
    no 3x3 patch of the maze holds FOUND pixels' worth of her colour (she is not there). Her
    position is the centroid of her colour's shares within 2 pixels of the 3x3 patch that
    holds the most of it: a stray mixture elsewhere (a wall's edge against the black border
    reads as a little of her colour) does not pull it."""
    g = geo.game
    w = colour_shares(frames[..., :geo.rows, :, :], g["palette"], [g["player"]])[0]
    w = np.where(w > 0.15, w, 0.0).reshape(-1, *w.shape[-2:])
    n, h, wd = w.shape
    p = np.pad(w, ((0, 0), (1, 1), (1, 1)))
    box = sum(p[:, dy:dy + h, dx:dx + wd] for dy in range(3) for dx in range(3)).reshape(n, -1)
    peak = box.argmax(1)
    ys, xs = np.arange(h)[None, :, None], np.arange(wd)[None, None, :]
    near = (np.abs(ys - (peak // wd)[:, None, None]) <= 2) & (np.abs(xs - (peak % wd)[:, None, None]) <= 2)
    w = w * near
    total = np.maximum(w.sum((1, 2)), 1e-9)
    cy = (w.sum(2) * (np.arange(h) + 0.5)).sum(1) / total
    cx = (w.sum(1) * (np.arange(wd) + 0.5)).sum(1) / total
    out = np.stack([geo.y0 + cy * geo.sy, geo.x0 + cx * geo.sx], -1)
    out[box.max(1) < FOUND] = np.nan
    return out.reshape(*frames.shape[:-3], 2)


def wall_mask(frames: np.ndarray, geo: Geometry) -> np.ndarray:
    """bool [..., rows, W]: dataset pixels of the maze that are mostly wall colour."""
    g = geo.game
    return colour_shares(frames[..., :geo.rows, :, :], g["palette"], [g["walls"]])[0] > 0.5


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    inter, union = (a & b).sum((-1, -2)), (a | b).sum((-1, -2))
    return inter / np.maximum(union, 1)


@torch.inference_mode()
def rollout_actions(model, context: torch.Tensor, actions: torch.Tensor, batch: int = 32) -> np.ndarray:
    """(uint8 [B, T, H, W, 3], finite): the model's continuation of `context` [B, k, C, H, W]
    under `actions` [B, T, stride], in batches of `batch` streams; finite is False if a
    decoded value was NaN or infinite (before the conversion to 8 bits hid it)."""
    from .devices import of
    from .rollout import latent_of
    out, finite = [], True
    for i in range(0, len(context), batch):
        state = model.start(len(context[i:i + batch]), None, seed_clip=context[i:i + batch].to(of(model)))
        steps = []
        for t in range(actions.shape[1]):
            state = model.advance(state, None, action=actions[i:i + batch, t].to(of(model)))
            x = model.decode(latent_of(state))
            finite = finite and bool(torch.isfinite(x).all())
            steps.append(to_uint8(x))
        out.append(np.stack(steps, 1))
    return np.concatenate(out), finite


def longest_still(frames: np.ndarray) -> int:
    """The longest run of bit-identical consecutive frames in uint8 [T, H, W, 3] (steps)."""
    same = (frames[1:] == frames[:-1]).all((1, 2, 3))
    best = run = 0
    for s in same:
        run = run + 1 if s else 0
        best = max(best, run)
    return best


def random_keys(n_actions: int, streams: int, steps: int, stride: int, seed: int) -> torch.Tensor:
    """int64 [streams, steps, stride]: the recorder's `mixed` policy (any action held 1 to 32
    steps, log-uniform), one seeded stream per row."""
    from .sources.atari import MIXED_LONGEST_HOLD
    rng = np.random.default_rng(seed)
    out = np.zeros((streams, steps), np.int64)
    for s in range(streams):
        t = 0
        while t < steps:
            hold = int(np.exp(rng.uniform(0.0, np.log(MIXED_LONGEST_HOLD + 1))))
            out[s, t:t + hold] = rng.integers(n_actions)
            t += hold
    return torch.from_numpy(out)[:, :, None].expand(-1, -1, stride).contiguous()


def evaluate_control(model, store: FrameStore, starts: int = 100, maze_steps: int = 1000,
                     maze_streams: int = 8, seed: int = 0) -> dict:
    """The `control` section of report.json (see the module docstring and docs/play.md)."""
    k, stride, horizon = model.context_frames, model.clip_stride, max(STEPS)
    geo = Geometry(store)
    clips = seed_action_clips(store, k + horizon, stride, starts, seed)
    context, truth = clips.frames[:, :k], clips.frames[:, k:]
    true_actions = clips.actions[:, k - 1:]
    perm = torch.from_numpy(np.random.default_rng(seed + 1).permuted(
        np.tile(np.arange(horizon), (starts, 1)), axis=1))
    shuffled = torch.gather(true_actions, 1, perm[:, :, None].expand_as(true_actions))
    (true, ok_true), (other, ok_other) = (rollout_actions(model, context, a) for a in (true_actions, shuffled))
    gen = {"true": true, "shuffled": other}
    real = to_uint8(truth)
    rep = {"setup": {"starts": starts, "context_frames": k, "stride": stride, "split": "test", "seed": seed,
                     "tile_px": TILE, "game": (store.meta.get("recorded") or {}).get("game"),
                     "shuffled": "the same actions of each start, permuted in time"}}
    last = clips.frames[:, k - 1]
    prev = torch.cat([last[:, None], truth[:, :-1]], 1)
    psnr = {}
    for name, frames in (*gen.items(), ("copy_last", None)):
        p = last[:, None].expand_as(truth) if frames is None else to_float(frames)
        psnr[name] = {str(t): _nanmean(metrics.psnr_moving(p[:, t - 1], truth[:, t - 1], prev[:, t - 1]))
                      for t in _steps(horizon)}
    rep["psnr_moving"] = psnr
    rep["nan"] = not (ok_true and ok_other)
    if geo.game is not None:
        where = positions(real, geo)
        rep["position"] = {name: _position_table(positions(f, geo), where) for name, f in gen.items()}
        still = np.repeat(positions(to_uint8(last), geo)[:, None], horizon, 1)  # she stays where she was
        rep["position"]["copy_last"] = _position_table(still, where)
    rep["maze"] = _maze(model, store, geo, maze_steps, maze_streams, seed)
    return rep


def _steps(horizon: int) -> list[int]:
    return [t for t in range(1, horizon + 1) if t & (t - 1) == 0 or t == horizon]


def _nanmean(x: torch.Tensor) -> float:
    return float(x.nanmean()) if (~x.isnan()).any() else float("nan")


def _position_table(gen: np.ndarray, real: np.ndarray) -> dict:
    """Per step of STEPS: starts where the real frame shows her (counted), the share of them
    within a tile (a step where the model lost her counts as a miss), the median error of the
    ones found, and the share found."""
    out = {}
    for t in STEPS:
        r, g = real[:, t - 1], gen[:, t - 1]
        counted = ~np.isnan(r[:, 0])
        err = np.hypot(*(g[counted] - r[counted]).T)
        found = ~np.isnan(err)
        out[str(t)] = {"counted": int(counted.sum()),
                       "within_tile": float((err[found] <= TILE).sum() / max(counted.sum(), 1)),
                       "median_px": float(np.median(err[found])) if found.any() else float("nan"),
                       "found": float(found.mean()) if counted.any() else float("nan")}
    return out


def _maze(model, store: FrameStore, geo: Geometry, steps: int, streams: int, seed: int) -> dict:
    """Random-key play from held-out starts for `steps` steps: the maze at the end against the
    real maze at the start, and frozen stretches against the real footage's longest."""
    k, stride = model.context_frames, model.clip_stride
    clips = seed_action_clips(store, k, stride, streams, seed + 2)
    keys = random_keys(model.n_actions if store.n_actions == 0 else store.n_actions, streams, steps, stride, seed)
    frames, finite = rollout_actions(model, clips.frames, keys)
    still = max(longest_still(f) for f in frames)
    real_still = max(longest_still(np.asarray(store.frames[s:e])) for s, e in store.episodes)
    out = {"steps": steps, "streams": streams, "longest_still": still, "real_longest_still": real_still,
           "frozen": bool(still > max(real_still, round(store.fps))),
           "nan": not finite}
    if geo.game is not None:
        start = wall_mask(to_uint8(clips.frames[:, -1]), geo)
        ious = iou(wall_mask(frames[:, -1], geo), start)
        out.update(iou_mean=float(ious.mean()), iou_min=float(ious.min()))
    return out
