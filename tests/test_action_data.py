"""Actions beside frames (everloop.data, everloop.prepare): a recorded game's actions stay
aligned with its frames through prepare's splits, stall cuts and crops, and through the
loaders' strides. Synthetic episode trees whose every picture names its source frame, so
alignment is read off the pixels."""
import json

import numpy as np
import pytest
from PIL import Image

from everloop.data import (
    ACTION_NONE,
    ACTIONS_FILE,
    FrameStore,
    seed_action_clips,
    seed_clips,
)
from everloop.errors import EverloopError
from everloop.prepare import prepare

N_ACTIONS = 9


def action_of(source_index: int) -> int:
    """The action the synthetic recorder took at a source frame (any function will do)."""
    return (7 * source_index + 3) % N_ACTIONS


def picture(i: int) -> np.ndarray:
    """An 8x8 frame whose grey level names source frame i (exact through PNG and no resize)."""
    return np.full((8, 8, 3), i, np.uint8)


def write_tree(root, episodes: dict[str, list[int]]) -> None:
    """Episode folders, each a list of source indices (a repeated index is a stall), with
    actions.npy as `everloop record` writes it, and a record.json naming 9 actions."""
    for name, pics in episodes.items():
        folder = root / name
        folder.mkdir(parents=True)
        for t, i in enumerate(pics):
            Image.fromarray(picture(i)).save(folder / f"{t:06d}.png")
        np.save(folder / ACTIONS_FILE, np.array([action_of(i) for i in pics[:-1]], np.uint8))
    (root / "record.json").write_text(json.dumps({
        "game": "Toy", "fps": 15.0, "frameskip": 4, "height": 8, "width": 8,
        "action_meanings": [f"A{k}" for k in range(N_ACTIONS)]}))


def index_of(frames: np.ndarray) -> np.ndarray:
    return frames[..., 0, 0, 0].astype(int)


def test_actions_stay_aligned_through_splits_and_stall_cuts(tmp_path):
    # Train/ep0: 0..11 with a stall (pictures 3 repeated 6 times); Train/ep1 and Test/ep2 plain
    stall = [0, 1, 2, 3, 3, 3, 3, 3, 3, 9, 10, 11]
    write_tree(tmp_path / "raw", {"Train/ep0": stall, "Train/ep1": list(range(20, 32)),
                                  "Test/ep2": list(range(40, 56))})
    meta = prepare(tmp_path / "raw", tmp_path / "data", progress=False, max_still=2 / 15)
    assert meta["actions"] == {"count": 9, "meanings": [f"A{k}" for k in range(9)]}
    assert meta["recorded"]["game"] == "Toy" and meta["recorded"]["crop"] == [0, 0, 8, 8]
    # the stall keeps 2 repeats (3, 3), drops 4 and cuts: ep0 becomes two episodes
    assert meta["episodes"] == [[0, 5], [5, 8], [8, 20], [20, 36]]
    assert meta["splits"] == {"train": [0, 1, 2], "test": [3]}
    store = FrameStore(tmp_path / "data")
    pics, acts = index_of(store.frames), np.asarray(store.actions)
    assert pics[:8].tolist() == [0, 1, 2, 3, 3, 9, 10, 11]
    for s, e in store.episodes:
        assert acts[e - 1] == ACTION_NONE  # nothing follows an episode's end
        for k in range(s, e - 1):
            if pics[k + 1] == pics[k] + 1:  # a real step of the recording: its own action
                assert acts[k] == action_of(pics[k])
    # the kept repeat (3 -> 3) is the recording's step 3 -> 4 (the same picture), 4 -> 5 was dropped
    assert acts[3] == action_of(3) and acts[4] == ACTION_NONE


@pytest.mark.parametrize("stride", [1, 2, 3])
def test_loaders_give_the_actions_between_each_pair_of_frames(tmp_path, stride):
    write_tree(tmp_path / "raw", {"Train/ep0": list(range(30)), "Train/ep1": list(range(50, 70)),
                                  "Test/ep2": list(range(100, 125))})
    prepare(tmp_path / "raw", tmp_path / "data", progress=False)
    store = FrameStore(tmp_path / "data")
    rng = np.random.default_rng(stride)
    clips = store.sample_action_clips(16, 4, stride, rng)
    assert clips.frames.shape == (16, 4, 3, 8, 8) and clips.actions.shape == (16, 3, stride)
    first = (clips.frames[:, :, 0, 0, 0] * 255).round().long().numpy()
    assert (np.diff(first, axis=1) == stride).all()  # inside one episode, stride apart
    want = np.vectorize(action_of)(first[:, :-1, None] + np.arange(stride))
    np.testing.assert_array_equal(clips.actions.numpy(), want)
    # the same rng draws the same clips with or without actions
    plain = store.sample_clips(16, 4, stride, np.random.default_rng(stride))
    np.testing.assert_array_equal(index_of(plain), first)
    held = seed_action_clips(store, 4, stride, 5, seed=1)
    np.testing.assert_array_equal(held.frames.numpy(), seed_clips(store, 4, stride, 5, seed=1).numpy())
    assert ((held.frames[:, :, 0, 0, 0] * 255).round() >= 100).all()  # the Test episode only


def test_a_dataset_without_actions_says_so_and_bad_actions_name_the_file(tmp_path):
    write_tree(tmp_path / "raw", {"Train/ep0": list(range(10)), "Test/ep1": list(range(10, 20))})
    prepare(tmp_path / "raw", tmp_path / "data", progress=False)
    meta = json.loads((tmp_path / "data" / "meta.json").read_text())
    (tmp_path / "raw" / "Test" / "ep1" / ACTIONS_FILE).unlink()
    with pytest.raises(EverloopError, match="some episodes hold actions.npy"):
        prepare(tmp_path / "raw", tmp_path / "other", progress=False)
    np.save(tmp_path / "raw" / "Test" / "ep1" / ACTIONS_FILE, np.zeros(3, np.uint8))
    with pytest.raises(EverloopError, match="must hold 9 integer actions"):
        prepare(tmp_path / "raw", tmp_path / "other", progress=False)
    acts = np.load(tmp_path / "data" / ACTIONS_FILE)
    acts[9] = 0  # an episode's last frame must say nothing follows
    np.save(tmp_path / "data" / ACTIONS_FILE, acts)
    with pytest.raises(EverloopError, match="last frame must hold 255"):
        FrameStore(tmp_path / "data")
    del meta["actions"]
    (tmp_path / "data" / "meta.json").write_text(json.dumps(meta))
    store = FrameStore(tmp_path / "data")
    assert store.actions is None and store.n_actions == 0
    with pytest.raises(EverloopError, match="no actions"):
        store.sample_action_clips(2, 2, 1, np.random.default_rng(0))
