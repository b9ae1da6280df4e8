"""The playable family and `everloop play`, on a tiny synthetic game: a dot that the action
moves one pixel (NOOP, UP, RIGHT, LEFT, DOWN), 16x16 frames."""
import json
import sys

import numpy as np
import pytest
import torch

from everloop import checkpoint, control, models
from everloop.cli import main
from everloop.data import ACTION_NONE, ACTIONS_FILE, FrameStore
from everloop.errors import EverloopError
from everloop.play import Game, action_for, play_scripted, play_window
from everloop.train import TrainArgs, train

MEANINGS = ["NOOP", "UP", "RIGHT", "LEFT", "DOWN"]
MOVES = {0: (0, 0), 1: (-1, 0), 2: (0, 1), 3: (0, -1), 4: (1, 0)}


def dot(y: int, x: int, size: int = 16) -> np.ndarray:
    """Ms. Pac-Man's colours: a blue maze with a wall along the top, her as a 2x2 dot."""
    f = np.empty((size, size, 3), np.uint8)
    f[:] = (0, 28, 136)
    f[0] = (228, 111, 111)
    f[y - 1:y + 1, x - 1:x + 1] = (210, 164, 74)
    return f


def dot_game(path, episodes: int = 6, steps: int = 80, seed: int = 0):
    """A dataset with actions: each episode a random walk of the dot, steered by the actions."""
    rng = np.random.default_rng(seed)
    frames, actions, eps = [], [], []
    for _ in range(episodes):
        y, x = rng.integers(4, 12, size=2)
        eps.append([len(frames), len(frames) + steps])
        for t in range(steps):
            frames.append(dot(y, x))
            a = int(rng.integers(5))
            actions.append(a if t < steps - 1 else ACTION_NONE)
            dy, dx = MOVES[a]
            y, x = int(np.clip(y + dy, 2, 14)), int(np.clip(x + dx, 2, 14))
    path.mkdir(parents=True)
    np.save(path / "frames.npy", np.stack(frames))
    np.save(path / ACTIONS_FILE, np.array(actions, np.uint8))
    (path / "meta.json").write_text(json.dumps({
        "frames": len(frames), "height": 16, "width": 16, "fps": 15.0, "episodes": eps,
        "splits": {"train": list(range(episodes - 1)), "test": [episodes - 1]},
        "actions": {"count": 5, "meanings": MEANINGS},
        "recorded": {"game": "MsPacman", "native_height": 32, "native_width": 16, "crop": [0, 0, 16, 32]}}))
    return path


def x_of(frame: torch.Tensor) -> float:
    """Centroid column of the dot's yellow (red minus blue, below the wall) in a float frame [3, H, W]."""
    w = (frame[0, 1:] - frame[2, 1:]).clamp_min(0)
    return float((w.sum(0) * torch.arange(frame.shape[-1])).sum() / w.sum().clamp_min(1e-6))


def colours_model(tmp_path, **changes):
    """The dot game's store and a tiny colours-head model on it (palette fitted, seeded), its
    optimisers and a sampling rng."""
    store = FrameStore(dot_game(tmp_path / "data"))
    torch.manual_seed(0)
    cfg = models.make_config("playable", "tiny", {"n_actions": 5, "lr": 3e-3, "rollout_steps": 1, "head": "colours",
                                                  **changes})
    model = models.build("playable", cfg)
    model.begin_stage("train", store, {}, fresh=True)
    return store, model, model.configure_optimizers(), np.random.default_rng(0)


def test_actions_change_the_prediction(tmp_path):
    """Trained a little, RIGHT puts the dot to the right of where LEFT puts it (a family
    that ignored its actions would draw the same frame for both)."""
    store = FrameStore(dot_game(tmp_path / "data"))
    torch.manual_seed(0)
    cfg = models.make_config("playable", "tiny", {"n_actions": 5, "lr": 3e-3, "rollout_steps": 1})
    model = models.build("playable", cfg)
    hist = torch.from_numpy(np.stack([dot(8, 7), dot(8, 8)])).permute(0, 3, 1, 2).float().div(255)[None]
    opt, rng = model.configure_optimizers(), np.random.default_rng(0)
    for _ in range(250):
        model.train_step(model.sample_batch(store, rng), opt)
    with torch.no_grad():
        right, left = (model.predict(hist, torch.tensor([[k]]))[0] for k in (2, 3))
    assert x_of(right) - x_of(left) > 1.0, (x_of(right), x_of(left))


