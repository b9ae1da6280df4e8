"""The command line end to end on tiny data: outputs, and one-line errors on bad input."""
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from everloop.cli import main

LAVA = Path(__file__).resolve().parents[2] / "shared/data/lavalamp/lavalite-classic.mp4"


def run_cli(*args, capsys=None):
    code = main([str(a) for a in args])
    err = capsys.readouterr().err if capsys else ""
    return code, err


def assert_one_line_error(code, err, *needles):
    assert code == 2
    lines = [l for l in err.strip().splitlines() if l.strip()]
    assert len(lines) == 1, err
    for needle in needles:
        assert str(needle) in lines[0], (needle, lines[0])


def test_generate_writes_every_format(tiny_run, tmp_path, capsys):
    for name in ("out.png", "out.mp4", "out.gif", "frames/"):
        code, err = run_cli("generate", tiny_run, "--frames", 20, "--out", tmp_path / name, "--quiet",
                            capsys=capsys)
        assert code == 0, err
    with Image.open(tmp_path / "out.png") as im:
        assert im.n_frames == 20 and im.info.get("loop") == 0 and im.size == (16, 16)
    with av.open(str(tmp_path / "out.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == 20
    assert len(list((tmp_path / "frames").glob("*.png"))) == 20


def test_generate_same_seed_same_frames_other_seed_other_frames(tiny_run, tmp_path, capsys):
    outs = {}
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        run_cli("generate", tiny_run, "--frames", 12, "--seed", seed, "--interp", 1, "--out",
                tmp_path / name, "--quiet", capsys=capsys)
        outs[name] = np.stack([np.asarray(Image.open(p)) for p in sorted((tmp_path / name).glob("*.png"))])
    assert np.array_equal(outs["a"], outs["b"]) and not np.array_equal(outs["a"], outs["c"])


def test_bad_video_inputs_give_one_line_errors(tmp_path, capsys):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n")
    folder = tmp_path / "nothing"
    folder.mkdir()
    for source in (empty, text, folder, tmp_path / "missing.mp4"):
        code, err = run_cli("prepare", source, "--out", tmp_path / "d", capsys=capsys)
        assert_one_line_error(code, err, source)
        assert not (tmp_path / "d").exists()


def test_size_zero_names_the_flag(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["prepare", str(tmp_path), "--size", "0", "--out", str(tmp_path / "d")])
    assert e.value.code == 2
    assert_one_line_error(2, capsys.readouterr().err, "--size")


def test_missing_and_truncated_runs(tiny_run, tmp_path, capsys):
    code, err = run_cli("generate", tmp_path / "no_run", "--frames", 5, "--out", tmp_path / "x.mp4",
                        capsys=capsys)
    assert_one_line_error(code, err, tmp_path / "no_run")
    weights = tiny_run / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    code, err = run_cli("generate", tiny_run, "--frames", 5, "--out", tmp_path / "x.mp4", capsys=capsys)
    assert_one_line_error(code, err, weights)
    assert not (tmp_path / "x.mp4").exists()


def test_existing_output_is_never_overwritten(tiny_run, tmp_path, capsys):
    out = tmp_path / "keep.mp4"
    out.write_bytes(b"precious")
    code, err = run_cli("generate", tiny_run, "--frames", 5, "--out", out, capsys=capsys)
    assert_one_line_error(code, err, out)
    assert out.read_bytes() == b"precious"
    # a failing generate (bad run) with --force must not touch it either
    code, err = run_cli("generate", tmp_path / "no_run", "--frames", 5, "--out", out, "--force",
                        capsys=capsys)
    assert code == 2 and out.read_bytes() == b"precious"


def test_train_refuses_to_clobber_a_run_without_resume_or_force(tiny_run, tiny_data, capsys):
    before = (tiny_run / "model.safetensors").read_bytes()
    code, err = run_cli("train", "--data", tiny_data, "--out", tiny_run, "--preset", "tiny", "--steps", 1,
                        capsys=capsys)
    assert_one_line_error(code, err, tiny_run, "--resume")
    assert (tiny_run / "model.safetensors").read_bytes() == before


def test_sheet_of_late_frames(tiny_run, tmp_path, capsys):
    code, err = run_cli("sheet", tiny_run, "--start", 2000, "--count", 4, "--streams", 2,
                        "--out", tmp_path / "late.png", capsys=capsys)
    assert code == 0, err
    with Image.open(tmp_path / "late.png") as im:
        assert im.width > 4 * 16 and im.height > 2 * 16


def test_outputs_need_force_and_force_replaces_only_the_same_kind(tiny_run, tmp_path, capsys):
    sheet, video = tmp_path / "s.png", tmp_path / "v.mp4"
    for args in (["sheet", tiny_run, "--count", 2, "--streams", 1, "--out", sheet],
                 ["generate", tiny_run, "--frames", 3, "--quiet", "--out", video]):
        assert run_cli(*args, capsys=capsys)[0] == 0
        before = Path(args[-1]).read_bytes()
        assert_one_line_error(*run_cli(*args, capsys=capsys), args[-1], "--force")
        assert Path(args[-1]).read_bytes() == before
        assert run_cli(*args, "--force", capsys=capsys)[0] == 0
    # a sheet is not a video and a video is not a sheet, even with --force
    code, _err = run_cli("generate", tiny_run, "--frames", 3, "--out", tmp_path / "x.png", "--force", capsys=capsys)
    assert code == 0
    assert_one_line_error(*run_cli("sheet", tiny_run, "--out", tmp_path / "x.png", "--force", capsys=capsys),
                          "x.png", "--out")
    assert_one_line_error(*run_cli("generate", tiny_run, "--frames", 3, "--out", sheet, "--force",
                                   capsys=capsys), sheet)


def test_console_script_reports_errors_on_one_line(tmp_path):
    exe = Path(sys.executable).with_name("everloop")
    if not exe.exists():
        pytest.skip("console script not installed (pip install -e . creates it)")
    r = subprocess.run([str(exe), "generate", str(tmp_path / "none"), "--frames", "3", "--out",
                        str(tmp_path / "o.mp4")], check=False, capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "none" in r.stderr


@pytest.mark.skipif(not LAVA.exists(), reason="the lava-lamp recording is not beside the repo")
def test_prepare_the_real_recording_head(tmp_path, capsys):
    # The full 18,000-frame prepare is measured in BENCHMARKS.md; here a quick crop+size check.
    code, err = run_cli("prepare", LAVA, "--size", 16, "--crop", "0,0,176,176", "--out", tmp_path / "d",
                        capsys=capsys)
    assert code == 0, err
    import json
    meta = json.loads((tmp_path / "d" / "meta.json").read_text())
    # the recorder's stalls past 1 s are dropped by default (prepare.STALL_SECONDS)
    assert (meta["frames"] + meta["stalls"]["dropped_frames"], meta["height"], meta["width"]) == (18000, 16, 16)


def test_live_without_a_display_says_so_in_one_line(tiny_run, monkeypatch, capsys):
    for var in ("DISPLAY", "WAYLAND_DISPLAY", "SDL_VIDEODRIVER"):
        monkeypatch.delenv(var, raising=False)
    code, err = run_cli("live", tiny_run, capsys=capsys)
    assert_one_line_error(code, err, "display")


def test_live_plays_headless_with_a_dummy_driver(tiny_run, monkeypatch):
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    from everloop import live
    from everloop.checkpoint import load_run
    from everloop.rollout import frames
    model, _ = load_run(tiny_run)
    shown = live.play((c[0] for c in frames(model, None, chunk=4)), fps=1000, scale=2, max_frames=10)
    assert shown == 10
