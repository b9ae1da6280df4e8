"""What the worldmodel fits from the data with no gradient, called by worldmodel.py: at
the encode stage the decoder's calibration (patch bank of real detail, colour table, still
plate; calibration.py); at the RNN stage's end the dream's sampling (fit_dream) and the
colour table again, on dreams (fit_dream_colours); the flow head's training pairs
(hidden_pairs); the footage's latents (encode_frames) and whether to mirror it
(mirror_symmetric); and the held-out latent sequences that heldout_nll and
bench/dream_temperature.py score."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .. import devices
from ..data import to_float, to_uint8, window_starts
from ..errors import EverloopError
from ..metrics import psnr_of_mse
from . import calibration
from .mdn import mixture_nll


def spread(ranges, n: int) -> np.ndarray:
    """Up to n frame indices spread evenly over [start, end) ranges (none for no ranges)."""
    idx = np.concatenate([np.arange(s, e) for s, e in ranges] or [np.zeros(0, np.int64)])
    return idx[np.linspace(0, len(idx) - 1, min(n, len(idx))).astype(np.int64)]


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR of the batch's pooled MSE."""
    return psnr_of_mse(F.mse_loss(a.float(), b.float()).item())


@torch.no_grad()
def encode_frames(model, store, mirrored: bool = False, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """(mu, logvar) [N, L] of every frame of the store (or of its mirror image)."""
    mus, logvars = [], []
    for i in range(0, len(store), batch):
        x = to_float(store.frames[i:i + batch]).to(devices.of(model))
        mu, logvar = model.vae.encode(x.flip(-1) if mirrored else x)
        mus.append(mu)
        logvars.append(logvar)
    return torch.cat(mus).contiguous(), torch.cat(logvars).contiguous()


@torch.no_grad()
def reconstruction_psnr(model, store, mu: torch.Tensor, frames: int = 256) -> dict:
    """{train_psnr, heldout_psnr}: the VAE's decodings of posterior means of up to `frames`
    frames of each split, spread evenly, against the real ones (pooled MSE)."""
    logs = {}
    for key, ranges in zip(("train", "heldout"), model.ranges):
        idx = spread(ranges, frames)
        if len(idx):
            real = to_float(store.frames[idx]).to(mu.device)
            logs[f"{key}_psnr"] = psnr(model.vae.decode(mu[torch.from_numpy(idx)]), real)
    return logs


@torch.no_grad()
def mirror_symmetric(model, store, frames: int = 600) -> dict:
    """{"mirror": 1.0 or 0.0, "mirror_ratio": r}: whether the footage has no left and right.
    r is how far the mean and the std images of up to `frames` training frames (spread
    evenly) are from their own mirror images, over how far the first half's are from the
    second half's (the larger of the two ratios); the footage is mirrored when r < 1, i.e.
    when mirroring it changes it less than time does. On the dev set: goop 0.66 and the
    aquarium 0.80 (their runs' logs), the fire ~0.6 (mirrored); the waves ~2.2, Ms. Pac-Man
    ~3.4, the lava lamp ~17 (a lamp a pixel off the centre over ten steady minutes: not)."""
    x = to_float(store.frames[spread(model.ranges[0], frames)])
    half = len(x) // 2
    if half < 2:
        return {"mirror": 0.0}
    ratio = 0.0
    for stat in (lambda t: t.mean(0), lambda t: t.std(0)):
        whole, early, late = stat(x), stat(x[:half]), stat(x[half:])
        ratio = max(ratio, ((whole - whole.flip(-1)).abs().mean() / ((early - late).abs().mean() + 1e-6)).item())
    return {"mirror": float(ratio < 1.0), "mirror_ratio": ratio}


@torch.no_grad()
def fit_decoder(model, store, mu: torch.Tensor, frames: int = 512, pixels: int = 300_000) -> dict:
    """Fit the decoder's calibration in the order decode() applies it: the patch bank;
    then, on up to `frames` training frames spread evenly (none next to a bank frame,
    where they can be had: their detail must come from other frames, as a dream's does),
    the colour table from their reconstructions (posterior means, with the bank's detail)
    against the real frames, `pixels` of each drawn at the same places (a fixed seed),
    and the still plate from the real frames. Logs the colour histograms' L1 before/after
    the table. The table after the detail: on a fire (86% black) the detail alone tints
    black next to a flame (colour L1 on such frames 0.010 -> 0.025), the table takes it
    back (0.011)."""
    logs, near_bank = {}, np.zeros(0, np.int64)
    if model.cfg.patch_detail > 0:
        bank = fit_patches(model, store, mu)
        near_bank = np.concatenate([bank - 1, bank, bank + 1])
    train = spread(model.ranges[0], len(store))
    far = train[~np.isin(train, near_bank)]
    pool = far if len(far) >= 64 else train
    idx = pool[spread([(0, len(pool))], frames)]
    real = to_float(store.frames[idx])
    if model.cfg.still_snap > 0:
        plate, stillness = calibration.still_plate(real)
        model.still_plate, model.stillness = plate.to(devices.of(model)), stillness.to(devices.of(model))
        logs["still_share"] = stillness.mean().item()
    if model.cfg.colour_table > 0:
        drawn = model.decode_detail(model.vae.decode(mu[torch.from_numpy(idx).to(mu.device)]).float()).cpu()
        drawn, real = (t.permute(0, 2, 3, 1).reshape(-1, 3) for t in (drawn, real))
        pick = np.random.default_rng(0).permutation(len(real))[:pixels]
        real, drawn = real[pick].numpy(), drawn[pick].numpy()
        table = calibration.fit_table(drawn, real, grid=model.cfg.colour_table)
        model.colour_lut = table.to(devices.of(model))
        mapped = calibration.apply_pixels(torch.from_numpy(drawn), table).numpy()
        logs.update(colour_l1_before=calibration.histogram_l1(drawn, real),
                    colour_l1_after=calibration.histogram_l1(mapped, real))
    return logs


@torch.no_grad()
def fit_patches(model, store, mu: torch.Tensor) -> np.ndarray:
    """The patch bank: `patch_bank` training frames spread evenly (repeated when there are
    fewer) and the decoder's drawing of each, from its posterior mean; returns their indices."""
    idx = spread(model.ranges[0], model.cfg.patch_bank)
    idx = idx[np.arange(model.cfg.patch_bank) % len(idx)]
    real = to_float(store.frames[idx])
    drawn = torch.cat([model.vae.decode(mu[torch.from_numpy(idx[i:i + 256]).to(mu.device)]).float()
                       for i in range(0, len(idx), 256)]).cpu()
    dev = devices.of(model)
    model.patch_real, model.patch_drawn = (torch.from_numpy(to_uint8(t)).permute(0, 3, 1, 2).contiguous().to(dev)
                                         for t in (real, drawn))
    model.patch_proj = calibration.fit_projection(model.patch_drawn.float().cpu() / 255,
                                                 model.cfg.patch_detail).to(dev)
    return idx


@torch.no_grad()
def hidden_pairs(model, most: int = 65536) -> torch.Tensor:
    """[P, mdn.feature_size + 2 z_dim]: the RNN's hidden state after each training latent
    (posterior means, every clip_stride-th frame from each phase, the RNN run over the whole
    range as a dream runs it, without dropout) beside the posterior (mu, logvar) of the latent that
    followed, from the footage and from its mirror image when it is mirrored; up to `most`
    pairs spread evenly. What the flow stage trains on (its targets
    drawn from that posterior as the RNN's are); the same on resume (nothing random)."""
    c = model.cfg
    was_training = model.mdn.training
    model.mdn.eval()
    pairs = []
    for mu, logvar in [model.latents] + ([model.mirror_latents] if model.mirror_latents else []):
        for s, e in model.ranges[0]:
            for phase in range(c.clip_stride):
                idx = torch.arange(s + phase, e, c.clip_stride, device=mu.device)
                if len(idx) > 1:
                    out, _ = model.mdn.features(mu[idx][None, :-1])
                    pairs.append(torch.cat([out[0], mu[idx[1:]], logvar[idx[1:]]], -1))
    model.mdn.train(was_training)
    if not pairs:
        raise EverloopError("the flow stage needs two training latents a clip_stride apart; the data is too short")
    pairs = torch.cat(pairs)
    return pairs[torch.from_numpy(spread([(0, len(pairs))], most)).to(pairs.device)]


@torch.no_grad()
def heldout_sequences(model, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Latent sequences (z, scored) that run from the training frames into each held-out
    tail, one per stride phase, z drawn as in training (posterior_noise, fixed seed); only
    predictions of held-out latents are scored. A 2-minute clip's tail is shorter than one
    training window, so the context comes from the frames before it."""
    c, (mu, logvar) = model.cfg, model.latents
    train, heldout = model.ranges
    gen = torch.Generator().manual_seed(seed)
    out = []
    for hs, he in heldout:
        first = next((max(s, hs - c.seq_len * c.clip_stride) for s, e in train if e == hs and s < hs), hs)
        for phase in range(c.clip_stride):
            idx = torch.arange(first + phase, he, c.clip_stride)
            scored = idx[1:] >= hs
            if len(idx) < 2 or not scored.any():
                continue
            eps = torch.randn(len(idx), c.z_dim, generator=gen).to(mu.device)
            out.append((mu[idx] + c.posterior_noise * torch.exp(0.5 * logvar[idx]) * eps, scored))
    return out


@torch.no_grad()
def heldout_nll(model, windows: int = 64) -> dict | None:
    """Mean NLL per latent dim (nats) of the posterior means of held-out windows; None
    where nothing is held out or the held-out tail is shorter than one window."""
    c = model.cfg
    if not model.ranges or not model.ranges[1] or model.latents is None:
        return None
    starts = window_starts(model.ranges[1], c.seq_len * c.clip_stride + 1, windows, np.random.default_rng(0))
    if starts is None:
        return None
    idx = starts[:, None] + np.arange(c.seq_len + 1) * c.clip_stride
    z = model.latents[0][torch.from_numpy(idx)]
    (logits, mu, log_sigma), _ = model.mdn(z[:, :-1])
    return {"heldout_nll": mixture_nll(logits, mu, log_sigma, z[:, 1:]).item()}


DREAM_SIGMAS = (0.35, 0.5, 0.71, 1.0)
DREAM_RHOS = (0.0, 0.5, 0.7, 0.85, 0.92, 0.97)
DREAM_LAGS = (1, 2, 4, 8)


def motion_stats(z: list[torch.Tensor]) -> torch.Tensor:
    """How latent sequences [T, L] move: RMS displacement at each of DREAM_LAGS steps, and
    the 99th percentile of one step's length (where a burst of fast change would show)."""
    rms = [torch.cat([(s[k:] - s[:-k]).pow(2).sum(-1) for s in z]).mean().sqrt() for k in DREAM_LAGS]
    one = torch.cat([(s[1:] - s[:-1]).norm(dim=-1) for s in z])
    return torch.stack([*rms, torch.quantile(one.float(), 0.99)])


def footage_seeds(model, streams: int, shift: float = 0.0) -> torch.Tensor | None:
    """Training latents [streams, seed_frames, L] for `streams` dreams to continue, their
    moments spread evenly over the training frames (as `everloop eval` starts its streams),
    each moved on by `shift` (0..1) of the gap between two, so that sets of another shift
    start at other moments; None where no window fits."""
    c, mu = model.cfg, model.latents[0]
    span = (c.seed_frames - 1) * c.clip_stride + 1
    ranges = [(s, e - span + 1) for s, e in model.ranges[0] if e - s >= span]
    if not ranges:
        return None
    starts = spread(ranges, streams)
    if shift:  # a start moved past its range's end wraps to the earliest start: still a training window
        total = sum(e - s for s, e in ranges)
        moved = spread(ranges, total)  # every start, in order
        at = np.searchsorted(moved, starts) + int(shift * total / max(len(starts), 1))
        starts = moved[at % len(moved)]
    idx = torch.from_numpy(starts)[:, None] + torch.arange(c.seed_frames) * c.clip_stride
    return mu[idx.to(mu.device)]


@torch.no_grad()
def dream_on(model, seeds: torch.Tensor, steps: int, generator: torch.Generator, every: int = 1) -> torch.Tensor:
    """Latents [S, ceil(steps / every), L] of dreams that continue seed latents [S, T, L]
    (the RNN run over all but the last, which is the first state) for `steps` steps at the
    model's temperature, every `every`-th step kept (the first always)."""
    state, zs = model.warm_state(seeds), []
    for t in range(steps):
        state = model.advance(state, generator)
        if t % every == 0:
            zs.append(state[0])
    return torch.stack(zs, 1)


@torch.no_grad()
def fit_dream(model, streams: int = 16, steps: int = 300, seed: int = 0) -> dict:
    """The dream's sigma scale and noise memory (config.fit_dream) whose latent motion is
    closest to the training footage's: for each (sigma scale, rho) of the grid, `streams`
    dreams continue `seed_frames` real latents from moments spread over the training frames
    for `steps` steps at tau 1 (one fixed seed for all), and the sum of squared log-ratios
    of their motion_stats to the footage's (posterior means, every clip_stride-th frame) is
    the cost. With the flow head the scale multiplies the noise it maps to the next latent,
    and rho is that noise's memory. With the MDN only the sigmas are scaled, not the mixture weights: a dream's branching
    stays as likely as the RNN learnt it (a lower temperature, which also sharpens the
    weights, put two of the lamp's 8 streams on one path by t = 100k). Sets
    model.dream_sigma / dream_rho; logs the choice and its cost beside the unfitted one's.
    The model must be in eval mode (no dropout), as in a dream."""
    c, mu = model.cfg, model.latents[0]
    real = [mu[torch.arange(s + p, e, c.clip_stride, device=mu.device)]
            for s, e in model.ranges[0] for p in range(c.clip_stride)]
    real = [r for r in real if len(r) > max(DREAM_LAGS)]
    seeds = footage_seeds(model, streams)
    if not real or seeds is None:
        return {"dream_fit": "skipped: too few training latents"}
    want = motion_stats(real).log()
    kept = (model.dream_sigma.clone(), model.dream_rho.clone(), model.temperature)
    model.temperature, costs = 1.0, {}
    for scale in DREAM_SIGMAS:
        for rho in DREAM_RHOS:
            model.dream_sigma.fill_(scale)
            model.dream_rho.fill_(rho)
            got = motion_stats(list(dream_on(model, seeds, steps, torch.Generator().manual_seed(seed))))
            costs[scale, rho] = float((got.log() - want).pow(2).sum()) if torch.isfinite(got).all() else float("inf")
    (scale, rho), cost = min(costs.items(), key=lambda kv: kv[1])
    model.dream_sigma.fill_(scale if np.isfinite(cost) else float(kept[0]))
    model.dream_rho.fill_(rho if np.isfinite(cost) else float(kept[1]))
    model.temperature = kept[2]
    return {"dream_sigma": float(model.dream_sigma), "dream_rho": float(model.dream_rho), "dream_cost": cost,
            "dream_cost_unfitted": costs[1.0, 0.0]}


@torch.no_grad()
def fit_dream_colours(model, store, streams: int = 64, steps: int = 300, every: int = 10,
                      pixels: int = 300_000, check_pixels: int = 4_000_000, seed: int = 0) -> dict:
    """The colour table fitted again (config.dream_colours), now on dreams as they are
    played: `streams` streams continuing training latents spread over the footage (as
    `everloop eval`'s streams continue real clips), every `every`-th of their `steps` steps,
    against training frames spread over the footage. The table is fitted on one set of
    dreams and chosen (against the reconstructions' table too) on another, of other start
    moments and another seed, so that it is kept only where it fixes how the decoder draws
    dreams, not which scenes those dreams happened to show; a new table must then also beat
    the old one on a third set (on the fire one set of 16 dreams scored 0.117 where another
    scored 0.018 with the same table, and the table chosen on it doubled the eval's colour
    ratio). Why continue the footage, not the prior: dreams from the prior spend their first
    ~150 steps unlike any played stream (the fire's: 0.036-0.045 L1 from the footage's
    colours there, 0.014-0.027 after), and a table fitted on 64 of them made the eval's
    colour 2.2x -> 4.9x; why 64 streams: 16 showed too few scenes of a bursty process.
    The table is fitted on `pixels` pixels of each side and chosen on up to `check_pixels`:
    two samples of 300,000 pixels of the same frames lie 0.007-0.009 apart in histogram L1
    by chance (of 4,000,000: 0.001-0.002; the lamp, the fire, the waves), about as far as
    the tables to choose between lie (the waves': 0.016 against 0.012).
    The model must be in eval mode."""
    def colours(frames: torch.Tensor, rng: np.random.Generator, n: int = pixels) -> np.ndarray:
        flat = frames.permute(0, 2, 3, 1).reshape(-1, 3).cpu().numpy()
        return flat[rng.permutation(len(flat))[:n]]

    def dreams(k: int) -> torch.Tensor:
        seeds = footage_seeds(model, streams, shift=k / 4)
        z = dream_on(model, seeds, steps, torch.Generator().manual_seed(seed + k), every)
        z = z.transpose(0, 1).flatten(0, 1)  # time-major, as the pixels are drawn from it
        return torch.cat([model.decode_detail(model.vae.decode(z[i:i + 256]).float()) for i in range(0, len(z), 256)])

    if footage_seeds(model, streams) is None:
        return {"dream_colours": "skipped: too few training latents"}
    rng = np.random.default_rng(seed)
    real = to_float(store.frames[spread(model.ranges[0], 2 * streams * -(-steps // every))])
    fit_real, check_real = colours(real[0::2], rng), colours(real[1::2], rng, check_pixels)
    fit_drawn, check_drawn = colours(dreams(1), rng), colours(dreams(2), rng, check_pixels)

    def score(drawn: np.ndarray, table: torch.Tensor) -> float:
        return calibration.histogram_l1(calibration.apply_pixels(torch.from_numpy(drawn), table).numpy(), check_real)

    kept = model.colour_lut.detach().cpu().float()
    table = calibration.fit_table(fit_drawn, fit_real, grid=model.cfg.colour_table, check=(check_drawn, check_real),
                                  keep=kept)
    before = score(check_drawn, kept)
    logs = {"dream_colour_l1_before": before, "dream_colour_l1_after": score(check_drawn, table)}
    if not torch.equal(table, kept):  # a third set of dreams must agree: one set of a bursty scene can mislead
        confirm = colours(dreams(3), rng, check_pixels)
        logs.update(dream_colour_confirm_before=score(confirm, kept), dream_colour_confirm_after=score(confirm, table))
        if logs["dream_colour_confirm_after"] >= logs["dream_colour_confirm_before"]:
            table, logs["dream_colour_l1_after"] = kept, before
    model.colour_lut = table.to(devices.of(model))
    return logs
