"""The default recipe as a user meets it: which family `train` picks, `--size 128` end to
end (prepare, train, generate, sheet, eval; the frame size a user picks is the model's,
with no other flag), a time-budgeted quiet run, and the demo's motion check."""
import json

import numpy as np
import pytest
from conftest import blob_frames
from PIL import Image

from everloop.cli import main as everloop
from everloop.data import FrameStore


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """160 frames of 160x160 (larger than 128: prepare scales them down)."""
    out = tmp_path_factory.mktemp("frames")
    for i, f in enumerate(blob_frames(160, 40, 0)):
        Image.fromarray(f).resize((160, 160), Image.BILINEAR).save(out / f"{i:04d}.png")
    return out


def test_size_128_prepare_train_generate_eval(folder, tmp_path):
    data, run = tmp_path / "data", tmp_path / "run"
    assert everloop(["prepare", str(folder), "--size", "128", "--out", str(data)]) == 0
    assert (FrameStore(str(data)).height, FrameStore(str(data)).width) == (128, 128)
    assert everloop(["train", "--data", str(data), "--out", str(run), "--preset", "tiny",
                     "--steps", "6", "--sample-every", "0", "--quiet"]) == 0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["config"]["size"] == 128
    video = tmp_path / "out"
    assert everloop(["generate", str(run), "--frames", "8", "--out", f"{video}/", "--quiet"]) == 0
    shots = sorted(video.iterdir())
    assert len(shots) == 8 and Image.open(shots[0]).size == (128, 128)
    assert np.asarray(Image.open(shots[-1])).std() > 0
    assert everloop(["sheet", str(run), "--count", "2", "--streams", "2", "--out", str(tmp_path / "s.png")]) == 0
    assert everloop(["eval", str(run), "--data", str(data), "--frames", "70", "--streams", "2",
                     "--out", str(tmp_path / "rep"), "--quiet"]) == 0
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert rep["horizons"] == [16] and all(np.isfinite(v["16"]) for v in rep["drift"].values())


def test_the_default_family_and_the_seed_preset(tiny_data, tmp_path):
    from everloop.models import DEFAULT_FAMILY, family_for
    assert DEFAULT_FAMILY == "worldmodel" and family_for(None) == "worldmodel"
    assert family_for(None, "seed") == "duralava" and family_for("multiscale", "seed") == "multiscale"
    assert everloop(["train", "--data", str(tiny_data), "--out", str(tmp_path / "r"), "--preset", "tiny",
                     "--steps", "2", "--sample-every", "0", "--quiet"]) == 0
    assert json.loads((tmp_path / "r" / "config.json").read_text())["family"] == "worldmodel"


def test_a_quiet_run_on_a_time_budget_finishes(tiny_data, tmp_path):
    # --quiet disables the progress bar; the time-budget path once read its delay and died.
    assert everloop(["train", "--data", str(tiny_data), "--out", str(tmp_path / "r"), "--preset", "tiny",
                     "--minutes", "0.02", "--sample-every", "0", "--quiet"]) == 0
    assert (tmp_path / "r" / "model.safetensors").exists()


def test_demo_motion_ratios_compare_lagged_differences(tmp_path):
    from conftest import write_store

    from everloop.demo import motion_ratios
    from everloop.sinks import open_sink
    real = blob_frames(400, 16, 0)
    data = write_store(tmp_path / "data", real)
    with open_sink(tmp_path / "same.mp4", fps=30) as sink:
        sink.write(real[:360])
    with open_sink(tmp_path / "still.mp4", fps=30) as sink:
        sink.write(np.repeat(real[:1], 360, 0))
    same = motion_ratios(tmp_path / "same.mp4", data, lags=(5, 30))
    still = motion_ratios(tmp_path / "still.mp4", data, lags=(5, 30))
    assert all(0.67 < v < 1.5 for v in same.values()), same   # codec noise only
    assert all(v < 0.2 for v in still.values()), still
