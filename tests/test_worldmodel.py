"""The worldmodel family on tiny configs: the mixture NLL, sampling, stages, rollouts, training."""
import json
import math

import numpy as np
import pytest
import torch
from torch.distributions import Categorical, MixtureSameFamily, Normal

import everloop.loop as loop_module
from everloop import checkpoint, rollout
from everloop.data import to_float
from everloop.errors import EverloopError
from everloop.models import build, make_config
from everloop.models.mdn import (
    floor_log_sigma,
    mixture_log_prob,
    mixture_nll,
    mixture_sample,
)
from everloop.train import TrainArgs, train


def tiny_model(seed=0, **overrides):
    torch.manual_seed(seed)
    return build("worldmodel", make_config("worldmodel", "tiny", overrides)).eval()


def stream(model, n, **kw):
    return np.concatenate(list(rollout.frames(model, n, **kw)), axis=1)


def wm_args(data, out, **kw):
    return TrainArgs(data=str(data), out=str(out), family="worldmodel", preset="tiny", sample_every=0,
                     progress=False, precision="fp32", **kw)


def interrupted_then_resumed(data, out, stop_at, monkeypatch, **kw):
    """A run Ctrl-C'd right after step `stop_at` was logged, then `--resume`d to its end."""
    class StopAt(loop_module.tqdm):
        def set_postfix(self, *a, step=0, **k):
            if step == stop_at:
                raise KeyboardInterrupt
            return super().set_postfix(*a, step=step, **k)

    monkeypatch.setattr(loop_module, "tqdm", StopAt)
    with pytest.raises(KeyboardInterrupt):
        train(wm_args(data, out, **kw))
    monkeypatch.undo()
    assert checkpoint.load_train_state(out)["step"] == stop_at
    return train(wm_args(data, out, resume=True, **kw))


@pytest.fixture
def wm_run(tmp_path, tiny_data):
    return train(wm_args(tiny_data, tmp_path / "wm", steps=8))


def weights(run, prefix):
    """Every weight the run saved, the discriminator's (in train_state.pt) too."""
    sd = checkpoint.resume_weights(run, checkpoint.load_train_state(run))
    return {k: v for k, v in sd.items() if k.startswith(prefix)}


# ---- the mixture density ------------------------------------------------------------------------

def test_mixture_nll_equals_torch_mixture_same_family():
    g = torch.Generator().manual_seed(0)
    shape = (4, 7, 3, 5)  # batch, time, latent dims, components
    logits = 3 * torch.randn(shape, generator=g, dtype=torch.float64)
    mu = 2 * torch.randn(shape, generator=g, dtype=torch.float64)
    log_sigma = torch.rand(shape, generator=g, dtype=torch.float64) * 4 - 3
    x = 3 * torch.randn(shape[:-1], generator=g, dtype=torch.float64)
    ref = MixtureSameFamily(Categorical(logits=logits), Normal(mu, log_sigma.exp())).log_prob(x)
    ours = mixture_log_prob(logits, mu, log_sigma, x)
    assert ours.shape == ref.shape and torch.allclose(ours, ref, rtol=1e-10, atol=1e-10)
    nll = mixture_nll(logits, mu, log_sigma, x)  # float32 internally
    assert nll.dtype == torch.float32 and math.isclose(nll.item(), -ref.mean().item(), rel_tol=1e-5)


