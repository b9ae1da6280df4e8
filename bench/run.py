"""Speed and memory of every family, measured in one run; prints a table and writes it into
BENCHMARKS.md (between the BENCH markers) with machine, date and commit.

    .venv/bin/python bench/run.py [--threads 2] [--quick]
    PYTHONPATH=. python3 bench/run.py --device cuda [--quick]     # a GPU: its own table

Each measurement runs in its own child process so its peak memory (ru_maxrss) is its own.
Machines here are shared and noisy: compare rows of one run, not runs of different days.

With --device cuda the rows run on the GPU (clocks read after torch.cuda.synchronize(),
peak memory = torch.cuda.max_memory_allocated) and the table goes between the BENCH-GPU
markers of BENCHMARKS.md; the CPU table is left alone. Its rows: every family's training
step in fp32 and bf16 autocast, duralava and worldmodel generation at batch 1 / 32 / 256,
duralava's sampling generator eager and under torch.compile (compile time apart), and the
8192^2 matmul rate in fp32 (TF32 off) and bf16 for "% of peak"."""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(kind: str, threads: int, params: dict, timeout: float | None = None) -> dict:
    """Run one measurement in a fresh interpreter and return its JSON result."""
    # ROOT on the path too: on a machine where everloop is not installed (PYTHONPATH=.).
    code = (f"import sys; sys.path[:0] = [{str(ROOT / 'bench')!r}, {str(ROOT)!r}]; import run; "
            f"run.measure({kind!r}, {threads}, {params!r})")
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": str(threads)}
    try:
        out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, env=env,
                             timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"no result in {timeout:.0f} s"}
    if out.returncode:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(kind: str, threads: int, params: dict) -> None:
    import torch

    from everloop import rollout
    from everloop.devices import synchronize
    from everloop.models import build, make_config
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    device = torch.device(params.get("device", "cpu"))
    family = params.get("family", "duralava")
    cfg = make_config(family, params.get("preset", "default"), params.get("set", {}))
    model = build(family, cfg).to(device)
    result: dict = {}
    if kind in ("peak", "decode"):  # GPU-only rows: the matmul ceilings, the generator alone
        import run_gpu
        if kind == "peak":
            result = run_gpu.measure_gpu_peak(device)
        else:
            result = run_gpu.measure_decode(model, params, device)
    elif kind == "train":
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:  # the synthetic store lives as long as the row
            result = measure_train(model, params, tmp, device)
    elif kind == "prepare":  # decode + crop + area-scale the whole recording into a store
        import tempfile

        from everloop.prepare import prepare
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            meta = prepare(params["source"], f"{tmp}/d", size=64, progress=False)
            dt = time.perf_counter() - t0
        result = {"s_total": dt, "frames_per_s": meta["frames"] / dt, "frames": meta["frames"]}
    elif kind == "matmul":  # the machine's fp32 ceiling, for "% of peak"
        a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
        for _ in range(3):
            a @ b
        t0 = time.perf_counter()
        for _ in range(10):
            a @ b
        result = {"gflops": 10 * 2 * 2048 ** 3 / (time.perf_counter() - t0) / 1e9, "frames_per_s": 0}
    else:  # generation: frames per second of the streaming rollout (latent steps + decoding)
        model.eval()
        batch, chunk, n = params["batch"], params["chunk"], params["frames"]
        clip = None
        if model.requires_seed_clip:  # next-frame families continue real frames
            h, w = params.get("frame", (cfg.size, cfg.size))
            clip = torch.rand(1, model.context_frames, 3, h, w)
        for _ in rollout.frames(model, min(n, 2 * chunk), batch=batch, chunk=chunk, seed_clip=clip):
            pass
        synchronize(device)
        t0 = time.perf_counter()
        for _ in rollout.frames(model, n, batch=batch, chunk=chunk, seed_clip=clip):
            pass
        synchronize(device)
        dt = time.perf_counter() - t0
        result = {"frames_per_s": n * batch / dt}
        if params.get("flops"):  # FLOPs per generated frame, counted on one chunk
            from torch.utils.flop_counter import FlopCounterMode
            with FlopCounterMode(display=False) as fc:
                for _ in rollout.frames(model, chunk, batch=batch, chunk=chunk, seed_clip=clip):
                    pass
            result["mflop_per_frame"] = fc.get_total_flops() / (chunk * batch) / 1e6
    if device.type == "cuda":  # this process's own peak: every row is a fresh process
        result["peak_mb"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
    else:
        result["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def measure_train(model, params: dict, tmp: str, device) -> dict:
    """Seconds per training step (after warm-up), frames per second and FLOPs per step."""
    from everloop.devices import synchronize
    batch_of = train_batches(model, params, tmp, device)
    opt = model.configure_optimizers()
    model.train()
    real = batch_of()
    bf16 = params.get("bf16", False)
    for _ in range(params.get("warmup", 2)):
        model.train_step(batch_of(), opt, autocast=bf16)
    synchronize(device)
    n, t0 = params.get("steps", 5), time.perf_counter()
    for _ in range(n):
        model.train_step(batch_of(), opt, autocast=bf16)
    synchronize(device)
    dt = (time.perf_counter() - t0) / n
    # frames (or latent steps) per batch: [B, T, C, H, W], [B, C, H, W] or [B, T, L]
    items = real.shape[0] * (real.shape[1] if real.ndim in (3, 5) else 1)
    result = {"s_per_step": dt, "frames_per_s": items / dt}
    from torch.utils.flop_counter import FlopCounterMode
    try:  # the counter cannot follow autograd.grad through some modules; then no FLOPs
        with FlopCounterMode(display=False) as fc:
            model.train_step(real, opt)
        result["gflop"] = fc.get_total_flops() / 1e9
    except RuntimeError:
        pass
    return result


def train_batches(model, params: dict, tmp: str, device):
    """A function giving training batches the way train.py gets them (moved to `device`):
    from the family's own sample_batch on a synthetic store (random frames, after the stages
    before `stage` ran)."""
    import numpy as np

    from everloop.data import FrameStore
    cfg = model.cfg
    h, w = params.get("frame", (cfg.size, cfg.size))
    n = params.get("store_frames", 600)
    rng = np.random.default_rng(0)
    Path(tmp, "d").mkdir()
    np.save(f"{tmp}/d/frames.npy", rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8))
    Path(tmp, "d", "meta.json").write_text(json.dumps(
        {"frames": n, "height": h, "width": w, "fps": 30, "episodes": [[0, n]], "source": "bench"}))
    store = FrameStore(f"{tmp}/d")
    for name, _ in model.stages():
        model.begin_stage(name, store, {}, True)
        if name == params.get("stage"):
            break
    return lambda: model.sample_batch(store, rng).to(device, non_blocking=True)


def machine() -> str:
    cpu = "unknown CPU"
    if Path("/proc/cpuinfo").exists():
        m = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text())
        cpu = m.group(1).strip() if m else cpu
    import torch
    return (f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"torch {torch.__version__}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (cuda: fewer rows, < 2 min)")
    ap.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                    help="cuda: the GPU rows, written between the BENCH-GPU markers")
    a = ap.parse_args()
    if a.device == "cuda":
        from run_gpu import main_gpu
        return main_gpu(a)
    steps = 2 if a.quick else 5
    rows = duralava_rows(steps) + worldmodel_rows(steps) + multiscale_rows(steps)
    peak = child("matmul", a.threads, {})["gflops"]
    print(f"fp32 matmul 2048^2: {peak:.0f} GFLOP/s with {a.threads} threads")
    lava = ROOT.parent / "shared/data/lavalamp/lavalite-classic.mp4"
    if lava.exists():  # prepare needs no model; it is here because the issue asks for <= 60 s
        rows.insert(0, ("prepare lavalite-classic.mp4 --size 64", "prepare", {"source": str(lava)}))
    results = []
    print(f"{'measurement':58s} {'s/step':>8s} {'frames/s':>10s} {'peak MB':>8s} {'GFLOP/step':>10s} "
          f"{'MFLOP/frame':>11s} {'% peak':>6s}")
    for name, kind, params in rows:
        r = child(kind, a.threads, params)
        results.append((name, r))
        if "error" in r:
            print(f"{name:58s} error: {r['error']}")
            continue
        print(f"{name:58s} {_sps(r):>8s} {r['frames_per_s']:>10.0f} {r['peak_mb']:>8.0f} "
              f"{_gflop(r):>10s} {_mflop(r):>11s} {_pct(r, peak):>6s}")
    if not a.no_write:
        write_table(results, a.threads, peak)


