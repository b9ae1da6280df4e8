"""The family contract (everloop/models/base.py), checked the same way for every registered
family and for a toy family defined here: that a family is one file and one line in
models.FAMILIES is proven by the toy passing what the real ones pass, through the same
generic code (rollout, checkpoint, the training loop)."""
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from conftest import blob_frames, write_store
from torch import nn

from everloop import checkpoint, models, rollout
from everloop.errors import EverloopError
from everloop.models.base import Family
from everloop.train import TrainArgs, train


@dataclass
class ToyConfig:
    size: int = 16
    """Frame side."""
    latent_dim: int = 4
    """Size of the latent walk."""
    clip_stride: int = 1
    """Video frames per step."""
    lr: float = 1e-2
    """Adam learning rate."""


class Toy(Family):
    """A latent random walk decoded by one linear layer: the smallest family there is."""

    family = "toy"

    def __init__(self, cfg: ToyConfig):
        super().__init__()
        self.cfg = cfg
        self.out = nn.Linear(cfg.latent_dim, 3 * cfg.size * cfg.size)

    def start(self, batch, generator=None, seed_clip=None):
        return torch.randn(batch, self.cfg.latent_dim, generator=generator)

    def advance(self, state, generator=None):
        return 0.9 * state + 0.3 * torch.randn(state.shape, generator=generator)

    def decode(self, latent):
        return torch.sigmoid(self.out(latent)).view(-1, 3, self.cfg.size, self.cfg.size)

    def configure_optimizers(self):
        return {"toy": torch.optim.Adam(self.parameters(), lr=self.cfg.lr)}

    def clip_spec(self):
        return 4, 2, self.cfg.clip_stride

    def train_step(self, batch, opt, autocast=False):
        z = torch.zeros(batch.shape[0] * batch.shape[1], self.cfg.latent_dim)
        loss = ((self.decode(z) - batch.flatten(0, 1)) ** 2).mean()
        opt["toy"].zero_grad()
        loss.backward()
        opt["toy"].step()
        return {"loss": loss.item()}


@pytest.fixture(autouse=True)
def toy_registered(monkeypatch):
    monkeypatch.setitem(models.FAMILIES, "toy", (ToyConfig, {"default": {}, "tiny": {}}, Toy))


FAMILIES = ["duralava", "worldmodel", "multiscale", "playable", "toy"]


def tiny(family: str, seed: int = 0) -> Family:
    torch.manual_seed(seed)
    return models.build(family, models.make_config(family, "tiny")).eval()


def clip_for(model) -> torch.Tensor | None:
    """A real clip for families that continue real frames (the last one is shown first)."""
    if not model.context_frames:
        return None
    x = blob_frames(model.context_frames, 16, 1)
    return torch.from_numpy(x).permute(0, 3, 1, 2).float().div(255)[None]


def stream(model, n, **kw):
    return np.concatenate(list(rollout.frames(model, n, seed_clip=clip_for(model), **kw)), axis=1)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_family_is_a_Family_with_every_verb(family):
    model = tiny(family)
    assert isinstance(model, Family) and model.family == family
    assert model.stages() and abs(sum(s for _, s in model.stages()) - 1) < 1e-9
    assert model.clip_stride >= 1 and isinstance(model.configure_optimizers(), dict)


@pytest.mark.parametrize("family", FAMILIES)
def test_frames_have_the_contract_shape_and_range_and_move(family):
    x = stream(tiny(family), 12, batch=2)
    assert x.dtype == np.uint8 and x.shape == (2, 12, 16, 16, 3)
    assert np.abs(np.diff(x.astype(int), axis=1)).mean() > 0  # not frozen


@pytest.mark.parametrize("family", FAMILIES)
def test_a_seed_gives_one_stream_and_chunks_do_not_change_it(family):
    model = tiny(family)
    a, b = stream(model, 10, seed=3, chunk=64), stream(model, 10, seed=3, chunk=3)
    assert np.array_equal(a, b)
    if not model.requires_seed_clip:  # a next-frame predictor is deterministic: its clip is its variety
        assert not np.array_equal(a, stream(model, 10, seed=4))


