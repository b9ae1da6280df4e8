"""The painter in colour (issue 18) on tiny canvases (16x16): seconds, 1 thread."""
import json

import numpy as np
import pytest
import torch

pytest.importorskip("skia", reason="the painter's real paint program needs skia-python (pip install 'everloop[paint]')")

from everloop.cli import main
from everloop.errors import EverloopError
from everloop.painter import colour, targets
from everloop.painter.agent import (
    AgentConfig,
    Painter,
    load_agent,
    recon_loss,
    train_agent,
)
from everloop.painter.colour import COLOUR_DIM, ColourPaintEnv, random_colour_actions
from everloop.painter.renderer import (
    RendererConfig,
    StrokeNet,
    train_renderer,
)
from everloop.painter.scoring import score

SIZE = 16
TINY_R = RendererConfig(size=SIZE, width=8, hidden=64, batch=16, val_strokes=32, colour=True)
TINY_A = AgentConfig(strokes=3, width=8, hidden=32, batch=4, colour=True, shift=0)


def colour_folder(path, n=10):
    """Little RGB pictures, wider than tall (centre-cropped to squares)."""
    from PIL import Image
    path.mkdir()
    for i in range(n):
        img = np.zeros((20, 30, 3), np.uint8)
        img[2 + i:8 + i, 8:22] = (255, 40 * (i % 6), 200)
        Image.fromarray(img).save(path / f"{i}.png")
    return path