def duralava_rows(steps: int) -> list:
    seed_size = {"batch_size": 32, "clip_length": 20}
    rows = [
        ("duralava: train, seed size 32x20, seed preset, fp32", "train", {"preset": "seed", "steps": steps}),
        ("duralava: train, seed size 32x20, default preset, fp32", "train", {"set": seed_size, "steps": steps}),
        ("duralava: train, default preset (16x12), fp32", "train", {"steps": steps}),
        ("duralava: train, default preset (16x12), bf16 autocast", "train", {"bf16": True, "steps": 1, "warmup": 1}),
        ("duralava: generate 64x64, batch 1, 1 frame per decoder call", "gen", {"batch": 1, "chunk": 1, "frames": 2000}),
    ]
    for size, n1, n32 in ((64, 20000, 1280), (256, 400, 64)):
        sz = {"set": {"size": size}}
        rows += [(f"duralava: generate {size}x{size}, batch 1, streaming ({min(256, n1)} per call)", "gen",
                  {**sz, "batch": 1, "chunk": min(256, n1), "frames": n1, "flops": True}),
                 (f"duralava: generate {size}x{size}, batch 32, streaming ({min(64, n32)} per call)", "gen",
                  {**sz, "batch": 32, "chunk": min(64, n32), "frames": n32, "flops": True})]
    return rows


