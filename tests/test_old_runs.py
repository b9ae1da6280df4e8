"""Run folders made before a refactor still load and generate the same frames (issue 14).

tests/fixtures/runs/<family>/ are tiny runs written by `everloop train` on commit 6f22a0a
(before the contract / I/O refactor), with expected.npy, the frames they generated then
(tests/fixtures/make_fixtures.py). Never regenerate them to make this test pass."""
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import blob_frames, write_store

from everloop import checkpoint
from everloop.train import TrainArgs, train

FIXTURES = Path(__file__).parent / "fixtures"
sys.path.insert(0, str(FIXTURES))
from make_fixtures import generate


@pytest.mark.parametrize("family", ["duralava", "worldmodel", "multiscale"])
def test_old_run_generates_the_same_frames(family):
    run = FIXTURES / "runs" / family
    seed = run / "seed_frames.npy"
    got = generate(run, np.load(seed) if seed.exists() else None)
    np.testing.assert_array_equal(got, np.load(run / "expected.npy"))


def test_old_worldmodel_run_resumes(tmp_path):
    """An old worldmodel run (latents.safetensors beside the weights) continues training."""
    run = shutil.copytree(FIXTURES / "runs" / "worldmodel", tmp_path / "run")
    data = write_store(tmp_path / "data", blob_frames())
    train(TrainArgs(data=str(data), out=str(run), resume=True, steps=8, sample_every=0, progress=False,
                    precision="fp32"))
    model, config = checkpoint.load_run(run)
    assert config["step"] == 8 and model.family == "worldmodel"
