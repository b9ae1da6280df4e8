"""Model families. Each is a Config dataclass + PRESETS + an nn.Module with the same verbs:
start/advance/decode for sampling, configure_optimizers/clip_spec/train_step for training."""
from __future__ import annotations

import dataclasses
import json

from ..errors import EverloopError
from . import (
    duralava,
    duralava_config,
    multiscale,
    playable,
    playable_config,
    worldmodel,
    worldmodel_config,
)

FAMILIES = {"duralava": (duralava_config.DuralavaConfig, duralava_config.PRESETS, duralava.Duralava),
            "worldmodel": (worldmodel_config.WorldModelConfig, worldmodel_config.PRESETS, worldmodel.WorldModel),
            "multiscale": (multiscale.MultiscaleConfig, multiscale.PRESETS, multiscale.Multiscale),
            "playable": (playable_config.PlayableConfig, playable_config.PRESETS, playable.Playable)}

DEFAULT_FAMILY = "worldmodel"
"""What `everloop train` trains without --family: the sharp VAE + MDN-RNN looked and moved
most like the real footage on the dev processes (docs/fidelity.md; duralava's 30-minute
lamp sat at 4.4x the band on features and 12x on colour)."""
PRESET_FAMILY = {"seed": "duralava"}
"""Presets that name their family when --family is not given: `--preset seed` stays the
published duralava recipe it always was."""


def family_for(family: str | None, preset: str = "default") -> str:
    """The family a train command means: --family if given, else the preset's, else the default."""
    return family or PRESET_FAMILY.get(preset, DEFAULT_FAMILY)


def _family(name: str):
    if name not in FAMILIES:
        raise EverloopError(f"unknown family {name!r} (known: {', '.join(FAMILIES)})")
    return FAMILIES[name]


def make_config(family: str, preset: str = "default", overrides: dict | None = None):
    """Config = dataclass defaults <- preset <- explicit overrides (e.g. from --set k=v)."""
    cls, presets, _ = _family(family)
    if preset not in presets:
        raise EverloopError(f"unknown --preset {preset!r} for {family} (known: {', '.join(presets)})")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = dict(presets[preset])
    for key, value in (overrides or {}).items():
        if key not in fields:
            raise EverloopError(f"--set {key}: no such {family} option (known: {', '.join(fields)})")
        values[key] = _coerce(value, fields[key].default)
    return cls(**values)


def _coerce(value, default):
    """Turn a --set string into the type of the field's default."""
    if not isinstance(value, str):
        return value
    try:
        if isinstance(default, bool):
            if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError(value)
            return value.lower() in ("1", "true", "yes")
        if isinstance(default, tuple):
            return tuple(int(v) for v in value.split(",") if v)
        return type(default)(value)
    except ValueError:
        raise EverloopError(f"--set: cannot read {value!r} as {type(default).__name__}") from None


def config_to_dict(cfg) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def config_from_dict(family: str, d: dict):
    """The config a run folder saved. An option added after the run was made takes the value
    that reproduces what the run did (the family's LEGACY), not today's default: a run saved
    before a default changed must still load and sample as it did."""
    cls = _family(family)[0]
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(d) - set(names)
    if unknown:
        raise EverloopError(f"config has unknown {family} options: {', '.join(sorted(unknown))}")
    d = {**{k: v for k, v in getattr(cls, "LEGACY", {}).items() if k not in d}, **d}
    return cls(**{k: tuple(v) if isinstance(names[k].default, tuple) else v for k, v in d.items()})


def build(family: str, cfg):
    return _family(family)[2](cfg)
