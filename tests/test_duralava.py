"""The duralava family on tiny configs: shapes, determinism, checkpoints, rollouts, training."""
import json

import numpy as np
import pytest
import torch

from everloop import checkpoint, rollout
from everloop.errors import EverloopError
from everloop.models import build, make_config
from everloop.models.duralava import latent_moments, normality_penalty, per_dim_penalty
from everloop.train import TrainArgs, train


def tiny_model(seed=0, **overrides):
    torch.manual_seed(seed)
    return build("duralava", make_config("duralava", "tiny", overrides)).eval()


def stream(model, n, **kw):
    return np.concatenate(list(rollout.frames(model, n, **kw)), axis=1)


def test_frames_shape_and_range():
    model = tiny_model()
    x = model.decode(model.reset(5))
    assert x.shape == (5, 3, 16, 16)
    assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    f = stream(model, 7, batch=2)
    assert f.shape == (2, 7, 16, 16, 3) and f.dtype == np.uint8


def test_rollout_is_deterministic_under_a_seed():
    model = tiny_model()
    a, b, c = stream(model, 20, seed=3), stream(model, 20, seed=3), stream(model, 20, seed=4)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_chunked_rollout_equals_one_long_rollout():
    model = tiny_model()
    long = next(rollout.latents(model, batch=2, seed=1, chunk=60))
    chunks = rollout.latents(model, batch=2, seed=1, chunk=7)
    short = torch.cat([next(chunks) for _ in range(9)], 1)[:, :60]
    assert torch.equal(long, short)
    a, b = stream(model, 50, seed=1, chunk=50), stream(model, 50, seed=1, chunk=6)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1  # decoder batch size may round differently


def test_interpolation_puts_frames_between_model_steps():
    model = tiny_model()
    steps = next(rollout.latents(model, seed=2, chunk=4))
    fine = next(rollout.latents(model, seed=2, interp=3, chunk=10))
    assert torch.allclose(fine[:, 0], steps[:, 0]) and torch.allclose(fine[:, 3], steps[:, 1], atol=1e-5)
    assert not torch.allclose(fine[:, 1], steps[:, 1], atol=1e-3)


def test_normality_penalty_is_zero_for_standard_normal_and_large_when_shifted():
    x = torch.randn(4000, 64, generator=torch.Generator().manual_seed(0))
    assert normality_penalty(x) < 0.01
    assert normality_penalty(x + 2) > 3.9
    assert normality_penalty(x * 3) > 3.9
    assert per_dim_penalty(x) < 0.01
    collapsed = x[:1].expand(4000, 64)  # every sample the same latent: pooled moments look fine
    assert normality_penalty(collapsed) < 0.5 and per_dim_penalty(collapsed) > 0.9


def test_long_latent_rollout_stays_finite_and_normal(tiny_run):
    model, _ = checkpoint.load_run(tiny_run)
    chunks = rollout.latents(model, batch=8, seed=0, chunk=1000)
    z = torch.cat([next(chunks) for _ in range(10)], 1)  # 10,000 steps
    assert torch.isfinite(z).all()
    m = latent_moments(z[:, -1000:])
    assert abs(m["mean"]) < 0.05 and abs(m["std"] - 1) < 0.05
    assert abs(m["skew"]) < 0.5 and abs(m["kurt"] - 3) < 1.0
    assert (z[:, -1] - z[:, -2]).abs().mean() > 1e-3  # still moving, not a fixed point


def test_save_load_gives_identical_frames(tiny_run, tmp_path):
    model, config = checkpoint.load_run(tiny_run)
    again, _ = checkpoint.load_run(tiny_run)
    assert config["family"] == "duralava" and config["step"] == 3
    assert np.array_equal(stream(model, 12, seed=5), stream(again, 12, seed=5))
    # and the loaded weights are the trained ones, not a fresh init
    fresh = tiny_model()
    assert not np.array_equal(stream(model, 12, seed=5), stream(fresh, 12, seed=5))


