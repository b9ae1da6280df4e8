"""`--size 128` end to end with the default recipe on a tiny config: prepare, train,
generate, sheet, eval (the frame size a user picks is the model's, with no other flag)."""
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
