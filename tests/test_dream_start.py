"""Against a dream that replays its clip: the eval's streams start at moments spread over
the footage; how likely the RNN finds held-out footage per temperature (the memorisation
diagnostic of bench/dream_temperature.py); rnn_dropout's default and its legacy value."""
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from everloop import checkpoint
from everloop.data import FrameStore, spread_clips
from everloop.models import config_from_dict
from everloop.models.mdn import nll_by_temperature
from everloop.models.worldmodel_fit import heldout_sequences
from everloop.train import TrainArgs, train


@pytest.fixture
def held_run(tmp_path, tiny_data):
    """A tiny worldmodel run with a held-out tail (the tiny preset holds out nothing)."""
    return train(TrainArgs(data=str(tiny_data), out=str(tmp_path / "wm"), family="worldmodel", preset="tiny",
                           steps=8, sample_every=0, progress=False, precision="fp32", overrides={"holdout": 0.25}))


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


def test_a_config_saved_before_rnn_dropout_resumes_without_it(held_run):
    config = json.loads((held_run / "config.json").read_text())
    assert config["config"]["rnn_dropout"] == 0.5
    old = {k: v for k, v in config["config"].items() if k != "rnn_dropout"}
    assert config_from_dict("worldmodel", old).rnn_dropout == 0.0
