"""The GPU half of bench/run.py (`bench/run.py --device cuda [--quick]`): its rows, its two
GPU-only measurements and its table, written between the BENCH-GPU markers of BENCHMARKS.md.

Every row runs through run.child / run.measure in a fresh process on the GPU, so
torch.cuda.max_memory_allocated is the row's own. fp32 rows use PyTorch's defaults (TF32
off for matmuls, on for cuDNN convolutions) and are set against the fp32 matmul rate with
TF32 off; bf16 rows against the bf16 rate."""
from __future__ import annotations

import datetime
import re
import sys
import time

from run import ROOT, _commit, _gflop, _md_row, _mflop, _pct, _sps, child, machine

TIMEOUT = 600  # seconds per row: a hung row is reported, not waited for


def measure_gpu_peak(device) -> dict:
    """Matmul rates of 8192^2 operands: fp32 with TF32 off (true fp32) and bf16, in GFLOP/s."""
    import torch
    torch.set_float32_matmul_precision("highest")  # no TF32: the fp32 rate (the default anyway)
    out = {"gpu": torch.cuda.get_device_name(device), "cuda": torch.version.cuda, "frames_per_s": 0}
    for key, dtype, reps in (("gflops", torch.float32, 10), ("gflops_bf16", torch.bfloat16, 50)):
        a, b = (torch.randn(8192, 8192, device=device, dtype=dtype) for _ in range(2))
        for _ in range(3):
            a @ b
        torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        torch.cuda.synchronize(device)
        out[key] = reps * 2 * 8192 ** 3 / (time.perf_counter() - t0) / 1e9
    return out


def measure_decode(model, params: dict, device) -> dict:
    """Frames per second of duralava's sampling generator alone, `batch` latents per call.
    With `compile`, the first call (tracing and code generation) is timed apart as
    compile_s and is not in the rate; eager and compiled rows share everything else."""
    import torch

    from everloop.devices import synchronize
    model.eval()
    z = model.reset(params["batch"], torch.Generator().manual_seed(0))
    g, result = model.generator_ema, {}
    with torch.no_grad():
        if params.get("compile"):
            g = torch.compile(g)  # mode "default"
            t0 = time.perf_counter()
            g(z)
            synchronize(device)
            result["compile_s"] = time.perf_counter() - t0
        for _ in range(3):
            g(z)
        synchronize(device)
        n, t0 = params.get("calls", 20), time.perf_counter()
        for _ in range(n):
            g(z)
        synchronize(device)
    result["frames_per_s"] = n * params["batch"] / (time.perf_counter() - t0)
    return result