def test_the_colours_head_learns_the_keys_and_draws_whole_colours(tmp_path):
    """head=colours: logits over the game's palette, cross-entropy. Trained a little, RIGHT
    puts the dot right of where LEFT puts it, her colour whole (not a blend), every pixel
    one of the game's colours; old configs load with the pixels head."""
    store, model, opt, rng = colours_model(tmp_path, key_guidance=0.0)
    hist = torch.from_numpy(np.stack([dot(8, 7), dot(8, 8)])).permute(0, 3, 1, 2).float().div(255)[None]
    for _ in range(250):
        logs = model.train_step(model.sample_batch(store, rng), opt)
    assert np.isfinite(logs["loss"])
    colours = {tuple(c) for c in np.asarray(store.frames).reshape(-1, 3).tolist()}
    with torch.no_grad():
        right, left = (model.next_frame(hist, torch.tensor([[k]]))[0] for k in (2, 3))
    for frame in (right, left):
        drawn = to_uint8_np(frame[None])
        assert {tuple(c) for c in drawn.reshape(-1, 3).tolist()} <= colours
        assert ((drawn == (210, 164, 74)).all(-1)).sum() == 4  # the 2x2 dot, whole
    assert x_of(right) - x_of(left) > 1.0, (x_of(right), x_of(left))
    assert models.config_from_dict("playable", {}).head == "pixels"
    # key guidance: NOOP plays as before; a key's logits are pushed away from NOOP's
    with torch.no_grad():
        noop, logits = model.next_frame(hist, torch.tensor([[0]])), model.predict(hist, torch.tensor([[2]]))
        model.cfg.key_guidance = 2.0
        assert torch.equal(model.next_frame(hist, torch.tensor([[0]])), noop)
        guided = model.next_frame(hist, torch.tensor([[2]]))[0]
        pushed = 3 * logits - 2 * model.predict(hist, torch.tensor([[0]]))
    assert torch.equal(guided, model.palette_colours[pushed.argmax(-1)][0].permute(2, 0, 1))
    assert x_of(guided) - x_of(left) > 1.0, (x_of(guided), x_of(left))


def test_key_dropout_learns_an_unknown_key_that_guidance_steers_from(tmp_path):
    """key_dropout: some samples train with a learnt unknown key in place of the key pressed
    now; guidance then pushes every step (NOOP too) away from the unknown key's logits."""
    store, model, opt, rng = colours_model(tmp_path, key_dropout=0.3)
    for _ in range(250):
        model.train_step(model.sample_batch(store, rng), opt)
    assert model.unknown_key.abs().sum() > 0
    hist = torch.from_numpy(np.stack([dot(8, 7), dot(8, 8)])).permute(0, 3, 1, 2).float().div(255)[None]
    unknown = torch.ones(1, dtype=torch.bool)
    with torch.no_grad():
        for key in (0, 2):
            logits = model.predict(hist, torch.tensor([[key]]))
            pushed = 2 * logits - model.predict(hist, torch.tensor([[key]]), unknown=unknown)  # key_guidance 1
            assert not torch.equal(pushed, logits)
            expect = model.palette_colours[pushed.argmax(-1)][0].permute(2, 0, 1)
            assert torch.equal(model.next_frame(hist, torch.tensor([[key]]))[0], expect)
        right, left = (model.next_frame(hist, torch.tensor([[k]]))[0] for k in (2, 3))
    assert x_of(right) - x_of(left) > 1.0, (x_of(right), x_of(left))
    with pytest.raises(EverloopError, match="key_dropout"):
        models.build("playable", models.make_config("playable", "tiny", {"key_dropout": 1.5}))