def test_nll_stays_finite_and_exact_with_sigma_at_the_floor():
    shape = (2, 3, 4, 5)
    raw = torch.full(shape, -1e4, requires_grad=True)  # a collapsed sigma, far below the floor
    mu = torch.zeros(shape, requires_grad=True)
    logits = torch.zeros(shape, requires_grad=True)
    log_sigma = floor_log_sigma(raw, 0.01)
    assert torch.allclose(log_sigma.exp(), torch.full(shape, 0.01))
    x = torch.full(shape[:-1], 50.0)  # 5000 sigmas away: the density itself underflows to 0
    assert (Normal(0.0, 0.01).log_prob(x).exp() == 0).all()
    nll = mixture_nll(logits, mu, log_sigma, x)
    nll.backward()
    assert torch.isfinite(nll) and nll.item() > 1e6
    assert all(torch.isfinite(t.grad).all() for t in (raw, mu, logits))
    ref = -Normal(torch.zeros((), dtype=torch.float64), 0.01).log_prob(torch.tensor(50.0, dtype=torch.float64))
    assert math.isclose(nll.item(), ref.item(), rel_tol=1e-5)
    # at the data the floor caps the reward: -log(0.01 sqrt(2 pi)) per dim, not -1e22
    at_mu = mixture_nll(logits, mu, log_sigma, torch.zeros(shape[:-1]))
    assert math.isclose(at_mu.item(), math.log(0.01 * math.sqrt(2 * math.pi)), rel_tol=1e-5)


def test_temperature_sharpens_weights_and_scales_std_by_sqrt_tau():
    n = 20000
    logits = torch.tensor([0.0, math.log(3.0)]).expand(n, 1, 2)  # weights 1/4, 3/4 at tau = 1
    mu = torch.tensor([-10.0, 10.0]).expand(n, 1, 2)
    log_sigma = torch.tensor([0.0, math.log(2.0)]).expand(n, 1, 2)
    g = torch.Generator().manual_seed(0)
    x = mixture_sample(logits, mu, log_sigma, 0.5, g)[:, 0]
    right = x[x > 0]
    assert abs(len(right) / n - 0.9) < 0.01  # softmax(logits / 0.5): 1 : 9
    assert abs(right.std().item() - 2 * math.sqrt(0.5)) < 0.05  # not 2 * 0.5 (NN-Dreams)
    x1 = mixture_sample(logits, mu, log_sigma, 1.0, g)[:, 0]
    assert abs((x1 > 0).float().mean().item() - 0.75) < 0.015


def test_rnn_dropout_acts_in_training_only():
    """The same weights dream the same stream whatever rnn_dropout is (eval mode), while in
    training two passes over the same window differ; a bad value is a one-line error."""
    plain, dropped = tiny_model(), tiny_model(rnn_dropout=0.5)
    dropped.load_state_dict(plain.state_dict())
    assert np.array_equal(stream(plain, 12, batch=2, seed=3), stream(dropped, 12, batch=2, seed=3))
    z = torch.randn(2, 5, plain.cfg.z_dim)
    dropped.mdn.train()
    assert not torch.equal(dropped.mdn(z)[0][1], dropped.mdn(z)[0][1])
    with pytest.raises(EverloopError, match="rnn_dropout"):
        tiny_model(rnn_dropout=1.0)


# ---- sampling -----------------------------------------------------------------------------------

def test_frames_shape_and_range():
    model = tiny_model()
    x = model.decode(rollout.latent_of(model.start(5)))
    assert x.shape == (5, 3, 16, 16) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    lat = next(rollout.latents(model, batch=2, chunk=9))
    assert lat.shape == (2, 9, 8) and lat.dtype == torch.float32
    f = stream(model, 7, batch=2)
    assert f.shape == (2, 7, 16, 16, 3) and f.dtype == np.uint8


def test_rollout_is_deterministic_under_a_seed():
    model = tiny_model()
    a, b, c = stream(model, 20, seed=3), stream(model, 20, seed=3), stream(model, 20, seed=4)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


@pytest.mark.parametrize("interp", [1, 3])
def test_chunked_rollout_equals_one_long_rollout(tiny_data, interp):
    model = tiny_model()
    clip = to_float(np.load(tiny_data / "frames.npy")[:2])[None]
    for seed_clip in (None, clip):
        long = next(rollout.latents(model, 2, 1, interp, chunk=60, seed_clip=seed_clip))
        chunks = rollout.latents(model, 2, 1, interp, chunk=7, seed_clip=seed_clip)
        short = torch.cat([next(chunks) for _ in range(9)], 1)[:, :60]
        assert torch.equal(long, short)
    a, b = stream(model, 50, seed=1, chunk=50), stream(model, 50, seed=1, chunk=6)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1  # decoder batch size may round differently


