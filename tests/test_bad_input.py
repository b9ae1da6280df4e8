"""Careless flags, bad values and kills never cost a user their work (docs/reliability.md).

Every case runs one command against a workspace that holds a dataset, two runs, a video, a
sheet, a report, a folder everloop did not make and a plain file, and asserts: exit status
2, exactly one line on stderr naming the flag or the file at fault, and every file and
folder that existed before is byte-identical afterwards (nothing new appears either).
The fault test kills `train` with SIGKILL and SIGTERM at random moments and checks that
--resume continues, log.jsonl has each step once and samples/ no sheet past the checkpoint."""
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import blob_frames, write_store

from everloop.cli import main

W = "{ws}"  # the workspace, filled in per case


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """The workspace every case starts from (copied per case)."""
    from everloop.sheets import save_sheet
    from everloop.sinks import open_sink
    from everloop.train import TrainArgs, train
    ws = tmp_path_factory.mktemp("base")
    frames = blob_frames(40)
    write_store(ws / "data", frames)
    train(TrainArgs(data=str(ws / "data"), out=str(ws / "run"), family="duralava", preset="tiny", steps=2, sample_every=0,
                    progress=False, precision="fp32"))
    shutil.copytree(ws / "run", ws / "run2")
    for name in ("clip.mp4", "anim.png"):
        with open_sink(ws / name, fps=10) as sink:
            sink.write(frames[:3])
    save_sheet(frames[:4].reshape(2, 2, 16, 16, 3), ws / "sheet.png")
    (ws / "report").mkdir()
    (ws / "report" / "report.json").write_text('{"frames": 16}\n')
    (ws / "report" / "report.md").write_text("# report\n")
    (ws / "notes").mkdir()
    (ws / "notes" / "thesis.txt").write_text("three years of work\n")
    (ws / "afile").write_text("precious\n")
    (ws / "metrics.json").write_text('{"mse": 0.1}\n')
    (ws / "src").mkdir()
    from PIL import Image
    for i, f in enumerate(frames[:3]):
        Image.fromarray(f).save(ws / "src" / f"{i:03d}.png")
    (ws / "ro").mkdir()
    return ws


def tree(root: Path) -> dict:
    """Every path under root -> sha256 of its bytes ('dir' for folders)."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for d in dirs:
            out[os.path.relpath(os.path.join(dirpath, d), root)] = "dir"
        for f in files:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, root)] = hashlib.sha256(Path(p).read_bytes()).hexdigest()
    return out


def edit_json(path: Path, **changes):
    """Set keys in a JSON file; config__size is d["config"]["size"]."""
    d = json.loads(path.read_text())
    for key, value in changes.items():
        *parents, last = key.split("__")
        node = d
        for k in parents:
            node = node[k]
        node[last] = value
    path.write_text(json.dumps(d))


def config(**changes):
    return lambda ws: edit_json(ws / "run" / "config.json", **changes)


def meta(**changes):
    return lambda ws: edit_json(ws / "data" / "meta.json", **changes)


def raw_config_text(old: str, new: str):
    def setup(ws):
        p = ws / "run" / "config.json"
        p.write_text(p.read_text().replace(old, new, 1))
    return setup


def no_meta(ws):
    (ws / "data" / "meta.json").unlink()


def no_state(ws):
    (ws / "run" / "train_state.pt").unlink()


def busy_port(ws):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    return s, {"port": s.getsockname()[1]}


class RunLock:
    """What a `train` still running on ws/run holds: the run folder's lock."""

    def __init__(self, ws):
        import fcntl
        self.fd = os.open(ws / "run", os.O_RDONLY)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def close(self):
        os.close(self.fd)


def training(ws):
    return RunLock(ws), {}


def read_only(ws):
    os.chmod(ws / "ro", 0o555)


T = ["train", "--data", f"{W}/data", "--family", "duralava", "--preset", "tiny", "--steps", "1", "--threads", "1"]
G = ["generate", f"{W}/run", "--frames", "4", "--quiet"]
S = ["sheet", f"{W}/run", "--count", "2", "--streams", "1"]
E = ["eval", f"{W}/run", "--data", f"{W}/data", "--frames", "16", "--quiet"]
P = ["prepare", f"{W}/src"]
R = ["record", "atari", "--game", "Pong", "--episodes", "1"]

