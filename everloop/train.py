"""One training loop for every family: batch -> model.train_step -> log / sample / save.

Read top to bottom: set-up (new run or resume), the loop, and the checkpoint it leaves.
A run stops after --steps or --minutes, or on Ctrl-C; each way it saves first, so
`--resume` continues where it left off (same data order, same RNG streams).

A family may train in stages (worldmodel: vae, encode, rnn): it lists them with their
shares of the budget in `model.stages()`, and the loop runs them in order, calling
`model.begin_stage` / `end_stage` around each and saving between them. The stage and the
step each stage began at are saved with the run, so --resume continues inside the right
stage and --stage NAME redoes one (and those after it). Without stages() a run is one
stage, the plain loop.

--device cuda trains on a GPU: the model is moved there after it is built or loaded (the
optimizers are made or loaded after the move, so their state follows), and every batch is
moved as it is drawn; the data order and the checkpoints stay on the CPU (checkpoint.py).
--resume is bit-exact on the CPU. On a GPU it restores the CUDA RNG too, but GPU kernels
need not be deterministic, so a resumed GPU run is the same run only up to float noise."""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from . import checkpoint, devices, sheets
from .data import FrameStore, to_float
from .errors import EverloopError
from .models import build, config_from_dict, make_config


@dataclass
class TrainArgs:
    data: str
    """Dataset folder written by `everloop prepare` (frames.npy + meta.json)."""
    out: str
    """Run folder: config.json, model.safetensors, train_state.pt, samples/, log.jsonl."""
    family: str = "duralava"
    """Model family (see everloop.models.FAMILIES)."""
    preset: str = "default"
    """Named set of config overrides of the family (e.g. default, seed, demo, tiny)."""
    overrides: dict = field(default_factory=dict)
    """Single config fields to override, from --set key=value."""
    steps: int | None = None
    """Stop after this many training steps in total (counting resumed ones)."""
    minutes: float | None = None
    """Stop after this many minutes of training in this invocation."""
    resume: bool = False
    """Continue the run in `out` from its train_state.pt."""
    stage: str | None = None
    """Redo this stage of the run in `out` (and every stage after it) from the step it began at."""
    force: bool = False
    """Start over even if `out` already holds a run (its files are replaced)."""
    seed: int = 0
    """Seeds weights, data order and noise; the same seed gives the same run."""
    sample_every: int = 250
    """Write a sample sheet to out/samples/ every this many steps (0 = only at the end)."""
    save_every_minutes: float = 5.0
    """Checkpoint at least this often."""
    precision: str = "auto"
    """'fp32', 'bf16' (autocast on the device) or 'auto': on the CPU bf16 where bench/
    measured it faster, on a GPU fp32 (no family's bf16 quality has been measured yet)."""
    device: str = "cpu"
    """'cpu', 'cuda', 'cuda:N' or 'auto' (cuda if torch sees one, else cpu)."""
    progress: bool = True
    """Show the progress bar."""


def use_bf16(precision: str, device: torch.device | None = None) -> bool:
    # Measured in bench/ (see BENCHMARKS.md): on a CPU with AVX-512 BF16 the duralava step
    # runs faster under bf16 autocast; elsewhere bf16 is emulated and slower. A GPU runs
    # bf16 fast, but whether a family still trains as well in it is unmeasured: fp32 there.
    if precision == "auto" and device is not None and device.type != "cpu":
        return False
    if precision == "auto":
        flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
        return "avx512_bf16" in flags or "amx_bf16" in flags
    if precision not in ("fp32", "bf16"):
        raise EverloopError(f"--precision {precision!r}: use fp32, bf16 or auto")
    return precision == "bf16"


def _setup(args: TrainArgs, store: FrameStore, device: torch.device):
    out = Path(args.out)
    if args.resume or args.stage is not None:
        cfg_json = checkpoint.read_config(out)
        model = build(cfg_json["family"], config_from_dict(cfg_json["family"], cfg_json["config"]))
        state = checkpoint.load_train_state(out)  # on the CPU
        model.load_state_dict(state["model"])
        model.to(device)
        model.load_extra_state(state["extra"])  # a family moves its extra state to its device
        opt = model.configure_optimizers()  # Optimizer.load_state_dict moves the state to the weights
        for name, o in opt.items():
            o.load_state_dict(state["optim"][name])
        return model, opt, state
    if out.exists() and any(out.iterdir()) and not args.force:
        raise EverloopError(f"{out} already holds files; pass --resume to continue it or --force to start over")
    torch.manual_seed(args.seed)  # seeds the CUDA RNG too
    model = build(args.family, make_config(args.family, args.preset, args.overrides)).to(device)
    return model, model.configure_optimizers(), None


