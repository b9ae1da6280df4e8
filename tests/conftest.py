"""Shared tiny fixtures: a 16x16 moving-blob dataset and a tiny trained run."""
import json
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pytest
import torch

torch.set_num_threads(1)  # tests on a shared 2-core machine: 1 thread is stable


def blob_frames(n: int = 120, size: int = 16, seed: int = 0) -> np.ndarray:
    """A dark frame with a bright blob drifting around: uint8 [n, size, size, 3]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    cy, cx, frames = size / 2, size / 2, []
    for _ in range(n):
        cy = np.clip(cy + rng.normal(0, 0.7), 3, size - 4)
        cx = np.clip(cx + rng.normal(0, 0.7), 3, size - 4)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 6.0)
        rgb = np.stack([0.2 + 0.8 * blob, 0.1 + 0.5 * blob, 0.3 * (1 - blob)], -1)
        frames.append((rgb * 255).round().astype(np.uint8))
    return np.stack(frames)


def write_store(path, frames: np.ndarray, episodes=None, fps: float = 30.0):
    """Write a dataset folder in the on-disk contract directly (no decoding)."""
    path.mkdir(parents=True, exist_ok=True)
    np.save(path / "frames.npy", frames)
    n, h, w, _ = frames.shape
    meta = {"frames": n, "height": h, "width": w, "fps": fps,
            "episodes": episodes or [[0, n]], "source": "synthetic"}
    (path / "meta.json").write_text(json.dumps(meta))
    return path


@pytest.fixture
def tiny_data(tmp_path):
    return write_store(tmp_path / "data", blob_frames())


@pytest.fixture
def tiny_run(tmp_path, tiny_data):
    from everloop.train import TrainArgs, train
    return train(TrainArgs(data=str(tiny_data), out=str(tmp_path / "run"), family="duralava", preset="tiny", steps=3,
                           sample_every=0, progress=False, precision="fp32"))