# (id, argv, words the one error line must hold, setup(ws) or None)
CASES = [
    # prepare
    ("prepare-fps-nan", P + ["--out", f"{W}/new", "--fps", "nan"], ["--fps"], None),
    ("prepare-fps-inf", P + ["--out", f"{W}/new", "--fps", "inf"], ["--fps"], None),
    ("prepare-size-huge", P + ["--out", f"{W}/new", "--size", "100000"], ["--size"], None),
    ("prepare-size-zero", P + ["--out", f"{W}/new", "--size", "0"], ["--size"], None),
    ("prepare-max-still-nan", P + ["--out", f"{W}/new", "--max-still", "nan"], ["--max-still"], None),
    ("prepare-out-dataset-no-force", P + ["--out", f"{W}/data"], ["--force", "data"], None),
    ("prepare-out-run-force", P + ["--out", f"{W}/run", "--force"], ["--out", "run"], None),
    ("prepare-out-foreign-force", P + ["--out", f"{W}/notes", "--force"], ["--out", "notes"], None),
    ("prepare-out-is-source", P + ["--out", f"{W}/src", "--force"], ["--out", "src"], None),
    ("prepare-out-under-file", P + ["--out", f"{W}/afile/d"], ["--out", "afile"], None),
    # record
    ("record-episodes-0", R[:4] + ["0", "--out", f"{W}/rec"], ["--episodes"], None),
    ("record-sticky-nan", R + ["--sticky-prob", "nan", "--out", f"{W}/rec"], ["--sticky-prob"], None),
    ("record-out-run-force", R + ["--out", f"{W}/run", "--force"], ["--out", "run"], None),
    # train: numbers
    ("train-minutes-nan", T[:-4] + ["--minutes", "nan", "--out", f"{W}/new"], ["--minutes"], None),
    ("train-minutes-inf", T[:-4] + ["--minutes", "inf", "--out", f"{W}/new"], ["--minutes"], None),
    ("train-steps-zero", T[:-4] + ["--steps", "0", "--out", f"{W}/new"], ["--steps"], None),
    ("train-sample-every-neg", T + ["--sample-every", "-1", "--out", f"{W}/new"], ["--sample-every"], None),
    ("train-save-every-zero", T + ["--save-every", "0", "--out", f"{W}/new"], ["--save-every"], None),
    ("train-save-every-nan", T + ["--save-every", "nan", "--out", f"{W}/new"], ["--save-every"], None),
    ("train-seed-neg", T + ["--seed", "-1", "--out", f"{W}/new"], ["--seed"], None),
    ("train-threads-zero", T[:-1] + ["0", "--out", f"{W}/new"], ["--threads"], None),
    ("train-set-batch-zero", T + ["--set", "batch_size=0", "--out", f"{W}/new"], ["--set batch_size"], None),
    ("train-set-lr-nan", T + ["--set", "lr_g=nan", "--out", f"{W}/new"], ["--set lr_g"], None),
    ("train-set-prob-2", T + ["--set", "carry_prob=2", "--out", f"{W}/new"], ["--set carry_prob"], None),
    ("train-set-unknown", T + ["--set", "nope=1", "--out", f"{W}/new"], ["--set nope"], None),
    ("train-set-not-int", T + ["--set", "batch_size=many", "--out", f"{W}/new"], ["--set"], None),
    ("train-set-loss-unknown", T + ["--set", "loss=foo", "--out", f"{W}/new"], ["loss"], None),  # at step 1
    ("train-set-clip-too-long", T + ["--set", "clip_length=1000", "--out", f"{W}/new"], ["data", "1000"], None),
    ("train-family-unknown", T + ["--family", "nope", "--out", f"{W}/new"], ["--family"], None),
    # train: outputs
    ("train-out-run-no-force", T + ["--out", f"{W}/run"], ["--resume", "run"], None),
    ("train-force-foreign-folder", T + ["--out", f"{W}/notes", "--force"], ["--out", "notes"], None),
    ("train-force-dataset", T + ["--out", f"{W}/data", "--force"], ["--out", "data"], None),
    ("train-out-file", T + ["--out", f"{W}/afile", "--force"], ["--out", "afile"], None),
    ("train-out-under-file", T + ["--out", f"{W}/afile/run"], ["--out", "afile"], None),
    ("train-out-read-only", T + ["--out", f"{W}/ro/run"], ["--out", "ro"], read_only),
    # train: --resume that contradicts the run, and damaged run / data folders
    ("train-resume-family", T[:3] + ["--resume", "--family", "worldmodel", "--steps", "9", "--out", f"{W}/run"],
     ["--family"], None),
    ("train-resume-preset", T[:3] + ["--resume", "--preset", "default", "--steps", "9", "--out", f"{W}/run"],
     ["--preset"], None),
    ("train-resume-set", T[:3] + ["--resume", "--set", "latent_dim=8", "--steps", "9", "--out", f"{W}/run"],
     ["--set latent_dim"], None),
    ("train-resume-seed", T[:3] + ["--resume", "--seed", "5", "--steps", "9", "--out", f"{W}/run"],
     ["--seed"], None),
    ("train-resume-while-training", T[:3] + ["--resume", "--steps", "9", "--out", f"{W}/run"], ["run", "train"],
     training),
    ("train-force-while-training", T + ["--out", f"{W}/run", "--force"], ["run", "train"], training),
    ("train-set-lags-empty", T + ["--set", "motion_lags=", "--out", f"{W}/new"], ["--set motion_lags"], None),
    ("train-resume-no-state", T[:3] + ["--resume", "--steps", "9", "--out", f"{W}/run"], ["train_state.pt"], no_state),
    ("train-resume-config-size-string", T[:3] + ["--resume", "--steps", "9", "--out", f"{W}/run"],
     ["config.json", "size"], config(config__size="sixteen")),
    ("train-meta-fps-string", T + ["--out", f"{W}/new"], ["meta.json", "fps"], meta(fps="fast")),
    ("train-meta-frames-float", T + ["--out", f"{W}/new"], ["meta.json", "frames"], meta(frames=40.5)),
    ("train-meta-missing", T + ["--out", f"{W}/new"], ["meta.json"], no_meta),
    ("train-data-is-run", ["train", "--data", f"{W}/run", "--preset", "tiny", "--steps", "1", "--out", f"{W}/new"],
     ["meta.json"], None),
    # generate
    ("generate-temperature-nan", G + ["--temperature", "nan", "--out", f"{W}/x.mp4"], ["--temperature"], None),
    ("generate-fps-nan", G + ["--fps", "nan", "--out", f"{W}/x.mp4"], ["--fps"], None),
    ("generate-fps-inf", G + ["--fps", "inf", "--out", f"{W}/x.mp4"], ["--fps"], None),
    ("generate-fps-tiny", G + ["--fps", "0.0001", "--out", f"{W}/x.mp4"], ["--fps"], None),
    ("generate-frames-zero", G[:2] + ["--frames", "0", "--out", f"{W}/x.mp4"], ["--frames"], None),
    ("generate-chunk-zero", G + ["--chunk", "0", "--out", f"{W}/x.mp4"], ["--chunk"], None),
    ("generate-interp-huge", G + ["--interp", "100000", "--out", f"{W}/x.mp4"], ["--interp"], None),
    ("generate-seed-start-neg", G + ["--seed-start", "-1", "--out", f"{W}/x.mp4"], ["--seed-start"], None),
    ("generate-unknown-suffix", G + ["--out", f"{W}/x.xyz"], ["x.xyz"], None),
    ("generate-out-is-run", G + ["--out", f"{W}/run"], ["--out", "run"], None),
    ("generate-out-is-run-force", G + ["--out", f"{W}/run", "--force"], ["--out", "run"], None),
    ("generate-out-other-run-force", G + ["--out", f"{W}/run2", "--force"], ["--out", "run2"], None),
    ("generate-out-inside-run-force", G + ["--out", f"{W}/run/samples", "--force"], ["--out", "samples"], None),
    ("generate-out-dataset-force", G + ["--out", f"{W}/data", "--force"], ["--out", "data"], None),
    ("generate-out-foreign-force", G + ["--out", f"{W}/notes", "--force"], ["--out", "notes"], None),
    ("generate-out-file-force", G + ["--out", f"{W}/afile", "--force"], ["--out", "afile"], None),
    ("generate-out-sheet-force", G + ["--out", f"{W}/sheet.png", "--force"], ["--out", "sheet.png"], None),
    ("generate-out-video-no-force", G + ["--out", f"{W}/clip.mp4"], ["--force", "clip.mp4"], None),
    ("generate-out-under-file", G + ["--out", f"{W}/afile/x.mp4"], ["--out", "afile"], None),
    ("generate-out-read-only", G + ["--out", f"{W}/ro/x.mp4"], ["--out", "ro"], read_only),
    ("generate-config-size-string", G + ["--out", f"{W}/x.mp4"], ["config.json", "size"],
     config(config__size="sixteen")),
    ("generate-config-batch-bool", G + ["--out", f"{W}/x.mp4"], ["config.json", "batch_size"],
     config(config__batch_size=True)),
    ("generate-config-lags-int", G + ["--out", f"{W}/x.mp4"], ["config.json", "motion_lags"],
     config(config__motion_lags=3)),
    ("generate-config-lr-nan", G + ["--out", f"{W}/x.mp4"], ["config.json", "lr_g"],
     raw_config_text('"lr_g": 0.0004', '"lr_g": NaN')),
    ("generate-config-fps-string", G + ["--out", f"{W}/x.mp4"], ["config.json", "fps"], config(data__fps="fast")),
    ("generate-config-family-unknown", G + ["--out", f"{W}/x.mp4"], ["config.json", "family"], config(family="nope")),
    ("generate-config-not-json", G + ["--out", f"{W}/x.mp4"], ["config.json"], raw_config_text("{", "{{")),
    # sheet
    ("sheet-out-unknown-suffix", S + ["--out", f"{W}/x.xyz"], ["--out", "x.xyz"], None),
    ("sheet-start-neg", S + ["--start", "-5", "--out", f"{W}/s.png"], ["--start"], None),
    ("sheet-count-huge", S[:2] + ["--count", "20000", "--out", f"{W}/s.png"], ["--count"], None),
    ("sheet-count-times-streams", S[:2] + ["--count", "1000", "--streams", "10", "--out", f"{W}/s.png"],
     ["--count"], None),
    ("sheet-out-exists", S + ["--out", f"{W}/sheet.png"], ["--force", "sheet.png"], None),
    ("sheet-out-video-force", S + ["--out", f"{W}/anim.png", "--force"], ["--out", "anim.png"], None),
    ("sheet-out-under-file", S + ["--out", f"{W}/afile/s.png"], ["--out", "afile"], None),
    ("sheet-out-read-only", S + ["--out", f"{W}/ro/s.png"], ["--out", "ro"], read_only),
    ("sheet-temperature-inf", S + ["--temperature", "inf", "--out", f"{W}/s.png"], ["--temperature"], None),
    # live
    ("live-web-port-range", ["live", f"{W}/run", "--web", "70000"], ["--web"], None),
    ("live-web-busy", ["live", f"{W}/run", "--web", "{port}"], ["--web"], busy_port),
    ("live-fps-zero", ["live", f"{W}/run", "--fps", "0"], ["--fps"], None),
    ("live-scale-huge", ["live", f"{W}/run", "--scale", "100000"], ["--scale"], None),
    # eval
    ("eval-out-report-no-force", E + ["--out", f"{W}/report"], ["--force", "report"], None),
    ("eval-out-run-force", E + ["--out", f"{W}/run", "--force"], ["--out", "run"], None),
    ("eval-out-other-run-force", E + ["--out", f"{W}/run2", "--force"], ["--out", "run2"], None),
    ("eval-out-data-force", E + ["--out", f"{W}/data", "--force"], ["--out", "data"], None),
    ("eval-out-foreign-force", E + ["--out", f"{W}/notes", "--force"], ["--out", "notes"], None),
    ("eval-frames-too-few", E[:5] + ["--frames", "5", "--out", f"{W}/rep"], ["--frames"], None),
    ("eval-temperature-inf", E + ["--temperature", "inf", "--out", f"{W}/rep"], ["--temperature"], None),
    # paint
    ("paint-eval-json-exists", ["paint", "eval", f"{W}/agent", "--json", f"{W}/metrics.json"],
     ["--json", "metrics.json"], None),
    ("paint-sheet-exists", ["paint", "sheet", f"{W}/agent", "--out", f"{W}/sheet.png"], ["--force"], None),
    ("paint-renderer-out-run-force", ["paint", "train-renderer", "--steps", "1", "--out", f"{W}/run", "--force"],
     ["--out", "run"], None),
    ("paint-draw-out-run-force", ["paint", "draw", f"{W}/agent", "--target", "test:0", "--out", f"{W}/run",
                                  "--force"], ["--out", "run"], None),
    ("paint-minutes-nan", ["paint", "train-renderer", "--minutes", "nan", "--out", f"{W}/r"], ["--minutes"], None),
]


