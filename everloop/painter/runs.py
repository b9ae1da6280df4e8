"""Run folders of the painter (config.json + model.safetensors + train_state.pt: written and
read by everloop/checkpoint.py like every run folder) and everloop/loop.py's training loop as
both painter trainers call it. --force replaces only a painter folder (everloop.outputs),
never a run of another kind, a dataset or a folder everloop did not make."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from ..checkpoint import CONFIG, read_json_config, write_folder
from ..errors import EverloopError
from ..loop import TrainLoop
from ..outputs import claim, describe, kind_of

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
         progress: bool, save_every_minutes: float = 5.0, where="--out") -> int:
    """The training loop of everloop/loop.py for a painter trainer: step_fn(progress) -> logs,
    save_fn(step, seconds in this call). Returns the final step."""
    with TrainLoop(step=step, steps=steps, minutes=minutes, save=lambda: save_fn(run.step, run.seconds()),
                   where=where, desc=desc, progress=progress, save_every_minutes=save_every_minutes) as run:
        run.run(step_fn)
        run.finish()
    return run.step
