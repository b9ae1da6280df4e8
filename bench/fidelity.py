"""The fidelity protocol (issue F): does the default recipe look and move like the real
footage at frame 100,000, on every dev process, with no per-process flags?

    .venv/bin/python bench/fidelity.py [--minutes 30] [--frames 100000] [--parallel 2]

For each process of the dev set (the lava lamp and the four recordings in
../shared/data/processes): `everloop prepare SRC --size 64 --max-still 1`, `everloop train`
with default flags (the lamp with three seeds, the others one), `everloop eval` over
--frames steps with 8 streams (its sheet of the last horizon shows all 8); then it
writes docs/fidelity.md (worst drift ratio per metric at t = 1k, 10k, 100k, flags, training
steps) and docs/fidelity/<run>.png (real windows above, generated streams below).

Every stage is skipped when its output exists, so a stopped protocol continues where it
stopped (a run whose training did not finish, no RUN.done beside it, is trained again). On a GPU
(`--device cuda`) give `--steps` (the CPU runs' step counts, from a previous docs table)
instead of --minutes. `--time-to-fidelity` adds lava runs of 5, 10 and 20 minutes.
Commands run as subprocesses exactly as a user types them (one thread each by default:
two 1-thread runs at once on 2 cores)."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from everloop import outputs
from everloop.report import FLAGS

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
PROCESSES = {"lava": SHARED / "lavalamp" / "lavalite-classic.mp4",
             **{p: SHARED / "processes" / f"{p}.mp4" for p in ("glschool", "goop", "eruption", "interference")}}
FIVE = ("feature_fd", "color_hist", "diff_energy", "flow_hist", "temporal_spectrum")
PASS = 1.5  # the acceptance line: within 1.5x of the real-vs-real band
# docs/fidelity.md is written by people around one generated block: a rerun replaces only
# what lies between these two lines (before 2026-12-07 it replaced all above "## Notes", and
# a rerun would have erased the sessions' sections written there since)
BEGIN = "<!-- bench/fidelity.py writes from here: a rerun replaces this block -->"
END = "<!-- bench/fidelity.py writes up to here -->"


def everloop(*args: str, log: Path | None = None) -> None:
    cmd = [sys.executable, "-m", "everloop.cli", *args]
    print("$ everloop " + " ".join(args), flush=True)
    with open(log, "w") if log else open(os.devnull, "w") as out:
        code = subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT)
    if code:
        raise SystemExit(f"failed ({code}): everloop {' '.join(args)}" + (f"; see {log}" if log else ""))


def prepare(name: str, data_root: Path) -> Path:
    out = data_root / name
    if not (out / "meta.json").exists():
        everloop("prepare", str(PROCESSES[name]), "--size", "64", "--max-still", "1", "--out", str(out))
    return out


def run_one(job: dict, a) -> dict:
    run, data = Path(job["run"]), Path(job["data"])
    threads = ["--threads", str(a.threads)]
    done = run.with_suffix(".done")  # written once training returned: a stopped one starts over
    if not done.exists():
        shutil.rmtree(run, ignore_errors=True)
        budget = ["--steps", str(job["steps"])] if job.get("steps") else ["--minutes", str(job["minutes"])]
        everloop("train", "--data", str(data), "--out", str(run), *budget, "--seed", str(job["seed"]),
                 "--device", a.device, "--quiet", *threads, log=run.with_suffix(".train.log"))
        done.write_text(time.strftime("%Y-%m-%d %H:%M:%S\n"))
    if a.calibrated:  # runs trained before the decoder calibration: fit it into RUN-cal, eval that
        cal = run.with_name(run.name + "-cal")
        if not cal.exists():
            code = subprocess.call([sys.executable, str(ROOT / "bench" / "calibrate.py"), str(run),
                                    "--data", str(data), "--out", str(cal)])
            if code:
                raise SystemExit(f"failed ({code}): bench/calibrate.py {run}")
        run = cal
    report = run / f"eval-{a.frames}"
    if not (report / "report.json").exists():
        everloop("eval", str(run), "--data", str(data), "--frames", str(a.frames), "--streams", "8",
                 "--out", str(report), "--device", a.device, "--quiet", *threads)
    rep = json.loads((report / "report.json").read_text())
    sheet = report / f"sheet_t{rep['horizons'][-1]}.png"  # the 8 streams' last window
    return {**job, "report": rep, "sheet": str(sheet), "steps_done": trained_steps(run)}


def trained_steps(run: Path) -> dict:
    """Last logged step per training stage (the log holds one line per step)."""
    steps: dict[str, int] = {}
    for line in (run / "log.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "step" in rec:
            steps[rec.get("stage", "train")] = rec["step"]
    return steps


def side_by_side(job: dict, out: Path, stride: int) -> Path:
    """Real windows (4 rows of 8 frames, `stride` apart as the model steps) above the
    generated sheet of 8 streams at the last horizon."""
    from PIL import Image

    from everloop.data import FrameStore
    from everloop.sheets import grid
    store = FrameStore(job["data"])
    rng = np.random.default_rng(0)
    span = 8 * 8 * stride
    starts = rng.integers(0, len(store) - span, 4)
    real = np.stack([np.asarray(store.frames[s:s + span:8 * stride]) for s in starts])
    top = Image.fromarray(grid(real))
    top = top.resize((top.width * 2, top.height * 2), Image.NEAREST)
    gen = Image.open(job["sheet"]).convert("RGB")
    canvas = Image.new("RGB", (max(top.width, gen.width), top.height + gen.height + 8), "white")
    canvas.paste(top, (0, 0))
    canvas.paste(gen, (0, top.height + 8))
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out)
    return out


def worst(rep: dict, metric: str, horizons) -> dict:
    by_t = rep["drift"].get(metric, {})
    return {t: by_t.get(str(t)) for t in horizons}


def write_doc(results: list[dict], a, path: Path) -> None:
    horizons = [t for t in (1000, 10000, 100000) if t <= a.frames] or [a.frames]
    metrics = [m for m in FIVE + ("brightness",) if m in results[0]["report"]["drift"]]
    budget = f"--steps {a.steps}" if a.steps else f"{a.minutes:g} minutes"
    lines = [BEGIN, "", "## The protocol's last run (bench/fidelity.py)", "",
             (f"`bench/fidelity.py --minutes {a.minutes:g} --frames {a.frames}` ({time.strftime('%Y-%m-%d')}, "
              f"device {a.device}, {a.threads} thread(s) per run, {a.parallel} run(s) at once): "
              f"`everloop train --data DATA --out RUN` with default flags for {budget}, "
              f"`everloop eval RUN --data DATA --frames {a.frames} --streams 8`. "
              f"Cells: drift ratio to the real-vs-real band at t = {', '.join(map(str, horizons))}; "
              f"**bold** = above {PASS}x. The acceptance is the five metrics before brightness."
              + (" Each run has the decoder calibration fitted after training (`bench/calibrate.py`, "
                 "the family's own encode-stage fit on the same VAE; a refit for runs trained with it): "
                 "the evals are of RUN-cal." if a.calibrated else "")), ""]
    head = "| run | steps | " + " | ".join(metrics) + " | flags | pass |"
    lines += [head, "|---|---|" + "---|" * len(metrics) + "---|---|"]
    for r in results:
        rep = r["report"]
        cells, ok = [], True
        for m in metrics:
            vals = worst(rep, m, horizons)
            txt = " / ".join("-" if v is None else (f"**{v:.2f}**" if v > PASS else f"{v:.2f}") for v in vals.values())
            ok &= m not in FIVE or all(v is not None and v <= PASS for v in vals.values())
            cells.append(txt)
        flags = [f for f in FLAGS if rep.get(f)]
        ok &= not flags
        steps = ", ".join(f"{k} {v}" for k, v in r["steps_done"].items())
        lines.append(f"| {r['name']} s{r['seed']} | {steps} | " + " | ".join(cells)
                     + f" | {', '.join(flags) or 'none'} | {'yes' if ok else 'no'} |")
    lava = [r for r in results if r["name"] == "lava"]
    if len(lava) > 1:
        lines += ["", f"Lava lamp, {len(lava)} seeds: mean ± spread (std) of the worst ratio over the horizons:", "",
                  "| metric | mean | std |", "|---|---|---|"]
        for m in metrics:
            w = [max(v for v in worst(r["report"], m, horizons).values() if v is not None) for r in lava]
            lines.append(f"| {m} | {np.mean(w):.2f} | {np.std(w):.2f} |")
    lines += ["", "## Real frames (top 4 rows) beside 8 generated streams at the last horizon", ""]
    for r in results:
        pic = side_by_side(r, path.parent / "fidelity" / f"{r['name']}-s{r['seed']}.png",
                           r["report"].get("stride", 1))
        lines += [f"**{r['name']} seed {r['seed']}**", "", f"![]({pic.relative_to(path.parent)})", ""]
    block = "\n".join(lines + [END])
    text = path.read_text() if path.exists() else "# Fidelity: the default recipe on the five dev processes\n\n"
    if BEGIN in text and END in text:  # what people wrote around the block survives a rerun
        text = text[:text.index(BEGIN)] + block + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    outputs.write_file(path, lambda tmp: tmp.write_text(text))  # temp, then rename
    print(f"wrote {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30.0, help="training budget per run")
    ap.add_argument("--steps", type=int, help="training steps per run instead of minutes (GPU)")
    ap.add_argument("--frames", type=int, default=100000, help="eval horizon in model steps")
    ap.add_argument("--processes", default=",".join(PROCESSES))
    ap.add_argument("--lava-seeds", type=int, default=3)
    ap.add_argument("--parallel", type=int, default=2, help="runs at once")
    ap.add_argument("--threads", type=int, default=1, help="threads per run")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--time-to-fidelity", action="store_true", help="also lava runs of 5, 10, 20 minutes")
    ap.add_argument("--calibrated", action="store_true",
                    help="eval RUN-cal: each run with the decoder calibration fitted after training "
                         "(bench/calibrate.py), for runs trained before it")
    ap.add_argument("--report-only", action="store_true",
                    help="train and evaluate nothing: write the doc from the finished runs (RUN.done + report)")
    ap.add_argument("--runs", default=str(ROOT / "runs" / "fidelity"))
    ap.add_argument("--data", default=str(ROOT / "data"), help="where the prepared processes live")
    ap.add_argument("--doc", default=str(ROOT / "docs" / "fidelity.md"))
    a = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
    names = [n for n in a.processes.split(",") if n]
    missing = [str(PROCESSES[n]) for n in names if not PROCESSES[n].exists()]
    if missing:
        raise SystemExit(f"missing dev-set videos: {', '.join(missing)}")
    runs = Path(a.runs)
    runs.mkdir(parents=True, exist_ok=True)
    jobs = []
    for name in names:
        data = prepare(name, Path(a.data))
        for seed in range(a.lava_seeds if name == "lava" else 1):
            jobs.append({"name": name, "seed": seed, "data": str(data), "run": str(runs / f"{name}-s{seed}"),
                         "minutes": a.minutes, "steps": a.steps})
    if a.time_to_fidelity and "lava" in names:
        for m in (5, 10, 20):
            jobs.append({"name": f"lava-{m}min", "seed": 0, "data": str(Path(a.data) / "lava"),
                         "run": str(runs / f"lava-{m}min-s0"), "minutes": m, "steps": None})
    if a.report_only:
        suffix = "-cal" if a.calibrated else ""
        jobs = [j for j in jobs if Path(j["run"]).with_suffix(".done").exists()
                and (Path(j["run"] + suffix) / f"eval-{a.frames}" / "report.json").exists()]
    with ThreadPoolExecutor(a.parallel) as pool:
        results = list(pool.map(lambda j: run_one(j, a), jobs))
    main_results = [r for r in results if "min" not in r["name"]]
    write_doc(main_results, a, Path(a.doc))
    ttf = [r for r in results if "min" in r["name"]]
    for r in ttf + [r for r in main_results if r["name"] == "lava" and r["seed"] == 0]:
        rep, late = r["report"], [t for t in (1000, 10000, 100000) if t <= a.frames]
        worst_ratio = {m: max(rep["drift"][m][str(t)] for t in late) for m in FIVE if m in rep["drift"]}
        ok = all(v <= PASS for v in worst_ratio.values()) and not any(rep.get(f) for f in FLAGS)
        print(f"time to fidelity: {r['name']} s0: {'pass' if ok else 'fail'} "
              + " ".join(f"{m} {v:.2f}" for m, v in worst_ratio.items()))


if __name__ == "__main__":
    main()