def test_a_seed_clip_starts_the_dream_at_its_last_frame(tiny_data):
    model = tiny_model()
    real = to_float(np.load(tiny_data / "frames.npy")[10:12])[None]  # seed_frames = 2
    lat = next(rollout.latents(model, batch=3, seed=0, chunk=4, seed_clip=real))
    want = model.vae.encode(real[0, -1:])[0]
    assert torch.allclose(lat[:, 0], want.expand(3, -1), atol=1e-6)
    assert not torch.allclose(lat[0, 1:], lat[1, 1:])  # the streams then diverge
    with pytest.raises(EverloopError, match="seed clip"):
        model.start(1, seed_clip=real[:, :1])
    duralava = build("duralava", make_config("duralava", "tiny")).eval()
    with pytest.raises(EverloopError, match="cannot start from a seed clip"):
        next(rollout.latents(duralava, seed_clip=real))


def test_self_fed_training_pass_equals_the_sequence_pass_when_it_feeds_nothing():
    model = tiny_model(self_feed=1e-9)  # the step loop, but (almost surely) no own inputs
    z = torch.randn(3, 6, 8, generator=torch.Generator().manual_seed(0))
    looped = model.mdn.self_fed(z, 0.0, model.cfg.self_feed)
    whole, _ = model.mdn(z)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(looped, whole))
    model.cfg.self_feed = 1.0
    fed = model.mdn.self_fed(z, 0.0, model.cfg.self_feed)
    assert torch.allclose(fed[1][:, 0], whole[1][:, 0], atol=1e-6)  # the first input is always real
    assert not torch.allclose(fed[1][:, 1:], whole[1][:, 1:], atol=1e-3)


# ---- training: stages, checkpoints, resume ------------------------------------------------------

def test_stages_leave_weights_latents_and_logs(wm_run):
    config = json.loads((wm_run / "config.json").read_text())
    assert config["family"] == "worldmodel" and config["step"] == 8
    state = checkpoint.load_train_state(wm_run)
    assert state["stage"] == "flow" and state["stage_starts"] == {"vae": 0, "encode": 4, "rnn": 4, "flow": 6}
    from safetensors.torch import load_file
    lat = load_file(str(wm_run / "latents.safetensors"))
    assert lat["mu"].shape == (120, 8) == lat["logvar"].shape
    stages = [json.loads(line).get("stage") for line in (wm_run / "log.jsonl").read_text().splitlines()]
    assert stages == ["vae"] * 4 + ["encode"] + ["rnn"] * 2 + ["flow"] * 3  # the flow stage's begin logs its pairs


def test_save_load_gives_identical_frames(wm_run):
    model, _ = checkpoint.load_run(wm_run)
    again, _ = checkpoint.load_run(wm_run)
    assert np.array_equal(stream(model, 12, seed=5), stream(again, 12, seed=5))
    assert not np.array_equal(stream(model, 12, seed=5), stream(tiny_model(), 12, seed=5))


@pytest.mark.parametrize("stop_at", [2, 5, 7])  # inside the vae, the rnn and the flow stage
def test_resume_continues_exactly_inside_a_stage(tmp_path, tiny_data, monkeypatch, stop_at):
    straight = train(wm_args(tiny_data, tmp_path / "a", steps=8))
    resumed = interrupted_then_resumed(tiny_data, tmp_path / "b", stop_at, monkeypatch, steps=8)
    sa, sb = weights(straight, ""), weights(resumed, "")
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_stage_redoes_one_stage_and_keeps_the_ones_before(wm_run, tiny_data):
    vae, mdn = weights(wm_run, "vae."), weights(wm_run, "mdn.")
    train(wm_args(tiny_data, wm_run, steps=8, stage="rnn"))
    assert all(torch.equal(v, weights(wm_run, "vae.")[k]) for k, v in vae.items())
    assert not all(torch.equal(v, weights(wm_run, "mdn.")[k]) for k, v in mdn.items())
    assert checkpoint.load_train_state(wm_run)["step"] == 8
    train(wm_args(tiny_data, wm_run, steps=8, stage="vae"))
    assert not all(torch.equal(v, weights(wm_run, "vae.")[k]) for k, v in vae.items())
    with pytest.raises(EverloopError, match="vae, encode, rnn"):
        train(wm_args(tiny_data, wm_run, steps=8, stage="dreams"))