def test_colour_actions_render_deterministically_as_skia_paints_them():
    a = random_colour_actions(np.random.default_rng(3), 6)
    e1, e2 = ColourPaintEnv(SIZE), ColourPaintEnv(SIZE)
    canvas = e1.render(a)
    assert canvas.shape == (3, SIZE, SIZE) and np.array_equal(canvas, e1.render(a))
    e2.reset()
    for x in a:
        last = e2.step(x)
    assert np.array_equal(last, canvas)  # step by step == render, across instances
    assert np.abs(canvas - colour.skia_over(a, SIZE)).max() < 4 / 255  # skia's own kSrcOver, 8-bit
    full = np.array([0.0, 0.5, 0.5, 0.5, 1.0, 0.5, 1, 1, 1, 0.9, 0.2, 0.4])  # one wide opaque stroke
    assert e1.render(full)[:, SIZE // 2, SIZE // 2] == pytest.approx([0.9, 0.2, 0.4], abs=0.01)
    off = a.copy()
    off[:, 8] = 0  # opacity 0 paints nothing
    assert e1.render(off).max() == 0.0
    with pytest.raises(EverloopError, match="12 numbers"):
        e1.step(np.zeros(10))


def test_renderer_overfits_a_fixed_colour_batch():
    """Colour decoupled: the renderer learns the alpha, the colour canvas follows."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    acts = torch.from_numpy(random_colour_actions(rng, 16))
    env = ColourPaintEnv(SIZE, r_max=colour.R_MAX)
    real = torch.from_numpy(np.stack([env.render(a) for a in acts.numpy()]))  # one stroke each on black
    layers = torch.from_numpy(env.grey.strokes(colour.shape_actions(acts.numpy())))
    net = StrokeNet(TINY_R)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)

    def dream_mse():
        with torch.no_grad():
            canvas = colour.composite(torch.zeros(16, 3, SIZE, SIZE), net(colour.shape_actions(acts)), acts[:, 9:])
        return float((canvas - real).pow(2).mean())
    before = dream_mse()
    for _ in range(250):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net.logits(colour.shape_actions(acts)), layers)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert dream_mse() < 0.25 * before and dream_mse() < 0.3 * float(real.pow(2).mean())


def test_gradients_reach_the_colour_parameters():
    torch.manual_seed(0)
    renderer = StrokeNet(TINY_R).requires_grad_(False)
    agent = Painter(TINY_A, SIZE)
    target = torch.rand(2, 3, SIZE, SIZE)
    actions, canvases = agent.paint(target, renderer)
    assert actions.shape == (2, 3, COLOUR_DIM) and canvases.shape == (3, 2, 3, SIZE, SIZE)
    loss, _ = recon_loss(canvases, target, 0.2)
    loss.backward()
    head = agent.head.weight.grad.abs().sum(1)
    assert (head[9:] > 0).all() and (head[:9] > 0).all()  # the outputs r g b, and shape via the renderer
    rgb = torch.rand(2, 3, requires_grad=True)  # the analytic composite: d canvas / d rgb = alpha
    alpha = torch.rand(2, SIZE, SIZE)
    grad, = torch.autograd.grad(colour.composite(torch.rand(2, 3, SIZE, SIZE), alpha, rgb).sum(), rgb)
    assert torch.allclose(grad, alpha.sum((1, 2))[:, None].expand(2, 3))
    for name, p in agent.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in renderer.parameters())


def test_a_grey_target_painted_in_colour_scores_as_the_grey_agent(tmp_path):
    """The grey agent's strokes as colour strokes (r = g = b = grey, lighten) on the same
    targets in three channels: the real program's score is the grey one."""
    from PIL import Image
    from test_painter import TINY_A as GREY_A
    from test_painter import TINY_R as GREY_R
    train_renderer(tmp_path / "R", GREY_R, steps=2, progress=False)
    (tmp_path / "d").mkdir()
    for i in range(30):  # grey bars, light on black
        img = np.zeros((20, 20), np.uint8)
        img[2 + i % 14:6 + i % 14, 3 + i % 5:15] = 80 + 5 * i
        Image.fromarray(img).save(tmp_path / "d" / f"{i}.png")
    folder = str(tmp_path / "d")
    train_agent(tmp_path / "R", folder, tmp_path / "A", GREY_A, steps=2, progress=False)
    agent, renderer, _, env = load_agent(tmp_path / "A")
    _, test = targets.split(targets.load(folder, SIZE))
    grey = score(agent, renderer, test, env)
    from everloop.painter.scoring import paint
    actions, _, real = paint(agent, renderer, test, env)
    cenv = ColourPaintEnv(SIZE, r_max=env.backend.r_max, blend="lighten")
    _, test3 = targets.train_test(folder, SIZE, colour=True)
    assert np.array_equal(test3[:, 1], test)  # a grey target in colour: three equal channels
    painted = np.stack([cenv.render(colour.from_grey(a)) for a in actions])
    assert np.abs(painted - real[-1][:, None]).max() < 1e-6
    assert float(((painted - test3) ** 2).mean()) == pytest.approx(grey["mse_real"], rel=1e-5)
    assert float((test3 ** 2).mean()) == pytest.approx(grey["mse_blank"], rel=1e-5)


def test_colour_targets_folders_and_datasets(tmp_path):
    imgs = targets.load(str(colour_folder(tmp_path / "c")), SIZE, colour=True)
    assert imgs.shape == (10, 3, SIZE, SIZE) and imgs[:, 0].max() == pytest.approx(1.0)
    assert targets.load(str(tmp_path / "c"), SIZE).shape == (10, SIZE, SIZE)  # grey as before
    ds = tmp_path / "ds"
    ds.mkdir()
    frames = np.repeat(np.arange(50, dtype=np.uint8)[:, None, None, None] * 5, 3, -1) * np.ones((1, 8, 8, 3), np.uint8)
    np.save(ds / "frames.npy", frames)
    train, test = targets.train_test(str(ds), SIZE, colour=True)
    assert train.shape[1:] == (3, SIZE, SIZE) and len(test) == 10 and len(train) == 40
    assert train.max() < test.min()  # the held-out frames are the last 20%, later than any training one
    with pytest.raises(EverloopError, match="--colour"):
        targets.train_test(str(ds), SIZE)
    with pytest.raises(EverloopError, match="missing"):
        targets.colour_bench(SIZE, root=tmp_path / "nowhere", cache=False)


def test_colour_bench_cuts_videos_in_time(tmp_path, monkeypatch):
    from everloop.sinks import open_sink
    for name in ("a/one.mp4", "b/two.mp4"):
        (tmp_path / name).parent.mkdir()
        with open_sink(tmp_path / name, fps=10) as sink:  # brightness grows with time
            sink.write(np.repeat(np.arange(40, dtype=np.uint8)[:, None, None, None] * 6, 32, 1)
                       .repeat(32, 2).repeat(3, 3))
    train, test = targets.colour_bench(SIZE, root=tmp_path, videos=("a/one.mp4", "b/two.mp4"), per_video=(8, 2),
                                          cache=False)
    assert train.shape == (16, 3, SIZE, SIZE) and test.shape == (4, 3, SIZE, SIZE)
    assert train[:8].mean() < test[:2].mean() and train[:8].mean((1, 2, 3)).max() < test[:2].mean((1, 2, 3)).min()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    kw = {"root": tmp_path, "videos": ("a/one.mp4", "b/two.mp4"), "per_video": (8, 2)}
    first = targets.colour_bench(SIZE, **kw)
    assert len(list((tmp_path / "cache" / "everloop").glob("colour-bench-16-*.npz"))) == 1
    (tmp_path / "a/one.mp4").rename(tmp_path / "a/gone.mp4")
    with pytest.raises(EverloopError, match="missing"):  # the cache never stands in for a missing video
        targets.colour_bench(SIZE, **kw)
    (tmp_path / "a/gone.mp4").rename(tmp_path / "a/one.mp4")
    again = targets.colour_bench(SIZE, **kw)  # from the cache
    assert all(np.array_equal(x, y) and np.array_equal(x, z) for x, y, z in zip(first, again, (train, test)))


def test_colour_bench_reads_the_shared_videos():
    goop = targets.SHARED_DATA / "processes/goop.mp4"
    if not goop.is_file():
        pytest.skip(f"{goop} is missing (../shared/data is not beside this checkout)")
    train, test = targets.colour_bench(SIZE, videos=("processes/goop.mp4",), per_video=(20, 5), cache=False)
    assert train.shape == (20, 3, SIZE, SIZE) and test.shape == (5, 3, SIZE, SIZE) and train.std() > 0.05


def test_colour_train_resume_eval_draw_sheet(tmp_path, capsys):
    r = tmp_path / "R"
    m = train_renderer(r, TINY_R, steps=2, progress=False)
    assert np.isfinite(m["val_psnr"])
    folder = str(colour_folder(tmp_path / "c"))
    a = tmp_path / "A"
    m = train_agent(r, folder, a, TINY_A, steps=2, progress=False)
    assert m["targets"] == 1 and np.isfinite(m["mse_real"])
    assert train_agent(None, None, a, steps=3, resume=True, progress=False)["step"] == 3
    env = load_agent(a)[3]
    assert isinstance(env, ColourPaintEnv) and env.grey.backend.r_max == colour.R_MAX
    assert main(["paint", "eval", str(a), "--json", str(tmp_path / "e.json")]) == 0
    assert json.loads((tmp_path / "e.json").read_text())["strokes"] == 3
    assert main(["paint", "draw", str(a), "--target", "test:0", "--out", str(tmp_path / "s.gif")]) == 0
    from PIL import Image
    with Image.open(tmp_path / "s.gif") as gif:
        assert gif.n_frames == 5
        gif.seek(4)
        rgb = np.asarray(gif.convert("RGB"))
        assert (rgb[..., 0] != rgb[..., 2]).any()  # in colour
    assert main(["paint", "sheet", str(a), "--out", str(tmp_path / "g.png"), "--dream", "--scale", "1"]) == 0
    with Image.open(tmp_path / "g.png") as sheet:
        assert sheet.mode == "RGB" and sheet.size == (SIZE + 2, 3 * (SIZE + 2))
    assert main(["paint", "train-agent", "--renderer", str(r), "--targets", folder, "--out", str(tmp_path / "G"),
                 "--steps", "1"]) == 2  # a grey agent cannot use a colour renderer
    assert "--colour" in capsys.readouterr().err
    from dataclasses import replace
    b = tmp_path / "B"  # 5 strokes, starting from the 3-stroke agent and its refreshed renderer
    train_agent(None, folder, b, replace(TINY_A, strokes=5), steps=1, progress=False, init=a)
    config = json.loads((b / "config.json").read_text())
    assert config["init"] == str(a) and config["renderer_source"] == str(a / "renderer")
    assert main(["paint", "train-agent", "--init", str(a), "--colour", "--targets", folder, "--out",
                 str(tmp_path / "C"), "--steps", "1"]) == 2  # default width and hidden: not A's
    assert "must match" in capsys.readouterr().err


def _mypaint_or_skip():
    from everloop.painter.env import make_backend
    try:
        return make_backend("mypaint", 32)
    except EverloopError as e:
        pytest.skip(str(e))


def test_mypaint_backend_draws_the_same_strokes():
    from everloop.painter.env import PaintEnv, random_actions
    _mypaint_or_skip()
    a = random_actions(np.random.default_rng(1), 8)
    a[:, 8:] = 1
    mp, sk = PaintEnv(32, "mypaint"), PaintEnv(32)
    layers, ref = mp.strokes(a), sk.strokes(a)
    assert np.array_equal(layers, mp.strokes(a))  # deterministic
    for m, s in zip(layers, ref):  # the same stroke, drawn by another brush engine
        inter, union = np.minimum(m, s).sum(), np.maximum(m, s).sum()
        assert m.max() > 0.5 and inter / union > 0.5
    canvas = ColourPaintEnv(32, "mypaint").render(random_colour_actions(np.random.default_rng(2), 4))
    assert canvas.shape == (3, 32, 32) and canvas.max() > 0.1


def test_an_agent_is_scored_with_either_program(tmp_path, capsys):
    _mypaint_or_skip()
    train_renderer(tmp_path / "R", TINY_R, steps=1, progress=False)
    train_agent(tmp_path / "R", str(colour_folder(tmp_path / "c")), tmp_path / "A", TINY_A, steps=1, progress=False)
    for backend in ("skia", "mypaint"):
        out = tmp_path / f"{backend}.json"
        assert main(["paint", "eval", str(tmp_path / "A"), "--backend", backend, "--json", str(out)]) == 0
        assert json.loads(out.read_text())["backend"] == backend
    both = tmp_path / "both.json"
    assert main(["paint", "eval", str(tmp_path / "A"), "--also", "mypaint", "--json", str(both)]) == 0
    assert json.loads(both.read_text())["mse_real_mypaint"] == json.loads((tmp_path / "mypaint.json").read_text())["mse_real"]


def test_grey_folders_from_before_colour_still_load_and_score_the_same(tmp_path):
    """A grey run folder written before the colour fields existed (no `colour`, no `r_max`)."""
    from test_painter import TINY_A as GREY_A
    from test_painter import TINY_R as GREY_R
    from test_painter import digit_folder
    train_renderer(tmp_path / "R", GREY_R, steps=2, progress=False)
    folder = str(digit_folder(tmp_path / "d", n=10))
    train_agent(tmp_path / "R", folder, tmp_path / "A", GREY_A, steps=2, progress=False)
    _, test = targets.split(targets.load(folder, SIZE))
    before = score(*load_agent(tmp_path / "A")[:2], test, load_agent(tmp_path / "A")[3])
    for cfg_file, drop in ((tmp_path / "A" / "config.json", ("colour",)),
                           (tmp_path / "A" / "renderer" / "config.json", ("colour", "r_max"))):
        config = json.loads(cfg_file.read_text())
        for name in drop:
            del config["config"][name]
        cfg_file.write_text(json.dumps(config))
    agent, renderer, _, env = load_agent(tmp_path / "A")
    assert not agent.cfg.colour and env.backend.r_max == 0.08
    assert score(agent, renderer, test, env) == before


def test_learned_colour_comparison_runs(capsys):
    from everloop.painter import learned_colour
    learned_colour.main(["--minutes", "0.005", "--size", "16"])
    rows = capsys.readouterr().out.splitlines()
    assert rows[2].startswith("| decoupled |") and rows[3].startswith("| learned |")


def test_colour_agent_with_critic_trains(tmp_path):
    from dataclasses import replace
    train_renderer(tmp_path / "R", TINY_R, steps=1, progress=False)
    m = train_agent(tmp_path / "R", str(colour_folder(tmp_path / "c")), tmp_path / "A", replace(TINY_A, critic=True),
                    steps=2, progress=False)
    assert np.isfinite(m["mse_real"])


def _refine_setup():
    from everloop.painter.refine import dream
    torch.manual_seed(0)
    renderer = StrokeNet(TINY_R).eval()
    agent = Painter(TINY_A, SIZE).eval()
    target = torch.rand(3, 3, SIZE, SIZE)
    with torch.no_grad():
        actions, canvases = agent.paint(target, renderer)
        assert torch.allclose(dream(actions, renderer, True), canvases, atol=1e-5)  # batched == stroke by stroke
    return agent, renderer, actions, target


def test_refinement_lowers_the_dream_loss_keeps_actions_in_the_box_and_is_deterministic():
    from everloop.painter.refine import dream, refine
    _, renderer, actions, target = _refine_setup()
    out, start, end = refine(actions, target, renderer, True, steps=15, lr=0.1)
    assert out.shape == actions.shape and out.min() >= 0 and out.max() <= 1
    assert (end <= start).all() and end.sum() < start.sum()  # never worse per target, better overall
    with torch.no_grad():
        scored = (dream(out, renderer, True)[-1] - target).pow(2).flatten(1).mean(1)
    assert torch.allclose(scored, end, atol=1e-6)  # the reported loss is the returned actions'
    again = refine(actions, target, renderer, True, steps=15, lr=0.1)
    assert torch.equal(again[0], out) and torch.equal(again[2], end)  # deterministic
    one = refine(actions[:1], target[:1], renderer, True, steps=15, lr=0.1)[0]
    assert torch.allclose(one, out[:1], atol=1e-5)  # a target's result does not depend on its batch
    assert all(p.requires_grad for p in renderer.parameters()) and all(p.grad is None for p in renderer.parameters())
    assert torch.equal(refine(actions, target, renderer, True, steps=0, lr=0.1)[0], actions)


def test_refinement_with_the_real_program_in_the_loop_lowers_the_real_loss():
    from everloop.painter.refine import refine
    _, renderer, actions, target = _refine_setup()
    env = ColourPaintEnv(SIZE)
    real = lambda acts: np.stack([env.render(x) for x in acts])
    out, start, end = refine(actions, target, renderer, True, steps=10, lr=0.1, real=real)
    assert out.min() >= 0 and out.max() <= 1 and (end <= start).all() and end.sum() < start.sum()
    mse = lambda acts: ((torch.from_numpy(real(acts.numpy())) - target) ** 2).flatten(1).mean(1)
    assert torch.allclose(mse(actions), start, atol=1e-6) and torch.allclose(mse(out), end, atol=1e-6)
    assert torch.equal(refine(actions, target, renderer, True, steps=10, lr=0.1, real=real)[0], out)


def test_refined_eval_reports_the_agent_beside_the_refined_strokes(tmp_path, capsys):
    train_renderer(tmp_path / "R", TINY_R, steps=1, progress=False)
    folder = str(colour_folder(tmp_path / "c"))
    train_agent(tmp_path / "R", folder, tmp_path / "A", TINY_A, steps=1, progress=False)
    plain, refined = tmp_path / "plain.json", tmp_path / "refined.json"
    assert main(["paint", "eval", str(tmp_path / "A"), "--json", str(plain)]) == 0
    assert main(["paint", "eval", str(tmp_path / "A"), "--refine", "5", "--refine-lr", "0.1", "--split", "train",
                 "--sample", "4", "--json", str(refined)]) == 0
    assert main(["paint", "eval", str(tmp_path / "A"), "--refine", "3", "--refine-real", "--json",
                 str(tmp_path / "real.json")]) == 0
    assert json.loads((tmp_path / "real.json").read_text())["refine_real"] is True
    p, r = json.loads(plain.read_text()), json.loads(refined.read_text())
    assert "refine_steps" not in p and r["refine_steps"] == 5 and r["targets"] == 4 and r["split"] == "train"
    assert r["mse_dream"] <= r["agent_mse_dream"] and r["refine_seconds_per_target"] > 0
    assert main(["paint", "sheet", str(tmp_path / "A"), "--out", str(tmp_path / "s.png"), "--count", "2",
                 "--refine", "2"]) == 0
    from PIL import Image
    assert Image.open(tmp_path / "s.png").size[1] == 3 * 2 * (SIZE + 2)  # rows: targets, agent, refined
    assert main(["paint", "eval", str(tmp_path / "A"), "--per-source"]) != 0
    assert "--per-source" in capsys.readouterr().err
