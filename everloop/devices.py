"""Where tensors live: `--device cpu | cuda | cuda:N | auto`, and what follows from it.

A model is built on the CPU and moved once (train.py, checkpoint.load_run); everything it
creates at run time goes to the device its weights are on (`of(model)`). Random draws that
follow a user's seed come from a CPU torch.Generator and are moved afterwards (`randn`,
`rand`), so a seed gives the same stream on the CPU and on a GPU (up to float rounding)
and a stream still does not depend on how it is chunked. Draws without a generator
(training noise) come from the device's own RNG: on the CPU exactly the draws of before.
Files are always written from CPU copies (`to_cpu`), so every run folder loads anywhere."""
from __future__ import annotations

import itertools

import torch

from .errors import EverloopError

CHOICES = "cpu, cuda, cuda:N or auto (cuda if torch sees one, else cpu)"


def resolve(name: str | None) -> torch.device:
    """The device a --device string names; a one-line EverloopError if it cannot be used."""
    name = (name or "cpu").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise EverloopError(f"--device {name}: use {CHOICES}") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise EverloopError(f"--device {name}: use {CHOICES}")
    if not torch.cuda.is_available():
        raise EverloopError(f"--device {name}: torch sees no CUDA device")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise EverloopError(f"--device {name}: torch sees {torch.cuda.device_count()} CUDA device(s)")
    return device


def of(model) -> torch.device:
    """The device of a model's first weight (or buffer); the CPU for one with neither, or
    for a stand-in that is no nn.Module (tests roll out such models)."""
    if isinstance(model, torch.nn.Module):
        for t in itertools.chain(model.parameters(), model.buffers()):
            return t.device
    return torch.device("cpu")


def randn(*shape: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """N(0, 1) of `shape` on `device`: drawn where `generator` lives (a seeded CPU stream)
    and moved, or without one from `device`'s own RNG."""
    if generator is not None:
        return torch.randn(*shape, generator=generator, device=generator.device).to(device)
    return torch.randn(*shape, device=device)


def rand(*shape: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """U[0, 1) of `shape` on `device`, drawn as `randn` draws."""
    if generator is not None:
        return torch.rand(*shape, generator=generator, device=generator.device).to(device)
    return torch.rand(*shape, device=device)


def to_cpu(obj):
    """A copy of nested dicts / lists / tuples with every tensor on the CPU (a CPU tensor
    is kept as it is, so a CPU run saves exactly what it saved before)."""
    if torch.is_tensor(obj):
        return obj.detach().cpu() if obj.device.type != "cpu" else obj
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        out = [to_cpu(v) for v in obj]
        return out if isinstance(obj, list) else tuple(out)
    return obj


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (before reading a clock); nothing on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