def _stages(model) -> list[tuple[str, float]]:
    return model.stages() if hasattr(model, "stages") else [("train", 1.0)]


def _first_stage(args: TrainArgs, model, opt, state, names, device: torch.device):
    """(index of the stage to run first, whether it starts fresh, stage_starts, step, opt)."""
    step = state["step"] if state else 0
    starts = dict(state.get("stage_starts", {})) if state else {}
    at = names.index(state["stage"]) if state and state.get("stage") in names else 0
    if state and state.get("stage_done") and at + 1 < len(names):
        at, fresh = at + 1, True  # saved between two stages: the next begins
    else:
        fresh = state is None
    if args.stage is not None:
        if not hasattr(model, "stages"):
            raise EverloopError(f"--stage: the {model.family} family trains in one stage; use --force to start over")
        if args.stage not in names:
            raise EverloopError(f"--stage {args.stage!r}: {model.family} has stages {', '.join(names)}")
        if args.stage not in starts:
            raise EverloopError(f"--stage {args.stage}: {args.out} never reached it; continue with --resume")
        at, fresh, step = names.index(args.stage), True, starts[args.stage]
        for name in names[at:]:
            model.reset_stage(name)
        model.to(device)  # the fresh modules are built on the CPU
        opt = model.configure_optimizers()
    return at, fresh, starts, step, opt