@pytest.mark.parametrize("family", FAMILIES)
def test_save_then_load_gives_identical_frames(family, tmp_path):
    model = tiny(family)
    checkpoint.save_run(tmp_path / "run", model, {"step": 0})
    loaded, _ = checkpoint.load_run(tmp_path / "run")
    assert type(loaded) is type(model)
    assert np.array_equal(stream(model, 6, seed=1), stream(loaded, 6, seed=1))


@pytest.mark.parametrize("family", FAMILIES)
def test_the_one_training_loop_trains_it(family, tmp_path):
    data = write_store(tmp_path / "data", blob_frames(120, 16, 0))
    run = train(TrainArgs(data=str(data), out=str(tmp_path / "run"), family=family, preset="tiny", steps=3,
                          sample_every=0, progress=False, precision="fp32"))
    model, _ = checkpoint.load_run(run)
    assert model.family == family and stream(model, 4).shape[1] == 4


@pytest.mark.parametrize("family", FAMILIES)
def test_a_checkpoint_holds_each_weight_once(family, tmp_path):
    """model.safetensors: what generation needs; train_state.pt: the training-only rest."""
    data = write_store(tmp_path / "data", blob_frames(120, 16, 0))
    run = train(TrainArgs(data=str(data), out=str(tmp_path / "run"), family=family, preset="tiny", steps=2,
                          sample_every=0, progress=False, precision="fp32"))
    weights = checkpoint.read_weights(run / checkpoint.WEIGHTS)
    state = checkpoint.load_train_state(run)
    training = state["training_weights"]
    model = tiny(family)
    assert "model" not in state and not weights.keys() & training.keys()
    assert weights.keys() | training.keys() == model.state_dict().keys()
    assert {k.split(".")[0] for k in training} == set(model.training_only())
    assert bool(training) == (family not in ("toy", "playable"))  # the others train a discriminator
    loaded, _ = checkpoint.load_run(run)
    assert loaded.state_dict().keys() == weights.keys()


def test_a_save_cut_off_between_its_two_files_resumes_exactly(tmp_path):
    """A kill after a save wrote model.safetensors but before train_state.pt: the resume
    takes the weights that belong to the old train_state.pt (model.previous.safetensors)."""
    data = write_store(tmp_path / "data", blob_frames(120, 16, 0))
    kw = {"data": str(data), "family": "duralava", "preset": "tiny", "sample_every": 0, "progress": False,
          "precision": "fp32"}
    straight = train(TrainArgs(out=str(tmp_path / "a"), steps=4, **kw))
    run = train(TrainArgs(out=str(tmp_path / "b"), steps=2, **kw))
    weights, state = (run / checkpoint.WEIGHTS).read_bytes(), (run / checkpoint.TRAIN_STATE).read_bytes()
    train(TrainArgs(out=str(run), steps=3, resume=True, **kw))
    assert not (run / checkpoint.PREVIOUS).exists()  # a save that completes keeps no pair but its own
    (run / checkpoint.TRAIN_STATE).write_bytes(state)  # what the kill left: step-3 weights, step-2 state
    with pytest.raises(EverloopError, match="from step 3.*from step 2"):
        train(TrainArgs(out=str(run), steps=4, resume=True, **kw))
    (run / checkpoint.PREVIOUS).write_bytes(weights)  # ... and the step-2 weights the save kept
    train(TrainArgs(out=str(run), steps=4, resume=True, **kw))
    a, b = (checkpoint.resume_weights(r, checkpoint.load_train_state(r)) for r in (straight, run))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("family", FAMILIES)
def test_an_unknown_option_is_rejected(family):
    with pytest.raises(EverloopError, match="no_such_option"):
        models.make_config(family, "tiny", {"no_such_option": 1})
