"""Scaling rows for BENCHMARKS.md: steps/s and frames/s of `everloop train` (and of the
painter's trainers) at 1 and 2 processes of 1 thread each on this CPU (gloo).

    python bench/scaling.py [--seconds 20] [--only duralava,multiscale,...]

Every row trains a default preset with its default (global) batch on synthetic 64x64
footage: world size 1 is `python -m everloop train ...` as before, world size 2 is
`torchrun --nproc_per_node 2 -m everloop train ...`. The rate is taken inside the run
(rank 0's clock, from the start of the first timed step to the last, after 2 warm-up
steps), so start-up, the first save and the sample sheets do not count; a family with
stages gets a row per stage that trains. Efficiency = frames/s at 2 processes over twice
frames/s at 1. Each run prints the machine's load average before it starts: other jobs
on the 2 cores change the numbers, and the table says what load they were measured under.

`--worker OUT -- ARGS` is what torchrun starts: everloop's CLI with a clock on each step."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WARMUP = 2
# name: (command after `everloop`, {stage: frames a step draws (global batch) from config.json's config})
CONFIGS = {
    "duralava": (["train", "--family", "duralava"], {"train": lambda c: c["batch_size"] * c["clip_length"]}),
    "multiscale": (["train", "--family", "multiscale"],
                   {"train": lambda c: c["batch_size"] * (c["history"] + 1) * (2 if c["adversarial"] else 1)}),
    "worldmodel": (["train", "--family", "worldmodel"],
                   {"vae": lambda c: c["vae_batch"], "rnn": lambda c: c["rnn_batch"] * (c["seq_len"] + 1)}),
    "paint-renderer": (["paint", "train-renderer"], {"train": lambda c: c["batch"]}),  # strokes
    "paint-agent": (["paint", "train-agent", "--targets", "mnist"], {"train": lambda c: c["batch"] * c["strokes"]}),
}


def worker(out: str, argv: list[str]) -> int:
    """Run the CLI with a clock on every step of every TrainLoop.run (one list per stage)."""
    from everloop import distributed, loop
    from everloop.cli import main
    stages, run = [], loop.TrainLoop.run

    def timed(self, step_fn, *args, **kwargs):
        times = []
        stages.append(times)

        def step(progress):
            times.append(time.perf_counter())
            return step_fn(progress)
        return run(self, step, *args, **kwargs)
    loop.TrainLoop.run = timed
    try:
        return main(argv)
    finally:
        if distributed.launched_rank() == 0:
            Path(out).write_text(json.dumps(stages))


def _rate(times: list[float]) -> float | None:
    t = times[WARMUP:]
    return (len(t) - 1) / (t[-1] - t[0]) if len(t) >= 3 else None


def _load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def measure(name: str, procs: int, data: Path, work: Path, seconds: float, guess: dict) -> dict:
    cmd, frames = CONFIGS[name]
    run = work / f"{name}-{procs}"
    shutil.rmtree(run, ignore_errors=True)
    argv = [*cmd, "--out", str(run), "--quiet"]
    if cmd[0] == "train":
        argv += ["--data", str(data), "--sample-every", "0", "--save-every", "1000"]
    elif name == "paint-agent":
        argv += ["--renderer", str(work / "renderer")]
    steps = max(WARMUP + 3, round(seconds * guess.get(name, 1.0)))
    argv += ["--steps", str(steps)]
    clock = work / f"{name}-{procs}.json"
    me = [str(Path(__file__).resolve()), "--worker", str(clock), "--"]
    launch = [sys.executable, *me] if procs == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs), *me]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    load = _load()
    subprocess.run([*launch, *argv], check=True, env=env, stdout=subprocess.DEVNULL)
    config = json.loads((run / "config.json").read_text())["config"]
    rows = []
    stage_names = list(frames)
    for stage, times in zip(stage_names if len(stage_names) > 1 else ["train"], [t for t in json.loads(clock.read_text()) if t]):
        rate = _rate(times)
        if rate is not None:
            rows.append({"config": name, "stage": stage, "procs": procs, "steps_s": rate,
                         "frames_s": rate * frames[stage](config), "load": load})
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=20.0, help="about this long per measurement")
    p.add_argument("--only", help="comma-separated configs (default: all)")
    a = p.parse_args(argv)
    names = a.only.split(",") if a.only else list(CONFIGS)
    work = Path(tempfile.mkdtemp(prefix="everloop-scaling-"))
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import blob_frames, write_store
    data = write_store(work / "data", blob_frames(n=600, size=64))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if any(n.startswith("paint-agent") for n in names):  # the agent trains through a renderer
        subprocess.run([sys.executable, "-m", "everloop", "paint", "train-renderer", "--out", str(work / "renderer"),
                        "--steps", "1", "--quiet"], check=True, env=env, stdout=subprocess.DEVNULL)
    guess = {"duralava": 1.2, "multiscale": 2.0, "worldmodel": 10.0, "paint-renderer": 3.0, "paint-agent": 3.0}
    rows = []
    for name in names:
        for procs in (1, 2):
            rows += measure(name, procs, data, work, a.seconds, guess)
            print(json.dumps(rows[-1]), flush=True)
    print(f"\ntorch {__import__('torch').__version__}, 1 thread per process, gloo; load average (1/5/15 min) "
          "before each run in the last column\n")
    print("| config | stage | processes | steps/s | frames/s | efficiency | load before |\n|---|---|---:|---:|---:|---:|---|")
    one = {(r["config"], r["stage"]): r["frames_s"] for r in rows if r["procs"] == 1}
    for r in rows:
        eff = "" if r["procs"] == 1 else f"{r['frames_s'] / (2 * one[(r['config'], r['stage'])]):.2f}"
        print(f"| {r['config']} | {r['stage']} | {r['procs']} | {r['steps_s']:.2f} | {r['frames_s']:,.0f} | {eff} "
              f"| {r['load']} |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        sys.exit(worker(sys.argv[2], sys.argv[4:]))
    main()