def test_heldout_metrics_are_logged(tmp_path, tiny_data):
    run = train(wm_args(tiny_data, tmp_path / "h", steps=6, overrides={"holdout": 0.25}))
    events = {}
    for line in (run / "log.jsonl").read_text().splitlines():
        events.update(json.loads(line))
    assert 0 < events["heldout_psnr"] < 60 and math.isfinite(events["heldout_nll"])


def test_training_overfits_one_clip(tmp_path):
    from conftest import write_store
    scenes = np.zeros((4, 16, 16, 3), np.uint8)
    scenes[:] = (20, 30, 60)
    for k, (y, x) in enumerate([(0, 0), (0, 8), (8, 8), (8, 0)]):  # a bright square going round
        scenes[k, y:y + 8, x:x + 8] = (230, 160, 40)
    clip = np.concatenate([scenes] * 3)  # 12 frames: A B C D A B C D ...
    data = write_store(tmp_path / "one", clip)
    run = train(wm_args(data, tmp_path / "run", steps=500,
                        overrides={"lr_vae": 3e-3, "lr_rnn": 1e-2, "vae_share": 0.5, "context_noise": 0.0,
                                   "flow_head_updates": 200}))  # the tiny preset's 4 learn nothing
    model, _ = checkpoint.load_run(run)
    model.temperature = 0.05
    seed = to_float(clip[:2])[None]  # A B: the dream must go on C D A B ...
    truth = clip[np.arange(1, 13) % 4].astype(float)
    err = lambda m: np.abs(stream(m, 12, seed_clip=seed)[0].astype(float) - truth).mean()
    fresh = tiny_model()
    fresh.temperature = 0.05
    before, after = err(fresh), err(model)
    assert after < 12 and after < before / 4, (before, after)


# ---- the command line ---------------------------------------------------------------------------

def test_generate_from_a_seed_clip_at_a_temperature(wm_run, tiny_data, tiny_run, tmp_path, capsys):
    from conftest import blob_frames, write_store
    from test_cli import assert_one_line_error, run_cli
    outs = {}
    for name, temp in (("a", 1.0), ("b", 1.0), ("c", 0.3)):
        code, err = run_cli("generate", wm_run, "--frames", 10, "--seed-clip", tiny_data, "--seed-start", 5,
                            "--temperature", temp, "--out", tmp_path / f"{name}.gif", "--quiet", capsys=capsys)
        assert code == 0, err
        outs[name] = (tmp_path / f"{name}.gif").read_bytes()
    assert outs["a"] == outs["b"] != outs["c"]
    big = write_store(tmp_path / "d32", blob_frames(20, size=32))
    for args, needle in (((wm_run, "--seed-clip", big), "32x32"),
                         ((wm_run, "--seed-clip", tiny_data, "--seed-start", 119), "--seed-start"),
                         ((tiny_run, "--seed-clip", tiny_data), "cannot start from a seed clip"),
                         ((tiny_run, "--temperature", 0.5), "no sampling temperature")):
        code, err = run_cli("generate", *args, "--frames", 5, "--out", tmp_path / "x.gif", capsys=capsys)
        assert_one_line_error(code, err, needle)


