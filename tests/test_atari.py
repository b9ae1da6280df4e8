"""The Atari recorder (everloop.sources.atari): tiny recordings of a few steps each."""
import json
import re

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("ale_py", reason="ale-py not installed (pip install -e '.[atari]')")
pytest.importorskip("gymnasium", reason="gymnasium not installed (pip install -e '.[atari]')")

from everloop.cli import main
from everloop.data import FrameStore
from everloop.errors import EverloopError
from everloop.prepare import prepare
from everloop.sources.atari import record, resolve_game


def rec(out, **kw):
    args = {"game": "MsPacman", "episodes": 2, "max_steps": 8, "progress": False, **kw}
    return record(out=out, **args)


def pngs(folder):
    return np.stack([np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))])


def snapshot(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def no_leftovers(parent):
    return not [p for p in parent.iterdir() if p.name.startswith(".")]


def test_recording_is_the_episode_tree_prepare_reads(tmp_path):
    meta = rec(tmp_path / "raw")
    raw = tmp_path / "raw"
    assert sorted(str(p.relative_to(raw)) for p in raw.glob("*/*")) == ["Test/ep001", "Train/ep000"]
    frames = pngs(raw / "Train" / "ep000")
    assert frames.shape == (9, 210, 160, 3) and frames.dtype == np.uint8  # reset screen + 8 steps
    assert np.any(frames[1:] != frames[:-1], axis=(1, 2, 3)).all()  # the screen moves every frame
    actions = np.load(raw / "Train" / "ep000" / "actions.npy")
    assert actions.dtype == np.uint8 and actions.shape == (8,) and actions.max() < 9
    on_disk = json.loads((raw / "record.json").read_text())
    assert on_disk == meta
    assert (meta["env_id"], meta["frames"], meta["frameskip"], meta["fps"], meta["seed"]) == (
        "ALE/MsPacman-v5", 18, 1, 60.0, 0)
    assert meta["split"] == {"train": ["Train/ep000"], "test": ["Test/ep001"]}
    assert [e["frames"] for e in meta["episodes"]] == [9, 9] and len(meta["action_meanings"]) == 9

    data = prepare(raw, tmp_path / "data", progress=False)  # actions.npy ignored, record.json's fps used
    assert (data["frames"], data["height"], data["width"]) == (18, 210, 160)  # no crop, native
    assert data["fps"] == 60.0
    assert data["episodes"] == [[0, 9], [9, 18]] and data["splits"] == {"train": [0], "test": [1]}
    store = FrameStore(tmp_path / "data")
    np.testing.assert_array_equal(store.frames[:9], frames)
    np.testing.assert_array_equal(store.frames[9:], pngs(raw / "Test" / "ep001"))


def test_same_seed_same_bytes_other_seed_other_play(tmp_path):
    # Ms. Pac-Man's first 272 frames are the same in every episode: skip past them
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        rec(tmp_path / name, seed=seed, skip_start=280, max_steps=6)
    a, b, c = (snapshot(tmp_path / n) for n in "abc")
    assert a == b
    assert len(a) == len(c) == 2 * (7 + 1) + 1
    for ep in ("Train/ep000", "Test/ep001"):
        assert a[f"{ep}/actions.npy"] != c[f"{ep}/actions.npy"]
        assert any(a[f"{ep}/{t:06d}.png"] != c[f"{ep}/{t:06d}.png"] for t in range(7))
    assert a["Train/ep000/actions.npy"] != a["Test/ep001/actions.npy"]  # episodes differ too


def test_saved_actions_replay_the_saved_frames(tmp_path):
    # the labels a later action-conditioned family trains on must be what was executed:
    # no hidden emulator stickiness.  300 steps: past the 272-frame intro, inputs matter.
    import ale_py
    import gymnasium as gym
    meta = rec(tmp_path / "raw", policy="random", episodes=1, test_fraction=0, max_steps=300)
    episode = tmp_path / "raw" / "Train" / "ep000"
    frames, actions = pngs(episode), np.load(episode / "actions.npy")
    gym.register_envs(ale_py)
    env = gym.make("ALE/MsPacman-v5", frameskip=1, repeat_action_probability=0.0)
    obs, _ = env.reset(seed=meta["episodes"][0]["env_seed"])
    replay = [obs] + [env.step(int(a))[0] for a in actions]
    env.close()
    np.testing.assert_array_equal(np.stack(replay), frames)


def test_policies_frameskip_and_skip_start(tmp_path):
    rec(tmp_path / "hold", sticky_prob=1.0, episodes=1, test_fraction=0, max_steps=10)
    held = np.load(tmp_path / "hold" / "Train" / "ep000" / "actions.npy")
    assert len(set(held.tolist())) == 1  # p = 1: the first action forever
    rec(tmp_path / "rand", policy="random", episodes=1, test_fraction=0, max_steps=40)
    assert len(set(np.load(tmp_path / "rand" / "Train" / "ep000" / "actions.npy").tolist())) >= 5

    # same held action, two emulator frames per step: step t shows emulator frame 2t
    rec(tmp_path / "fs2", sticky_prob=1.0, episodes=1, test_fraction=0, max_steps=5, frameskip=2)
    one, two = pngs(tmp_path / "hold" / "Train" / "ep000"), pngs(tmp_path / "fs2" / "Train" / "ep000")
    np.testing.assert_array_equal(two, one[::2])
    assert not np.array_equal(two[1], one[1])

    # skipped steps are played by the same policy stream: the recording starts 5 steps in
    rec(tmp_path / "skip", policy="random", episodes=1, test_fraction=0, max_steps=10, skip_start=5)
    rand = tmp_path / "rand" / "Train" / "ep000"
    skip = tmp_path / "skip" / "Train" / "ep000"
    np.testing.assert_array_equal(pngs(skip), pngs(rand)[5:16])
    np.testing.assert_array_equal(np.load(skip / "actions.npy"), np.load(rand / "actions.npy")[5:15])


def test_game_names_and_other_games(tmp_path, capsys):
    for name in ("MsPacman", "mspacman", "ms_pacman", "ALE/MsPacman-v5"):
        assert resolve_game(name) == "ALE/MsPacman-v5"
    assert resolve_game("pong") == "ALE/Pong-v5"
    code = main(["record", "atari", "--game", "Pong", "--episodes", "1", "--max-steps", "3",
                 "--test-fraction", "0", "--quiet", "--out", str(tmp_path / "pong")])
    assert code == 0, capsys.readouterr().err
    assert pngs(tmp_path / "pong" / "Train" / "ep000").shape == (4, 210, 160, 3)
    assert not (tmp_path / "pong" / "Test").exists()
    assert json.loads((tmp_path / "pong" / "record.json").read_text())["game"] == "Pong"


def test_unknown_game_is_one_line_with_suggestions(tmp_path, capsys):
    code = main(["record", "atari", "--game", "MsPacmn", "--episodes", "1",
                 "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "unknown Atari game 'MsPacmn'" in err and "did you mean MsPacman" in err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("kwargs, flag", [
    ({"episodes": 0}, "--episodes"), ({"frameskip": 0}, "--frameskip"),
    ({"max_steps": 0}, "--max-steps"), ({"test_fraction": 1.0}, "--test-fraction"),
    ({"sticky_prob": 1.5}, "--sticky-prob"), ({"policy": "random", "sticky_prob": 0.5}, "--sticky-prob"),
    ({"policy": "greedy"}, "--policy"), ({"seed": -1}, "--seed"), ({"skip_start": -1}, "--skip-start"),
    ({"repeat_action_probability": 1.5}, "--repeat-action-probability"),
    ({"policy": "mixed", "sticky_prob": 0.5}, "--sticky-prob"),
])
def test_bad_flags_name_the_flag_and_write_nothing(tmp_path, kwargs, flag):
    with pytest.raises(EverloopError, match=re.escape(flag)):
        rec(tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists() and no_leftovers(tmp_path)


def test_existing_output_needs_force_and_a_crash_changes_nothing(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.txt").write_text("precious")
    with pytest.raises(EverloopError, match=re.escape(f"{out} exists; pass --force")):
        rec(out)
    with pytest.raises(EverloopError, match="not a recording"):
        rec(out, force=True)
    assert (out / "thesis.txt").read_text() == "precious"

    (out / "thesis.txt").unlink()  # an empty folder is fine
    rec(out, max_steps=2)
    before = snapshot(out)
    saves = []

    def failing_save(self, fp, *args, **kwargs):
        saves.append(fp)
        if len(saves) > 4:
            raise OSError(28, "No space left on device", str(fp))
        return real_save(self, fp, *args, **kwargs)

    real_save = Image.Image.save
    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(EverloopError, match="cannot record .*No space left"):
        rec(out, force=True, seed=1)
    assert snapshot(out) == before and no_leftovers(tmp_path)
    monkeypatch.undo()
    rec(out, force=True, seed=1, max_steps=3)
    assert json.loads((out / "record.json").read_text())["seed"] == 1
    assert no_leftovers(tmp_path)


def test_ale_v5_option_set_and_the_mixed_policy(tmp_path, capsys):
    # `--ale-v5`: frameskip 4 and the console's sticky input; the saved actions are the
    # player's, and the recording still replays exactly from its env seed
    import ale_py
    import gymnasium as gym
    code = main(["record", "atari", "--game", "MsPacman", "--episodes", "1", "--max-steps", "90",
                 "--test-fraction", "0", "--ale-v5", "--policy", "mixed", "--quiet",
                 "--out", str(tmp_path / "raw")])
    assert code == 0, capsys.readouterr().err
    meta = json.loads((tmp_path / "raw" / "record.json").read_text())
    assert (meta["frameskip"], meta["repeat_action_probability"], meta["fps"], meta["policy"]) == (
        4, 0.25, 15.0, "mixed")
    episode = tmp_path / "raw" / "Train" / "ep000"
    frames, actions = pngs(episode), np.load(episode / "actions.npy")
    holds = np.diff(np.flatnonzero(np.diff(actions.astype(int)) != 0))
    assert len(set(actions.tolist())) >= 4 and holds.max() > 3  # several actions, held for a while
    gym.register_envs(ale_py)
    env = gym.make("ALE/MsPacman-v5")  # the id's own defaults are the option set
    obs, _ = env.reset(seed=meta["episodes"][0]["env_seed"])
    replay = [obs] + [env.step(int(a))[0] for a in actions]
    env.close()
    np.testing.assert_array_equal(np.stack(replay), frames)
    code = main(["record", "atari", "--game", "MsPacman", "--episodes", "1", "--ale-v5", "--frameskip", "2",
                 "--out", str(tmp_path / "x")])
    assert code == 2 and "--ale-v5 sets" in capsys.readouterr().err