def test_key_contrast_ranks_the_true_key_over_another(tmp_path):
    """key_contrast: its hinge is positive while another key explains the real frame as well
    as the true one (a fresh model ignores its keys: gap 0, loss = the margin), and trained
    a little the true key explains its frame better on the moving pixels; the option needs
    the colours head and a finite weight."""
    from everloop.models.playable import KEY_MARGIN
    store, model, opt, rng = colours_model(tmp_path, rollout_steps=2, key_contrast=1.0)
    batch, cfg = model.sample_batch(store, rng), model.cfg
    k = cfg.context
    hist, acts = batch.frames[:, :k], batch.actions[:, :k][:, -cfg.action_history:]
    index = model.colour_index(batch.frames[:, k]).flatten(1)
    moving = (batch.frames[:, k] - batch.frames[:, k - 1]).abs().amax(1, keepdim=True) > 0.02

    def hinge():
        with torch.no_grad():
            ce = torch.nn.functional.cross_entropy(model.predict(hist, acts).flatten(0, 2), index.flatten(),
                                                   reduction="none")
            return float(model._key_contrast(hist, acts, None, None, None, ce, index, moving))
    torch.manual_seed(1)
    assert hinge() == pytest.approx(KEY_MARGIN, abs=1e-4)  # zero embeddings' keys change nothing yet
    for _ in range(250):
        logs = model.train_step(model.sample_batch(store, rng), opt)
    assert np.isfinite(logs["loss"])
    torch.manual_seed(1)
    assert hinge() < 0.8 * KEY_MARGIN  # the margin met on the samples whose other key differs
    for bad in ({"key_contrast": float("nan")}, {"key_contrast": -1.0}, {"key_contrast": 1.0, "head": "pixels"}):
        with pytest.raises(EverloopError, match="key_contrast"):
            models.build("playable", models.make_config("playable", "tiny", bad))


def test_frames_are_snapped_to_the_games_own_colours(tmp_path):
    """Training starts by counting the game's colours: every frame the model then plays is
    made of them; footage of too many colours (noise) keeps its frames as predicted."""
    store = FrameStore(dot_game(tmp_path / "data"))
    model = models.build("playable", models.make_config("playable", "tiny", {"n_actions": 5})).eval()
    logs = model.begin_stage("train", store, {}, fresh=True)
    assert logs == {"palette_cover": 1.0, "palette_on": 1.0}
    colours = {tuple(c) for c in np.asarray(store.frames).reshape(-1, 3).tolist()}
    assert len(colours) == 3
    clip = torch.from_numpy(np.stack([dot(8, 7), dot(8, 8)])).permute(0, 3, 1, 2).float().div(255)[None]
    state = model.start(1, seed_clip=clip)
    for key in (2, 2, 4, 0):
        state = model.advance(state, action=key)
        drawn = {tuple(c) for c in to_uint8_np(state[0]).reshape(-1, 3).tolist()}
        assert drawn <= colours, drawn - colours
    noise = FrameStore(noise_game(tmp_path / "noise"))
    other = models.build("playable", models.make_config("playable", "tiny", {"n_actions": 5})).eval()
    assert other.begin_stage("train", noise, {}, fresh=True)["palette_on"] == 0.0
    frame = torch.rand(1, 3, 16, 16)
    assert torch.equal(other.snap(frame), frame)
    assert models.config_from_dict("playable", {}).palette == 0  # runs saved before it: no palette


def to_uint8_np(frame: torch.Tensor) -> np.ndarray:
    return frame[0].permute(1, 2, 0).mul(255).round().byte().numpy()


def noise_game(path):
    """dot_game's layout with frames of random colours."""
    dot_game(path)
    frames = np.load(path / "frames.npy")
    np.save(path / "frames.npy", np.random.default_rng(0).integers(0, 256, frames.shape, dtype=np.uint8))
    return path