def gpu_rows(quick: bool) -> list:
    """(name, kind, params): --quick keeps one row of each kind that matters (< 2 min on an H100)."""
    steps, warmup = (3, 2) if quick else (20, 5)
    rows, wm, ms = [], {"family": "worldmodel"}, {"family": "multiscale", "frame": (210, 160)}
    for name, p in (("duralava: train, default preset (16x12)", {}),
                    ("worldmodel: train stage vae (64x64, batch 32)", {**wm, "stage": "vae"}),
                    ("worldmodel: train stage rnn (64 windows x 32 steps)", {**wm, "stage": "rnn"}),
                    ("multiscale: train, 32x32 crops, adversarial", ms)):
        for bf16 in (False, True) if not quick or name.startswith("duralava") else (False,):
            rows.append((f"{name}, {'bf16 autocast' if bf16 else 'fp32'}", "train",
                         {**p, "bf16": bf16, "steps": steps, "warmup": warmup}))
    # (size, batch, chunk, frames per stream): batch x chunk latents go to one decoder call
    gen = [(64, 1, 256, 4096), (64, 32, 64, 1024), (64, 256, 16, 512),
           (256, 1, 64, 512), (256, 32, 16, 128), (256, 256, 4, 32)]
    for family in ("duralava", "worldmodel"):
        for size, batch, chunk, n in gen:
            if quick and (size > 64 or batch == 32 or (family == "worldmodel" and batch == 1)):
                continue
            rows.append((f"{family}: generate {size}x{size}, batch {batch}, streaming ({chunk} per call)", "gen",
                         {"family": family, "set": {"size": size}, "batch": batch, "chunk": chunk,
                          "frames": n // 4 if quick else n, "flops": not quick}))
    for compiled in (False, True):
        rows.append(((f"duralava: sampling G alone, 64x64, 4096 latents per call, "
                     f"{'torch.compile' if compiled else 'eager'}"), "decode",
                     {"batch": 4096, "calls": 10 if quick else 50, "compile": compiled}))
    return rows


def main_gpu(a) -> None:
    t_start = time.time()
    peaks = child("peak", a.threads, {"device": "cuda"}, timeout=TIMEOUT)
    if "error" in peaks:
        sys.exit(f"bench/run.py --device cuda: {peaks['error']}")
    print(f"{peaks['gpu']}: matmul 8192^2 fp32 (TF32 off) {peaks['gflops'] / 1e3:.1f} TFLOP/s, "
          f"bf16 {peaks['gflops_bf16'] / 1e3:.1f} TFLOP/s")
    print(f"{'measurement':78s} {'s/step':>12s} {'frames/s':>10s} {'GPU MB':>8s} {'GFLOP/step':>10s} "
          f"{'MFLOP/frame':>11s} {'% peak':>6s}")
    results = []
    for name, kind, params in gpu_rows(a.quick):
        r = child(kind, a.threads, {**params, "device": "cuda"}, timeout=TIMEOUT)
        peak = peaks["gflops_bf16"] if params.get("bf16") else peaks["gflops"]
        results.append((name, r, peak))
        if "error" in r:
            print(f"{name:78s} error: {r['error']}", flush=True)
            continue
        print(f"{name:78s} {_sps(r):>12s} {r['frames_per_s']:>10.0f} {r['peak_mb']:>8.0f} "
              f"{_gflop(r):>10s} {_mflop(r):>11s} {_pct(r, peak):>6s}", flush=True)
    print(f"\n{len(results)} rows in {time.time() - t_start:.0f} s")
    if not a.no_write:
        write_gpu_table(results, peaks, a.threads, a.quick)


def write_gpu_table(results, peaks: dict, threads: int, quick: bool) -> None:
    lines = [(f"Measured {datetime.date.today()} on {peaks['gpu']} (CUDA {peaks['cuda']}), host {machine()}, "
             f"{threads} CPU threads, commit {_commit()}{' (--quick)' if quick else ''}; matmul 8192^2 in the "
             f"same run: fp32 (TF32 off) {peaks['gflops'] / 1e3:.1f} TFLOP/s, bf16 "
             f"{peaks['gflops_bf16'] / 1e3:.1f} TFLOP/s."), "",
             "| measurement | s/step | frames/s | peak GPU MB | GFLOP/step | MFLOP/frame | % of matmul peak |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    lines += [_md_row(name, r, peak) for name, r, peak in results]
    table = "<!-- BENCH-GPU -->\n" + "\n".join(lines) + "\n<!-- /BENCH-GPU -->"
    path = ROOT / "BENCHMARKS.md"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if "<!-- BENCH-GPU -->" in text:  # the CPU table's markers are other strings: it stays as it is
        text = re.sub(r"<!-- BENCH-GPU -->.*?<!-- /BENCH-GPU -->", lambda _: table, text, flags=re.DOTALL)
    else:
        section = f"## GPU (bench/run.py --device cuda)\n\n{table}\n\n"
        at = text.find("## duralava against its targets")
        text = text[:at] + section + text[at:] if at >= 0 else text.rstrip("\n") + "\n\n" + section
    path.write_text(text)
    print(f"wrote the GPU table into {path}")
