"""--device: the CPU path is the old one, bit for bit; a missing GPU is a one-line error; and
no family leaves a run-time tensor on the CPU when its model is elsewhere.

The last is checked without a GPU: the model runs on PyTorch's `meta` device (shapes, no
data), where a tensor created on the CPU by mistake meets the model's and raises exactly as
it would on cuda. A dispatch mode supplies the values meta tensors lack (.item() gives a
fixed number, a copy back to the CPU gives zeros), so the whole pipeline runs: train,
resume, checkpoint, sample sheets, generate, eval."""
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils._python_dispatch import TorchDispatchMode

from everloop import checkpoint, devices, rollout, sheets
from everloop.cli import main
from everloop.errors import EverloopError
from everloop.train import TrainArgs, train

aten = torch.ops.aten


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def one_line(err: str) -> str:
    lines = [l for l in err.strip().splitlines() if l.strip()]
    assert len(lines) == 1, err
    return lines[0]


# ---- resolving --device -----------------------------------------------------------------------

def test_resolve_names_and_errors(monkeypatch):
    assert devices.resolve("cpu") == torch.device("cpu")
    assert devices.resolve(None) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert devices.resolve("auto") == torch.device("cpu")
    for name in ("cuda", "cuda:0", "CUDA"):
        with pytest.raises(EverloopError, match="torch sees no CUDA device"):
            devices.resolve(name)
    for name in ("tpu", "cuda:x", "mps"):
        with pytest.raises(EverloopError, match="use cpu, cuda, cuda:N or auto"):
            devices.resolve(name)


