"""Gradients averaged over the processes of a torchrun launch (distributed.py), so every
optimizer steps on the global batch's gradient: every network, and each player of a GAN,
separately. Nothing happens at world size 1.

torch's DistributedDataParallel cannot wrap a family: families call their submodules
directly, run several backward passes per step (one per GAN player) and compute some
gradients with autograd.grad. So the averaging DDP does is done here with the same
torch.distributed all_reduce, at the two moments a family's gradients are complete:
- at the end of every backward pass, the gradients it accumulated (as DDP does), so a
  family that clips them by their norm before it steps clips the global batch's gradient;
- right before an optimizer steps, any of its gradients a family set by hand
  (autograd.grad), which no backward pass accumulated.
A gradient averaged once is marked, so the step does not average it again."""
from __future__ import annotations

import torch
import torch.distributed as dist

from .distributed import active, world

_touched: list = []  # parameters whose .grad the running backward pass accumulated
_registered = [0]  # parameters given the hook so far: each keeps its index (the same order everywhere)


def forget() -> None:
    """Drop what a backward pass cut short (by an error) had touched: a session is over."""
    _touched.clear()


def _mean_over_processes(tensors: list[torch.Tensor]) -> None:
    """Each tensor := its mean over the processes, in place (one all_reduce per dtype), marked."""
    by_kind: dict = {}
    for t in tensors:
        by_kind.setdefault((t.dtype, t.device), []).append(t)
    for group in by_kind.values():
        flat = torch.cat([t.reshape(-1) for t in group])
        dist.all_reduce(flat)
        flat.div_(world())
        for t, part in zip(group, flat.split([t.numel() for t in group])):
            t.copy_(part.view_as(t))
            t._everloop_mean = True


def _accumulated(param: torch.Tensor) -> None:
    if not active():  # a model trained in a session before, trained alone now
        return
    if not _touched:  # the first of this backward pass: average when the pass ends
        torch.autograd.Variable._execution_engine.queue_callback(_after_backward)
    _touched.append(param)


def _after_backward() -> None:
    params = sorted({id(p): p for p in _touched}.values(), key=lambda p: p._everloop_index)
    _touched.clear()
    with torch.no_grad():  # averaging again what an earlier pass averaged is exact: it is alike everywhere
        _mean_over_processes([p.grad for p in params if p.grad is not None])


def _before_step(opt, args, kwargs) -> None:
    grads = [p.grad for g in opt.param_groups for p in g["params"]
             if p.grad is not None and not getattr(p.grad, "_everloop_mean", False)]
    if grads:
        with torch.no_grad():
            _mean_over_processes(grads)


def average_gradients(params, optimizers: dict) -> None:
    """Every gradient of `params` and of the optimizers' parameters is the mean over the
    processes by the time an optimizer steps: every network (each player of a GAN)
    separately, however a family computes them. Nothing at world size 1."""
    if not active():
        return
    for p in params:
        if p.requires_grad and not hasattr(p, "_everloop_index"):
            p._everloop_index, _registered[0] = _registered[0], _registered[0] + 1
            p.register_post_accumulate_grad_hook(_accumulated)
    for opt in optimizers.values():
        opt.register_step_pre_hook(_before_step)


def mean_over_processes(t: torch.Tensor) -> torch.Tensor:
    """A copy of `t` averaged over the processes, for a family that reads a gradient of its
    loss itself (autograd.grad of a mean over its share; the mean of those is the global
    batch's); `t` itself at world size 1."""
    if not active():
        return t
    t = t.detach().clone()
    dist.all_reduce(t)
    return t.div_(world())
