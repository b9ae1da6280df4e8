"""The dream's sampling fitted to the footage (worldmodel config.fit_dream): the motion
statistics it matches, the fit at the RNN stage's end, the noise with memory that a
stream carries in its state (chunked == long), the colour table refitted on dreams, runs
saved before it sampling as before, and the RNN state rebuilt every `hidden_refresh` steps."""
import json

import numpy as np
import pytest
import torch

from everloop import checkpoint, rollout
from everloop.data import to_float
from everloop.errors import EverloopError
from everloop.models import build, config_from_dict, make_config
from everloop.models.worldmodel_fit import (
    DREAM_LAGS,
    DREAM_RHOS,
    DREAM_SIGMAS,
    footage_seeds,
    motion_stats,
)
from everloop.train import TrainArgs, train


@pytest.fixture
def fitted_run(tmp_path, tiny_data):
    out = tmp_path / "wm"
    return train(TrainArgs(data=str(tiny_data), out=str(out), family="worldmodel", preset="tiny", steps=8,
                           sample_every=0, progress=False, precision="fp32",
                           overrides={"fit_dream": True, "dream_colours": True}))


def test_motion_stats_of_a_straight_line_grow_with_the_lag():
    v = torch.tensor([0.3, 0.4])  # one step is 0.5 long
    line = torch.arange(20.0)[:, None] * v
    stats = motion_stats([line])
    assert torch.allclose(stats, torch.tensor([0.5 * k for k in DREAM_LAGS] + [0.5]), atol=1e-5)


def test_the_rnn_stage_refits_the_colour_table_on_dreams_never_worse_on_other_dreams(fitted_run):
    events = [json.loads(line) for line in (fitted_run / "log.jsonl").read_text().splitlines()]
    fit = next(e for e in events if "dream_colour_l1_before" in e)
    assert 0 <= fit["dream_colour_l1_after"] <= fit["dream_colour_l1_before"] <= 2
    if "dream_colour_confirm_after" in fit and fit["dream_colour_l1_after"] < fit["dream_colour_l1_before"]:
        assert fit["dream_colour_confirm_after"] < fit["dream_colour_confirm_before"]  # kept: both sets agreed
    model, _ = checkpoint.load_run(fitted_run)
    assert model.cfg.dream_colours and torch.isfinite(model.colour_lut).all()
    assert 0 <= float(model.colour_lut.min()) and float(model.colour_lut.max()) <= 1


def test_dreams_fitted_on_the_footage_continue_training_windows_other_ones_per_shift(fitted_run):
    model, _ = checkpoint.load_run(fitted_run)
    c = model.cfg
    model.latents = (torch.arange(300.0)[:, None].expand(300, c.z_dim).clone(), None)  # a latent says its frame
    model.ranges = ([(0, 120), (150, 300)], [(120, 150)])
    span = (c.seed_frames - 1) * c.clip_stride
    sets = [footage_seeds(model, 16, shift=k / 4)[..., 0].long() for k in range(4)]
    for frames in sets:
        assert frames.shape == (16, c.seed_frames)
        assert ((frames[:, 1:] - frames[:, :-1]) == c.clip_stride).all()  # at the model's stride
        first = frames[:, 0]
        inside = ((first >= 0) & (first + span < 120)) | ((first >= 150) & (first + span < 300))
        assert inside.all()  # never across the held-out gap or past the end
    assert all(not torch.equal(sets[0], other) for other in sets[1:])


def test_the_rnn_stage_fits_a_sigma_scale_and_noise_memory_from_the_grid(fitted_run):
    events = [json.loads(line) for line in (fitted_run / "log.jsonl").read_text().splitlines()]
    fit = next(e for e in events if "dream_sigma" in e)
    assert min(abs(fit["dream_sigma"] - s) for s in DREAM_SIGMAS) < 1e-6
    assert min(abs(fit["dream_rho"] - r) for r in DREAM_RHOS) < 1e-6
    assert 0 <= fit["dream_cost"] <= fit["dream_cost_unfitted"]
    model, _ = checkpoint.load_run(fitted_run)
    assert float(model.dream_sigma) == pytest.approx(fit["dream_sigma"]) and model.temperature == 1.0


@pytest.mark.parametrize("rho", [0.0, 0.85])
def test_a_stream_with_noise_memory_is_the_same_however_it_is_chunked(fitted_run, rho):
    model, _ = checkpoint.load_run(fitted_run)
    model.dream_rho.fill_(rho)

    def steps(chunks):
        gen = torch.Generator().manual_seed(3)
        state, out = model.start(2, gen), []
        for n in chunks:
            for _ in range(n):
                state = model.advance(state, gen)
                out.append(rollout.latent_of(state))
        return torch.stack(out), state

    (long, end), (chunked, _) = steps([12]), steps([5, 7])
    assert torch.equal(long, chunked) and torch.isfinite(long).all()
    assert len(end) == (3 if rho else 2)  # the last normal draw rides along only with memory
    assert (long[1:] - long[:-1]).abs().amax() > 0  # it moves


def test_a_run_saved_before_fit_dream_samples_white_noise_at_tau_1(fitted_run):
    config = json.loads((fitted_run / "config.json").read_text())["config"]
    assert config["fit_dream"] is True
    old = config_from_dict("worldmodel", {k: v for k, v in config.items() if k != "fit_dream"})
    assert old.fit_dream is False
    model, _ = checkpoint.load_run(fitted_run)
    model.dream_sigma.fill_(1.0)
    model.dream_rho.fill_(0.0)

    def stream(fit: bool):
        model.cfg.fit_dream = fit  # off: as such a run samples (World Models' white noise)
        gen = torch.Generator().manual_seed(0)
        state = model.advance(model.start(2, gen), gen)
        return state

    old_state, unit_state = stream(False), stream(True)
    assert len(old_state) == 2 and torch.equal(old_state[0], unit_state[0])  # a unit fit changes nothing


@pytest.mark.parametrize("head", ["mdn", "flow"])
def test_hidden_refresh_rebuilds_the_rnn_state_every_k_steps_whatever_the_chunks(tiny_data, head):
    k = 3

    def model(refresh: int):
        torch.manual_seed(0)
        cfg = make_config("worldmodel", "tiny", {"dream_head": head, "hidden_refresh": refresh, "fit_dream": True})
        m = build("worldmodel", cfg).eval()
        m.dream_rho.fill_(0.5)  # the noise memory rides in the state beside the recent latents
        return m

    on, off = model(k), model(0)
    clip = to_float(np.load(tiny_data / "frames.npy")[:2])[None]  # seed_frames = 2
    for seed_clip in (None, clip):
        long = next(rollout.latents(on, 2, 1, chunk=30, seed_clip=seed_clip))
        chunks = rollout.latents(on, 2, 1, chunk=4, seed_clip=seed_clip)
        assert torch.equal(long, torch.cat([next(chunks) for _ in range(8)], 1)[:, :30])
    plain = next(rollout.latents(off, 2, 1, chunk=30, seed_clip=clip))
    assert torch.equal(long[:, :k + 1], plain[:, :k + 1]) and not torch.allclose(long, plain)
    gen = torch.Generator().manual_seed(1)
    state = on.start(2, gen, seed_clip=clip)
    for _ in range(k):  # k steps after the seed clip's warm-up the state is warmed up again
        state = on.advance(state, gen)
    assert state[2].shape[1] == on.context_frames
    assert torch.equal(state[1][0], on.warm_state(state[2])[1][0])
    with pytest.raises(EverloopError, match="hidden_refresh -1"):
        build("worldmodel", make_config("worldmodel", "tiny", {"hidden_refresh": -1}))
