"""Training on 2 gloo processes (everloop/distributed.py, docs/distributed.md).

- Every family, and the painter's renderer and agent: K steps at world size 2 give the
  weights of K steps at world size 1 on the same global batch, data and noise (each rank
  of tests/dist_worker.py draws the global batch's rows and keeps its own), to 1e-5; and
  both ranks end with bit-identical weights.
- `torchrun ... -m everloop train` at world size 2, resumed at 1, resumed by two
  `torchrun --nnodes 2 --node_rank {0,1}` on 127.0.0.1: one run, every step logged once,
  the global batch's carried latents saved, and `generate` takes it; stopped and resumed
  at world size 2 it is the same run bit for bit.
- A process that dies, or stops answering, makes the other exit with a one-line error
  within the timeout instead of hanging.

Tolerance: float32 sums in another order (the all_reduce of two half-batch means where
world size 1 takes one full-batch mean; BatchNorm statistics from summed shares) differ in
the last bits, and Adam's normalised steps carry that along: the largest difference seen
after 4-6 steps is 4.4e-7. Switching off the gradient averaging, or the global batch
statistics, moves weights by 1.5e-3 or more, so 1e-5 separates the two by far."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from everloop.cli import main

WORKER = Path(__file__).with_name("dist_worker.py")
NAMES = ("duralava", "worldmodel", "multiscale", "playable", "renderer", "agent")
TOLERANCE = 1e-5
# Weights whose gradient is zero in exact arithmetic: a GroupNorm of one channel per group
# right after them takes away any constant a channel gets, so what they get is rounding,
# which Adam turns into steps of +-lr either way at either world size. And the worldmodel's
# calibration, fitted from the decoder's frames rounded to uint8 and nearest-patch choices:
# a weight 1e-6 away flips a grey level or a choice, and the fit moves by ~1e-3. Checked
# across ranks.
ROUNDING_ONLY = {"playable": ("net.unpool.0.bias", "net.merge.0.bias"),
                 "worldmodel": ("colour_lut", "patch_drawn", "patch_proj")}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", **extra}
    return {k: str(v) for k, v in env.items()}


def _start(world: int, args: list, **env) -> list[subprocess.Popen]:
    """`world` processes of the worker with torchrun's environment (env:// rendezvous)."""
    port = _port()
    return [subprocess.Popen([sys.executable, str(WORKER), *map(str, args)], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True,
                             env=_env(RANK=r, LOCAL_RANK=r, WORLD_SIZE=world, MASTER_PORT=port, **env))
            for r in range(world)]


def _wait(procs, timeout: float = 240) -> list[tuple[int, str]]:
    out = []
    for p in procs:
        text, _ = p.communicate(timeout=timeout)
        out.append((p.returncode, text))
    return out


def _torchrun(*args, timeout: float = 240) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", *map(str, args)], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _digits(folder: Path) -> Path:
    folder.mkdir()
    for i in range(12):
        img = np.zeros((16, 16), np.uint8)
        img[2 + i % 8:8 + i % 8, 3:12] = 255
        Image.fromarray(img).save(folder / f"{i}.png")
    return folder


def test_two_processes_train_as_one(tmp_path, tiny_data):
    digits = _digits(tmp_path / "digits")
    procs = _start(1, ["equivalence", tmp_path, tiny_data, digits]) + \
        _start(2, ["equivalence", tmp_path, tiny_data, digits])  # both sizes at once: less wall time
    for rc, text in _wait(procs):
        assert rc == 0, text[-3000:]
    for name in NAMES:
        one = torch.load(tmp_path / f"{name}.w1.rank0.pt")
        ranks = [torch.load(tmp_path / f"{name}.w2.rank{r}.pt") for r in (0, 1)]
        assert len(one) == len(ranks[0]) == len(ranks[1]) >= 1
        for ref, a, b in zip(one, *ranks):
            assert ref.keys() == a.keys() == b.keys()
            for key in ref:
                assert torch.equal(a[key], b[key]), f"{name} {key}: the ranks' weights differ"
                if key in ROUNDING_ONLY.get(name, ()):
                    continue
                if ref[key].dtype.is_floating_point:
                    err = (ref[key] - a[key]).abs().max().item()
                    assert err <= TOLERANCE, f"{name} {key}: world size 2 is {err:.2g} off world size 1"
                else:
                    assert torch.equal(ref[key], a[key]), f"{name} {key}"


def _weights(run: Path) -> dict:
    state = torch.load(run / "train_state.pt")
    return {**load_file(run / "model.safetensors"), **state["training_weights"], **state["extra"]}


def test_torchrun_resumes_across_world_sizes_and_nodes(tmp_path, tiny_data, capsys):
    run, cut = tmp_path / "run", tmp_path / "cut"
    flags = ["-m", "everloop", "train", "--data", tiny_data, "--out", run, "--family", "duralava", "--preset",
             "tiny", "--sample-every", "0", "--quiet", "--precision", "fp32"]
    p = _torchrun("--nproc_per_node", 2, *flags, "--steps", 4)
    same = ["cli", *flags[2:6], cut, *flags[7:]]  # the same run, stopped at step 2 and resumed at world size 2
    for rc, text in _wait(_start(2, [*same, "--steps", 2])) + _wait(_start(2, [*same, "--resume", "--steps", 4])):
        assert rc == 0, text[-3000:]
    text, _ = p.communicate(timeout=240)
    assert p.returncode == 0, text[-3000:]
    assert text.count(f"saved {run}") == 1  # only rank 0 speaks
    assert torch.load(run / "train_state.pt")["extra"]["carry"].shape[0] == 4  # the global batch's rows
    whole, resumed = _weights(run), _weights(cut)
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)  # a resume at the same size is exact

    assert main(["train", "--data", str(tiny_data), "--out", str(run), "--resume", "--steps", "6", "--quiet"]) == 0

    port = _port()  # two "nodes" of one process each, meeting on 127.0.0.1
    nodes = [_torchrun("--nnodes", 2, "--node_rank", n, "--nproc_per_node", 1, "--master_addr", "127.0.0.1",
                       "--master_port", port, *flags[:-2], "--resume", "--steps", 8) for n in (0, 1)]
    for rc, text in _wait(nodes):
        assert rc == 0, text[-3000:]
    steps = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9))  # each step logged once, by rank 0
    state = torch.load(run / "train_state.pt")
    assert state["step"] == 8 and len(state["rank_rngs"]) == 1 and state["extra"]["carry"].shape[0] == 4
    capsys.readouterr()
    assert main(["generate", str(run), "--frames", "4", "--out", str(tmp_path / "a.gif"), "--quiet"]) == 0


@pytest.mark.parametrize("kind", ["die", "hang"])
def test_a_lost_process_is_a_clear_error(tmp_path, tiny_data, kind):
    t0 = time.time()
    procs = _start(2, [kind, tiny_data, tmp_path / "run"], EVERLOOP_DIST_TIMEOUT=5)
    try:
        text, _ = procs[0].communicate(timeout=120)
    finally:
        procs[1].kill()
        procs[1].communicate()
    assert procs[0].returncode == 2, text[-3000:]
    assert "another process of this run died or stopped answering" in text
    assert text.strip().splitlines()[-1].startswith("everloop: error: rank 0 of 2")
    assert time.time() - t0 < 90