def _gen_rows(family: str, sizes, extra: dict | None = None) -> list:
    """Generation at batch 1 and 32 for each (label, config overrides, params, frames at
    batch 1, frames at batch 32), with FLOPs per frame."""
    rows = []
    for label, over, n1, n32 in sizes:
        base = {"family": family, **over, **(extra or {})}
        rows += [(f"{family}: generate {label}, batch 1", "gen",
                  {**base, "batch": 1, "chunk": min(256, n1), "frames": n1, "flops": True}),
                 (f"{family}: generate {label}, batch 32", "gen",
                  {**base, "batch": 32, "chunk": min(64, n32), "frames": n32, "flops": True})]
    return rows


def worldmodel_rows(steps: int) -> list:
    wm = {"family": "worldmodel", "steps": steps}
    return [("worldmodel: train stage vae (64x64, batch 32)", "train", {**wm, "stage": "vae"}),
            # after adv_start the discriminator trains too and charges the decoder: ~2x a step
            ("worldmodel: train stage vae, with the discriminator", "train",
             {**wm, "stage": "vae", "set": {"adv_start": 0}}),
            ("worldmodel: train stage rnn (64 windows x 32 steps)", "train", {**wm, "stage": "rnn"}),
            *_gen_rows("worldmodel", [("64x64", {}, 20000, 1280),
                                      ("256x256", {"set": {"size": 256}}, 1000, 128)])]


def multiscale_rows(steps: int) -> list:
    ms = {"family": "multiscale", "steps": steps, "frame": (210, 160)}
    return [("multiscale: train, 32x32 crops, adversarial", "train", ms),
            ("multiscale: train, 32x32 crops, --no-adversarial", "train", {**ms, "set": {"adversarial": False}}),
            *_gen_rows("multiscale", [("64x64", {"frame": (64, 64)}, 64, 4),
                                      ("210x160 (Atari)", {"frame": (210, 160)}, 8, 2),
                                      ("256x256", {"frame": (256, 256)}, 4, 1)])]


def _sps(r) -> str:
    if "compile_s" in r:
        return f"{r['compile_s']:.1f} compile"
    if "s_total" in r:
        return f"{r['s_total']:.1f} total"
    return f"{r['s_per_step']:.3f}" if "s_per_step" in r else ""


def _gflop(r) -> str:
    return f"{r['gflop']:.1f}" if "gflop" in r else ""


def _mflop(r) -> str:
    return f"{r['mflop_per_frame']:.1f}" if "mflop_per_frame" in r else ""


def _pct(r, peak) -> str:
    if "gflop" in r:
        return f"{100 * r['gflop'] / r['s_per_step'] / peak:.0f}"
    if "mflop_per_frame" in r:
        return f"{100 * r['mflop_per_frame'] * r['frames_per_s'] / 1e3 / peak:.0f}"
    return ""


def write_table(results, threads: int, peak: float) -> None:
    lines = [(f"Measured {datetime.date.today()} on {machine()}, {threads} threads, commit {_commit()}; "
             f"fp32 matmul peak measured in the same run: {peak:.0f} GFLOP/s."), "",
             "| measurement | s/step | frames/s | peak MB | GFLOP/step | MFLOP/frame | % of matmul peak |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    lines += [_md_row(name, r, peak) for name, r in results]
    table = "\n".join(lines)
    path = ROOT / "BENCHMARKS.md"
    text = path.read_text() if path.exists() else "# Benchmarks\n\n<!-- BENCH -->\n<!-- /BENCH -->\n"
    text = re.sub(r"<!-- BENCH -->.*<!-- /BENCH -->", lambda _: f"<!-- BENCH -->\n{table}\n<!-- /BENCH -->",
                  text, flags=re.DOTALL)
    path.write_text(text)
    print(f"\nwrote the table into {path}")


def _md_row(name: str, r: dict, peak: float) -> str:
    if "error" in r:
        return f"| {name} | error: {r['error']} | | | | | |"
    return (f"| {name} | {_sps(r)} | {r['frames_per_s']:.0f} | {r['peak_mb']:.0f} | "
            f"{_gflop(r)} | {_mflop(r)} | {_pct(r, peak)} |")


def _commit() -> str:
    try:  # the GPU machine's copy of the tree may have no git
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], check=False, capture_output=True, text=True,
                              cwd=ROOT).stdout.strip() or "unknown"
    except OSError:
        return "unknown"


if __name__ == "__main__":
    main()
