"""Sinks and the live window, on tiny frames: round trips, looping, and never clobbering."""

import itertools
import os
import subprocess
import sys

import av
import numpy as np
import pytest
from PIL import Image

from everloop.errors import EverloopError
from everloop.sinks import open_sink

N = 24  # frames per clip: written in uneven chunks to exercise chunk boundaries


def clip(h, w, n=N):
    """Smooth gradients whose blue channel steps 10 per frame, so lossy codecs round-trip
    them closely and the frame order is visible in every pixel."""
    y, x = np.mgrid[:h, :w]
    return np.stack([np.stack([x * 255 // (w - 1), y * 255 // (h - 1),
                               np.full_like(x, 10 * i)], -1) for i in range(n)]).astype(np.uint8)


def write(path, video, **kw):
    with open_sink(path, **{"fps": 30, **kw}) as sink:
        for chunk in np.split(video, [1, 7, 20]):  # chunks of 1, 6, 13 and 4 frames
            sink.write(chunk)


def read_video(path):
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def read_animation(path):
    """All frames of an APNG/GIF via Pillow, plus its info dict (loop, duration)."""
    im = Image.open(path)
    frames = []
    for i in range(im.n_frames):
        im.seek(i)
        frames.append(np.asarray(im.convert("RGB")))
    return np.stack(frames), im.info


def leftovers(folder):
    return [p for p in os.listdir(folder) if ".tmp-" in p or ".old-" in p]


@pytest.mark.parametrize("size", [(16, 16), (13, 17)])
@pytest.mark.parametrize("suffix", [".mp4", ".webm"])
def test_video_round_trip(tmp_path, size, suffix):
    h, w = size
    frames = clip(h, w)
    write(tmp_path / f"out{suffix}", frames)
    back = read_video(tmp_path / f"out{suffix}")
    # odd sizes are padded up to even with edge pixels, never rescaled
    assert back.shape == (N, h + h % 2, w + w % 2, 3)
    err = np.abs(back[:, :h, :w].astype(int) - frames)
    assert err.mean() < 8
    assert np.abs(back[:, h - 1:, w - 1:].astype(int) - frames[:, -1:, -1:]).mean() < 12
    # frame order: the blue channel climbs 10 per frame
    assert np.all(np.abs(back[:, :h, :w, 2].mean((1, 2)) - 10 * np.arange(N)) < 6)
    assert leftovers(tmp_path) == []


def test_mp4_falls_back_to_mpeg4_without_libx264(tmp_path, monkeypatch):
    monkeypatch.setattr(av, "codecs_available", av.codecs_available - {"libx264"})
    frames = clip(13, 17)
    write(tmp_path / "out.mp4", frames)
    with av.open(str(tmp_path / "out.mp4")) as c:
        assert c.streams.video[0].codec_context.name == "mpeg4"
    back = read_video(tmp_path / "out.mp4")
    assert back.shape == (N, 14, 18, 3)
    assert np.abs(back[:, :13, :17].astype(int) - frames).mean() < 8


@pytest.mark.parametrize("size", [(16, 16), (13, 17)])
def test_apng_lossless_and_loops_forever(tmp_path, size):
    frames = clip(*size)
    frames[5, 3, 4] = (255, 0, 255)  # a lone odd pixel must survive exactly
    write(tmp_path / "out.png", frames)
    back, info = read_animation(tmp_path / "out.png")
    assert back.shape == frames.shape
    assert np.array_equal(back, frames)
    assert info.get("loop") == 0
    assert info.get("duration") == pytest.approx(1000 / 30)


@pytest.mark.parametrize("size", [(16, 16), (13, 17)])
def test_gif_loops_forever(tmp_path, size):
    frames = clip(*size)
    write(tmp_path / "out.gif", frames)
    back, info = read_animation(tmp_path / "out.gif")
    assert back.shape == frames.shape
    assert np.abs(back.astype(int) - frames).mean() < 4  # 256 colours per frame
    assert info.get("loop") == 0
    assert info.get("duration") == 30  # whole centiseconds: 1/30 s -> 3 cs


@pytest.mark.parametrize("name", ["frames", "frames/"])
def test_png_folder_exact(tmp_path, name):
    frames = clip(13, 17)
    write(os.path.join(tmp_path, name), frames)
    files = sorted(os.listdir(tmp_path / "frames"))
    assert files == [f"frame_{i:07d}.png" for i in range(N)]
    back = np.stack([np.asarray(Image.open(tmp_path / "frames" / f)) for f in files])
    assert np.array_equal(back, frames)
    assert leftovers(tmp_path) == []


def test_fractional_fps_and_wide_folder_names(tmp_path):
    write(tmp_path / "ntsc.png", clip(8, 8), fps=29.97)
    assert read_animation(tmp_path / "ntsc.png")[1]["duration"] == pytest.approx(1000 / 29.97)
    write(tmp_path / "long", clip(8, 8, n=3)[[0, 1, 2, 2]], frames=12_345_678)
    assert max(os.listdir(tmp_path / "long")) == "frame_00000003.png"  # 8 digits
    for bad in (0, -30, "fast", float("nan")):
        with pytest.raises(EverloopError, match="--fps"):
            open_sink(tmp_path / "x.mp4", fps=bad)