@pytest.mark.parametrize("argv, words, setup", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_changes_nothing(base, tmp_path, capsys, monkeypatch, argv, words, setup):
    ws = tmp_path / "ws"
    shutil.copytree(base, ws)
    values = {"ws": str(ws)}
    keep = None
    if setup is not None:
        got = setup(ws)
        if isinstance(got, tuple):
            keep, extra = got
            values.update(extra)
    if setup is read_only and os.geteuid() == 0:  # root writes anywhere: make the check see it as others do
        import everloop.outputs
        real_access = os.access
        monkeypatch.setattr(everloop.outputs.os, "access",
                            lambda p, mode: False if Path(p) == ws / "ro" else real_access(p, mode))
    before = tree(ws)
    args = [a.format(**values) for a in argv]
    try:
        code = main(args)
    except SystemExit as e:  # argparse rejects a flag value
        code = e.code
    finally:
        if keep is not None:
            keep.close()
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (code, err)
    assert len(lines) == 1, err
    for word in words:
        assert word.format(**values) in lines[0], (word, lines[0])
    assert tree(ws) == before  # nothing changed, nothing deleted, nothing new


def test_what_force_may_replace_is_told_by_content(base, tmp_path):
    from everloop.outputs import kind_of
    kinds = {"data": "dataset", "run": "run", "clip.mp4": "video", "anim.png": "video", "sheet.png": "image",
             "report": "report", "notes": "folder", "afile": "file", "metrics.json": "json", "src": "folder",
             "nothing": None}
    assert {name: kind_of(base / name) for name in kinds} == kinds
    (tmp_path / "killed").mkdir()  # a new run killed before its first save
    (tmp_path / "killed" / "log.jsonl").write_text('{"step": 1}\n')
    (tmp_path / "log").mkdir()  # someone's folder with a log in it
    (tmp_path / "log" / "log.jsonl").write_text("mine\n")
    (tmp_path / "killed" / "samples").mkdir()
    (tmp_path / "fake.mp4").write_bytes(b"precious")
    assert [kind_of(tmp_path / n) for n in ("killed", "log", "fake.mp4")] == ["run", "folder", "file"]


def test_the_corpus_is_large():
    assert len(CASES) >= 40 and len({c[0] for c in CASES}) == len(CASES)


# --------------------------------------------------------------------------- kills


def logged_steps(log: Path) -> list[int]:
    """Steps of the training lines of log.jsonl; a last line cut short by SIGKILL is skipped."""
    lines = log.read_text().splitlines()
    steps = []
    for i, line in enumerate(lines):
        try:
            entry = json.loads(line)
        except ValueError:
            assert i == len(lines) - 1, f"a broken line inside log.jsonl: {line!r}"
            continue
        if "event" not in entry:
            steps.append(entry["step"])
    return steps


def sheets(run: Path) -> dict[int, bytes]:
    """samples/step_N.png -> its bytes."""
    return {int(p.stem[5:]): p.read_bytes() for p in (run / "samples").glob("step_*.png")}


def checkpoint_step(run: Path) -> int:
    import torch
    return int(torch.load(run / "train_state.pt", weights_only=True)["step"])


def test_train_survives_kills_at_random_moments(tmp_path):
    from everloop.train import TrainArgs, train
    data = write_store(tmp_path / "data", blob_frames(60))
    run = tmp_path / "run"
    train(TrainArgs(data=str(data), out=str(run), preset="tiny", steps=2, sample_every=3,
                    progress=False, precision="fp32"))
    cmd = [sys.executable, "-m", "everloop.cli", "train", "--data", str(data), "--out", str(run), "--resume",
           "--steps", "100000", "--sample-every", "3", "--save-every", "0.002", "--threads", "1",
           "--precision", "fp32", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    rng = random.Random(13)
    for sig in [signal.SIGKILL, signal.SIGTERM] * 10:
        step_before = checkpoint_step(run)
        size_before = (run / "log.jsonl").stat().st_size
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
        if rng.random() < 0.3:  # anywhere: during start-up too
            time.sleep(rng.uniform(0.0, 2.5))
        else:  # once it trains: between steps, in a save, in a sheet
            while (run / "log.jsonl").stat().st_size == size_before and proc.poll() is None:
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.4))
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=300)
        step = checkpoint_step(run)
        assert step >= step_before
        if sig == signal.SIGTERM and "stopped by SIGTERM" in out:  # while training: saved first
            assert proc.returncode == 128 + signal.SIGTERM and "Traceback" not in err, err
            assert logged_steps(run / "log.jsonl")[-1] == step  # a SIGTERM loses nothing
            assert max(sheets(run), default=0) <= step
        elif sig == signal.SIGTERM and proc.returncode == 128 + signal.SIGTERM:  # while starting up
            assert "Traceback" not in err and step == step_before, err
        else:
            assert proc.returncode == -sig, (proc.returncode, err)
        # The resume that started this process rewound the log: each step once, in order.
        steps = logged_steps(run / "log.jsonl")
        assert steps == list(range(1, len(steps) + 1)) and len(steps) >= step
        # A sheet is written after its step's log line: one past the log is a sheet the
        # resume should have removed when it rewound the log below it.
        assert max(sheets(run), default=0) <= steps[-1]
    final = checkpoint_step(run) + 4
    train(TrainArgs(data=str(data), out=str(run), resume=True, steps=final, sample_every=3,
                    progress=False, precision="fp32"))
    assert logged_steps(run / "log.jsonl") == list(range(1, final + 1))
    assert max(sheets(run)) == final and checkpoint_step(run) == final
    assert not [p for p in run.rglob(".*")]  # no temp left behind


