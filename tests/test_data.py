"""Tests for the data contract (everloop.data) and the sources, on tiny synthetic inputs."""

import json
import re
import warnings
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from everloop.data import FrameStore, resize_area, to_float, to_uint8
from everloop.errors import EverloopError
from everloop.prepare import prepare
from everloop.sources.demo import DEMO_CLIP, make_demo_clip

LAVA = Path(__file__).resolve().parents[2] / "shared/data/lavalamp/lavalite-classic.mp4"


# --------------------------------------------------------------------------- helpers


def write_video(path, n=20, h=32, w=32, fps=10):
    """A smooth mpeg4 clip whose brightness rises frame by frame (so order is checkable)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"qscale": "2"}
        for i in range(n):
            img = np.full((h, w, 3), 40 + 8 * i, np.uint8)
            img[:, : w // 2, 0] = 200  # a red left half
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def write_pngs(folder, images, names=None):
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        Image.fromarray(img).save(folder / (names[i] if names else f"frame{i:04d}.png"))
    return folder


def const(value, h=21, w=16):
    return np.full((h, w, 3), value, np.uint8)


def make_tree(root):
    """Train/a (3 frames), Train/b (5), Test/c (4); each episode one constant colour."""
    write_pngs(root / "Train" / "a", [const(10)] * 3)
    write_pngs(root / "Train" / "b", [const(100)] * 5)
    write_pngs(root / "Test" / "c", [const(200)] * 4)
    return root


def write_dataset(folder, episodes):
    """A hand-made dataset folder whose frame i has every pixel equal to i."""
    n = episodes[-1][1]
    folder.mkdir()
    index = np.arange(n, dtype=np.uint8)[:, None, None, None]
    np.save(folder / "frames.npy", np.broadcast_to(index, (n, 4, 4, 3)))
    meta = {"frames": n, "height": 4, "width": 4, "fps": 30.0, "episodes": episodes, "source": "x"}
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


def snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# --------------------------------------------------------------------------- conversions


def test_to_float_to_uint8_round_trip_is_exact():
    frames = np.random.default_rng(0).integers(0, 256, (2, 3, 5, 7, 3), dtype=np.uint8)
    x = to_float(frames)
    assert x.shape == (2, 3, 3, 5, 7) and x.dtype == torch.float32
    assert x.min() >= 0 and x.max() <= 1
    assert x[1, 2, 0, 4, 6] == pytest.approx(frames[1, 2, 4, 6, 0] / 255)
    back = to_uint8(x)
    assert back.dtype == np.uint8 and back.shape == frames.shape
    np.testing.assert_array_equal(back, frames)
    np.testing.assert_array_equal(to_uint8(to_float(torch.from_numpy(frames))), frames)


def test_to_uint8_clamps_rounds_and_takes_any_float():
    x = torch.tensor([-0.5, 10.4 / 255, 10.6 / 255, 1.5]).reshape(1, 1, 4).expand(3, 1, 4)
    assert to_uint8(x).tolist() == [[[0, 0, 0], [10, 10, 10], [11, 11, 11], [255, 255, 255]]]
    assert to_uint8(x.to(torch.bfloat16))[0, 3].tolist() == [255, 255, 255]
    assert to_uint8(x.double())[0, 2].tolist() == [11, 11, 11]


def test_to_float_accepts_read_only_memmap(tmp_path):
    np.save(tmp_path / "a.npy", np.arange(12, dtype=np.uint8).reshape(1, 2, 2, 3))
    mm = np.load(tmp_path / "a.npy", mmap_mode="r")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns when handed a non-writable array
        assert to_float(mm[0]).shape == (3, 2, 2)


@pytest.mark.parametrize("factor", [2, 4])
def test_resize_area_averages_blocks_exactly(factor):
    # swscale's "area" is an exact block mean at power-of-two factors (approximate otherwise)
    small = np.random.default_rng(1).integers(0, 256, (4, 6, 3), dtype=np.uint8)
    big = np.repeat(np.repeat(small, factor, axis=0), factor, axis=1)
    np.testing.assert_array_equal(resize_area(big, (4, 6)), small)
    assert resize_area(small, (4, 6)) is small  # same size: untouched


def test_resize_area_matches_cv2_on_smooth_images():
    cv2 = pytest.importorskip("cv2")
    yy, xx = np.mgrid[0:176, 0:176]
    img = np.stack([yy, xx, (yy + xx) // 2], -1).astype(np.uint8)
    ours = resize_area(img, (64, 64)).astype(int)
    theirs = cv2.resize(img, (64, 64), interpolation=cv2.INTER_AREA).astype(int)
    assert np.abs(ours - theirs).max() <= 2


# --------------------------------------------------------------------------- prepare


def test_prepare_video_native_size(tmp_path):
    meta = prepare(write_video(tmp_path / "in.mp4"), tmp_path / "out", progress=False)
    assert (meta["frames"], meta["height"], meta["width"]) == (20, 32, 32)
    assert meta["episodes"] == [[0, 20]] and meta["fps"] == 10 and "splits" not in meta
    assert json.loads((tmp_path / "out" / "meta.json").read_text()) == meta
    frames = np.load(tmp_path / "out" / "frames.npy")  # also loads without mmap
    assert frames.shape == (20, 32, 32, 3) and frames.dtype == np.uint8
    blue = frames[:, :, 20:, 2].mean(axis=(1, 2))  # brightness rose frame by frame
    assert np.all(np.diff(blue) > 4) and abs(blue[0] - 40) < 4
    assert abs(frames[5, :, :10, 0].mean() - 200) < 6  # the red half stayed on the left


@pytest.mark.parametrize("size, hw", [(16, (16, 16)), ((8, 12), (8, 12))])
def test_prepare_video_size(tmp_path, size, hw):
    meta = prepare(write_video(tmp_path / "in.mp4"), tmp_path / "out", size=size, progress=False)
    assert (meta["height"], meta["width"]) == hw
    assert FrameStore(tmp_path / "out").frames.shape == (20, *hw, 3)


def test_prepare_frame_folder_keeps_native_size_and_natural_order(tmp_path):
    src = write_pngs(tmp_path / "pngs", [const(v) for v in (2, 10, 1)],
                     ["f2.png", "f10.png", "f1.png"])
    (src / "notes.txt").write_text("ignored")
    meta = prepare(src, tmp_path / "out", progress=False, fps=12)
    assert (meta["frames"], meta["height"], meta["width"], meta["fps"]) == (3, 21, 16, 12.0)
    assert meta["episodes"] == [[0, 3]]
    assert FrameStore(tmp_path / "out").frames[:, 0, 0, 0].tolist() == [1, 2, 10]


def test_size_centre_crops_to_square_and_crop_picks_a_region(tmp_path):
    img = np.zeros((32, 64, 3), np.uint8)
    img[:, :16, 0] = 255  # red | green | blue quarters, green being the middle half
    img[:, 16:48, 1] = 255
    img[:, 48:, 2] = 255
    src = write_pngs(tmp_path / "pngs", [img])
    prepare(src, tmp_path / "sq", size=8, progress=False)
    assert np.all(FrameStore(tmp_path / "sq").frames[0] == [0, 255, 0])
    prepare(src, tmp_path / "crop", crop=(40, 4, 16, 10), progress=False)
    np.testing.assert_array_equal(FrameStore(tmp_path / "crop").frames[0], img[4:14, 40:56])
    prepare(src, tmp_path / "both", crop=(0, 0, 16, 32), size=(4, 2), progress=False)
    assert np.all(FrameStore(tmp_path / "both").frames[0] == [255, 0, 0])


def test_prepare_episode_tree(tmp_path):
    meta = prepare(make_tree(tmp_path / "tree"), tmp_path / "out", progress=False)
    assert (meta["frames"], meta["height"], meta["width"], meta["fps"]) == (12, 21, 16, 30.0)
    assert meta["episodes"] == [[0, 3], [3, 8], [8, 12]]
    assert meta["splits"] == {"train": [0, 1], "test": [2]}
    store = FrameStore(tmp_path / "out")
    assert store.frames[:, 0, 0, 0].tolist() == [10] * 3 + [100] * 5 + [200] * 4
    assert store.split() == ([[0, 3], [3, 8]], [[8, 12]])
    meta = prepare(tmp_path / "tree", tmp_path / "small", size=4, progress=False)
    assert (meta["height"], meta["width"]) == (4, 4)


def test_max_still_drops_recorder_stalls_and_cuts_the_episode(tmp_path):
    values = [1, 2, 2, 2, 2, 2, 3, 4]
    src = write_pngs(tmp_path / "pngs", [const(v) for v in values], [f"f{i}.png" for i in range(8)])
    meta = prepare(src, tmp_path / "keep", progress=False, fps=10)  # the default: repeats up to 1 s stay
    assert meta["frames"] == 8 and meta["episodes"] == [[0, 8]] and "stalls" not in meta
    meta = prepare(src, tmp_path / "all", progress=False, fps=1, max_still=0)  # 0: keep every frame
    assert meta["frames"] == 8 and "stalls" not in meta
    meta = prepare(src, tmp_path / "default", progress=False, fps=2)  # 4 repeats = 2 s: a stall
    assert meta["episodes"] == [[0, 3], [3, 5]] and meta["stalls"]["dropped_frames"] == 3
    meta = prepare(src, tmp_path / "cut", progress=False, fps=10, max_still=0.2)  # 2 frames may repeat
    assert meta["episodes"] == [[0, 3], [3, 5]] and meta["stalls"] == {"max_still_frames": 2, "dropped_frames": 3}
    assert FrameStore(tmp_path / "cut").frames[:, 0, 0, 0].tolist() == [1, 2, 2, 3, 4]
    # with an episode tree: episodes shrink, splits follow them
    meta = prepare(make_tree(tmp_path / "tree"), tmp_path / "tree_cut", progress=False, max_still=2 / 30)
    assert meta["episodes"] == [[0, 2], [2, 4], [4, 6]] and meta["splits"] == {"train": [0, 1], "test": [2]}


# --------------------------------------------------------------------------- FrameStore


def test_sample_clips_stay_inside_episodes(tmp_path):
    store = FrameStore(write_dataset(tmp_path / "d", [[0, 10], [10, 13], [13, 30]]))
    assert len(store) == 30 and (store.height, store.width, store.fps) == (4, 4, 30.0)
    clips = store.sample_clips(300, 3, 2, np.random.default_rng(0))
    assert clips.shape == (300, 3, 4, 4, 3) and clips.dtype == np.uint8
    first = clips[:, 0, 0, 0, 0].astype(int)
    np.testing.assert_array_equal(clips[:, :, 0, 0, 0], first[:, None] + [0, 2, 4])
    # span 5: starts 0..5 in episode 0 and 13..25 in episode 2; episode 1 is too short
    assert set(first) == set(range(6)) | set(range(13, 26))
    only = store.sample_clips(50, 2, 1, np.random.default_rng(0), episodes=[1])[:, :, 0, 0, 0]
    assert set(only[:, 0]) == {10, 11} and np.all(only[:, 1] == only[:, 0] + 1)
    ranged = store.sample_clips(50, 1, 1, np.random.default_rng(0), ranges=[[20, 22]])
    assert set(ranged[:, 0, 0, 0, 0]) == {20, 21}


def test_sample_clips_constant_episodes_never_mix(tmp_path):
    prepare(make_tree(tmp_path / "tree"), tmp_path / "out", progress=False)
    clips = FrameStore(tmp_path / "out").sample_clips(200, 3, 1, np.random.default_rng(3))
    colours = clips.reshape(200, -1)
    assert np.all(colours == colours[:, :1])
    assert set(colours[:, 0]) == {10, 100, 200}


def test_sample_clips_is_deterministic_under_a_seed(tmp_path):
    store = FrameStore(write_dataset(tmp_path / "d", [[0, 10], [10, 30]]))
    a = store.sample_clips(16, 3, 1, np.random.default_rng(7))
    b = store.sample_clips(16, 3, 1, np.random.default_rng(7))
    c = store.sample_clips(16, 3, 1, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_sample_clips_too_long_raises(tmp_path):
    store = FrameStore(write_dataset(tmp_path / "d", [[0, 10], [10, 13]]))
    with pytest.raises(EverloopError, match="longest has 10"):
        store.sample_clips(1, 4, 4, np.random.default_rng(0))  # needs 13 frames


def test_split_holds_out_each_episode_tail(tmp_path):
    store = FrameStore(write_dataset(tmp_path / "d", [[0, 100], [100, 120]]))
    assert store.split() == ([[0, 90], [100, 118]], [[90, 100], [118, 120]])
    assert store.split(0.0) == ([[0, 100], [100, 120]], [])


def test_framestore_rejects_bad_folders(tmp_path):
    with pytest.raises(EverloopError, match="nope"):
        FrameStore(tmp_path / "nope")
    d = write_dataset(tmp_path / "d", [[0, 5]])
    meta = json.loads((d / "meta.json").read_text())
    (d / "meta.json").write_text(json.dumps({**meta, "height": 5}))
    with pytest.raises(EverloopError, match="frames.npy"):
        FrameStore(d)
    (d / "meta.json").write_text(json.dumps({**meta, "episodes": [[0, 2], [3, 5]]}))
    with pytest.raises(EverloopError, match="meta.json"):
        FrameStore(d)
    (d / "meta.json").unlink()
    with pytest.raises(EverloopError, match="meta.json"):
        FrameStore(d)


# --------------------------------------------------------------------------- bad input


def bad_sources(tmp_path):
    (tmp_path / "zero.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_text("this is not a video\n" * 20)
    (tmp_path / "empty").mkdir()
    return [tmp_path / name for name in ("zero.mp4", "text.mp4", "missing.mp4", "empty")]


def test_bad_sources_name_the_path_and_leave_nothing(tmp_path):
    for src in bad_sources(tmp_path):
        with pytest.raises(EverloopError, match=re.escape(str(src))) as err:
            prepare(src, tmp_path / "out", progress=False)
        assert "\n" not in str(err.value)
        if src.suffix == ".mp4":
            assert "not a readable video" in str(err.value)
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


@pytest.mark.parametrize("kwargs, flag", [
    ({"size": 0}, "--size"), ({"size": (16, -1)}, "--size"),
    ({"crop": (0, 0, 40, 8)}, "--crop"), ({"crop": (-1, 0, 4, 4)}, "--crop"),
    ({"crop": (0, 0, 0, 4)}, "--crop"),
])
def test_bad_flags_name_the_flag(tmp_path, kwargs, flag):
    video = write_video(tmp_path / "in.mp4")
    for src in (video, write_pngs(tmp_path / "pngs", [const(1, 32, 32)])):
        with pytest.raises(EverloopError, match=flag):
            prepare(src, tmp_path / "out", progress=False, **kwargs)
    assert not (tmp_path / "out").exists()


def test_mismatched_frame_sizes_name_the_file(tmp_path):
    src = write_pngs(tmp_path / "pngs", [const(1, 8, 8), const(1, 9, 8)])
    with pytest.raises(EverloopError, match="frame0001.png.*--size"):
        prepare(src, tmp_path / "out", progress=False)
    assert prepare(src, tmp_path / "out", size=4, progress=False)["frames"] == 2


def test_existing_output_is_kept_on_error_and_without_force(tmp_path):
    out = tmp_path / "out"
    prepare(write_pngs(tmp_path / "a", [const(1)] * 2), out, progress=False)
    before = snapshot(out)
    with pytest.raises(EverloopError, match=re.escape(f"{out} exists; pass --force")):
        prepare(write_pngs(tmp_path / "b", [const(2)] * 3), out, progress=False)
    for src in bad_sources(tmp_path):
        with pytest.raises(EverloopError):
            prepare(src, out, progress=False, force=True)
    assert snapshot(out) == before
    assert prepare(tmp_path / "b", out, progress=False, force=True)["frames"] == 3
    assert FrameStore(out).frames[:, 0, 0, 0].tolist() == [2, 2, 2]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_force_never_replaces_a_folder_that_is_not_a_dataset(tmp_path):
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "thesis.txt").write_text("precious")
    with pytest.raises(EverloopError, match="not a dataset folder"):
        prepare(write_pngs(tmp_path / "a", [const(1)]), tmp_path / "home", force=True,
                progress=False)
    assert (tmp_path / "home" / "thesis.txt").read_text() == "precious"


def dead_pid() -> int:
    """The pid of a process that has exited (free now, so its temps are stale)."""
    import subprocess
    import sys
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_killed_prepare_is_cleaned_up_and_a_cut_swap_restored(tmp_path):
    pid = dead_pid()
    src = write_pngs(tmp_path / "a", [const(1)] * 2)
    # what kills leave: a half-built dataset, and an old dataset renamed aside whose
    # replacement never arrived (the kill fell between the two renames)
    (tmp_path / f".half.tmp-{pid}").mkdir()
    (tmp_path / f".half.tmp-{pid}" / "frames.npy").write_bytes(b"\0" * 100)
    prepare(src, tmp_path / "old", progress=False)
    (tmp_path / "old").rename(tmp_path / f".old.old-{pid}")
    prepare(src, tmp_path / "new", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "new", "old"]
    assert FrameStore(tmp_path / "old").frames.shape[0] == 2


@pytest.mark.parametrize("field, value", [("fps", "fast"), ("fps", float("nan")), ("frames", 2.0),
                                          ("height", True), ("width", 100000), ("episodes", "all")])
def test_meta_json_values_of_the_wrong_type_name_the_file(tmp_path, field, value):
    d = write_dataset(tmp_path / "d", [[0, 5]])
    meta = json.loads((d / "meta.json").read_text())
    (d / "meta.json").write_text(json.dumps({**meta, field: value}))
    with pytest.raises(EverloopError, match=f"meta.json.*{field}") as e:
        FrameStore(d)
    assert "\n" not in str(e.value)


def test_prepare_refuses_its_own_source_and_nan_fps(tmp_path):
    src = write_pngs(tmp_path / "a", [const(1)] * 2)
    before = snapshot(src)
    with pytest.raises(EverloopError, match="input"):
        prepare(src, src, force=True, progress=False)
    for fps in (float("nan"), float("inf"), 0, -1):
        with pytest.raises(EverloopError, match="--fps"):
            prepare(src, tmp_path / "out", fps=fps, progress=False)
    assert snapshot(src) == before and not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- real footage


def test_shipped_demo_clip_is_small_and_long():
    assert DEMO_CLIP.is_file()
    assert DEMO_CLIP.stat().st_size <= 2_000_000
    with av.open(str(DEMO_CLIP)) as c:
        assert c.streams.video[0].frames == 4750


@pytest.mark.skipif(not LAVA.is_file(), reason=f"lava-lamp recording not found at {LAVA}")
def test_demo_excerpt_of_the_lava_recording_prepares(tmp_path):
    info = make_demo_clip(LAVA, tmp_path / "cut.mp4", seconds=5)
    assert info["frames"] == 250  # keyframes every 250 frames: 5 s rounds up to one GOP
    meta = prepare(tmp_path / "cut.mp4", tmp_path / "out", size=16, progress=False)
    assert (meta["frames"], meta["height"], meta["width"], meta["fps"]) == (250, 16, 16, 30.0)
    frames = FrameStore(tmp_path / "out").frames
    assert frames.std() > 10  # real picture, not a blank
