"""multiscale (Mathieu et al.): the adversarial gradient reaches G (the port's bug #2), the
loss weights are used (#32), golden GDL, and the tests every family passes, on tiny configs."""
import numpy as np
import pytest
import torch
from conftest import blob_frames, write_store

from everloop import rollout
from everloop.checkpoint import load_run, save_run
from everloop.errors import EverloopError
from everloop.models import build, make_config
from everloop.models.multiscale import gdl_loss, scale_sizes


def model(**over):
    torch.manual_seed(0)
    return build("multiscale", make_config("multiscale", "tiny", over))


def batch(n=4, size=16, seed=0):
    return torch.rand(n, 5, 3, size, size, generator=torch.Generator().manual_seed(seed))


class Recorder:
    """Stands in for an optimizer: keeps the gradients train_step leaves, steps nothing."""

    def __init__(self, params):
        self.params, self.grads = list(params), None

    def zero_grad(self, set_to_none=True):
        for p in self.params:
            p.grad = None

    def step(self):
        self.grads = [None if p.grad is None else p.grad.clone() for p in self.params]


def g_grads(m, loss):
    return torch.autograd.grad(loss, list(m.gens.parameters()), allow_unused=True, retain_graph=True)


def test_adversarial_term_alone_reaches_the_generator():
    m = model()
    x = batch() * 2 - 1
    terms = m.generator_terms(x[:, :4], x[:, 4])
    grads = g_grads(m, terms["adv"])
    assert sum(float(g.abs().sum()) for g in grads if g is not None) > 0


def test_train_step_uses_every_weight_and_no_adversarial_means_no_adversarial_gradient():
    weights = {"lambda_lp": 0.3, "lambda_gdl": 2.0, "lambda_adv": 0.7}
    for adversarial in (True, False):
        m = model(adversarial=adversarial, **weights)
        x = batch(8)
        rec = {"g": Recorder(m.gens.parameters()), "d": Recorder(m.discs.parameters())}
        torch.manual_seed(1)
        m.train_step(x, rec)
        g = x[4:] * 2 - 1 if adversarial else x * 2 - 1  # G's half of the batch
        terms = m.generator_terms(g[:, :4], g[:, 4])
        plain = g_grads(m, 0.3 * terms["lp"] + 2.0 * terms["gdl"])
        if adversarial:
            adv = g_grads(m, terms["adv"])
            want = [p + 0.7 * a for p, a in zip(plain, adv)]
        else:
            assert "adv" not in terms and len(m.discs) == 0
            want = plain
        for got, exp in zip(rec["g"].grads, want):
            torch.testing.assert_close(got, exp, rtol=1e-4, atol=1e-7)
        if adversarial:  # and the adversarial part is not negligible
            assert max(float((a * 0.7).abs().max()) for a in adv) > 1e-6


def test_gradient_difference_loss_on_hand_made_frames():
    target = torch.zeros(1, 1, 3, 3)
    target[..., :, 1:] = 1.0          # a vertical edge: |dx| = [1, 0] per row, |dy| = 0
    flat = torch.zeros(1, 1, 3, 3)
    # |dx target| - |dx flat|: 3 ones out of 6 horizontal pairs; vertical: all 0
    assert gdl_loss(flat, target, 1.0) == pytest.approx(3 / 6)
    assert gdl_loss(target, target, 1.0) == 0
    half = target * 0.5               # the edge at half contrast: error 0.5 on 3 of 6 pairs
    assert gdl_loss(half, target, 1.0) == pytest.approx(0.5 * 3 / 6)
    assert gdl_loss(half, target, 2.0) == pytest.approx(0.25 * 3 / 6)
    # shifting a frame keeps its gradients: GDL (unlike L2) does not punish the blur-free copy
    assert gdl_loss(target.flip(-1).flip(-1), target, 1.0) == 0


def test_scale_sizes_follow_the_port_for_atari_frames():
    assert scale_sizes(210, 160, 4) == [(26, 20), (52, 40), (105, 80), (210, 160)]


def test_full_frame_rollout_shapes_range_determinism_and_chunking():
    m = model().eval()
    clip = torch.rand(2, 4, 3, 24, 20, generator=torch.Generator().manual_seed(3))
    long = np.concatenate(list(rollout.frames(m, 12, batch=2, chunk=12, seed_clip=clip)), 1)
    short = np.concatenate(list(rollout.frames(m, 12, batch=2, chunk=5, seed_clip=clip)), 1)
    assert long.shape == (2, 12, 24, 20, 3) and long.dtype == np.uint8
    np.testing.assert_array_equal(long, short)
    again = np.concatenate(list(rollout.frames(model().eval(), 12, batch=2, chunk=12, seed_clip=clip)), 1)
    np.testing.assert_array_equal(long, again)
    assert long[:, 1:].std() > 0  # not a constant image