def test_eval_at_a_temperature_reports_latents_and_prediction(wm_run, tiny_data, tmp_path):
    from everloop.evaluate import evaluate
    reps = [evaluate(str(wm_run), str(tiny_data), 40, str(tmp_path / f"r{t}"), streams=2, progress=False,
                     stride=1, pred_steps=3, pred_clips=2, temperature=t) for t in (0.5, 1.5)]
    assert [r["temperature"] for r in reps] == [0.5, 1.5]
    for r in reps:
        assert set(r["latent"]["16"]) == {"mean", "std", "skew", "kurt"}
        assert list(r["prediction"]) == ["1", "2", "3"]
    assert reps[0]["distance"] != reps[1]["distance"]  # the temperature reaches the dream
    run = train(TrainArgs(data=str(tiny_data), out=str(tmp_path / "d"), family="duralava", preset="tiny", steps=1,
                          sample_every=0, progress=False, precision="fp32"))  # duralava: no temperature
    with pytest.raises(EverloopError, match="no sampling temperature"):
        evaluate(str(run), str(tiny_data), 40, str(tmp_path / "rd"), progress=False, temperature=0.5)


def test_eval_scores_prediction_over_what_the_held_out_split_holds(wm_run, tiny_data, tmp_path):
    # 120 frames: the held-out tail (10%) is 12 frames, 2 context + 10 steps at stride 1,
    # so --pred-steps 64 would fail after the whole stream was generated; it is cut instead.
    from everloop.evaluate import evaluate
    rep = evaluate(str(wm_run), str(tiny_data), 40, str(tmp_path / "r"), streams=2, progress=False,
                   stride=1, pred_steps=64, pred_clips=2)
    assert list(rep["prediction"]) == [str(i) for i in range(1, 11)]
    assert any("prediction scored over 10 steps, not 64" in n for n in rep["notes"])


def test_rnn_windows_hold_posterior_means_when_asked(wm_run, tiny_data):
    from everloop.data import FrameStore
    cfg = json.loads((wm_run / "config.json").read_text())["config"]
    store = FrameStore(tiny_data)
    batches = {}
    for samples in (True, False):
        m = build("worldmodel", make_config("worldmodel", "tiny", {**cfg, "posterior_noise": float(samples)}))
        saved = checkpoint.read_artifacts(wm_run, m.artifact_files)  # RUN/latents.safetensors
        m.begin_stage("rnn", store, saved, fresh=False)
        batches[samples] = m.sample_batch(store, np.random.default_rng(0))
        mu = m.latents[0]
    is_row = lambda b: (b[..., None, :] == mu).all(-1).any(-1)
    assert is_row(batches[False]).all()          # every z is exactly some frame's posterior mean
    assert not is_row(batches[True]).any()       # samples are not


def test_stride_jitter_plays_each_window_at_one_stride_near_clip_stride(wm_run, tiny_data):
    from everloop.data import FrameStore
    cfg = json.loads((wm_run / "config.json").read_text())["config"]
    store = FrameStore(tiny_data)
    m = build("worldmodel", make_config("worldmodel", "tiny", {**cfg, "posterior_noise": 0.0, "clip_stride": 3,
                                                                "stride_jitter": 1}))
    m.begin_stage("rnn", store, checkpoint.read_artifacts(wm_run, m.artifact_files), fresh=False)
    z, mu = m.sample_batch(store, np.random.default_rng(0)), m.latents[0]
    rows = torch.stack([torch.nonzero((w[:, None, :] == mu).all(-1))[:, 1] for w in z])  # [B, seq_len + 1]
    steps = rows.diff(dim=1)
    assert (steps == steps[:, :1]).all()  # one stride per window
    assert set(steps[:, 0].tolist()) <= {2, 3, 4} and len(set(steps[:, 0].tolist())) > 1
    with pytest.raises(EverloopError, match="stride_jitter 3"):
        build("worldmodel", make_config("worldmodel", "tiny", {"clip_stride": 3, "stride_jitter": 3}))


# ---- the sharper decoder: output, upsampling, L1, the patch discriminator ----------------------

@pytest.mark.parametrize("upsample,output,blocks,loss,grid", [("transposed", "sigmoid", 0, "l2", 0),
                                                              ("nearest", "clip", 1, "l1+l2", 0),
                                                              ("transposed", "clip", 0, "l1+l2", 4)])