def train(args: TrainArgs) -> Path:
    store = FrameStore(args.data)
    if args.steps is None and args.minutes is None:
        raise EverloopError("give --steps N or --minutes M")
    device = devices.resolve(args.device)
    model, opt, state = _setup(args, store, device)
    size = None if getattr(model, "trains_on_crops", False) else getattr(model.cfg, "size", None)
    if size is not None and (store.height, store.width) != (size, size):
        raise EverloopError(f"{args.data}: frames are {store.height}x{store.width} but the model wants "
                            f"{size}x{size}; prepare with --size {size} or --set size=...")
    out = Path(args.out)
    if state is None:  # a fresh start: nothing of an older run may linger in the folder
        for old in [out / "log.jsonl", out / checkpoint.TRAIN_STATE, *(out / "samples").glob("*.png")]:
            old.unlink(missing_ok=True)
    (out / "samples").mkdir(parents=True, exist_ok=True)
    bf16 = use_bf16(args.precision, device)
    rng = np.random.default_rng(args.seed)
    elapsed_before = 0.0
    if state is not None:
        elapsed_before = state["elapsed"]
        rng.bit_generator.state = json.loads(state["numpy_rng"])
        torch.set_rng_state(state["torch_rng"])
        if device.type == "cuda" and "cuda_rng" in state:
            torch.cuda.set_rng_state(state["cuda_rng"], device)
    stages = _stages(model)
    names, shares = [n for n, _ in stages], [max(float(s), 0.0) for _, s in stages]
    multi = hasattr(model, "stages")
    first, fresh_first, stage_starts, step, opt = _first_stage(args, model, opt, state, names, device)
    current, stage_done = names[first], False
    def next_batch():
        # A family may draw its own batches (crops, latents, ...); the default is clips.
        if hasattr(model, "sample_batch"):
            batch = model.sample_batch(store, rng)
        else:
            batch = to_float(store.sample_clips(*model.clip_spec(), rng))
        return batch.to(device, non_blocking=True)  # the same tensor on the CPU

    meta = {"data": {"path": str(args.data), **{k: store.meta.get(k) for k in ("height", "width", "fps", "source")}},
            "train": {"preset": args.preset, "seed": args.seed, "precision": "bf16" if bf16 else "fp32"}}

    def save() -> None:
        model.prepare_sampling()
        ts = {"model": model.state_dict(), "extra": model.extra_state(),
              "optim": {k: o.state_dict() for k, o in opt.items()}, "step": step,
              "stage": current, "stage_done": stage_done, "stage_starts": stage_starts,
              "elapsed": elapsed_before + (time.time() - t0),
              "numpy_rng": json.dumps(rng.bit_generator.state), "torch_rng": torch.get_rng_state()}
        if device.type == "cuda":  # training noise is drawn on the device (devices.randn)
            ts["cuda_rng"] = torch.cuda.get_rng_state(device)
        checkpoint.save_run(out, model, {**meta, "step": step}, ts)

    # Next-frame families continue real clips in their sample sheets: the same 4 every time.
    sheet_clip = None
    if getattr(model, "requires_seed_clip", False):
        from .prediction import seed_clips
        sheet_clip = seed_clips(store, model.context_frames, model.clip_spec()[2], 4, args.seed)

    def sample(prepared: bool = False) -> None:
        if not prepared:  # save() has just done it at the end of a run
            model.prepare_sampling()
        model.eval()
        path = out / "samples" / f"step_{step:07d}.png"
        if sheet_clip is not None:
            sheets.stream_sheet(model, path, streams=4, steps=(0, 1, 2, 4, 8, 16), seed_clip=sheet_clip)
        else:
            sheets.stream_sheet(model, path)
        model.train()

    budget = None if args.minutes is None else args.minutes * 60
    total = args.steps
    bar = tqdm(total=total if total is not None else int(budget), initial=step if total else 0,
               unit="step" if total else "s", disable=not args.progress, dynamic_ncols=True,
               desc=f"train {model.family}")
    t0 = last_save = time.time()
    step0 = step
    log = (out / "log.jsonl").open("a")

    def stage_event(event: str, info: dict | None) -> None:
        if info:
            log.write(json.dumps({"stage": current, "event": event, **info, "step": step}) + "\n")
            if args.progress:
                bar.write(f"{current} {event}: " + ", ".join(f"{k} {v:.3f}" for k, v in info.items()))

    def share(lo: int, hi: int) -> float:
        return sum(shares[lo:hi]) / max(sum(shares[lo:]), 1e-12)

    model.train()
    try:
        for i in range(first, len(names)):
            last, current, stage_done = i == len(names) - 1, names[i], False
            # --steps counts over the whole run; --minutes over this call's remaining stages.
            end = total if last or total is None else round(total * share(0, i + 1))
            limit = budget if last or budget is None else budget * share(first, i + 1)
            if multi:
                fresh = i > first or fresh_first
                if fresh:
                    stage_starts[current] = step
                bar.set_description(f"train {model.family} {current}")
                stage_event("begin", model.begin_stage(current, store, out, fresh))
            while ((end is None or step < end) and (limit is None or time.time() - t0 < limit)
                   and (last or shares[i] > 0)):
                logs = model.train_step(next_batch(), opt, autocast=bf16)
                bad = [k for k, v in logs.items() if not math.isfinite(v)]
                if bad:
                    raise EverloopError(f"non-finite {', '.join(bad)} at step {step + 1}; the last good "
                                        f"checkpoint in {out} is kept (try a lower learning rate)")
                step += 1
                now = time.time()
                logs.update(step=step, time=round(elapsed_before + now - t0, 2))
                log.write(json.dumps({**logs, "stage": current} if multi else logs) + "\n")
                if total is not None:
                    bar.update(1)
                else:
                    bar.n = min(int(now - t0), bar.total)
                    bar.refresh()
                shown = {k: f"{v:.3f}" for k, v in list(logs.items())[:3] if k not in ("step", "time")}
                bar.set_postfix(step=step, sps=f"{(step - step0) / max(now - t0, 1e-9):.2f}", **shown, refresh=False)
                if args.sample_every and step % args.sample_every == 0:
                    sample()
                if now - last_save > args.save_every_minutes * 60:
                    save()
                    last_save = time.time()
            if multi:
                stage_event("end", model.end_stage(current) if hasattr(model, "end_stage") else None)
                if not last:
                    stage_done = True
                    save()
                    stage_done = False
    except KeyboardInterrupt:
        bar.close()
        save()
        print(f"interrupted at step {step}; saved {out} (continue with --resume)")
        raise
    finally:
        log.close()
    bar.close()
    save()
    sample(prepared=True)
    return out