def test_resume_rewinds_the_log_and_the_samples(tiny_data, tmp_path):
    """What a kill after the last save leaves: log lines and a sheet past the checkpoint."""
    from everloop.train import TrainArgs, train
    run = tmp_path / "run"
    args = {"data": str(tiny_data), "out": str(run), "preset": "tiny", "sample_every": 2, "progress": False, "precision": "fp32"}
    train(TrainArgs(steps=4, **args))
    with (run / "log.jsonl").open("a") as log:
        log.write('{"step": 5, "loss": 1.0}\n{"step": 6, "lo')
    shutil.copy(run / "samples" / "step_0000004.png", run / "samples" / "step_0000006.png")
    train(TrainArgs(steps=5, resume=True, **{k: v for k, v in args.items() if k != "preset"}))
    assert logged_steps(run / "log.jsonl") == [1, 2, 3, 4, 5]
    assert sorted(sheets(run)) == [2, 4, 5]  # the one at 6 was rolled back


def test_sigterm_saves_and_exits_cleanly(tiny_data, tmp_path):
    """SIGTERM during training: a checkpoint of the last whole step, exit 143, no traceback."""
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "everloop.cli", "train", "--data", str(tiny_data), "--out",
                             str(run), "--preset", "tiny", "--steps", "100000", "--save-every", "600",
                             "--sample-every", "0", "--threads", "1", "--precision", "fp32", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    while not (run / "log.jsonl").exists() or (run / "log.jsonl").stat().st_size == 0:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # long before the first --save-every
    _out, err = proc.communicate(timeout=300)
    assert proc.returncode == 143 and "Traceback" not in err, err
    step = checkpoint_step(run)
    assert step >= 1 and logged_steps(run / "log.jsonl")[-1] == step


def test_a_killed_generate_leaves_nothing_for_long(base, tmp_path, capsys):
    """SIGTERM: generate drops its temp and exits 143. SIGKILL: the temp stays until the
    next write into that folder, which removes it."""
    out = tmp_path / "out"
    out.mkdir()
    cmd = [sys.executable, "-m", "everloop.cli", "generate", str(base / "run"), "--frames", "100000000",
           "--quiet", "--threads", "1"]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        proc = subprocess.Popen(cmd + ["--out", str(out / f"{sig.name}.mp4")], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        while not any(".tmp-" in p.name for p in out.iterdir()):  # it is writing
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
        if sig == signal.SIGTERM:
            assert proc.returncode == 143 and "Traceback" not in err, err
            assert os.listdir(out) == []
        else:
            assert [p.name for p in out.iterdir()] == [f".SIGKILL.mp4.tmp-{proc.pid}"]
    assert main(["generate", str(base / "run"), "--frames", "2", "--quiet", "--out", str(out / "ok.mp4")]) == 0
    assert os.listdir(out) == ["ok.mp4"]