def test_decoder_variants_keep_shape_and_range_and_train(tiny_data, upsample, output, blocks, loss, grid):
    from everloop.data import FrameStore
    model = tiny_model(decoder_upsample=upsample, decoder_output=output, decoder_blocks=blocks, recon_loss=loss,
                       latent_grid=grid, z_dim=32 if grid else 8)
    store = FrameStore(tiny_data)
    model.ranges = ([list(e) for e in store.episodes], [])
    model.begin_stage("vae", store, {})  # the median frame the foreground weight compares with
    x = model.decode(3 * torch.randn(64, model.cfg.z_dim))
    assert x.shape == (64, 3, 16, 16) and 0 <= x.min() and x.max() <= 1 and x.std() > 0
    opt, rng = model.configure_optimizers(), np.random.default_rng(0)
    before = {k: v.clone() for k, v in model.vae.state_dict().items()}
    logs = model.train(True).train_step(model.sample_batch(store, rng), opt)
    assert math.isfinite(logs["recon"]) and any(not torch.equal(v, model.vae.state_dict()[k]) for k, v in before.items())


def test_foreground_weight_charges_what_differs_from_the_median_frame(tiny_data, tmp_path):
    from everloop.data import FrameStore
    store = FrameStore(tiny_data)
    losses = {}
    for w in (0.0, 10.0):
        model = tiny_model(foreground_weight=w)
        model.ranges = ([list(e) for e in store.episodes], [])
        model.begin_stage("vae", store, {})
        assert (model.background is None) == (w == 0)
        x = model.sample_batch(store, np.random.default_rng(0))
        torch.manual_seed(0)
        losses[w] = model.train(True).train_step(x, model.configure_optimizers())["recon"]
    # the blob differs from the median (dark) frame: its pixels count 11x, so the loss grows
    assert losses[10.0] > 1.5 * losses[0.0], losses
    again = tiny_model(foreground_weight=10.0)
    again.ranges = model.ranges
    again.begin_stage("vae", store, {})  # a resumed run recomputes the same background
    assert torch.equal(again.background, model.background) and model.background.shape == (3, 16, 16)


def test_a_latent_grid_keeps_regions_apart():
    # z as a 4x4 map of 2 channels on 16x16 frames: changing the code of one corner cell
    # changes the decoded frame near that corner and leaves the far corner alone.
    model = tiny_model(latent_grid=4, z_dim=32).eval()
    with torch.no_grad():
        z = torch.zeros(1, 32)
        base = model.decode(z)
        z.view(1, 2, 4, 4)[0, :, 0, 0] = 3.0
        diff = (model.decode(z) - base).abs()[0].sum(0)
    assert diff[:4, :4].sum() > 0 and diff[12:, 12:].sum() == 0
    with pytest.raises(EverloopError, match="latent_grid"):
        tiny_model(latent_grid=3, z_dim=36)


def test_adversarial_term_starts_at_adv_start_and_resumes_exactly(tmp_path, tiny_data, monkeypatch):
    adv = {"adv_weight": 0.5, "adv_start": 2}
    straight = train(wm_args(tiny_data, tmp_path / "a", steps=8, overrides=adv))
    logs = [json.loads(line) for line in (straight / "log.jsonl").read_text().splitlines()]
    vae = [r for r in logs if r.get("stage") == "vae" and "recon" in r]
    assert len(vae) == 4 and ["d_loss" in r for r in vae] == [False, False, True, True]
    assert all(math.isfinite(r["adv_w"]) and r["adv_w"] >= 0 for r in vae[2:])
    disc = weights(straight, "disc.")
    assert disc and not all(torch.equal(v, tiny_model(**adv).state_dict()[k]) for k, v in disc.items())
    # interrupted after the first adversarial step
    resumed = interrupted_then_resumed(tiny_data, tmp_path / "b", 3, monkeypatch, steps=8, overrides=adv)
    sa, sb = weights(straight, ""), weights(resumed, "")
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_a_config_saved_before_an_option_existed_loads_as_it_ran(monkeypatch):
    from everloop.models import config_from_dict, config_to_dict
    from everloop.models.worldmodel_config import WorldModelConfig
    monkeypatch.setitem(WorldModelConfig.LEGACY, "disc_width", 7)  # one that is not today's default
    saved = config_to_dict(make_config("worldmodel", "tiny"))
    old = {k: v for k, v in saved.items() if k not in WorldModelConfig.LEGACY}
    for key, value in WorldModelConfig.LEGACY.items():
        assert getattr(config_from_dict("worldmodel", old), key) == value
    explicit = {**old, "decoder_output": "clip", "adv_weight": 0.7}
    cfg = config_from_dict("worldmodel", explicit)
    assert (cfg.decoder_output, cfg.adv_weight) == ("clip", 0.7)


