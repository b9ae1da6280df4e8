"""Does re-drawing a dream from real patches bring back the footage's sharp detail?

    .venv/bin/python bench/patch_decode.py RUN --data DATA [--frames 1000]

Dreams 8 streams of RUN (its own RNN, VAE and calibration) and scores them with `everloop
eval`'s drift metrics, as they are and after each variant of a patch re-draw: every
overlapping PxP patch of a generated frame is replaced by its nearest patch at the same
place in the training frames (the bank), the overlaps averaged. The VAE's decoder is blurry
(docs/fidelity.md: its reconstructions hold a third to a half of the footage's fast change);
real patches are sharp by construction.

A variant is `[wSIGMA:]P:S:K[:BANK[:DIMS]][:recon|:res|:luma][:deadN]`: PxP patches S apart,
the mean of the K nearest, BANK frames, matched on DIMS principal components (0: all),
overlaps under a Gaussian window of SIGMA pixels (default: plain mean); `recon` matches on
the decoder's drawing of the bank, `res` adds the real patch's difference from that drawing
(the form kept as `patch_detail`, models/calibration.py), `luma` only its luminance;
`deadN` holds pixels that moved by under N grey levels (kept as `still_hold`); `none:deadN`
is the dream as it is, held. Results: docs/fidelity.md."""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F

from everloop import rollout
from everloop.checkpoint import load_run
from everloop.data import FrameStore
from everloop.evaluate import evaluate_frames
from everloop.metrics import lag_motion
from everloop.models import calibration

METRICS = ("feature_fd", "color_hist", "diff_energy", "flow_hist", "temporal_spectrum", "brightness")


def unfold(x: torch.Tensor, p: int, s: int) -> torch.Tensor:
    """[N, 3, H, W] -> [L, N, 3 * p * p]."""
    return F.unfold(x, p, stride=s).permute(2, 0, 1).contiguous()


SIGMA = float("inf")  # window of a patch when pasted (pixels, Gaussian); inf = plain mean


def fold(patches: torch.Tensor, size: int, p: int, s: int) -> torch.Tensor:
    """[L, N, 3 * p * p] -> [N, 3, H, W], overlaps averaged under a Gaussian window."""
    r = torch.arange(p) - (p - 1) / 2
    w = torch.exp(-(r[:, None] ** 2 + r[None] ** 2) / (2 * SIGMA ** 2)).flatten().repeat(3)  # [3 p p]
    cols = (patches * w).permute(1, 2, 0)
    ones = w[None, :, None].expand(1, -1, cols.shape[-1])
    return F.fold(cols, size, p, stride=s) / F.fold(ones, size, p, stride=s)