@pytest.mark.parametrize("name", ["out.mp4", "out.png", "out.gif", "frames"])
@pytest.mark.parametrize("force", [False, True])
def test_something_else_is_never_replaced(tmp_path, name, force):
    target = tmp_path / name
    target.write_bytes(b"precious")  # not a video, not a frame folder: not everloop's
    with pytest.raises(EverloopError, match="exists") as e:
        open_sink(target, force=force)
    assert str(target) in str(e.value) and "\n" not in str(e.value)
    assert target.read_bytes() == b"precious"
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("name", ["out.mp4", "out.png", "out.gif", "frames"])
def test_existing_output_needs_force_then_is_replaced(tmp_path, name):
    target = tmp_path / name
    write(target, clip(16, 16))
    with pytest.raises(EverloopError, match="exists; pass --force"):
        open_sink(target)
    write(target, clip(8, 8, n=2), force=True)  # a video by a video, frames by frames
    if name == "frames":
        assert len(os.listdir(target)) == 2
    else:
        first = (read_video(target) if name.endswith(".mp4") else read_animation(target)[0])
        assert first.shape[:3] == (2, 8, 8)
    assert leftovers(tmp_path) == []


def test_an_empty_folder_takes_frames_without_force(tmp_path):
    (tmp_path / "frames").mkdir()
    write(tmp_path / "frames", clip(8, 8, n=3))
    assert len(os.listdir(tmp_path / "frames")) == 3 and leftovers(tmp_path) == []


def test_force_never_replaces_a_folder_everloop_did_not_make(tmp_path):
    for name in ("frames", "out.mp4"):
        target = tmp_path / name
        target.mkdir()
        (target / "thesis.txt").write_text("precious")
        with pytest.raises(EverloopError, match="did not make"):
            open_sink(target, force=True)
        assert (target / "thesis.txt").read_text() == "precious"


def test_a_killed_writers_temp_is_cleaned_at_the_next_write(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its pid is free now: its leftovers are stale
    (tmp_path / f".old.mp4.tmp-{dead.pid}").write_bytes(b"half a video")
    (tmp_path / f".frames.tmp-{dead.pid}").mkdir()
    (tmp_path / f".live.mp4.tmp-{os.getpid()}").write_bytes(b"ours, still being written")
    write(tmp_path / "new.mp4", clip(16, 16))
    assert sorted(os.listdir(tmp_path)) == [f".live.mp4.tmp-{os.getpid()}", "new.mp4"]


@pytest.mark.parametrize("name", ["out.mp4", "out.webm", "out.png", "out.gif", "frames"])
def test_exception_inside_with_leaves_nothing(tmp_path, name):
    with pytest.raises(RuntimeError, match="boom"), open_sink(tmp_path / name) as sink:
        sink.write(np.tile(clip(16, 16), (3, 1, 1, 1)))  # past x264's 40-frame lookahead
        assert leftovers(tmp_path) != []  # the temp output really was being written
        raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []


def test_exception_keeps_existing_target_with_force(tmp_path):
    target = tmp_path / "out.mp4"
    write(target, clip(16, 16))
    precious = target.read_bytes()
    with pytest.raises(RuntimeError), open_sink(target, force=True) as sink:
        sink.write(clip(16, 16, n=3))
        raise RuntimeError("boom")
    assert target.read_bytes() == precious
    assert leftovers(tmp_path) == []


def test_unknown_suffix(tmp_path):
    with pytest.raises(EverloopError, match=r"out\.avi.*\.mp4.*\.gif") as e:
        open_sink(tmp_path / "out.avi")
    assert "\n" not in str(e.value)
    assert os.listdir(tmp_path) == []


def test_bad_frames_and_empty_stream(tmp_path):
    with pytest.raises(EverloopError, match=r"uint8 \[n, H, W, 3\]"), open_sink(tmp_path / "out.png") as sink:
        sink.write(np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(EverloopError, match="no frames"):
        open_sink(tmp_path / "out.png").close()
    assert os.listdir(tmp_path) == []


# ---- live window ------------------------------------------------------------------------


def test_play_headless_stops_at_max_frames(monkeypatch):
    pytest.importorskip("pygame")
    from everloop.live import play

    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    plenty = itertools.islice(itertools.repeat(clip(16, 16, n=3)), 10)  # 30 frames
    assert play(plenty, fps=1000, scale=2, max_frames=5) == 5


def test_play_quits_on_q(monkeypatch):
    pygame = pytest.importorskip("pygame")
    from everloop.live import play

    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")

    def chunks():
        frame = clip(8, 8, n=1)
        yield frame
        yield frame
        pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_q))
        while True:
            yield frame

    assert play(chunks(), fps=1000, max_frames=100) == 3


def test_check_display_without_display(monkeypatch):
    pytest.importorskip("pygame")
    from everloop.live import check_display

    for var in ("DISPLAY", "WAYLAND_DISPLAY", "SDL_VIDEODRIVER"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    with pytest.raises(EverloopError, match="no display found.*everloop generate"):
        check_display()


def test_check_display_without_pygame(monkeypatch):
    from everloop.live import check_display

    monkeypatch.setitem(sys.modules, "pygame", None)  # makes `import pygame` fail
    with pytest.raises(EverloopError, match=r"pip install 'everloop\[live\]'"):
        check_display()
