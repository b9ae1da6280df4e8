"""Run folders of the painter (config.json + model.safetensors + train_state.pt: written and
read by everloop/checkpoint.py like every run folder) and the one step loop both trainers use
(--steps / --minutes, progress bar, Ctrl-C and SIGTERM save at a step boundary, --resume
continues). --force replaces only a painter folder (everloop.outputs), never a run of
another kind, a dataset or a folder everloop did not make."""
from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..checkpoint import CONFIG, read_json_config, write_folder
from ..errors import EverloopError
from ..outputs import claim, describe, kind_of
from ..stopping import Stopped, StopSignals

PAINT_KINDS = ("paint-renderer", "paint-agent")


def config_from(cls, data: dict, where: str):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise EverloopError(f"{where}: unknown config fields {', '.join(sorted(unknown))}")
    return cls(**data)


def save_folder(out: Path, kind: str, cfg, tensors: dict, meta: dict, train_state: dict | None = None,
                extra: dict[str, dict] | None = None) -> None:
    """A painter folder: a run folder (checkpoint.write_folder) whose family is `kind`."""
    config = {"family": kind, "config": dataclasses.asdict(cfg), **meta}
    write_folder(out, config, tensors, train_state, extra)


def read_folder(run: Path, kind: str) -> dict:
    """RUN/config.json of a painter folder of this kind; anything else is a one-line error."""
    config = read_json_config(run, "made by `everloop paint`")
    if not isinstance(config, dict) or config.get("family") != kind:
        family = config.get("family") if isinstance(config, dict) else None
        raise EverloopError(f"{run}: not a {kind} folder (family {family!r})")
    return config


def check_out(out: Path, resume: bool, force: bool) -> None:
    out = Path(out)
    if resume:
        return
    found = kind_of(out)
    if found in PAINT_KINDS and not force:
        raise EverloopError(f"{out} already holds a run; pass --resume to continue or --force to start over")
    if found == "run" and not (out / CONFIG).exists():  # a run killed before its first save
        if not force:
            raise EverloopError(f"--out {out} exists; pass --force to replace it")
        return
    if found not in (None, "empty", *PAINT_KINDS):
        raise EverloopError(f"--out {out} exists and is {describe(found)}; --force replaces only a painter "
                            "folder made by everloop: choose another --out")
    claim(out, found if found in PAINT_KINDS else "paint-agent", force=force)


def rng_state(rng: np.random.Generator) -> str:
    return json.dumps(rng.bit_generator.state)


def set_rng_state(rng: np.random.Generator, text: str) -> None:
    rng.bit_generator.state = json.loads(text)


def loop(step_fn, save_fn, *, step: int, steps: int | None, minutes: float | None, desc: str,
         progress: bool, save_every_minutes: float = 5.0) -> int:
    """Call step_fn(progress) -> logs until `steps` in total or `minutes` in this call;
    progress in [0, 1) is how far through the budget the step is (by steps, or by time in
    this call), for learning-rate schedules. save_fn(step, seconds) on the way, at the end
    and on Ctrl-C. Returns the final step."""
    if steps is None and minutes is None:
        raise EverloopError("give --steps N or --minutes M")
    budget = None if minutes is None else minutes * 60
    bar = tqdm(total=steps if steps is not None else int(budget), initial=step if steps else 0,
               unit="step" if steps else "s", disable=not progress, dynamic_ncols=True, desc=desc)
    t0 = last_save = time.time()
    step0 = step
    stop = StopSignals()  # the first Ctrl-C / SIGTERM stops at the next step boundary
    try:
        stop.__enter__()
        while ((steps is None or step < steps) and (budget is None or time.time() - t0 < budget)
               and not stop.requested):
            done = step / steps if steps is not None else (time.time() - t0) / budget
            logs = step_fn(min(max(done, 0.0), 1.0))
            bad = [k for k, v in logs.items() if not np.isfinite(v)]
            if bad:
                raise EverloopError(f"non-finite {', '.join(bad)} at step {step + 1}; try a lower learning rate")
            step += 1
            now = time.time()
            if steps is not None:
                bar.update(1)
            else:
                bar.n = min(int(now - t0), bar.total)
                bar.refresh()
            bar.set_postfix(sps=f"{(step - step0) / max(now - t0, 1e-9):.1f}",
                            **{k: f"{v:.4f}" for k, v in logs.items()}, refresh=False)
            if now - last_save > save_every_minutes * 60:
                save_fn(step, now - t0)
                last_save = time.time()
        if stop.requested:
            bar.close()
            save_fn(step, time.time() - t0)
            print(f"stopped by {stop.name()} at step {step}; saved (continue with --resume)", flush=True)
            raise Stopped(stop.signum, f"stopped by {stop.name()}")
    except Stopped:
        raise
    except KeyboardInterrupt:
        bar.close()
        if stop.requested:  # a second signal, maybe mid-step: the last checkpoint stands
            print(f"interrupted at step {step}; the last checkpoint stands (continue with --resume)", flush=True)
        else:  # raised by code, or where no handler could be installed: save as Ctrl-C always did
            save_fn(step, time.time() - t0)
            print(f"interrupted at step {step}; saved (continue with --resume)", flush=True)
        raise
    finally:
        stop.__exit__()
    bar.close()
    save_fn(step, time.time() - t0)
    return step


def cosine_lr(opt, base: float, final: float, progress: float) -> float:
    """Set every group's learning rate to base x (a cosine from 1 down to `final` over the
    run); returns it. A late low rate is where the batch-16 noise in the canvas MSE settles."""
    lr = base * (final + (1 - final) * 0.5 * (1 + math.cos(math.pi * progress)))
    for g in opt.param_groups:
        g["lr"] = lr
    return lr