def test_the_family_takes_actions_of_every_form_and_refuses_bad_ones():
    model = models.build("playable", models.make_config("playable", "tiny")).eval()
    clip = torch.rand(2, 2, 3, 16, 16)
    state = model.start(2, seed_clip=clip)
    nothing, noop = model.advance(state), model.advance(state, action=0)
    assert torch.equal(nothing[0], noop[0])  # None is NOOP
    assert torch.equal(model.advance(state, action=torch.tensor([3, 3]))[0], model.advance(state, action=3)[0])
    with pytest.raises(Exception, match="actions must be 0 to 8"):
        model.advance(state, action=9)
    # the keys pressed before are part of the state: the same key now, after other keys, differs
    after_right = model.advance(model.advance(state, action=2), action=0)[2]
    assert after_right[:, -1].eq(0).all() and model.advance(state, action=2)[2][:, -1].eq(2).all()
    assert models.config_from_dict("playable", {}).action_history == 1  # runs saved before it: one key


def test_keys_map_to_the_games_actions():
    pac = ["NOOP", "UP", "RIGHT", "LEFT", "DOWN", "UPRIGHT", "UPLEFT", "DOWNRIGHT", "DOWNLEFT"]
    assert action_for(set(), pac) == 0
    assert action_for({"UP"}, pac) == 1 and action_for({"LEFT"}, pac) == 3
    assert action_for({"UP", "RIGHT"}, pac) == 5 and action_for({"DOWN", "LEFT"}, pac) == 8
    assert action_for({"UP", "DOWN"}, pac) == 0  # opposite keys cancel
    assert action_for({"UP", "FIRE"}, pac) == 1  # no FIRE in Ms. Pac-Man: the direction stays
    assert action_for({"UP", "RIGHT"}, MEANINGS) == 1  # no diagonals: the vertical part
    assert action_for({"FIRE"}, ["NOOP", "FIRE", "UP"]) == 1


@pytest.fixture
def dot_run(tmp_path):
    data = dot_game(tmp_path / "dots")
    return train(TrainArgs(data=str(data), out=str(tmp_path / "dotrun"), family="playable", preset="tiny",
                           overrides={"n_actions": "5"}, steps=3, sample_every=0, progress=False,
                           precision="fp32"))


def test_training_fits_the_palette_and_the_run_keeps_it(dot_run):
    model, _ = checkpoint.load_run(dot_run)
    assert bool(model.palette_on)
    begin = [json.loads(line) for line in (dot_run / "log.jsonl").open() if '"begin"' in line]
    assert begin and begin[0]["palette_cover"] == 1.0


