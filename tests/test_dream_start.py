"""Where a dream starts: the worldmodel's start bank of real moments and the eval's starts
spread over the footage; and how likely the RNN finds held-out footage per temperature."""
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from everloop import checkpoint, rollout
from everloop.data import FrameStore, spread_clips
from everloop.models import build, config_from_dict, make_config
from everloop.models.mdn import nll_by_temperature
from everloop.models.worldmodel_fit import heldout_sequences
from everloop.train import TrainArgs, train


@pytest.fixture
def held_run(tmp_path, tiny_data):
    """A tiny worldmodel run with a held-out tail (the tiny preset holds out nothing)."""
    return train(TrainArgs(data=str(tiny_data), out=str(tmp_path / "wm"), family="worldmodel", preset="tiny",
                           steps=8, sample_every=0, progress=False, precision="fp32", overrides={"holdout": 0.25}))


def events(run) -> dict:
    out = {}
    for line in (run / "log.jsonl").read_text().splitlines():
        out.update(json.loads(line))
    return out


def test_spread_clips_start_far_apart_and_follow_the_seed(tiny_data):
    store = FrameStore(tiny_data)  # one 120-frame episode
    a, b, c = (spread_clips(store, 4, 3, 8, seed) for seed in (0, 0, 1))
    assert a.shape == (8, 4, 3, 16, 16) and a.dtype == torch.float32 and 0 <= a.min() and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)
    frames = np.load(tiny_data / "frames.npy")
    firsts = [int(np.flatnonzero((frames == np.asarray(x[0].permute(1, 2, 0) * 255).round()).all((1, 2, 3)))[0])
              for x in a]
    gaps = np.diff(firsts)
    assert (gaps >= 13).all() and (gaps <= 15).all()  # 111 valid starts / 8 streams ~ 13.9 apart


def test_streams_start_at_different_real_moments_of_the_bank(held_run):
    model, _ = checkpoint.load_run(held_run)
    bank = model.start_latents
    assert bank.shape == (model.cfg.start_bank, model.cfg.seed_frames, model.cfg.z_dim) and bank.abs().sum() > 0
    lat = next(rollout.latents(model, batch=5, seed=2, chunk=3))
    firsts = lat[:, 0]
    match = [(bank[:, -1] - z).abs().amax(1).min().item() for z in firsts]
    assert max(match) < 1e-6  # each stream shows a bank moment's latent first
    assert len({tuple(z.tolist()) for z in firsts}) == 5  # and no two streams the same one
    again = next(rollout.latents(model, batch=5, seed=2, chunk=3))
    assert torch.equal(lat, again)
    assert not torch.equal(lat, next(rollout.latents(model, batch=5, seed=3, chunk=3)))


def test_an_untrained_model_starts_from_the_prior():
    model = build("worldmodel", make_config("worldmodel", "tiny")).eval()
    assert not model.start_latents.any()
    lat = next(rollout.latents(model, batch=2, seed=0, chunk=4))
    assert torch.isfinite(lat).all() and not torch.equal(lat[0], lat[1])


def test_held_out_nll_by_temperature_scores_only_the_held_out_tail(held_run, tiny_data):
    model, _ = checkpoint.load_run(held_run)
    model.ranges = FrameStore(tiny_data).split(model.cfg.holdout)
    lat = load_file(held_run / "latents.safetensors")
    model.latents = (lat["mu"], lat["logvar"])
    seqs = heldout_sequences(model)
    (hs, he), = model.ranges[1]
    assert sum(int(s.sum()) for _, s in seqs) == he - hs  # every held-out latent scored once (stride 1)
    nll = nll_by_temperature(model.mdn, seqs, [0.5, 1.0, 2.0])
    assert all(np.isfinite(nll)) and len(set(nll)) == 3


def test_configs_saved_before_keep_the_prior_start_and_no_dropout(held_run):
    config = json.loads((held_run / "config.json").read_text())
    assert config["config"]["start_bank"] > 0
    old = {k: v for k, v in config["config"].items() if k not in ("start_bank", "rnn_dropout")}
    cfg = config_from_dict("worldmodel", old)
    assert cfg.start_bank == 0 and cfg.rnn_dropout == 0.0
