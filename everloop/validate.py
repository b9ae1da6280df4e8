"""Every value checked at the door: command-line numbers, --set values, config.json fields.

A value that is the wrong type, not finite, or out of range is a one-line error naming the
flag (``--fps``, ``--set lr_g``) or the file (``RUN/config.json: "size"``) before any work
starts, never a traceback later or a NaN written into an output."""
from __future__ import annotations

import argparse
import dataclasses
import math

from .errors import EverloopError

# Config fields (of any family) that are probabilities or fractions: in [0, 1].
FRACTIONS = {"carry_prob", "ema_decay", "self_feed", "holdout", "vae_share", "accept_any", "still_snap"}
# Integer fields that may be 0 (a count of optional things); every other integer is >= 1.
MAY_BE_ZERO = {"burn_in", "adv_start", "decoder_blocks", "step_noise_dim", "colour_table", "patch_detail",
               "still_hold"}


def number(flag: str, kind=int, lo=None, hi=None, lo_open: bool = False):
    """An argparse type: an int or a finite float in [lo, hi] (lo excluded if lo_open)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            what = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"{flag} must be {what}, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{flag} must be a finite number, got {text}")
        if lo is not None and (value < lo or (lo_open and value == lo)):
            raise argparse.ArgumentTypeError(f"{flag} must be {'>' if lo_open else '>='} {lo:g}, got {text}")
        if hi is not None and value > hi:
            raise argparse.ArgumentTypeError(f"{flag} must be at most {hi:g}, got {text}")
        return value
    return parse


def positive(flag: str, kind=int, hi=None):
    """An argparse type: a number > 0 (finite), at most ``hi``."""
    return number(flag, kind, lo=0, hi=hi, lo_open=True)


SEED = number("--seed", int, lo=0, hi=2 ** 63 - 1)  # any seed numpy and torch take


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def value_problem(name: str, value, default):
    """What is wrong with config field ``name`` = ``value`` (default ``default``), or None."""
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "must be true or false"
    if _is_int(default):
        if not _is_int(value):
            return "must be an integer"
        low = 0 if name in MAY_BE_ZERO or default == 0 else 1
        return None if value >= low else f"must be >= {low}"
    if isinstance(default, float):
        if not _is_number(value) or not math.isfinite(value):
            return "must be a finite number"
        if name.startswith("lr") and not 0 < value <= 10:  # beyond 10 the first step is NaN
            return "must be > 0 and at most 10"
        if default >= 0 and value < 0:
            return "must be >= 0"
        if name in FRACTIONS and value > 1:
            return "must be at most 1"
        return None
    if isinstance(default, str):
        return None if isinstance(value, str) else "must be a string"
    if isinstance(default, tuple) and (not isinstance(value, (list, tuple))
                                       or not all(_is_int(v) and v >= 1 for v in value) or (default and not value)):
            return "must be a non-empty list of integers >= 1"
    return None


def check_values(cls, values: dict, where: str, from_set=()) -> None:
    """Check the fields of the config dataclass ``cls`` given in ``values``; unknown keys are
    left to the family's reader. ``where`` names the source (a config.json); a key in
    ``from_set`` came from ``--set`` and is named as that flag."""
    for f in dataclasses.fields(cls):
        if f.name not in values or f.default is dataclasses.MISSING:
            continue
        problem = value_problem(f.name, values[f.name], f.default)
        if problem:
            if f.name in from_set:
                raise EverloopError(f"--set {f.name}={values[f.name]!r}: {problem}")
            raise EverloopError(f"{where}: {f.name!r} is {values[f.name]!r}; it {problem}")


def check_run_config(config, path) -> None:
    """The parts of a run's config.json outside the family config: family, data, step."""
    from .models import FAMILIES
    if not isinstance(config, dict):
        raise EverloopError(f"{path}: not a JSON object")
    family = config.get("family")
    if family not in FAMILIES:
        raise EverloopError(f"{path}: unknown family {family!r} (known: {', '.join(FAMILIES)})")
    if not isinstance(config.get("config"), dict):
        raise EverloopError(f"{path}: 'config' must be an object of {family} options")
    check_values(FAMILIES[family][0], config["config"], str(path))
    data = config.get("data")
    if data is None:
        return
    if not isinstance(data, dict):
        raise EverloopError(f"{path}: 'data' must be an object")
    fps = data.get("fps")
    if fps is not None and not (_is_number(fps) and math.isfinite(fps) and fps > 0):
        raise EverloopError(f"{path}: data 'fps' is {fps!r}; it must be a number > 0")
    for key in ("height", "width"):
        if data.get(key) is not None and not (_is_int(data[key]) and data[key] >= 1):
            raise EverloopError(f"{path}: data {key!r} is {data[key]!r}; it must be an integer >= 1")
    step = config.get("step")
    if step is not None and not (_is_int(step) and step >= 0):
        raise EverloopError(f"{path}: 'step' is {step!r}; it must be an integer >= 0")