def test_missing_cuda_is_a_one_line_error_in_every_command(tiny_run, tiny_data, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    commands = [("train", "--data", tiny_data, "--out", tmp_path / "new", "--steps", 1, "--quiet"),
                ("generate", tiny_run, "--frames", 4, "--out", tmp_path / "x.mp4", "--quiet"),
                ("live", tiny_run, "--web", 8765),
                ("sheet", tiny_run, "--out", tmp_path / "s.png"),
                ("eval", tiny_run, "--data", tiny_data, "--frames", 32, "--out", tmp_path / "rep", "--quiet")]
    for cmd in commands:
        code, err = run_cli(capsys, *cmd, "--device", "cuda")
        assert code == 2, cmd
        assert one_line(err) == "everloop: error: --device cuda: torch sees no CUDA device"
    for made in ("new", "x.mp4", "s.png", "rep"):
        assert not (tmp_path / made).exists(), made


# ---- --device cpu is the old path ------------------------------------------------------------

def test_device_cpu_trains_and_generates_the_same_bits(tiny_data, tmp_path, capsys):
    kw = {"data": str(tiny_data), "family": "duralava", "preset": "tiny", "steps": 3, "sample_every": 0, "progress": False,
              "precision": "fp32"}
    plain = train(TrainArgs(out=str(tmp_path / "a"), **kw))  # no device given: the default
    cpu = train(TrainArgs(out=str(tmp_path / "b"), device="cpu", **kw))
    assert (plain / "model.safetensors").read_bytes() == (cpu / "model.safetensors").read_bytes()
    sa, sb = (torch.load(r / "train_state.pt", weights_only=True) for r in (plain, cpu))
    assert torch.equal(sa["extra"]["carry"], sb["extra"]["carry"]) and "cuda_rng" not in sb
    frames = []
    for name, extra in (("p", []), ("c", ["--device", "cpu"]), ("auto", ["--device", "auto"])):
        code, err = run_cli(capsys, "generate", plain, "--frames", 9, "--chunk", 4, "--out", tmp_path / name,
                            "--quiet", *extra)
        assert code == 0, err
        frames.append(np.stack([np.asarray(Image.open(p)) for p in sorted((tmp_path / name).glob("*.png"))]))
    assert np.array_equal(frames[0], frames[1])
    if not torch.cuda.is_available():  # auto is the CPU here
        assert np.array_equal(frames[0], frames[2])


def test_seeded_draws_are_the_generator_s_stream():
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    cpu = torch.device("cpu")
    assert torch.equal(devices.randn(4, 5, generator=g1, device=cpu), torch.randn(4, 5, generator=g2))
    assert torch.equal(devices.rand(7, generator=g1), torch.rand(7, generator=g2))


def test_to_cpu_keeps_cpu_tensors_and_containers():
    t = torch.ones(2)
    out = devices.to_cpu({"a": [t, (t, 3)], "b": "x", "c": None})
    assert out["a"][0] is t and isinstance(out["a"], list) and isinstance(out["a"][1], tuple)
    assert out["a"][1][1] == 3 and out["b"] == "x" and out["c"] is None


# ---- the meta device as a stand-in GPU ---------------------------------------------------------

class MetaValues(TorchDispatchMode):
    """Values for meta tensors where the code needs some: .item() / bool() and copies to the CPU."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        meta = bool(args) and torch.is_tensor(args[0]) and args[0].device.type == "meta"
        if meta and func in (aten._local_scalar_dense.default, aten.item.default, aten.is_nonzero.default):
            t = args[0]
            return False if t.dtype == torch.bool else (0.5 if t.dtype.is_floating_point else 1)
        if meta and func in (aten._to_copy.default, aten.to.dtype_layout) \
                and torch.device(kwargs.get("device") or "meta").type == "cpu":
            return torch.zeros(args[0].shape, dtype=kwargs.get("dtype") or args[0].dtype)
        return func(*args, **kwargs)


@pytest.fixture
def on_meta(monkeypatch):
    """--device meta resolves to the meta device; autocast (which knows no meta) is off there;
    sheets and rollouts step few latents (a meta op costs ~0.1-1 ms in Python)."""
    resolve = devices.resolve
    monkeypatch.setattr(devices, "resolve", lambda name: torch.device("meta") if name == "meta" else resolve(name))
    autocast = torch.autocast

    class Autocast(autocast):
        def __init__(self, device_type, *a, **k):
            if device_type == "meta":
                device_type, k["enabled"] = "cpu", False
            super().__init__(device_type, *a, **k)
    monkeypatch.setattr(torch, "autocast", Autocast)
    sheet = sheets.stream_sheet
    monkeypatch.setattr(sheets, "stream_sheet",
                        lambda model, path, **kw: sheet(model, path, **{**kw, "steps": (0, 2)}))
    latents = rollout.latents  # a stream does not depend on the chunk: step 4 at a time, not 1024
    monkeypatch.setattr(rollout, "latents", lambda model, batch=1, seed=0, interp=1, chunk=256, seed_clip=None:
                        latents(model, batch, seed, interp, min(chunk, 4), seed_clip))
    with MetaValues():
        yield


def _devices_in(obj) -> set:
    if torch.is_tensor(obj):
        return {obj.device.type}
    if isinstance(obj, dict):
        obj = list(obj.values())
    if isinstance(obj, (list, tuple)):
        return set().union(*map(_devices_in, obj)) if obj else set()
    return set()


@pytest.mark.parametrize("family", ["duralava", "worldmodel", "multiscale"])
def test_every_family_runs_off_the_cpu_and_saves_cpu_checkpoints(family, tiny_data, tmp_path, capsys, on_meta):
    kw = {"data": str(tiny_data), "out": str(tmp_path / "run"), "family": family, "preset": "tiny", "sample_every": 2,
              "progress": False, "precision": "fp32", "device": "meta"}
    if family == "worldmodel":
        kw["overrides"] = {"burn_in": 1, "seq_len": 3}
    run = train(TrainArgs(steps=3, **kw))
    run = train(TrainArgs(steps=4, resume=True, **kw))  # optimizer state and extra state move back
    assert _devices_in(torch.load(run / "train_state.pt", weights_only=True)) == {"cpu"}
    model, _ = checkpoint.load_run(run)
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    model, _ = checkpoint.load_run(run, torch.device("meta"))
    assert {p.device.type for p in model.parameters()} == {"meta"}
    if family == "worldmodel":  # a stage redone: its fresh modules must follow the model
        train(TrainArgs(steps=4, stage="vae", **kw))
    seed = ["--seed-clip", tiny_data] if family != "duralava" else []
    code, err = run_cli(capsys, "generate", run, "--frames", 5, "--chunk", 3, "--out", tmp_path / "gen/",
                        "--quiet", "--device", "meta", *seed)
    assert code == 0, err
    if family == "worldmodel":  # eval: latents and predictions come back to the CPU
        code, err = run_cli(capsys, "eval", run, "--data", tiny_data, "--frames", 16, "--streams", 2, "--out",
                            tmp_path / "rep", "--quiet", "--pred-steps", 2, "--pred-clips", 1, "--device", "meta")
        assert code == 0, err
