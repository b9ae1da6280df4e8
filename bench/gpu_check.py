"""What the test suite cannot check without a GPU: everloop on a CUDA device, end to end.

    PYTHONPATH=. python3 bench/gpu_check.py            # about a minute; no pytest needed

On tiny configs and a synthetic 16x16 dataset, for every family: train on the GPU (fp32,
then bf16 autocast), resume there, load the checkpoint on the CPU and resume it there;
generate and eval through the CLI with --device cuda. Then the promises of devices.py: a
seed gives the same stream on the CPU and the GPU (up to float rounding, measured and
printed), a chunked stream is the one long stream, and a bad --device is a one-line error.
Each check prints a line; the first failure raises (exit status 1). `--device cpu` runs
the same checks on the CPU (a dry run of this script)."""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo, without an install

from everloop import checkpoint, rollout
from everloop.cli import main as cli
from everloop.train import TrainArgs, train


def blobs(n: int = 160, size: int = 16) -> np.ndarray:
    """uint8 [n, size, size, 3]: a bright blob drifting over a dark frame (as tests/conftest.py)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    cy = cx = size / 2
    out = []
    for _ in range(n):
        cy, cx = (float(np.clip(c + rng.normal(0, 0.7), 3, size - 4)) for c in (cy, cx))
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 6.0)
        out.append((np.stack([0.2 + 0.8 * blob, 0.1 + 0.5 * blob, 0.3 * (1 - blob)], -1) * 255).round())
    return np.stack(out).astype(np.uint8)


def write_data(path: Path) -> Path:
    path.mkdir(parents=True)
    frames = blobs()
    np.save(path / "frames.npy", frames)
    meta = {"frames": len(frames), "height": 16, "width": 16, "fps": 30,
            "episodes": [[0, 100], [100, len(frames)]], "source": "gpu_check"}
    (path / "meta.json").write_text(json.dumps(meta))
    return path


def cli_ok(*args) -> str:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = cli([str(a) for a in args])
    assert code == 0, (args, err.getvalue())
    return err.getvalue()


def devices_in(obj) -> set:
    if torch.is_tensor(obj):
        return {obj.device.type}
    items = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (list, tuple)) else []
    return set().union(set(), *map(devices_in, items))


def check_family(family: str, data: Path, tmp: Path, device: str) -> Path:
    kw = {"data": str(data), "family": family, "preset": "tiny", "sample_every": 3, "progress": False, "device": device}
    run = train(TrainArgs(out=str(tmp / family), steps=4, precision="fp32", **kw))
    state = torch.load(run / "train_state.pt", weights_only=True)
    assert devices_in(state) == {"cpu"}, devices_in(state)
    assert ("cuda_rng" in state) == device.startswith("cuda")
    train(TrainArgs(out=str(tmp / family), steps=6, resume=True, precision="fp32", **kw))
    cpu_model, _ = checkpoint.load_run(run)  # a GPU run loads on a machine without one
    dev_model, _ = checkpoint.load_run(run, device)
    for (k, a), b in zip(cpu_model.state_dict().items(), dev_model.state_dict().values()):
        assert b.device.type == torch.device(device).type and torch.equal(a, b.cpu()), k
    train(TrainArgs(out=str(tmp / family), steps=7, resume=True, precision="fp32",
                    **{**kw, "device": "cpu"}))  # and resumes there
    bf16 = "skipped"
    if device != "cpu":  # (a CPU without bf16 instructions emulates it, 20x slower; no LSTM)
        run16 = train(TrainArgs(out=str(tmp / f"{family}_bf16"), steps=3, precision="bf16", **kw))
        log = [json.loads(l) for l in (run16 / "log.jsonl").read_text().splitlines()]
        bf16 = f"{len(log)} finite steps"  # train() raises on a non-finite loss
    seed = ["--seed-clip", data, "--seed-start", 100] if family != "duralava" else []
    cli_ok("generate", run, "--frames", 20, "--chunk", 6, "--out", tmp / f"{family}_gen/", "--quiet",
           "--device", device, *seed)
    assert len(list((tmp / f"{family}_gen").glob("*.png"))) == 20
    cli_ok("eval", run, "--data", data, "--frames", 40, "--streams", 2, "--out", tmp / f"{family}_eval", "--quiet",
           "--pred-steps", 4, "--pred-clips", 2, "--device", device)
    print(f"ok  {family}: train / resume / bf16 ({bf16}) / CPU load + resume / generate / eval on {device}",
          flush=True)
    return run


def check_streams(run: Path, device: str) -> None:
    """One seed, CPU vs device; chunked vs one long stream on the device."""
    cpu, _ = checkpoint.load_run(run)
    dev, _ = checkpoint.load_run(run, device)
    a = np.concatenate(list(rollout.frames(cpu, 48, batch=3, seed=5, chunk=48)), 1)
    b = np.concatenate(list(rollout.frames(dev, 48, batch=3, seed=5, chunk=48)), 1)
    diff = np.abs(a.astype(int) - b.astype(int))
    print(f"ok  same seed, CPU vs {device}: 48 frames x 3 streams, |uint8 diff| mean {diff.mean():.3f}, "
          f"max {diff.max()}, {100 * (diff == 0).mean():.1f}% of values equal", flush=True)
    assert diff.mean() < 2.0, "a seed should give the same stream on the CPU and the GPU"
    one = next(rollout.latents(dev, 3, seed=5, chunk=48))
    parts = []
    for lat in rollout.latents(dev, 3, seed=5, chunk=7):
        parts.append(lat)
        if sum(p.shape[1] for p in parts) >= 48:
            break
    assert torch.equal(one, torch.cat(parts, 1)[:, :48]), "a chunked stream must be the one long stream"
    print(f"ok  chunk 7 == chunk 48 on {device} (latents bit-identical)", flush=True)


def check_errors(run: Path) -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = cli(["generate", str(run), "--frames", "3", "--out", "/tmp/never.png", "--device", "cuda:99"])
    lines = err.getvalue().strip().splitlines()
    assert code == 2 and len(lines) == 1 and "--device cuda:99" in lines[0], err.getvalue()
    print(f"ok  {lines[0]}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    a = ap.parse_args()
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("gpu_check: torch sees no CUDA device")
    torch.set_num_threads(2)
    t0 = time.time()
    if a.device.startswith("cuda"):
        print(f"{torch.cuda.get_device_name(a.device)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = write_data(tmp / "data")
        runs = {f: check_family(f, data, tmp, a.device) for f in ("duralava", "worldmodel", "multiscale")}
        check_streams(runs["duralava"], a.device)
        check_streams(runs["worldmodel"], a.device)
        check_errors(runs["duralava"])
    print(f"GPU CHECK OK on {a.device} in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