def test_scripted_play_is_deterministic_and_needs_no_pygame(dot_run, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pygame", None)  # importing pygame now fails
    np.save(tmp_path / "keys.npy", np.array([2, 2, 1, 0, 4, 3, 3, 3], np.int64))
    outs = [tmp_path / f"{name}.png" for name in "ab"]
    for out in outs:
        code = main(["play", str(dot_run), "--actions", str(tmp_path / "keys.npy"), "--out", str(out), "--seed", "3"])
        assert code == 0, capsys.readouterr().err
    assert "wrote" in capsys.readouterr().out and outs[0].read_bytes() == outs[1].read_bytes()
    game = Game(dot_run, seed=3)
    frames = []

    class Sink:
        def write(self, chunk):
            frames.append(chunk[0])
    play_scripted(game, np.array([2, 2, 1]), Sink(), episode=0)
    assert len(frames) == 4 and frames[0].shape == (16, 16, 3)
    assert game.restart(0).tobytes() == frames[0].tobytes()  # the same real start
    code = main(["play", str(dot_run), "--beside-real", "--steps", "5", "--episode", "0",
                 "--out", str(tmp_path / "cmp.png")])
    assert code == 0, capsys.readouterr().err
    from PIL import Image
    with Image.open(tmp_path / "cmp.png") as im:  # the model's frames, the real ones on the right
        assert im.size == (32, 16) and im.n_frames == 6
        real, acts = game.recorded(0, 5)
        im.seek(5)
        np.testing.assert_array_equal(np.asarray(im.convert("RGB"))[:, 16:], real[5])
    assert len(acts) == 5


def test_play_refuses_what_it_cannot_play(dot_run, tmp_path, capsys, tiny_run):
    np.save(tmp_path / "bad.npy", np.array([0, 7]))
    code = main(["play", str(dot_run), "--actions", str(tmp_path / "bad.npy"), "--out", str(tmp_path / "x.mp4")])
    assert code == 2 and "actions must be 0 to 4" in capsys.readouterr().err
    code = main(["play", str(dot_run), "--actions", str(tmp_path / "bad.npy")])
    assert code == 2 and "and --out go together" in capsys.readouterr().err
    np.save(tmp_path / "ok.npy", np.array([0]))
    code = main(["play", str(tiny_run), "--actions", str(tmp_path / "ok.npy"), "--out", str(tmp_path / "y.mp4")])
    assert code == 2 and "takes no actions" in capsys.readouterr().err


def test_the_window_plays_keys_and_quits(dot_run, monkeypatch):
    pygame = pytest.importorskip("pygame", reason="pygame not installed (pip install 'everloop[live]')")
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")  # a window without a screen
    game = Game(dot_run)
    pressed, real_step = [], game.step

    def step(action):
        pressed.append(action)
        if len(pressed) == 2:
            pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_r))  # restart
        if len(pressed) == 4:
            pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_ESCAPE))
        return real_step(action)
    monkeypatch.setattr(game, "step", step)
    assert play_window(game, fps=1000, zoom=1) == 4
    assert pressed == [0, 0, 0, 0]  # no key down: NOOP
    assert checkpoint.read_config(dot_run)["family"] == "playable"


def test_her_position_and_the_maze_are_read_from_colour_mixtures(tmp_path):
    store = FrameStore(dot_game(tmp_path / "dots"))
    geo = control.Geometry(store)  # 16x16 from a 16x32 native screen: a pixel is 1 x 2 native
    frames = np.stack([dot(5, 9), dot(12, 3)])
    np.testing.assert_allclose(control.positions(frames, geo), [[5 * 2, 9], [12 * 2, 3]], atol=1e-4)
    mixed = frames[:1].astype(float)
    mixed[0, 4:6, 8:10] = 0.3 * np.array([210, 164, 74]) + 0.7 * np.array([0, 28, 136])  # a third of her
    shares = control.colour_shares(mixed.round().astype(np.uint8), control.GAMES["MsPacman"]["palette"],
                                   [(210, 164, 74), (228, 111, 111)])
    assert abs(shares[0, 0, 4, 8] - 0.3) < 0.02 and shares[1, 0, 0, 3] == 1.0
    empty = frames[:1].copy()
    empty[0, 1:] = (0, 28, 136)
    assert np.isnan(control.positions(empty, geo)).all()  # she is not there
    assert control.iou(control.wall_mask(frames[:1], geo), control.wall_mask(empty, geo))[0] == 1.0


def test_eval_of_a_world_model_has_a_control_section(dot_run, tmp_path, capsys):
    code = main(["eval", str(dot_run), "--frames", "16", "--streams", "1", "--pred-steps", "4", "--pred-clips", "2",
                 "--control-starts", "3", "--control-steps", "20", "--control-streams", "2",
                 "--out", str(tmp_path / "report"), "--quiet", "--data", str(tmp_path / "dots")])
    assert code == 0, capsys.readouterr().err
    rep = json.loads((tmp_path / "report" / "report.json").read_text())["control"]
    assert set(rep["position"]) == {"true", "shuffled", "copy_last"} and set(rep["position"]["true"]) == {"1", "4", "16", "64"}
    assert rep["position"]["true"]["1"]["counted"] == 3 and 0 <= rep["maze"]["iou_mean"] <= 1
    assert set(rep["psnr_moving"]) == {"true", "shuffled", "copy_last"} and rep["nan"] is False
    assert rep["maze"]["steps"] == 20 and isinstance(rep["maze"]["frozen"], bool)
    assert "Control:" in (tmp_path / "report" / "report.md").read_text()
