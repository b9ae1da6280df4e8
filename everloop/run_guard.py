"""What keeps a run folder safe while `train` works on it (docs/reliability.md).

check_args: every number of a TrainArgs finite and in range, named by its flag.
check_resume: a --resume may not contradict the run's family, preset, config or seed.
lock_run: one `train` per run folder at a time.
rewind: a resumed run first cuts log.jsonl and samples/ back to its checkpoint."""
from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

from . import outputs
from .errors import EverloopError

# On --resume these must agree with the run; every other field may change.
KEPT_ON_RESUME = ("family", "preset", "seed")


def check_args(args) -> None:
    """Every number of a TrainArgs, finite and in range, named by its flag."""
    def bad(flag, value, want):
        raise EverloopError(f"{flag} must be {want}, got {value!r}")
    if args.steps is None and args.minutes is None:
        raise EverloopError("give --steps N or --minutes M")
    if args.steps is not None and not (_int(args.steps) and args.steps >= 1):
        bad("--steps", args.steps, "an integer >= 1")
    for flag, value in (("--minutes", args.minutes), ("--save-every", args.save_every_minutes)):
        if value is not None and not (_num(value) and math.isfinite(value) and value > 0):
            bad(flag, value, "a finite number of minutes > 0")
    if not (_int(args.sample_every) and args.sample_every >= 0):
        bad("--sample-every", args.sample_every, "an integer >= 0 (0: a sheet only at the end)")
    if not (_int(args.seed) and 0 <= args.seed < 2 ** 63):
        bad("--seed", args.seed, "an integer >= 0")
    if not isinstance(args.overrides, dict):
        bad("--set", args.overrides, "key=value pairs")


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _given(args, name: str) -> bool:
    return name in args.given or getattr(args, name) != getattr(type(args), name)  # vs the default


def check_resume(args, cfg_json: dict, model) -> None:
    """A --resume may not contradict the run: one-line error naming the flag."""
    out, train_meta = Path(args.out), cfg_json.get("train") or {}
    have = {"family": cfg_json["family"], "preset": train_meta.get("preset"), "seed": train_meta.get("seed")}
    for name in KEPT_ON_RESUME:
        if _given(args, name) and have[name] is not None and getattr(args, name) != have[name]:
            raise EverloopError(f"--{name} {getattr(args, name)}: the run in {out} has {name} {have[name]}; "
                                f"--resume keeps it (drop --{name}, or start a new run)")
    from .models import _coerce  # the same reading of a --set string as a new run's
    options = dataclasses.asdict(model.cfg)
    for key, raw in args.overrides.items():
        if key not in options:
            raise EverloopError(f"--set {key}: no such {model.family} option")
        run_value = options[key]
        if _coerce(raw, run_value) != run_value:
            raise EverloopError(f"--set {key}={raw}: the run in {out} has {key}={run_value!r}; "
                                f"--resume keeps a run's config (drop --set, or start a new run)")


def lock_run(out: Path) -> int:
    """An exclusive lock on the run folder itself (no lock file to leave behind): a second
    `train` on the same run, or a --force while one trains, is refused instead of mixing
    two runs' files. The lock dies with the process, however it dies."""
    import fcntl
    fd = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise EverloopError(f"{out}: another `everloop train` is writing this run; wait for it "
                            "or stop it (Ctrl-C or kill saves it)") from None
    return fd


def rewind(out: Path, step: int, log_bytes: int | None = None, redo: tuple = ()) -> None:
    """Cut log.jsonl and samples/ back to ``step``: lines and sheets of later steps were
    rolled back (by a kill, or by --stage) and are written again as the run continues.
    ``log_bytes``: the log's size when the checkpoint was saved (exact); ``redo``: stages
    begun again at ``step``, whose events there are dropped too."""
    log, size = Path(out) / "log.jsonl", log_bytes
    if log.exists():
        if size is not None and log.stat().st_size >= size:
            with log.open("r+b") as f:  # exactly what was logged when the checkpoint was saved
                f.truncate(size)
        else:  # a checkpoint from before log_bytes, or a log someone shortened: by step
            keep = []
            for line in log.read_text(errors="replace").splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue  # a line cut short by the kill
                if not isinstance(entry, dict) or not isinstance(entry.get("step"), int):
                    continue
                if entry["step"] < step or (entry["step"] == step and entry.get("stage") not in redo):
                    keep.append(line + "\n")
            outputs.write_file(log, lambda p: p.write_text("".join(keep)))
    for sheet in (Path(out) / "samples").glob("step_*.png"):
        try:
            if int(sheet.stem[5:]) > step:
                sheet.unlink()
        except ValueError:
            pass