def test_resume_continues_exactly(tmp_path, tiny_data):
    kw = {"data": str(tiny_data), "family": "duralava", "preset": "tiny", "sample_every": 0, "progress": False, "precision": "fp32"}
    straight = train(TrainArgs(out=str(tmp_path / "a"), steps=4, **kw))
    train(TrainArgs(out=str(tmp_path / "b"), steps=2, **kw))
    resumed = train(TrainArgs(out=str(tmp_path / "b"), steps=4, resume=True, **kw))
    sa, sb = (checkpoint.resume_weights(r, checkpoint.load_train_state(r)) for r in (straight, resumed))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_training_overfits_one_clip(tmp_path):
    from conftest import write_store
    frame = np.zeros((16, 16, 3), np.uint8)
    frame[:8] = (220, 60, 20)  # red top, blue bottom: one still scene
    frame[8:] = (20, 40, 200)
    data = write_store(tmp_path / "one", np.repeat(frame[None], 12, 0))
    # the adversarial game alone (no motion/moment terms) must pull G onto the one scene
    run = train(TrainArgs(data=str(data), out=str(tmp_path / "run"), family="duralava", preset="tiny", steps=300,
                          sample_every=0, progress=False, precision="fp32",
                          overrides={"lr_g": 1e-3, "lr_d": 1e-3, "ema_decay": 0.0,
                                     "motion_weight": 0.0, "moment_weight": 0.0, "spread_weight": 0.0}))
    model, _ = checkpoint.load_run(run)
    before = np.abs(stream(tiny_model(), 8, batch=4).astype(float) - frame).mean()
    after = np.abs(stream(model, 8, batch=4).astype(float) - frame).mean()
    assert after < 25 and after < before / 3, (before, after)


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_checkpoint(tmp_path, tiny_data, monkeypatch):
    kw = {"data": str(tiny_data), "out": str(tmp_path / "run"), "family": "duralava", "preset": "tiny", "sample_every": 0,
              "progress": False, "precision": "fp32"}
    run = train(TrainArgs(steps=2, **kw))
    before = (run / "model.safetensors").read_bytes()
    from everloop.models.duralava import Duralava
    monkeypatch.setattr(Duralava, "train_step", lambda self, *a, **k: {"loss_d": float("nan"), "loss_g": 1.0})
    with pytest.raises(EverloopError, match="non-finite loss_d"):
        train(TrainArgs(steps=4, resume=True, **kw))
    assert (run / "model.safetensors").read_bytes() == before
    assert json.loads((run / "config.json").read_text())["step"] == 2


def test_wrong_frame_size_is_refused(tmp_path):
    from conftest import blob_frames, write_store
    data = write_store(tmp_path / "d24", blob_frames(size=24))
    with pytest.raises(EverloopError, match="24x24"):
        train(TrainArgs(data=str(data), out=str(tmp_path / "r"), preset="tiny", steps=1, progress=False))


@pytest.mark.parametrize("size", [12, 0])
def test_sizes_that_are_not_powers_of_two_are_refused(size):
    with pytest.raises(EverloopError, match="power of two"):
        build("duralava", make_config("duralava", "tiny", {"size": size}))


def test_motion_and_loop_metrics_tell_real_motion_from_loops_and_freezes():
    from conftest import blob_frames

    from bench.motion_stats import identical_runs, nearest_revisit, stream_spread
    from everloop.metrics import lag_motion
    moving = blob_frames(400, seed=1)
    m = lag_motion(moving, lags=(1, 10))
    assert m[10] > 2 * m[1] > 0
    loop = np.concatenate([moving[:5]] * 80)  # a 5-step loop, still moving frame to frame
    assert lag_motion(loop, lags=(1,))[1] > 0
    assert nearest_revisit(loop, every=7)["min_distance"] == 0
    assert nearest_revisit(moving, every=7)["min_distance"] > 0
    frozen = np.repeat(moving[:1], 50, 0)
    assert identical_runs(frozen) == 49 and identical_runs(moving) < 5
    assert stream_spread(np.repeat(moving[:1], 4, 0)) == 0 < stream_spread(moving[::100])