def test_bad_seed_clips_are_one_line_errors():
    m = model()
    with pytest.raises(EverloopError, match="history of 4 frames"):
        m.start(1, None, seed_clip=torch.rand(1, 3, 3, 16, 16))
    with pytest.raises(EverloopError, match=r"\[B, T, 3, H, W\]"):
        m.start(1, None, seed_clip=torch.rand(1, 4, 1, 16, 16))
    with pytest.raises(EverloopError, match="seed clip"):
        m.start(1, None)


def test_movement_filter_picks_moving_crops(tmp_path):
    frames = np.zeros((40, 48, 48, 3), np.uint8)
    for t in range(40):                       # a bright square moving in the bottom-right corner only
        frames[t, 36:44, 30 + t % 10:38 + t % 10] = 255
    from everloop.data import FrameStore
    store = FrameStore(write_store(tmp_path / "d", frames))
    m = model(accept_any=0.0, adversarial=False)
    crops = m.sample_batch(store, np.random.default_rng(0))
    assert crops.shape == (4, 5, 3, 16, 16)
    moving = (crops[:, 1:] - crops[:, :-1]).abs().sum((1, 2, 3, 4))
    assert (moving > 0).all()                 # every crop holds motion; a random crop rarely would
    again = m.sample_batch(store, np.random.default_rng(0))
    assert torch.equal(crops, again)


def test_overfits_one_clip_and_save_load_is_identical(tmp_path):
    m = model(adversarial=False, lr_g=2e-3)
    opt = m.configure_optimizers()
    x = torch.from_numpy(blob_frames(5, 16)).permute(0, 3, 1, 2).float().div(255)[None].repeat(4, 1, 1, 1, 1)
    first = m.train_step(x, opt)["lp"]
    for _ in range(150):
        last = m.train_step(x, opt)["lp"]
    assert last < first / 10, (first, last)
    save_run(tmp_path / "run", m, {})
    loaded, _ = load_run(tmp_path / "run")
    clip = x[:1, :4]
    with torch.no_grad():
        a, b = m.eval().next_frame(clip), loaded.next_frame(clip)
    assert torch.equal(a, b)


def test_train_then_eval_reports_prediction_per_step(tmp_path, tiny_data):
    from everloop.evaluate import evaluate
    from everloop.train import TrainArgs, train
    run = train(TrainArgs(data=str(tiny_data), out=str(tmp_path / "run"), family="multiscale", preset="tiny",
                          steps=2, sample_every=0, progress=False, precision="fp32"))
    rep = evaluate(str(run), str(tiny_data), 40, str(tmp_path / "rep"), streams=2, progress=False,
                   pred_steps=4, pred_clips=2)
    assert list(rep["prediction"]) == ["1", "2", "3", "4"]
    assert set(rep["prediction"]["1"]) == {"psnr", "ssim", "sharp_diff", "psnr_moving"}
    assert rep["latent"] == {} and rep["frames"] == 40
    assert "Prediction from 4 real frames" in (tmp_path / "rep" / "report.md").read_text()


def test_generate_needs_a_seed_clip_of_the_run_s_frame_size(tmp_path, tiny_data, capsys):
    from test_cli import assert_one_line_error, run_cli

    from everloop.train import TrainArgs, train
    run = train(TrainArgs(data=str(tiny_data), out=str(tmp_path / "run"), family="multiscale", preset="tiny",
                          steps=1, sample_every=0, progress=False, precision="fp32"))
    code, _ = run_cli("generate", run, "--seed-clip", tiny_data, "--frames", 6, "--out", tmp_path / "ok.gif",
                      "--quiet", capsys=capsys)
    assert code == 0 and (tmp_path / "ok.gif").exists()
    other = write_store(tmp_path / "big", blob_frames(40, 24))
    code, err = run_cli("generate", run, "--seed-clip", other, "--frames", 6, "--out", tmp_path / "x.gif",
                        capsys=capsys)
    assert_one_line_error(code, err, "24x24", "16x16")
    code, err = run_cli("generate", run, "--frames", 6, "--out", tmp_path / "y.gif", capsys=capsys)
    assert_one_line_error(code, err, "--seed-clip DATA")
    assert not (tmp_path / "x.gif").exists() and not (tmp_path / "y.gif").exists()