def redraw(frames: np.ndarray, bank: torch.Tensor, p: int, s: int, k: int = 1, chunk: int = 256,
           proj: torch.Tensor | None = None, keys: torch.Tensor | None = None, add: bool = False) -> np.ndarray:
    """uint8 [N, H, W, 3] -> uint8, each patch replaced by the mean of its k nearest in bank
    (searched in the projection `proj` [D, d] of the patches when given)."""
    out = []
    keys = bank if keys is None else keys  # what is searched: the bank, or its decoder's drawing
    keys = keys if proj is None else keys @ proj
    for i in range(0, len(frames), chunk):
        x = torch.from_numpy(frames[i:i + chunk]).float().div(255).permute(0, 3, 1, 2)
        q = unfold(x, p, s)                                       # [L, n, D]
        q = q if proj is None else q @ proj
        d = (q * q).sum(-1, keepdim=True) - 2 * q @ keys.transpose(1, 2) + (keys * keys).sum(-1)[:, None]
        idx = d.topk(k, -1, largest=False).indices                # [L, n, k]
        pick = torch.gather(bank[:, None].expand(-1, idx.shape[1], -1, -1), 2,
                            idx[..., None].expand(-1, -1, -1, bank.shape[-1])).mean(2)
        y = fold(pick, x.shape[-1], p, s) + (x if add else 0)
        out.append((y.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy())
    return np.concatenate(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--data", required=True)
    ap.add_argument("--frames", type=int, default=1000)
    ap.add_argument("--bank", type=int, default=2048, help="training frames in the patch bank")
    ap.add_argument("--variants", nargs="+", default=["8:4:1", "8:2:1", "16:4:1", "8:4:4"],
                    help="patch:stride:k[:bank frames[:pca dims]][:recon]")
    a = ap.parse_args()
    torch.set_num_threads(1)
    model, _ = load_run(a.run)
    model.eval()
    store = FrameStore(a.data)
    train, _ = store.split(model.cfg.holdout)
    idx = np.concatenate([np.arange(s, e) for s, e in train])
    idx = idx[np.linspace(0, len(idx) - 1, min(a.bank, len(idx))).astype(int)]
    bank_frames = torch.from_numpy(np.asarray(store.frames[idx])).float().div(255).permute(0, 3, 1, 2)
    stride = model.cfg.clip_stride
    real = np.asarray(store.frames[::stride])
    real_motion = lag_motion(real, (1, 5, 25))
    with torch.no_grad():
        gen = np.concatenate(list(rollout.frames(model, a.frames, batch=8, seed=0)), 1)
    variants = [("as dreamt", gen)]
    for v in a.variants:
        parts = v.split(":")
        dead = int(parts.pop()[4:]) if parts[-1].startswith("dead") else 0
        if parts == ["none"]:
            variants.append((v, rollout.hold_still(gen, None, dead)[0]))
            continue
        global SIGMA
        SIGMA = float(parts.pop(0)[1:]) if parts[0].startswith("w") else float("inf")
        resnap = parts[-1] == "snap"  # the still background snapped again after the re-draw
        parts = parts[:-1] if resnap else parts
        recon = parts[-1] in ("recon", "res")
        luma = parts[-1] == "luma"  # as res, but only the difference's luma, on all three channels
        recon = recon or luma
        residual = parts[-1] in ("res", "luma")  # add the real patch's difference from its drawing
        p, s, k, m, dims = (list(map(int, parts[:5 if not recon else -1])) + [0, 0])[:5]
        t0 = time.time()
        pick = np.linspace(0, len(bank_frames) - 1, m or len(bank_frames)).astype(int)
        bank = unfold(bank_frames[pick], p, s)
        proj = None
        if dims:  # one PCA of every patch, whatever its place
            flat = bank.flatten(0, 1)
            flat = flat[torch.randperm(len(flat), generator=torch.Generator().manual_seed(0))[:20000]]
            proj = torch.linalg.svd(flat - flat.mean(0), full_matrices=False)[2][:dims].T.contiguous()
        keys = None
        if recon:  # Freeman's example-based super-resolution: match the decoder's own blur
            with torch.no_grad():
                drawn = torch.cat([model.decode(model.vae.encode(bank_frames[pick][i:i + 256])[0])
                                   for i in range(0, len(pick), 256)])
            keys = unfold((drawn.clamp(0, 1) * 255).round() / 255, p, s)
        values = bank - keys if residual else bank
        if luma:  # Freeman et al. super-resolve the luminance only
            y = values.view(*values.shape[:2], 3, -1)
            y = (0.299 * y[:, :, 0] + 0.587 * y[:, :, 1] + 0.114 * y[:, :, 2])[:, :, None].expand_as(y)
            values = y.reshape(values.shape)
        new = np.stack([redraw(g, values, p, s, k, proj=proj, keys=keys, add=residual) for g in gen])
        if resnap:
            snap = calibration.snap_to_plate
            x = torch.from_numpy(new).float().div(255).flatten(0, 1).permute(0, 3, 1, 2)
            x = snap(x, model.still_plate, model.stillness, model.cfg.still_snap)
            new = (x.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).reshape(new.shape).numpy()
        new = rollout.hold_still(new, None, dead)[0]
        print(f"{v}: {len(gen) * len(gen[0]) / (time.time() - t0):.0f} frames/s", flush=True)
        variants.append((v, new))
    for name, g in variants:
        rep = evaluate_frames(g, [real], steps_per_second=store.fps / stride, horizons=(100, a.frames))
        late = [lag_motion(s[len(s) // 2:], (1, 5, 25)) for s in g]
        motion = {k: round(float(np.mean([m[k] for m in late]) / real_motion[k]), 2) for k in (1, 5, 25)}
        print(json.dumps({"variant": name, "worst": {m: round(max(rep["drift"][m].values()), 2) for m in METRICS
                                                    if m in rep["drift"]},
                          "flags": [f for f in ("frozen", "flicker", "loop", "collapse", "twins", "nan") if rep.get(f)],
                          "motion_vs_real": motion}), flush=True)
        np.save(f"/tmp/patch-{a.run.strip('/').split('/')[-1]}-{name.replace(':', '-').replace(' ', '_')}.npy", g[:, -64:])


if __name__ == "__main__":
    main()
