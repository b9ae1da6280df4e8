"""The worldmodel's mirror option: decided on the footage, both images trained on, resumable."""
import numpy as np
import pytest
import torch
from conftest import blob_frames, write_store
from safetensors.torch import load_file
from test_worldmodel import interrupted_then_resumed, weights, wm_args

from everloop import checkpoint
from everloop.data import FrameStore, to_float
from everloop.errors import EverloopError
from everloop.models import build, make_config
from everloop.models.worldmodel_fit import hidden_pairs, mirror_symmetric
from everloop.train import train


def symmetric_frames() -> np.ndarray:
    """The blob and its mirror image in every frame: a footage with no left and right."""
    f = blob_frames(120)
    return np.maximum(f, f[:, :, ::-1])


def decided(tmp_path, frames, name):
    """mirror 'auto''s decision on a footage, as the vae stage's begin logs it."""
    m = build("worldmodel", make_config("worldmodel", "tiny", {"mirror": "auto"}))
    store = FrameStore(write_store(tmp_path / name, frames))
    logs = m.begin_stage("vae", store, {})
    assert m.mirror_on == bool(logs["mirror"]) and logs == mirror_symmetric(m, store)
    return logs


def test_auto_mirrors_a_footage_without_left_and_right_only(tmp_path):
    sym = decided(tmp_path, symmetric_frames(), "sym")
    assert sym["mirror"] == 1.0 and sym["mirror_ratio"] < 0.1
    lopsided = symmetric_frames()
    lopsided[:, :, :3] = 200  # a still bar on the left edge: mirrored, the scene changes
    assert decided(tmp_path, lopsided, "lop")["mirror"] == 0.0
    with pytest.raises(EverloopError, match="mirror 'both'"):
        build("worldmodel", make_config("worldmodel", "tiny", {"mirror": "both"}))


def test_mirrored_run_trains_on_both_images_and_resumes_exactly(tmp_path, monkeypatch):
    data = write_store(tmp_path / "d", blob_frames(120))
    on = {"mirror": "on", "posterior_noise": 0.0}
    run = train(wm_args(data, tmp_path / "a", steps=8, overrides=on))
    lat = load_file(str(run / "latents.safetensors"))
    model, _ = checkpoint.load_run(run)
    store = FrameStore(data)
    frames = to_float(store.frames[:16])
    with torch.no_grad():  # the mirror latents are the mirrored frames' encodings, not a copy
        assert torch.allclose(lat["mu_mirror"][:16], model.vae.encode(frames.flip(-1))[0], atol=1e-5)
    assert not torch.allclose(lat["mu_mirror"], lat["mu"], atol=1e-3)

    m = build("worldmodel", make_config("worldmodel", "tiny", on))  # batches need no weights
    m.begin_stage("vae", store, {})
    x = m.sample_batch(store, np.random.default_rng(0))
    real = to_float(store.frames[:])
    is_frame = lambda b, pool: (b[:, None] == pool[None]).flatten(2).all(-1).any(-1)
    as_is, flipped = is_frame(x, real), is_frame(x, real.flip(-1))
    assert (as_is | flipped).all() and flipped.any() and as_is.any()
    m.begin_stage("rnn", store, checkpoint.read_artifacts(run, m.artifact_files), fresh=False)
    z = m.sample_batch(store, np.random.default_rng(0))
    is_row = lambda b, mu: (b[..., None, :] == mu).all(-1).any(-1).all(-1)  # whole windows of one image
    from_mirror = is_row(z, lat["mu_mirror"])
    assert (is_row(z, lat["mu"]) | from_mirror).all() and from_mirror.any() and not from_mirror.all()
    both = len(hidden_pairs(m))
    m.mirror_latents = None
    assert both == 2 * len(hidden_pairs(m))
    resumed = interrupted_then_resumed(data, tmp_path / "b", 5, monkeypatch, steps=8, overrides=on)  # in the rnn stage
    sa, sb = weights(run, ""), weights(resumed, "")
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