def test_still_hold_keeps_small_changes_and_does_not_depend_on_chunks():
    g = np.random.default_rng(0)
    x = np.clip(100 + np.cumsum(g.integers(-2, 3, (2, 30, 4, 4, 3)), 1), 0, 255).astype(np.uint8)
    x[:, 15:, :2] = 250  # a real change: shown at once
    held, last = rollout.hold_still(x, None, 4)
    assert np.array_equal(held[:, 0], x[:, 0]) and np.array_equal(last, held[:, -1])
    assert (np.abs(held.astype(int) - x).max() < 4) and np.array_equal(held[:, 15:, :2], x[:, 15:, :2])
    assert np.diff(held.astype(int), axis=1).any(axis=(2, 3, 4)).sum() < np.diff(x.astype(int), axis=1).any(
        axis=(2, 3, 4)).sum()  # fewer frames change at all
    a, shown = rollout.hold_still(x[:, :11], None, 4)
    b, _ = rollout.hold_still(x[:, 11:], shown, 4)
    assert np.array_equal(np.concatenate([a, b], 1), held)
    assert rollout.hold_still(x, None, 0)[0] is x
    model = tiny_model(still_hold=3)
    long, short = stream(model, 40, seed=1, chunk=40), stream(model, 40, seed=1, chunk=7)
    assert np.abs(long.astype(int) - short.astype(int)).max() <= 1


def test_eval_holds_still_pixels_as_playback_does():
    """The eval's full stream is playback's stream, held alike; a window of a sparse stream
    holds from its own first frame."""
    from everloop import evaluate
    from everloop.data import to_uint8

    class Recorder:
        def __init__(self):
            self.got = {}

        def feed_latents(self, start, lat):
            pass

        def needed(self, a, b):
            return (np.arange(a, b) >= 20) & (np.arange(a, b) < 33)

        def mark_nan(self, t):
            raise AssertionError(t)

        def feed(self, s, t, frames):
            self.got.setdefault(s, []).append((t, frames))

    model, ev = tiny_model(still_hold=3), Recorder()
    bar = type("Bar", (), {"update": lambda self, n: None})()
    old, evaluate.CHUNK = evaluate.CHUNK, 8  # windows cross chunks
    try:
        evaluate._generate(model, ev, 40, 2, 5, 1, bar, to_uint8)
    finally:
        evaluate.CHUNK = old
    full = np.concatenate([f for _, f in sorted(ev.got[0], key=lambda p: p[0])])
    played = stream(model, 40, batch=2, seed=5, chunk=8)
    assert np.abs(full.astype(int) - played[0]).max() <= 1
    window = np.concatenate([f for _, f in sorted(ev.got[1], key=lambda p: p[0])])
    assert min(t for t, _ in ev.got[1]) == 20 and len(window) == 13
    plain = stream(tiny_model(still_hold=0), 40, batch=2, seed=5, chunk=8)[1, 20:33]
    assert np.abs(window.astype(int) - rollout.hold_still(plain[None], None, 3)[0][0]).max() <= 1
